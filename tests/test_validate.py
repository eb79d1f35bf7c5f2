"""What `validate` (and so every command) catches before anything is trained: each problem at once, with the fix."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.errors import SpecError
from hpsearch.spec import load_spec
from toydata import classification_rows, write_csv, write_jsonl

HEAD = "name: v\ntask: text-classification\n"


def _folder(tmp_path: Path, layers: int = 2) -> Path:
    write_csv(tmp_path / "d.csv", classification_rows(20))
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": layers}))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    return tmp_path


def _load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + body)
    return load_spec(path)


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, body)
    return caught.value.problems


def test_a_folder_an_empty_file_or_one_not_in_utf8_given_as_the_study_is_named(tmp_path: Path) -> None:
    (tmp_path / "reviews.yaml").write_text("name: r\n")
    (tmp_path / "empty.yaml").write_text("\n")
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    expected = {tmp_path: f"{tmp_path} is a folder; give the study file (a .yaml file) (empty.yaml, latin.yaml, reviews.yaml in it)",
                tmp_path / "empty.yaml": f"{tmp_path / 'empty.yaml'}: the study file must be a mapping of settings (name, task, data, "
                                         "models, ...), it is empty",
                tmp_path / "latin.yaml": f"cannot read study file {tmp_path / 'latin.yaml'}: it is not UTF-8 text (invalid continuation "
                                         "byte at byte 9); save it as UTF-8"}
    for path, said in expected.items():
        with pytest.raises(SpecError) as caught:
            load_spec(path)
        assert caught.value.problems == [said]


def test_numbers_are_read_as_users_write_them(tmp_path: Path) -> None:
    _folder(tmp_path)
    spec = _load(tmp_path, "data: {train: d.csv}\nmodels: [{name: m, path: m}]\n"
                           "space:\n  learning_rate: 2e-5\n  adam_epsilon: 1e-8\n  weight_decay: [0, 3E-4]\n"
                           "  warmup_ratio: {type: float, low: 0, high: 1e-1}\n")
    assert spec.space.learning_rate.value == 2e-5 and spec.space.adam_epsilon.value == 1e-8
    assert spec.space.weight_decay.choices == [0, 3e-4] and spec.space.warmup_ratio.high == 0.1
    assert spec.search.n_trials == 20  # integers stay integers
    problems = _problems(tmp_path, "data: {train: d.csv}\nmodels: [{name: m, path: m}]\nspace: {learning_rate: '2e-5'}\n")
    assert problems and "learning_rate must be a number > 0, but got '2e-5'" in problems[0]  # quoted: a string, as written


def test_a_study_without_a_trial_count_needs_a_time_budget(tmp_path: Path) -> None:
    _folder(tmp_path)
    body = "data: {train: d.csv}\nmodels: [{name: m, path: m}]\nsearch: {n_trials: null%s}\n"
    problems = _problems(tmp_path, body % "")
    assert len(problems) == 1 and "n_trials: null needs a time budget: set search.timeout (seconds)" in problems[0]
    spec = _load(tmp_path, body % ", timeout: 900")
    assert spec.search.trial_limit == float("inf") and spec.search.done_text(3) == "3 trials (budget 900 s)"


def test_a_missing_label_column_is_found_from_the_header(tmp_path: Path) -> None:
    _folder(tmp_path)
    problems = _problems(tmp_path, "data: {train: d.csv, columns: {label: sentiment}}\nmodels: [{name: m, path: m}]\n")
    assert problems == ["data.columns.label: the train data d.csv has no column 'sentiment' (its columns: text, label, group); "
                        "set data.columns.label to one of them"]


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet"])
def test_columns_are_checked_in_every_format(tmp_path: Path, suffix: str) -> None:
    _folder(tmp_path)
    rows = [{"review": r["text"], "label": r["label"]} for r in classification_rows(10)]
    path = tmp_path / f"d.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    problems = _problems(tmp_path, f"data: {{train: d.{suffix}}}\nmodels: [{{name: m, path: m}}]\ncv: {{group_column: movie}}\n")
    assert [p.split(":")[0] for p in problems] == ["data.columns.text", "cv.group_column"], problems
    assert "its columns: review, label" in problems[0]


def test_schema_errors_do_not_hide_missing_files_and_packages(tmp_path: Path) -> None:
    _folder(tmp_path)
    problems = _problems(tmp_path, "data: {train: nowhere.csv}\nmodels:\n  - {name: m, package: no_such_package_xyz}\n"
                                   "  - {name: n, path: m, num_layers: 0}\ncv: {folds: 1}\nsearch: {storage: 'redis://h'}\n")
    text = "\n".join(problems)
    for part in ("cv.folds", "models[1].num_layers", "data.train.path: file not found", "package 'no_such_package_xyz' is not installed",
                 "unknown database kind 'redis'"):
        assert part in text, text


def test_a_model_folder_without_config_or_weights_is_named_before_any_run(tmp_path: Path) -> None:
    _folder(tmp_path)
    (tmp_path / "bare").mkdir()
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    problems = _problems(tmp_path, "data: {train: d.csv}\nmodels:\n  - {name: a, path: bare}\n  - {name: b, path: noweights}\n"
                                   "  - {name: c, path: m}\n")
    assert len(problems) == 2, problems
    assert problems[0].startswith("models[0].path: no config.json in ") and "save_pretrained" in problems[0]
    assert problems[1].startswith("models[1].path: no weights file in ") and "model.safetensors" in problems[1], problems
    (tmp_path / "noweights" / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "bare" / "config.json").write_text("{}")
    (tmp_path / "bare" / "model.safetensors.index.json").write_text("{}")
    assert [m.name for m in _load(tmp_path, "data: {train: d.csv}\nmodels:\n  - {name: a, path: bare}\n  - {name: b, path: noweights}\n").models] == ["a", "b"]


def test_scopes_that_cannot_apply_are_rejected_by_candidate(tmp_path: Path) -> None:
    _folder(tmp_path, layers=2)
    problems = _problems(tmp_path, "data: {train: d.csv}\nmodels:\n  - {name: m, path: m}\n  - {name: cut, path: m, num_layers: 1}\n"
                                   "  - {name: deep, path: m, num_layers: 3}\nspace: {scope: [full, freeze-2]}\n")
    assert any(p.startswith("models[2].num_layers: deep has 2 layers, so it cannot keep 3") for p in problems), problems
    assert any(p.startswith("space.scope: 'freeze-2' cannot apply to candidate cut: it has 1 layers") for p in problems), problems
    assert not any("candidate m:" in p for p in problems)


@pytest.mark.parametrize("url,part", [
    ("mysql://u@h/db", "the database driver for 'mysql://u@h/db' is not installed"),
    ("not a url", "is not a database URL"),
    ("postgresql://alice:secret@h/db", None),
    ("postgres://alice:secret@h/db", None),
])
def test_storage_urls_are_checked_without_connecting(tmp_path: Path, url: str, part: str | None) -> None:
    _folder(tmp_path)
    body = f"data: {{train: d.csv}}\nmodels: [{{name: m, path: m}}]\nsearch: {{storage: '{url}'}}\n"
    if part is None:
        assert _load(tmp_path, body).search.storage == url
    else:
        problems = _problems(tmp_path, body)
        assert len(problems) == 1 and part in problems[0] and "secret" not in problems[0]


def test_a_sqlite_storage_whose_folder_is_not_there_is_named_before_a_worker_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's 'unable to open database file' read as a database out of reach: `run` waited out storage_patience."""
    _folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    body = "data: {train: d.csv}\nmodels: [{name: m, path: m}]\nsearch: {storage: '%s'}\n"
    problems = _problems(tmp_path, body % f"sqlite:///{tmp_path}/nodir/study.db".replace(":////", ":///", 1))
    assert problems == [f"search.storage: sqlite:///{str(tmp_path)[1:]}/nodir/study.db names {str(tmp_path)[1:]}/nodir/study.db relative "
                        f"to the folder the command runs in ({tmp_path}), and {tmp_path}{tmp_path}/nodir does not exist; create it, or "
                        f"write four slashes for an absolute path (sqlite:///{tmp_path}/nodir/study.db is {tmp_path}/nodir/study.db)"], problems
    problems = _problems(tmp_path, body % f"sqlite:///{tmp_path}/afile/study.db")
    assert problems == [f"search.storage: the folder {tmp_path}/afile of the SQLite database {tmp_path}/afile/study.db is a file; "
                        "move that file, or correct the path"], problems
    for fine in (f"sqlite:///{tmp_path}/study.db", "sqlite:///study.db", "sqlite://"):
        assert _load(tmp_path, body % fine).search.storage == fine


def test_postgres_scheme_means_postgresql() -> None:
    from hpsearch.storage import normalise_storage_url

    assert normalise_storage_url("postgres://u@h:5432/db").startswith("postgresql")
    assert normalise_storage_url("postgres://u@h:5432/db").endswith("://u@h:5432/db")


def test_validate_shows_each_candidates_space_and_warns_about_a_large_subsample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    write_csv(tmp_path / "t.csv", classification_rows(7))
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "data: {train: d.csv, test: t.csv, subsample: {test: 500}}\n"
                           "models:\n  - {name: a, path: m, space: {scope: [freeze-1, head]}}\n  - {name: b, path: m, space: {scope: full}}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: data.subsample.test asks for 500 rows but the test data has 7: all of them are used; lower data.subsample.test to at most 7" in out
    assert "    scope: one of 'freeze-1', 'head' (this candidate's own)" in out
    assert "    scope: 'full' (fixed) (this candidate's own)" in out
    assert "scope: 'full' (fixed) - every candidate overrides it" in out
    assert "lora_r:" not in out and "  (lora_r, lora_alpha, lora_dropout: unused, as no candidate's scope can be 'lora')\n" in out


def test_validate_lists_the_lora_settings_where_a_candidate_can_train_lora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "data: {train: d.csv}\nmodels:\n  - {name: a, path: m}\n  - {name: b, path: m, space: {scope: [full, lora]}}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  lora_r: 8 (fixed)\n" in out and "unused" not in out


def test_validate_says_where_a_candidate_takes_fewer_tokens_than_max_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}))
    (tmp_path / "r" / "model.safetensors").write_bytes(b"")
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "data: {train: d.csv, max_length: 1024}\nmodels:\n  - {name: a, path: m}\n  - {name: r, path: r}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"  r: {tmp_path / 'r'}; takes at most 512 tokens, so its inputs are cut there (data.max_length 1024)\n" in out
    assert f"  a: {tmp_path / 'm'}\n" in out  # no positions in its config: nothing to say


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_read_only_commands_fail_fast_on_an_unreachable_storage(tmp_path: Path, command: str) -> None:
    _folder(tmp_path)
    port = _closed_port()
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + f"data: {{train: d.csv}}\nmodels: [{{name: m, path: m}}]\ntracking: {{enabled: false}}\n"
                           f"search: {{storage: 'postgresql://postgres@127.0.0.1:{port}/nope', storage_patience: 300}}\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "hpsearch", command, str(path)], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot reach the study storage postgresql://postgres@127.0.0.1:{port}/nope" in result.stderr
    assert "refused" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert elapsed < 60, elapsed  # far from the 300 s patience that trial-running commands have


def test_validate_says_where_the_test_rows_come_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    for data, said in (("{train: d.csv}", "data.test: none, so the winner is not scored on held-out data"),
                       ("{train: d.csv, holdout: 0.25}", "data.test: one row in 4 of the training data (25 %), held out of the search"),
                       ("{train: d.csv, test: d.csv}", "data.test: ")):
        (tmp_path / "study.yaml").write_text(HEAD + f"data: {data}\nmodels: [{{name: m, path: m}}]\n")
        assert main(["validate", str(tmp_path / "study.yaml")]) == 0
        out = capsys.readouterr().out
        assert said in out and out.count("data.test:") == 1, out


def test_stratify_asked_of_a_task_whose_folds_are_not_stratified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    write_jsonl(tmp_path / "ner.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "B-x"]}] * 6)
    ner = "name: v\ntask: token-classification\ndata: {train: ner.jsonl}\nmodels: [{name: m, path: m}]\n"
    (tmp_path / "study.yaml").write_text(ner + "cv: {stratify: true}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "study.yaml")
    (problem,) = caught.value.problems
    assert problem.endswith(":5: cv.stratify needs one class label per row, which task token-classification does not have "
                            "(its folds are cut without stratification); remove cv.stratify"), problem
    (tmp_path / "study.yaml").write_text(ner)
    assert main(["validate", str(tmp_path / "study.yaml")]) == 0
    assert "scoring: 5-fold CV (not stratified, seed 0)" in capsys.readouterr().out  # as its folds are cut


def test_lora_beside_another_scope_under_one_learning_rate_is_warned_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path)
    shared = "data: {train: d.csv}\nmodels: [{name: m, path: m}]\nspace: {scope: [full, lora]}\n"
    own = ("data: {train: d.csv}\nmodels:\n  - {name: m, path: m}\n  - {name: m-lora, path: m, space: {scope: lora, "
           "learning_rate: {type: float, low: 5.0e-4, high: 5.0e-3, log: true}}}\n")
    for body, warned in ((shared, True), (own, False)):
        (tmp_path / "study.yaml").write_text(HEAD + body)
        assert main(["validate", str(tmp_path / "study.yaml")]) == 0
        out = capsys.readouterr().out
        assert ("warning: candidate m searches scope lora beside full with one learning_rate" in out) is warned, out
        assert ("give LoRA a candidate entry of its own" in out) is warned


def test_validate_names_a_data_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate read the file to count its rows and said nothing; run refused it only when it read the data."""
    _folder(tmp_path)
    (tmp_path / "t.csv").write_bytes("text,label\ngood,pos\ncaf\u00e9 bad,neg\n".encode("latin-1"))
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "data: {train: d.csv, test: t.csv}\nmodels: [{name: m, path: m}]\n")
    assert main(["validate", str(path)]) == 2
    said = capsys.readouterr().err
    assert f"data.test: {tmp_path / 't.csv'} is not UTF-8 text: line 3 holds the byte 0xe9; save the file as UTF-8" in said, said
    (tmp_path / "t.csv").write_text("text,label\ngood,pos\ncaf\u00e9 bad,neg\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0


def test_validate_reads_the_data_as_run_does_and_names_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate checked the study file and the data's columns only: a label the training data never saw, an empty
    label or a QA answer away from its start passed it, and run refused them only when it read the data."""
    _folder(tmp_path)
    test = classification_rows(6, seed=1)
    test[2]["label"] = "meh"
    write_csv(tmp_path / "t.csv", test)
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "data: {train: d.csv, test: t.csv}\nmodels: [{name: m, path: m}]\n")
    assert main(["validate", str(path)]) == 2
    said = capsys.readouterr().err
    assert f"{tmp_path / 't.csv'}: test row 2 (counting data rows from 0): label 'meh' never occurs in the training data" in said, said
    test[2]["label"] = "pos"
    write_csv(tmp_path / "t.csv", [*test, classification_rows(20)[0]])  # one of the training rows: warned of
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "data: 20 train rows, 7 test rows (read and checked as run reads them)\n  training labels: neg (10), pos (10)\n" in out, out
    assert "warning: 1 of 7 test rows also occur in the training data" in out
    assert not load_spec(path).out_dir.exists()  # validate writes nothing: the data's cache went to a temporary folder
    (tmp_path / "study.yaml").write_text(HEAD + "data: {train: {hub: someone/reviews}}\nmodels: [{name: m, path: m}]\n")
    assert main(["validate", str(path)]) == 0
    assert "data: not read (data.train on the hub); run checks it when it reads it" in capsys.readouterr().out
    write_csv(tmp_path / "r.csv", [{"text": "a", "label": 1.0}, {"text": "b", "label": 2.0}, {"text": "c", "label": 6.0}])
    (tmp_path / "study.yaml").write_text("name: v\ntask: regression\ndata: {train: r.csv}\nmodels: [{name: m, path: m}]\ncv: {folds: 3}\n")
    assert main(["validate", str(path)]) == 0
    assert "data: 3 train rows (read and checked as run reads them)\n  training targets: mean 3, standard deviation 2.16, from 1 to 6\n" in capsys.readouterr().out
    (tmp_path / "study.yaml").write_text(HEAD + "data: {train: d.csv}\nmodels: [{name: m, path: m}]\ncv: {folds: 25}\n")
    assert main(["validate", str(path)]) == 2  # folds cut as run cuts them: refused here, not only once run reads the data
    assert ("25-fold cross-validation needs at least 25 rows, but the training data has 20; lower cv.folds"
            in capsys.readouterr().err)


def test_more_cpu_workers_than_cores_are_warned_of_and_threads_come_from_the_usable_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """4 CPU workers on 2 cores took turns, each with its own model in memory, without a word; and the workers' threads came
    from every CPU of the machine, not the ones this process may use (taskset, a batch job's share of a node)."""
    import hpsearch.workers as workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    _folder(tmp_path)
    path = tmp_path / "study.yaml"
    body = "data: {train: d.csv}\nmodels: [{name: a, path: m}]\nexecution: {devices: cpu, workers_per_device: WORKERS}\n"
    path.write_text(HEAD + body.replace("WORKERS", "4"))
    assert main(["validate", str(path)]) == 0
    assert ("warning: 4 CPU workers on 2 core(s): each gets 1 thread and they take turns on the cores, each with its own copy of the "
            "model and data in memory; set execution.workers_per_device to at most 2") in capsys.readouterr().out
    path.write_text(HEAD + body.replace("WORKERS", "2"))
    assert main(["validate", str(path)]) == 0
    assert "CPU workers on" not in capsys.readouterr().out
    path.write_text(HEAD + body.replace("WORKERS", "1"))
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 64)  # a node of 64 CPUs, of which this job may use 2
    assert [(slot.threads, slot.env["OMP_NUM_THREADS"]) for slot in workers.plan_slots(load_spec(path))] == [(2, "2")]


def test_validate_warns_where_random_draws_may_leave_a_candidate_untried(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import itertools

    from hpsearch.summary import untried_odds_lines

    _folder(tmp_path)
    two = "data: {train: d.csv}\nmodels: [{name: a, path: m}, {name: b, path: m}]\n"
    three = "data: {train: d.csv}\nmodels: [{name: a, path: m}, {name: b, path: m}, {name: c, path: m}]\n"

    def odds(body: str) -> float | None:
        lines = untried_odds_lines(_load(tmp_path, body))
        return float(lines[0].split("in about ")[1].split("%")[0]) / 100 if lines else None

    def never_all(candidates: int, draws: int) -> float:  # every sequence of draws, counted
        sequences = list(itertools.product(range(candidates), repeat=draws))
        return sum(len(set(s)) < candidates for s in sequences) / len(sequences)

    # 2 of TPE's random start-up, then 2 guided: half the studies try only one candidate
    assert odds(two + "search: {n_trials: 4, sampler: {options: {n_startup_trials: 2}}}\n") == pytest.approx(never_all(2, 2), abs=0.005)
    assert odds(three + "search: {n_trials: 5, sampler: {name: random}}\n") == pytest.approx(never_all(3, 5), abs=0.005)
    # one candidate enqueued: the other two must each be drawn in the 4 random trials left
    left = 1 - sum(all(c in s for c in (1, 2)) for s in itertools.product(range(3), repeat=4)) / 3**4
    assert odds(three + "search: {n_trials: 5, sampler: {name: random}, enqueue: [{model: a}]}\n") == pytest.approx(left, abs=0.005)
    assert odds(two + "search: {n_trials: 10, sampler: {options: {n_startup_trials: 10}}}\n") is None  # 0.2 %: not warned of
    assert odds(two + "search: {n_trials: 4, enqueue: [{model: a}, {model: b}]}\n") is None  # each tried first
    assert odds("data: {train: d.csv}\nmodels: [{name: a, path: m}]\nsearch: {n_trials: 2}\n") is None  # one candidate
    said = untried_odds_lines(_load(tmp_path, two + "search: {n_trials: 1, enqueue: [{model: a}]}\n"))
    assert said[0].startswith("warning: the enqueued trials take all 1 random trial(s), so b is never drawn at random: "), said
    (tmp_path / "study.yaml").write_text(HEAD + two + "search: {n_trials: 4, sampler: {options: {n_startup_trials: 2}}}\n")
    assert main(["validate", str(tmp_path / "study.yaml")]) == 0
    out = capsys.readouterr().out
    assert ("warning: the study's 2 random draw(s) of the model among 2 candidates leave a or b untried in about 50% of studies, "
            "and the 2 trial(s) tpe guides after them may not draw it either") in out, out
