"""Extractive question answering: windows, decoding, SQuAD metrics, grouped folds, a whole study, export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpsearch.cli import main
from hpsearch.data import prepare_data
from hpsearch.data.prepare import Split
from hpsearch.errors import DataError, HpsearchError
from hpsearch.runner import run_study
from hpsearch.session import make_folds
from hpsearch.storage import make_storage
from hpsearch.spec import load_spec
from hpsearch.tasks import get_task
from hpsearch.tasks.qa_pipeline import best_spans
from hpsearch.tasks.qa import QuestionAnswering, exact_match, normalize_answer, squad_scores, token_f1
from toydata import QUICK, qa_rows, toy_study, write_jsonl


def _quiet(message: str, **fields: object) -> None:
    pass


def _split(rows: list[dict], name: str = "train") -> Split:
    task = get_task("question-answering")

    class Reader:
        def name(self, field: str) -> str:
            return field

        def __call__(self, field: str) -> list:
            return [r[field] for r in rows]

    return Split(name, task.standardise(Reader(), name, None), "fp")


# -- metrics ----------------------------------------------------------------------------------------

def test_answer_normalisation_and_exact_match() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0


def test_token_f1_by_hand() -> None:
    # 'in paris france' vs 'paris': 1 token in common, precision 1/3, recall 1 -> F1 = 2 * (1/3) / (4/3) = 0.5
    assert token_f1("in paris france", "paris") == pytest.approx(0.5)
    # 'a big red car' -> 'big red car'; gold 'red car today': 2 in common, p 2/3, r 2/3 -> 2/3
    assert token_f1("a big red car", "red car today") == pytest.approx(2 / 3)
    assert token_f1("london", "paris") == 0.0


def test_scores_take_the_best_gold_answer_and_average_over_examples() -> None:
    scores = squad_scores(["paris", "in paris france", "rome"], [["Paris", "the city of Paris"], ["paris"], ["berlin", "madrid"]])
    assert scores["exact_match"] == pytest.approx((1 + 0 + 0) / 3)
    assert scores["f1"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_unanswerable_questions_score_only_the_empty_answer() -> None:
    assert squad_scores([""], [[]]) == {"exact_match": 1.0, "f1": 1.0}
    assert squad_scores(["paris"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    assert squad_scores([""], [["paris"]]) == {"exact_match": 0.0, "f1": 0.0}


# -- decoding ---------------------------------------------------------------------------------------

def _window(offsets: list[tuple[int, int]], starts: dict[int, float], ends: dict[int, float]) -> tuple[dict, np.ndarray]:
    logits = np.full((2, len(offsets)), -5.0)
    for i, v in starts.items():
        logits[0, i] = v
    for i, v in ends.items():
        logits[1, i] = v
    return {"offset_start": [a for a, _ in offsets], "offset_end": [b for _, b in offsets]}, logits


CONTEXT = "alice lives in paris and bob lives in rome"
# token offsets: [CLS]=-1, question tokens=-1, [SEP]=-1, then context words
WORDS = [(0, 5), (6, 11), (12, 14), (15, 20), (21, 24), (25, 28), (29, 34), (35, 37), (38, 42)]
OFFSETS = [(-1, -1), (-1, -1), (-1, -1), *WORDS, (-1, -1)]


def test_decoding_picks_the_best_valid_span_and_maps_it_to_text() -> None:
    task = QuestionAnswering()
    # best start on 'paris' (token 6), best end on 'rome' (token 11) is 6 tokens long; with max 3 the end must be 'paris'
    feature, logits = _window(OFFSETS, {6: 5.0, 0: 1.0}, {11: 6.0, 6: 4.0, 1: 9.0})
    assert QuestionAnswering(max_answer_length=3).best_answer(CONTEXT, [(feature, logits)])[0] == "paris"
    assert QuestionAnswering(max_answer_length=30).best_answer(CONTEXT, [(feature, logits)])[0] == "paris and bob lives in rome"
    # a start in the question (token 1) never counts, however high its logit
    spans, null = best_spans(logits[0], logits[1], feature["offset_start"], 30)
    assert all(feature["offset_start"][a] >= 0 and feature["offset_start"][b] >= 0 for _, a, b in spans)
    assert null == pytest.approx(1.0 + -5.0)
    assert task.decode([[(feature, logits)]], Split("v", {"context": [CONTEXT]}, "fp"), [0], None) == ["paris and bob lives in rome"]


def test_decoding_takes_the_best_span_across_windows() -> None:
    weak = _window(OFFSETS, {6: 1.0}, {6: 1.0})
    strong = _window(OFFSETS, {11: 3.0}, {11: 3.0})
    answer, score, start, end = QuestionAnswering().best_answer(CONTEXT, [weak, strong])
    assert (answer, start, end) == ("rome", 38, 42)
    # its probability in its window: softmax over the first token and the 9 context tokens, start times end
    assert score == pytest.approx((np.exp(3.0) / (np.exp(3.0) + 9 * np.exp(-5.0))) ** 2)


def test_the_score_is_a_probability_and_the_empty_answers_is_its_first_tokens() -> None:
    """The score was the sum of the span's start and end logits: 6.0 above, 8.0 for an empty answer."""
    window = _window(OFFSETS, {0: 4.0, 6: 1.0}, {0: 4.0, 6: 1.0})
    first = np.exp(4.0) / (np.exp(4.0) + np.exp(1.0) + 8 * np.exp(-5.0))  # token 0, against 'paris' and 8 other context tokens
    answer, score, start, end = QuestionAnswering(allow_null=True).best_answer(CONTEXT, [window])
    assert (answer, start, end) == ("", -1, -1) and score == pytest.approx(first ** 2)
    answer, score, _, _ = QuestionAnswering(allow_null=False).best_answer(CONTEXT, [window])
    paris = np.exp(1.0) / (np.exp(4.0) + np.exp(1.0) + 8 * np.exp(-5.0))
    assert answer == "paris" and score == pytest.approx(paris ** 2) and 0.0 < score < 1.0


def test_the_empty_answer_wins_only_when_allowed_and_beyond_the_threshold() -> None:
    window = _window(OFFSETS, {0: 4.0, 6: 1.0}, {0: 4.0, 6: 1.0})  # null score 8, best span 2
    assert QuestionAnswering(allow_null=False).best_answer(CONTEXT, [window])[0] == "paris"
    assert QuestionAnswering(allow_null=True).best_answer(CONTEXT, [window])[0] == ""
    assert QuestionAnswering(allow_null=True, null_threshold=7.0).best_answer(CONTEXT, [window])[0] == "paris"


# -- windows ----------------------------------------------------------------------------------------

def test_a_long_context_is_windowed_and_the_answer_found_in_its_second_window(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    filler = " ".join(["the film was good"] * 8)  # pushes the answer beyond the first 32 tokens
    context = f"{filler} bob lives in madrid"
    start = context.index("madrid")
    split = _split([{"question": "bob lives in", "context": context, "answers": {"text": ["madrid"], "answer_start": [start]}}])
    task = QuestionAnswering(doc_stride=8)
    features = task.tokenize(split, tokenizer, max_length=32)
    assert features.windows is not None and len(features.windows[0]) >= 2
    first, *others = [features.rows[i] for i in features.windows[0]]
    assert (first["start_positions"], first["end_positions"]) == (0, 0)  # not in the first window: the [CLS] position
    found = [f for f in others if f["start_positions"] > 0]
    assert found, "the answer must lie in a later window"
    window = found[0]
    assert all(len(window["input_ids"]) <= 32 for window in features.rows)
    text = context[window["offset_start"][window["start_positions"]]: window["offset_end"][window["end_positions"]]]
    assert text == "madrid"
    # consecutive windows share doc_stride tokens of context
    a, b = features.rows[features.windows[0][0]], features.rows[features.windows[0][1]]
    shared = set(zip(a["offset_start"], a["offset_end"])) & set(zip(b["offset_start"], b["offset_end"])) - {(-1, -1)}
    assert len(shared) == 8


def test_a_wrong_answer_start_names_the_row_and_every_other_such_row() -> None:
    rows = qa_rows(6)
    for row in (2, 5):
        rows[row] = {**rows[row], "answers": {"text": rows[row]["answers"]["text"], "answer_start": [0]}}
    with pytest.raises(DataError, match=r"train row 2: answer '\w+' is not at answer_start 0 of its context .*"
                                        r"\(1 more row has an answer that is not at its answer_start: 5\)$"):
        _split(rows)


def test_answers_that_are_not_squads_shape_are_shown_as_given() -> None:
    rows = qa_rows(4)
    rows[1] = {**rows[1], "answers": "paris"}
    with pytest.raises(DataError, match=r"train row 1: column 'answers' must be \{text: \[\.\.\.\], answer_start: \[\.\.\.\]\} .*got 'paris'"):
        _split(rows)


def test_folds_never_split_a_context(tmp_path: Path, tiny_bert: Path) -> None:
    spec = load_spec(toy_study(tmp_path, tiny_bert, task="question-answering", rows=90, extra="cv: {folds: 3}\n"))
    data = prepare_data(spec)
    folds, split = make_folds(spec, data)
    contexts = data.train.columns["context"]
    homes = {}
    for fold, (_, validation) in enumerate(folds):
        for row in validation:
            assert homes.setdefault(contexts[row], fold) == fold, "a context's questions went to two folds"
    assert len(homes) == 30 and split == "train"


# -- a whole study ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qa_study(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    folder = tmp_path_factory.mktemp("qa")
    write_jsonl(folder / "test.jsonl", qa_rows(30, seed=7))
    space = QUICK.replace("epochs: 2", "epochs: 3").replace("  weight_decay: 0.0\n", "  weight_decay: 0.0\n  scope: [full, freeze-1]\n")
    space = space.replace("tracking: {enabled: false}\n", "")  # with MLflow: the export is logged and registered
    extra = space + "search: {n_trials: 2, pruner: {name: none}}\n"
    path = toy_study(folder, tiny_bert, task="question-answering", rows=120, extra=extra)
    text = path.read_text().replace("data:\n  train: qa.jsonl\n", "data:\n  train: qa.jsonl\n  test: test.jsonl\n  max_length: 32\n")
    path.write_text(text)
    assert run_study(path, say=_quiet) == 0
    return path


def test_a_qa_study_completes_with_two_folds_and_exports(qa_study: Path) -> None:
    spec = load_spec(qa_study)
    selection = json.loads((spec.out_dir / "selection.json").read_text())
    assert selection["trials"]["COMPLETE"] == 2 and spec.metric == "f1"
    assert len(selection["baseline"]["fold_scores"]) == 2  # the same folds as every trial
    assert 0.0 <= selection["test_scores"]["f1"] <= 1.0 and "exact_match" in selection["test_scores"]
    assert selection["baseline"]["predicts"].startswith("the first")
    corrected = selection["bias_corrected"]  # from each question's F1, as the CV score is
    assert corrected["configurations"] == 2 and corrected["folds"] == 2 and corrected["low"] <= corrected["estimate"] <= corrected["high"]
    assert selection["registered_model"]["version"] == "1"  # logged to MLflow as the export folder itself
    meta = json.loads((spec.export_dir / "hpsearch.json").read_text())
    assert meta["pipeline_task"] == "question-answering" and meta["input_columns"] == {"question": "question", "context": "context"}
    card = (spec.export_dir / "README.md").read_text()
    assert "exact_match" in card and "f1" in card


def test_the_export_answers_through_pipeline_and_predict(qa_study: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    spec = load_spec(qa_study)
    # transformers 5 has no extractive question-answering pipeline of its own: the export brings it (qa_pipeline.py)
    answer = pipeline("question-answering", model=str(spec.export_dir), trust_remote_code=True)(
        question="bob lives in", context="bob lives in rome alice lives in paris")
    assert {"answer", "score", "start", "end"} <= set(answer) and 0.0 <= answer["score"] <= 1.0
    assert "bob lives in rome alice lives in paris"[answer["start"]:answer["end"]] == answer["answer"]
    source = write_jsonl(tmp_path / "in.jsonl", [{"question": r["question"], "context": r["context"]} for r in qa_rows(5, seed=3)])
    assert main(["predict", str(spec.export_dir), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 5
    for row in out:
        assert {"answer", "score", "start", "end"} <= set(row) and 0.0 <= row["score"] <= 1.0
        assert row["context"][row["start"]:row["end"]] == row["answer"]


def test_the_frozen_layer_cache_is_exact_for_qa(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import Candidate

    spec = load_spec(toy_study(tmp_path, tiny_bert, task="question-answering", rows=48))
    data = prepare_data(spec)
    candidate = Candidate(name="tiny", path=tiny_bert)
    params = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "scope": "freeze-1"}
    runs = []
    for cache in (True, False):
        tuner = FineTuner(data, cache_dir=tmp_path / f"cache-{cache}", max_length=32, frozen_cache=cache)
        runs.append(tuner.fit(candidate, params, train_rows=list(range(36)), eval_rows=list(range(36, 48))))
    assert runs[0].used_frozen_cache and not runs[1].used_frozen_cache
    for a, b in zip(runs[0].result.history, runs[1].result.history):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.metrics["f1"] == pytest.approx(b.metrics["f1"], abs=1e-6)
    # Its loss spans every position, padding too: batches are padded to their longest window only (the toy windows are
    # all 18 tokens long; padded to a multiple of 8, the cached and uncached fits above differed by 0.3 % in loss).
    inputs = tuner.inputs(candidate)
    assert {b["input_ids"].shape[1] for _, b in tuner._token_batcher(inputs, "train").batches(range(36), 8)} == {18}


def test_qa_settings_are_checked_in_the_spec(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.spec import load_spec_text

    write_jsonl(tmp_path / "x.jsonl", qa_rows(6))
    base = f"name: t\ntask: {{task}}\ndata: {{{{train: x.jsonl, max_length: 64, doc_stride: {{stride}}}}}}\nmodels: [{{{{name: a, path: {tiny_bert}}}}}]\n"
    with pytest.raises(Exception, match="data.doc_stride applies to task question-answering only, not to text-classification"):
        load_spec_text(base.format(task="text-classification", stride=16), tmp_path)
    with pytest.raises(Exception, match=r"data.doc_stride 32 must be below half of data.max_length \(64\)"):
        load_spec_text(base.format(task="question-answering", stride=32), tmp_path)
    assert load_spec_text(base.format(task="question-answering", stride=16), tmp_path).data.doc_stride == 16


@pytest.mark.parametrize("scope", ["lora", "head"])
def test_lora_and_head_scopes_train_and_export_for_qa(scope: str, tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import AutoModelForQuestionAnswering

    from hpsearch.finetune import FineTuner
    from hpsearch.spec import Candidate

    spec = load_spec(toy_study(tmp_path, tiny_bert, task="question-answering", rows=24))
    tuner = FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=32)
    fitted = tuner.fit(Candidate(name="tiny", path=tiny_bert), {"learning_rate": 1e-2, "epochs": 1, "batch_size": 8, "scope": scope},
                       train_rows=list(range(18)), eval_rows=list(range(18, 24)))
    assert fitted.trainable_parameters < fitted.total_parameters
    assert {"f1", "exact_match", "loss"} <= set(fitted.result.history[0].metrics)
    fitted.save(tmp_path / "export")
    assert type(AutoModelForQuestionAnswering.from_pretrained(tmp_path / "export")).__name__ == "BertForQuestionAnswering"


def test_a_question_too_long_for_the_windows_fails_the_trial_naming_the_row_of_the_file(tmp_path: Path, tiny_bert: Path) -> None:
    """Found only when the candidate's tokenizer reads the data: the trial fails with the problem itself (not as an
    unexpected error), and names the row of the file even though a subsample shuffled the rows."""
    path = toy_study(tmp_path, tiny_bert, task="question-answering", rows=40, extra=QUICK + "search: {n_trials: 1, pruner: {name: none}}\n")
    rows = [json.loads(line) for line in (tmp_path / "qa.jsonl").read_text().splitlines()]
    rows[12]["question"] = " ".join(["why"] * 40) + "?"
    write_jsonl(tmp_path / "qa.jsonl", rows)
    path.write_text(path.read_text().replace("data:\n  train: qa.jsonl\n", "data:\n  train: qa.jsonl\n  max_length: 48\n  subsample: {train: 39}\n"))
    with pytest.raises(HpsearchError, match="no trial completed"):
        run_study(path, say=_quiet)
    import optuna

    spec = load_spec(path)
    [trial] = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    assert trial.user_attrs["failure_reason"].startswith(f"{tmp_path / 'qa.jsonl'}: train row 12 (counting data rows from 0): the question is")


def test_a_candidate_whose_type_has_no_qa_model_is_refused_before_any_trial_or_calibration(
        tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """transformers builds no question-answering model for Phi-3: said for that candidate before anything is trained,
    by run and by plan, rather than as a failed trial carrying transformers' list of 150 configuration classes."""
    from tinymodel import build_tiny_family

    phi = build_tiny_family(tmp_path / "phi3", "phi3", tiny_bert)
    path = toy_study(tmp_path, tiny_bert, "question-answering", rows=30, extra=QUICK + "search: {n_trials: 1}\n")
    path.write_text(path.read_text().replace("models:\n", f"models:\n  - {{name: phi, path: {phi}}}\n"))
    for command in ("plan", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "1 candidate(s) cannot be loaded" in err, err
        assert "  - phi: transformers has no question-answering model for model type 'phi3'" in err, err
        assert "Model type should be one of" not in err
    import optuna

    assert all(summary.n_trials == 0 for summary in optuna.get_all_study_summaries(make_storage(load_spec(path))))
