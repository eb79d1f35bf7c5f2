"""Export and predict: the winner loads in transformers.pipeline and predicts like the core."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.runner import run_study
from hpsearch.spec import load_spec
from toydata import QUICK, classification_rows, ner_rows, toy_study, write_csv, write_jsonl

SPACE = QUICK


def _quiet(message: str, **fields: object) -> None:
    pass


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    folder = tmp_path_factory.mktemp("exported")
    path = toy_study(folder, tiny_bert, rows=90, extra=SPACE + "search: {n_trials: 2, pruner: {name: none}}\n")
    assert run_study(path, say=_quiet) == 0
    return path


def test_pipeline_predictions_equal_the_core(exported: Path) -> None:
    import numpy as np
    from transformers import pipeline

    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner, load_fitted

    spec = load_spec(exported)
    meta = json.loads((spec.export_dir / "hpsearch.json").read_text())
    data = prepare_data(spec)
    tuner = FineTuner(data, cache_dir=spec.out_dir / "cache", max_length=spec.data.max_length)
    fitted = load_fitted(tuner, spec.candidate(meta["model"]), spec.export_dir)
    # served=True: in fp32, as pipeline() runs; in the training precision (bf16 on a CPU that has it) a near tie can flip
    core = [data.label_map.labels[int(np.argmax(x))] for x in tuner.predict(fitted, "train", served=True)]
    pipe = pipeline("text-classification", model=str(spec.export_dir))
    served = [o["label"] for o in pipe(data.train.columns["text"], truncation=True, max_length=spec.data.max_length)]
    assert served == core
    assert set(served) <= set(data.label_map.labels)


def test_metadata_and_model_card(exported: Path) -> None:
    spec = load_spec(exported)
    meta = json.loads((spec.export_dir / "hpsearch.json").read_text())
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert meta["trial"] == report["selected"]["trial"] and meta["params"] == report["selected"]["params"]
    assert meta["labels"] == ["neg", "pos"] and meta["task"] == "text-classification"
    assert meta["input_columns"] == {"text": "text"} and meta["policy"] == "refit"
    assert meta["cv"]["mean"] == pytest.approx(report["selected"]["mean_score"])
    assert len(meta["spec_hash"]) == 16 and meta["versions"]["transformers"]
    config = json.loads((spec.export_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    card = (spec.export_dir / "README.md").read_text()
    for part in ("## Selected configuration", "## Top trials", "CV macro_f1", 'pipeline("text-classification"', "candidates considered: tiny",
                 "- bias-corrected macro_f1 (BBC-CV over", "- trivial baseline (predicting the majority class"):
        assert part in card


def test_export_twice_gives_the_same_folder(exported: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", str(exported), "--out", str(first)]) == 0
    assert main(["export", str(exported), "--out", str(second)]) == 0
    assert (first / "hpsearch.json").read_text() == (second / "hpsearch.json").read_text()
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (first / "README.md").read_text() == (second / "README.md").read_text()


def test_an_export_trains_on_its_share_of_the_cores_beside_the_studys_workers(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                            monkeypatch: pytest.MonkeyPatch, torch_threads: None,
                                                                            other_workers) -> None:  # noqa: ANN001
    """An export of a study that still runs took every core for its final model, beside the study's workers."""
    from hpsearch import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    other_workers.start()  # a worker of the study, training on this machine
    assert main(["export", str(exported), "--out", str(tmp_path / "model")]) == 0
    other_workers.stop()
    assert "using 1 CPU thread(s) (2 cores shared by 2 hpsearch worker(s) on this machine)" in capsys.readouterr().err
    assert not (workers.registry() / str(os.getpid())).exists()  # no longer counted once it has ended


def test_an_export_removes_what_killed_exports_left_beside_its_folder(exported: Path, tmp_path: Path) -> None:
    """An export killed before its end (kill -9, the out-of-memory killer) left its staging folder, a whole model, beside
    the export's folder; every such kill added one."""
    import subprocess
    import sys

    from hpsearch.workers import HOST

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = int(gone.stdout)
    target = tmp_path / "model"
    left = {name: tmp_path / name for name in (f".model.{dead}@{HOST}.k2j4", f".model.{dead}@{HOST}.old-0",  # a killed export's
                                                 f".model.{os.getpid()}@{HOST}.live", f".model.{dead}@elsewhere.x9", ".model.mine")}
    for folder in left.values():
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
    assert main(["export", str(exported), "--out", str(target)]) == 0
    assert (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "model") == sorted(
        [f".model.{os.getpid()}@{HOST}.live", f".model.{dead}@elsewhere.x9", ".model.mine"])  # alive, another machine's, not ours


def test_running_a_finished_study_again_keeps_its_export_instead_of_training_it_again(tmp_path: Path, tiny_bert: Path) -> None:
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=SPACE + "search: {n_trials: 2}\n")
    assert run_study(path, say=_quiet) == 0
    spec = load_spec(path)
    weights, said = spec.export_dir / "model.safetensors", []
    written, report = weights.stat().st_mtime_ns, json.loads((spec.out_dir / "selection.json").read_text())
    assert run_study(path, say=lambda message, **fields: said.append(fields.get("event"))) == 0
    assert "final_model_kept" in said and "final_model" not in said, said
    assert weights.stat().st_mtime_ns == written and json.loads((spec.out_dir / "selection.json").read_text()) == report
    changed = dict(report, selected={**report["selected"], "mean_score": 0.123})  # the same trial number, another result
    (spec.out_dir / "selection.json").write_text(json.dumps(changed))
    said.clear()
    assert run_study(path, say=lambda message, **fields: said.append(fields.get("event"))) == 0
    assert "final_model_kept" not in said and "final_model" in said
    weights.unlink()  # a folder that lost its weights is written again
    said.clear()
    assert run_study(path, say=lambda message, **fields: said.append(fields.get("event"))) == 0
    assert "final_model_kept" not in said and weights.is_file()


def test_export_does_not_overwrite_a_foreign_folder(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import hpsearch.data

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with monkeypatch.context() as patch:
        patch.setattr(hpsearch.data, "prepare_data", lambda *a, **k: pytest.fail("the data was read before the refusal"))
        assert main(["export", str(exported), "--out", str(foreign)]) == 2
    said = capsys.readouterr().err
    assert said.endswith("is not empty and was not written by hpsearch; choose another --out or pass --force\n"), said
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(["export", str(exported), "--out", str(foreign), "--force"]) == 0
    assert (foreign / "hpsearch.json").is_file()


def test_run_refuses_a_foreign_export_folder_before_its_search(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """run has no --out or --force: a foreign folder at export.dir stopped it at the end, after the whole search."""
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + "search: {n_trials: 1}\n")
    spec = load_spec(path)
    spec.export_dir.mkdir(parents=True)
    (spec.export_dir / "notes.txt").write_text("keep me")
    assert main(["validate", str(path)]) == 0
    assert f"warning: run would stop before its search: export target {spec.export_dir} is not empty" in capsys.readouterr().out
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (f"hpsearch run: export target {spec.export_dir} is not empty and was not written by hpsearch; set "
                                       "export.dir to another folder, or move what is in it (or run with --no-export)\n")
    assert not (spec.out_dir / "optuna.journal").exists()  # no study begun
    assert main(["run", str(path), "--no-export", "--quiet"]) == 0 and (spec.export_dir / "notes.txt").read_text() == "keep me"


def test_export_without_completed_trials_fails_clearly(tmp_path: Path, tiny_bert: Path, broken_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + "search: {n_trials: 1}\n")
    path.write_text(path.read_text().replace(f"path: {tiny_bert}}}", f"path: {broken_bert}}}"))
    assert main(["run", str(path), "--quiet"]) == 2  # its one trial fails: the model cannot be loaded
    capsys.readouterr()
    assert main(["export", str(path), "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err
    assert "no trial completed, so there is nothing to select or export" in said and "training in" not in said  # before any data is read


def test_predict_writes_one_row_per_input_row(exported: Path, tmp_path: Path) -> None:
    spec = load_spec(exported)
    rows = classification_rows(13, seed=4)
    source = write_csv(tmp_path / "in.csv", [{"text": r["text"], "id": i} for i, r in enumerate(rows)])
    assert main(["predict", str(spec.export_dir), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    with (tmp_path / "out.csv").open() as handle:
        out = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in out] == list(range(13))
    assert all(r["prediction"] in ("neg", "pos") and 0.5 <= float(r["score"]) <= 1.0 for r in out)
    assert set(json.loads(out[0]["scores"])) == {"neg", "pos"}
    assert main(["predict", str(spec.export_dir), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert set(first["scores"]) == {"neg", "pos"} and abs(sum(first["scores"].values()) - 1) < 1e-3  # an object, not a string


def test_predict_leaves_rows_with_an_empty_input_without_a_prediction(exported: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Predicting from an empty cell would answer for the text 'None': the row keeps its place with empty fields, and
    the command names it."""
    model = str(load_spec(exported).export_dir)
    source = write_csv(tmp_path / "in.csv", [{"id": 0, "text": "a good film"}, {"id": 1, "text": ""}, {"id": 2, "text": "bad"}])
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    captured = capsys.readouterr()
    assert "wrote 2 predictions" in captured.out
    assert "1 row of" in captured.err and "has an empty input" in captured.err and "row 1 (counting data rows from 0)" in captured.err, captured.err
    with (tmp_path / "out.csv").open() as handle:
        out = list(csv.DictReader(handle))
    assert [r["id"] for r in out] == ["0", "1", "2"]
    assert out[1]["prediction"] == out[1]["score"] == "" and out[0]["prediction"] in ("neg", "pos")
    source = write_csv(tmp_path / "none.csv", [{"id": 0, "text": ""}])
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "none_out.csv")]) == 2
    assert "has an empty 'text': nothing to predict" in capsys.readouterr().err


def test_predict_reads_a_folder_saved_with_datasets_and_picks_its_split(exported: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A folder saved with save_to_disk was read, but from a DatasetDict without a 'train' split the error said "set 'split'
    on the source", which predict has no way to do."""
    import datasets

    model = str(load_spec(exported).export_dir)
    texts = [r["text"] for r in classification_rows(5, seed=2)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": texts[:3]})}).save_to_disk(str(tmp_path / "only"))
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": texts[:3]}),
                          "valid": datasets.Dataset.from_dict({"text": texts[3:]})}).save_to_disk(str(tmp_path / "two"))

    def predict(*args: str) -> tuple[int, list[dict[str, str]] | str]:
        code = main(["predict", model, *args, "--output", str(tmp_path / "out.csv")])
        if code:
            return code, capsys.readouterr().err.strip()
        with (tmp_path / "out.csv").open() as handle:
            return code, list(csv.DictReader(handle))

    code, rows = predict("--input", str(tmp_path / "one"))
    assert code == 0 and [r["text"] for r in rows] == texts
    code, rows = predict("--input", str(tmp_path / "only"))  # its only split, whatever its name
    assert code == 0 and [r["text"] for r in rows] == texts[:3]
    code, rows = predict("--input", str(tmp_path / "two"), "--split", "valid")
    assert code == 0 and [r["text"] for r in rows] == texts[3:]
    assert predict("--input", str(tmp_path / "two")) == (
        2, f"hpsearch predict: --input {tmp_path / 'two'} holds the splits test, valid, not train; pick one with --split (--split test, say)")
    assert predict("--input", str(tmp_path / "one"), "--split", "test") == (
        2, f"hpsearch predict: --split test: --input {tmp_path / 'one'} holds no splits (--split picks one from a folder saved with "
           "datasets' save_to_disk from a DatasetDict); leave --split out")


def test_predict_says_how_far_it_is(exported: Path, tmp_path: Path) -> None:
    from hpsearch.predict import predict_file

    source = write_csv(tmp_path / "in.csv", [{"text": r["text"]} for r in classification_rows(5, seed=1)])
    said: list[str] = []
    predict_file(load_spec(exported).export_dir, source, tmp_path / "out.csv", batch_size=2, say=said.append, every=0)
    assert [m.split(" rows")[0] for m in said] == [f"predicted {n} of 5" for n in range(1, 6)], said


def test_predict_names_missing_columns(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path / "in.csv", [{"sentence": "good film"}])
    assert main(["predict", str(load_spec(exported).export_dir), "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 2
    assert "lacks the column(s) ['text']" in capsys.readouterr().err
    assert main(["predict", str(load_spec(exported).export_dir), "--input", str(tmp_path / "nothing.csv"), "--output", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"hpsearch predict: --input {tmp_path / 'nothing.csv'}: no such file; check the path"
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    assert main(["predict", str(load_spec(exported).export_dir), "--input", str(tmp_path / "sheet.xlsx"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "cannot tell the format from its suffix '.xlsx'; give a .csv, .tsv, .json, .jsonl or .parquet file" in capsys.readouterr().err


def test_predict_reads_a_field_from_the_column_given(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(load_spec(exported).export_dir)
    rows = classification_rows(4, seed=5)
    source = write_csv(tmp_path / "in.csv", [{"review": r["text"]} for r in rows])
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 2
    assert "lacks the column(s) ['text'] the model reads (columns: ['review']); rename them, or name the column to read with " \
           "--column text=NAME" in capsys.readouterr().err
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "o.csv"), "--column", "text=review"]) == 0
    plain = write_csv(tmp_path / "plain.csv", [{"text": r["text"]} for r in rows])
    assert main(["predict", model, "--input", str(plain), "--output", str(tmp_path / "p.csv")]) == 0
    with (tmp_path / "o.csv").open() as renamed, (tmp_path / "p.csv").open() as same:
        assert [r["prediction"] for r in csv.DictReader(renamed)] == [r["prediction"] for r in csv.DictReader(same)]
    for given, said in (("review", "--column takes FIELD=NAME (text=review, say), got 'review'"),
                        ("sentence=review", "--column sentence=...: 'sentence' is not a field the model reads; its fields are text "
                                            "(the study's column 'text')")):
        assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "x.csv"), "--column", given]) == 2
        assert capsys.readouterr().err.strip() == f"hpsearch predict: {said}"


def test_predict_names_an_output_it_cannot_write_before_it_predicts(exported: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = str(load_spec(exported).export_dir)
    source = write_csv(tmp_path / "in.csv", [{"text": "good film"}])
    (tmp_path / "out.csv").mkdir()
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"hpsearch predict: --output {tmp_path / 'out.csv'} is a folder; give a file in it (predictions.csv, say)"
    (tmp_path / "results").write_text("")
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "results" / "p.jsonl")]) == 73
    assert f"a file is where a folder is to be made: {tmp_path / 'results'}" in capsys.readouterr().err


def test_predict_refuses_a_batch_size_under_one(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path / "in.csv", [{"text": "good film"}])
    for size in ("0", "-3"):
        assert main(["predict", str(load_spec(exported).export_dir), "--input", str(source), "--output", str(tmp_path / "o.csv"),
                     "--batch-size", size]) == 2
        assert capsys.readouterr().err.strip() == f"hpsearch predict: --batch-size must be at least 1, but got {size}"
    assert not (tmp_path / "o.csv").exists()


def test_predict_reads_and_writes_another_separator(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = classification_rows(5, seed=2)
    source = tmp_path / "in.csv"
    source.write_text("id;text\n" + "".join(f"{i};{r['text']}, really\n" for i, r in enumerate(rows)), encoding="utf-8")
    model = str(load_spec(exported).export_dir)
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "o.csv")]) == 2
    assert "reads as one column 'id;text': the file separates its fields with ';'; pass --delimiter ';'" in capsys.readouterr().err
    assert main(["predict", model, "--input", str(source), "--output", str(tmp_path / "o.csv"), "--delimiter", ";"]) == 0
    with (tmp_path / "o.csv").open() as handle:
        out = list(csv.DictReader(handle, delimiter=";"))
    assert [r["id"] for r in out] == ["0", "1", "2", "3", "4"] and all(r["prediction"] in ("neg", "pos") for r in out)


def test_token_classification_export_serves_entities(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import pipeline

    from hpsearch.predict import predict_file

    space = SPACE.replace("epochs: 2", "epochs: 4")
    path = toy_study(tmp_path, tiny_bert, task="token-classification", rows=120, extra=space + "search: {n_trials: 1}\n")
    assert run_study(path, say=_quiet) == 0
    spec = load_spec(path)
    tagger = pipeline("token-classification", model=str(spec.export_dir))
    entities = tagger("alice lives in paris")
    assert {e["entity"] for e in entities} <= {"B-PER", "B-LOC", "O"}
    assert any(e["entity"] == "B-LOC" and e["word"] == "paris" for e in entities), entities
    source = write_jsonl(tmp_path / "in.jsonl", [{"tokens": r["tokens"]} for r in ner_rows(7, seed=3)])
    assert main(["predict", str(spec.export_dir), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 7 and all(len(r["predicted_tags"]) == len(r["tokens"]) for r in out)
    # The csv it writes holds each word list as JSON: read back, those are words again, as are words separated by spaces.
    assert main(["predict", str(spec.export_dir), "--input", str(tmp_path / "out.jsonl"), "--output", str(tmp_path / "out.csv")]) == 0
    # Words outside ASCII are written as they are in both formats, not as \u escapes.
    accents = write_jsonl(tmp_path / "accents.jsonl", [{"tokens": ["zoë", "lives", "in", "münchen"]}])
    for name in ("accents_out.csv", "accents_out.jsonl"):
        assert main(["predict", str(spec.export_dir), "--input", str(accents), "--output", str(tmp_path / name)]) == 0
    with (tmp_path / "accents_out.csv").open(encoding="utf-8") as handle:
        assert next(csv.DictReader(handle))["tokens"] == '["zoë", "lives", "in", "münchen"]'
    assert '"tokens": ["zoë", "lives", "in", "münchen"]' in (tmp_path / "accents_out.jsonl").read_text(encoding="utf-8")
    words = ner_rows(7, seed=3)[0]["tokens"]
    source = write_csv(tmp_path / "words.csv", [{"tokens": json.dumps(words)}, {"tokens": " ".join(words)}, {"tokens": ""}])
    assert main(["predict", str(spec.export_dir), "--input", str(source), "--output", str(tmp_path / "words.jsonl")]) == 0
    listed, spaced, empty = [json.loads(line) for line in (tmp_path / "words.jsonl").read_text().splitlines()]
    said: list[str] = []
    predict_file(spec.export_dir, source, tmp_path / "words.jsonl", batch_size=1, say=said.append, every=0)
    assert [m.split(" rows")[0] for m in said] == ["predicted 1 of 2", "predicted 2 of 2"], said
    assert listed["predicted_tags"] == spaced["predicted_tags"] == out[0]["predicted_tags"] and empty["predicted_tags"] is None


def test_a_regression_export_serves_the_predicted_number_as_the_score(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import pipeline

    from toydata import regression_rows

    path = toy_study(tmp_path, tiny_bert, task="regression", rows=60, extra=SPACE + "search: {n_trials: 1}\n")
    assert run_study(path, say=_quiet) == 0
    folder = load_spec(path).export_dir
    texts = [r["text"] for r in regression_rows(5, seed=7)]
    outputs = pipeline("text-classification", model=str(folder))(texts)
    served = [o["score"] for o in outputs]
    assert {o["label"] for o in outputs} == {"prediction"}  # named as predict's column, not LABEL_0
    source = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts])
    assert main(["predict", str(folder), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    with (tmp_path / "out.csv").open() as handle:
        predicted = [float(r["prediction"]) for r in csv.DictReader(handle)]
    assert predicted == pytest.approx(served, abs=1e-5) and len(set(served)) > 1  # the number itself, not a squashed probability
    assert 'model = pipeline("text-classification", model="path/to/this/folder")  # each output\'s "score" is the predicted number' in (
        folder / "README.md").read_text()


def test_a_pair_export_is_served_pairs_as_its_card_says(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import pipeline

    from toydata import pair_rows

    path = toy_study(tmp_path, tiny_bert, task="text-pair-classification", rows=60, extra=SPACE + "search: {n_trials: 1}\n")
    assert run_study(path, say=_quiet) == 0
    folder = load_spec(path).export_dir
    pairs = pair_rows(6, seed=8)
    served = [o["label"] for o in pipeline("text-classification", model=str(folder))([{"text": r["first"], "text_pair": r["second"]}
                                                                                        for r in pairs])]
    source = write_csv(tmp_path / "in.csv", [{"first": r["first"], "second": r["second"]} for r in pairs])
    assert main(["predict", str(folder), "--input", str(source), "--output", str(tmp_path / "out.csv")]) == 0
    with (tmp_path / "out.csv").open() as handle:
        assert [r["prediction"] for r in csv.DictReader(handle)] == served
    assert '# call it with {"text": first, "text_pair": second} per pair' in (folder / "README.md").read_text()


def test_retention_keeps_only_the_top_checkpoints(tmp_path: Path, tiny_bert: Path) -> None:
    extra = SPACE.replace("epochs: 2", "epochs: 1") + "search: {n_trials: 5, pruner: {name: none}}\nexport: {policy: best-fold, keep_top_k: 2}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=_quiet) == 0
    spec = load_spec(path)
    kept = sorted(p.name for p in (spec.out_dir / "checkpoints").iterdir())
    assert len(kept) == 2
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert f"trial-{report['selected']['trial']}" in kept
    assert report["final_policy"] == "best-fold" and (spec.export_dir / "config.json").is_file()


def test_the_test_score_is_the_served_score_whatever_the_training_precision(tmp_path: Path, tiny_bert: Path, monkeypatch) -> None:
    """Trials train in bf16 here; the reported test score is computed in fp32, as pipeline() serves the export."""
    import hpsearch.finetune.core as core
    from sklearn.metrics import f1_score
    from transformers import pipeline

    from hpsearch.data import prepare_data

    seen: list[tuple[str, object]] = []
    evaluate = core.evaluate
    monkeypatch.setattr(core, "evaluate", lambda model, evaluation, device, dtype, batch: seen.append((evaluation.split.name, dtype)) or evaluate(model, evaluation, device, dtype, batch))
    write_csv(tmp_path / "test.csv", classification_rows(40, seed=9))
    path = toy_study(tmp_path, tiny_bert, rows=90, extra=SPACE + "search: {n_trials: 2, pruner: {name: none}}\nexecution: {precision: bf16}\n")
    path.write_text(path.read_text().replace("  train: cls.csv\n", "  train: cls.csv\n  test: test.csv\n"))
    assert run_study(path, say=_quiet) == 0
    assert ("test", None) in seen and all(dtype is None for split, dtype in seen if split == "test")
    spec = load_spec(path)
    report = json.loads((spec.out_dir / "selection.json").read_text())
    data = prepare_data(spec)
    test = data.splits["test"]
    served = [o["label"] for o in pipeline("text-classification", model=str(spec.export_dir))(test.columns["text"], truncation=True, max_length=spec.data.max_length)]
    gold = [data.label_map.labels[i] for i in test.columns["label"]]
    assert report["test_scores"]["macro_f1"] == pytest.approx(f1_score(gold, served, average="macro"), abs=1e-12)


def test_an_export_that_lands_during_ours_is_moved_aside_and_ours_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one study that finish together both export: neither fails, the last one's folder stays."""
    from hpsearch import export

    target, staging = tmp_path / "model", tmp_path / ".model.staging"
    for folder, text in ((target, "the previous export"), (staging, "ours")):
        folder.mkdir()
        (folder / "hpsearch.json").write_text(text)
    real = Path.rename
    landed: list[Path] = []

    def rename(self: Path, to: Path) -> Path:
        if self == staging and not landed:  # the other run's folder lands between our two moves
            landed.append(Path(to))
            Path(to).mkdir()
            (Path(to) / "hpsearch.json").write_text("the other run's")
        return real(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    export._put_in_place(staging, target)
    assert landed == [target] and (target / "hpsearch.json").read_text() == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left aside


def test_iobes_tags_export_named_as_the_pipeline_groups_entities(tmp_path: Path, tiny_bert: Path) -> None:
    """IOBES tags in the config: transformers' pipeline split 'alice smith' (B-PER E-PER) into two people and merged
    two neighbouring single-word places (S-LOC S-LOC) into one."""
    import torch
    from transformers import AutoModelForTokenClassification, pipeline

    path = toy_study(tmp_path, tiny_bert, task="token-classification", rows=60, extra=SPACE.replace("epochs: 2", "epochs: 1")
                     + "search: {n_trials: 1}\n")
    rows = [{"tokens": [first, "smith", "in", city, "rome"], "tags": ["B-PER", "E-PER", "O", "S-LOC", "S-LOC"]}
            for first, city in zip(["alice", "bob", "carol", "dave", "erin"] * 12, ["paris", "london", "berlin"] * 20)]
    write_jsonl(tmp_path / "ner.jsonl", rows)
    assert run_study(path, say=_quiet) == 0
    folder = load_spec(path).export_dir
    trained = json.loads((folder / "hpsearch.json").read_text())["labels"]
    assert sorted(trained) == ["B-PER", "E-PER", "O", "S-LOC"]
    tagger = pipeline("token-classification", model=str(folder))
    served = tagger.model.config.id2label
    assert [served[trained.index(tag)] for tag in ("B-PER", "E-PER", "O", "S-LOC")] == ["B-PER", "I-PER", "O", "B-LOC"]
    words, tags, start = ["alice", "smith", "in", "paris", "rome"], ["B-PER", "E-PER", "O", "S-LOC", "S-LOC"], 0
    predicted = []
    for index, (word, tag) in enumerate(zip(words, tags)):
        predicted.append({"entity": served[trained.index(tag)], "score": 0.9, "index": index + 1, "word": word,
                          "start": start, "end": start + len(word)})
        start += len(word) + 1
    groups = [(g["entity_group"], g["word"]) for g in tagger.group_entities(predicted) if g["entity_group"] != "O"]
    assert groups == [("PER", "alice smith"), ("LOC", "paris"), ("LOC", "rome")]
    # predict answers in the training tags: a model made to tag every word S-LOC says S-LOC, not the config's B-LOC
    model = AutoModelForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias[trained.index("S-LOC")] = 1e4
    model.save_pretrained(folder)
    source = write_jsonl(tmp_path / "in.jsonl", [{"tokens": words}])
    assert main(["predict", str(folder), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["predicted_tags"] == ["S-LOC"] * 5
