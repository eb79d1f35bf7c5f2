"""Extractive question answering (SQuAD format): the answer is a span of the context.

Contexts longer than ``data.max_length`` are cut into overlapping windows (``data.doc_stride`` tokens of
overlap); each window is one training feature, with the answer's start and end token, or the position of
the first token ([CLS]) when the answer is not inside that window. An example's prediction is the best
span over all its windows (the 20 highest start and end logits of each, spans up to
``data.max_answer_length`` tokens); when the training data has unanswerable questions (empty
``answers``), the empty answer wins where its score beats the best span's by more than
``data.null_threshold``. Exact match and token F1 use SQuAD's answer normalisation and the best of the
gold answers, on whole examples (not windows). Folds keep every question about one context together.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import re
import shutil
import statistics
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import numpy as np
from pydantic import Field

from hpsearch.errors import RowError, TrialError, refuse_rows
from hpsearch.tasks.base import Column, Features, Task, chunks, texts
from hpsearch.tasks.featuretable import FeatureTable
from hpsearch.tasks.qa_pipeline import best_answer, context_offsets


@dataclass(frozen=True)
class QuestionAnswering(Task):
    name: ClassVar[str] = "question-answering"
    metrics: ClassVar[tuple[str, ...]] = ("f1", "exact_match")
    default_metric: ClassVar[str] = "f1"
    auto_class: ClassVar[str] = "AutoModelForQuestionAnswering"
    pipeline_task: ClassVar[str] = "question-answering"
    peft_task_type: ClassVar[str] = "QUESTION_ANS"
    has_label_list: ClassVar[bool] = False
    loss_sees_padding: ClassVar[bool] = True
    inputs: ClassVar[tuple[str, ...]] = ("question", "context")
    target: ClassVar[str | None] = "answers"
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {
        "question": ("question", "Question column (question-answering)."),
        "context": ("context", "Context (passage) column (question-answering)."),
        "answers": ("answers", "Answers column (question-answering): {text: [...], answer_start: [...]}, "
                               "empty lists for an unanswerable question."),
    }
    settings: ClassVar[dict[str, tuple[Any, Any]]] = {
        "doc_stride": (Optional[int], Field(None, ge=1, description=(
            "question-answering: tokens shared by consecutive windows of a context longer than max_length; "
            "null: a quarter of max_length."))),
        "max_answer_length": (int, Field(30, ge=1, description="question-answering: longest answer span, in tokens.")),
        "null_threshold": (float, Field(0.0, description=(
            "question-answering: how much the empty answer's score must beat the best span's to answer nothing "
            "(used only when the training data has unanswerable questions)."))),
    }
    target_keys: ClassVar[tuple[str, ...]] = ("start_positions", "end_positions")
    grouped_by: ClassVar[str | None] = "context (all questions about one passage)"

    doc_stride: int | None = None
    max_answer_length: int = 30
    null_threshold: float = 0.0
    max_length: int = 384
    allow_null: bool = False
    """Whether the empty answer may be predicted (the training data has unanswerable questions)."""

    def configured(self, spec: Any) -> Task:
        task = super().configured(spec)
        return dataclasses.replace(task, max_length=spec.data.max_length)

    def cut_at(self, max_length: int) -> Task:
        return dataclasses.replace(self, max_length=max_length)

    def spec_problems(self, spec: Any) -> list[str]:
        stride = spec.data.doc_stride
        if stride is not None and stride >= spec.data.max_length // 2:
            return [f"data.doc_stride {stride} must be below half of data.max_length ({spec.data.max_length}); "
                    f"lower it (e.g. {spec.data.max_length // 4})"]
        return []

    def stride(self, max_length: int) -> int:
        """Tokens shared by consecutive windows at ``max_length``."""
        return self.doc_stride if self.doc_stride is not None else max(1, max_length // 4)

    # -- data ---------------------------------------------------------------------------------

    def learns(self, labels: Sequence[str]) -> str:
        return "predicts the answer's span in the context (or no answer, where trained on unanswerable questions)"

    def missing_targets(self, values: list[Any]) -> list[int]:
        return [row for row, value in enumerate(values) if value is None]  # empty answers are allowed (unanswerable)

    def standardise(self, column: Column, split: str, label_map: Any) -> dict[str, list[Any]]:
        questions = texts(column("question"), split, column.name("question"))
        contexts = texts(column("context"), split, column.name("context"))
        answers = [_answers(value, split, row, column.name("answers")) for row, value in enumerate(column("answers"))]
        refuse_rows(split, _misplaced(answers, contexts), like="an answer that is not at its answer_start")
        answer_texts, answer_starts = [given for given, _ in answers], [starts for _, starts in answers]
        return {"question": questions, "context": contexts, "answer_text": answer_texts, "answer_start": answer_starts}

    def groups(self, split: Any) -> list[Any] | None:
        return split.columns["context"]  # all questions about one passage in one fold, else the CV score leaks

    def with_data(self, train: Any) -> Task:
        """This task knowing whether its training data has unanswerable questions."""
        return dataclasses.replace(self, allow_null=any(not answers for answers in train.columns["answer_text"]))

    # -- tokens -------------------------------------------------------------------------------

    def cache_key(self) -> list[Any]:
        return [self.name, self.doc_stride]

    def tokenize(self, split: Any, tokenizer: Any, max_length: int) -> Features:
        if not getattr(tokenizer, "is_fast", False):
            raise TrialError(f"question answering needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one")
        cols = split.columns
        stride = self.stride(max_length)
        _check_question_lengths(tokenizer, cols["question"], split.name, max_length, stride)
        windows: list[list[int]] = [[] for _ in cols["question"]]
        made = itertools.count()
        fields = ("start_positions", "end_positions", "offset_start", "offset_end", "example")

        def parts() -> Iterator[dict[str, list[Any]]]:
            for part in chunks(len(cols["question"])):
                encoded = tokenizer(
                    cols["question"][part], cols["context"][part], truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True,
                )
                added: dict[str, list[Any]] = {field: [] for field in fields}
                for i, in_part in enumerate(encoded["overflow_to_sample_mapping"]):  # one window of a context each
                    example = part.start + in_part
                    starts, ends = context_offsets(encoded["offset_mapping"][i], encoded.sequence_ids(i))
                    start, end = _answer_tokens(starts, ends, cols["answer_text"][example], cols["answer_start"][example])
                    windows[example].append(next(made))
                    for field, value in zip(fields, (start, end, starts, ends, example)):
                        added[field].append(value)
                model = {k: v for k, v in encoded.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
                yield {**model, **added}
        return Features(FeatureTable.of(parts()), windows)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        from transformers import DataCollatorWithPadding

        pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")  # None: see loss_sees_padding
        drop = ("offset_start", "offset_end", "example")
        return lambda rows: pad([{k: v for k, v in row.items() if k not in drop} for row in rows])

    def configure_model(self, config: Any, label_map: Any) -> None:
        config.num_labels = 2

    # -- outputs, predictions, metrics --------------------------------------------------------

    def outputs(self, output: Any, batch: dict[str, Any]) -> list[Any]:
        """Start and end logits of each window, as a (2, window length) array."""
        start = output.start_logits.float().cpu().numpy()
        end = output.end_logits.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [np.stack([start[i, :n], end[i, :n]]) for i, n in enumerate(lengths)]

    def decode(self, outputs: list[Any], split: Any, rows: list[int], label_map: Any) -> list[Any]:
        """The answer text of each example (its windows' (feature, logits) pairs in ``outputs``); '' for no answer."""
        return [self.best_answer(split.columns["context"][row], windows)[0] for row, windows in zip(rows, outputs)]

    def best_answer(self, context: str, windows: list[tuple[dict[str, Any], Any]]) -> tuple[str, float, int, int]:
        """(answer text, score, start char, end char) of the best span over ``windows``; ('', ...) for no answer."""
        return best_answer(context, windows, self.max_answer_length, self.allow_null, self.null_threshold)

    def measure(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any) -> dict[str, float]:
        gold = [split.columns["answer_text"][row] for row in rows]
        return squad_scores(predictions, gold)

    def ratio_parts(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any, metric: str) -> list[tuple[float, float]] | None:
        """F1 and exact match are means over questions: each question's score over 1."""
        if metric not in self.metrics:
            return None
        score = token_f1 if metric == "f1" else exact_match
        return [(best_score(predicted, split.columns["answer_text"][row], score), 1.0) for predicted, row in zip(predictions, rows)]

    def baseline(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> tuple[list[Any], str]:
        """The first words of the context, as many as the median training answer has."""
        lengths = [len(answers[0].split()) for answers in (data.train.columns["answer_text"][i] for i in train_rows) if answers]
        words = max(1, int(statistics.median(lengths))) if lengths else 1
        return ([" ".join(split.columns["context"][row].split()[:words]) for row in rows],
                f"the first {words} word(s) of the context")

    # -- export and predict -------------------------------------------------------------------

    def predict(self, model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                done: Callable[[int], None] = lambda rows: None) -> list[dict[str, Any]]:
        from transformers import pipeline

        from hpsearch.tasks.qa_pipeline import ExtractiveQuestionAnswering

        pipe = pipeline("question-answering", model=model_dir, tokenizer=model_dir, device=-1, pipeline_class=ExtractiveQuestionAnswering)
        columns = meta["input_columns"]
        answers = []
        for row in rows:
            answers.append(pipe(question=str(row[columns["question"]]), context=str(row[columns["context"]])))
            done(len(answers))
        return answers

    @property
    def mlflow_pipeline(self) -> str | None:
        return None  # MLflow's flavour cannot rebuild a pipeline transformers no longer ships: the folder is logged

    def load_call(self, folder: str) -> str:
        return f'pipeline("question-answering", model="{folder}", trust_remote_code=True)  # runs the folder\'s qa_pipeline.py'

    def finish_export(self, folder: Path) -> None:
        """Make the folder serve itself: the pipeline file beside the weights, named in the config with the settings."""
        shutil.copyfile(Path(__file__).with_name("qa_pipeline.py"), folder / "qa_pipeline.py")
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["custom_pipelines"] = {"question-answering": {
            "impl": "qa_pipeline.ExtractiveQuestionAnswering", "pt": ["AutoModelForQuestionAnswering"], "tf": [], "type": "text"}}
        config["hpsearch_qa"] = {"max_length": self.max_length, **self.export_settings()}
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def export_settings(self) -> dict[str, Any]:
        return {"doc_stride": self.stride(self.max_length), "max_answer_length": self.max_answer_length, "allow_null": self.allow_null,
                "null_threshold": self.null_threshold}


def _answers(value: Any, split: str, row: int, column: str) -> tuple[list[str], list[int]]:
    """(texts, character starts) of one row's answers: SQuAD's {text: [...], answer_start: [...]} (or its JSON string)."""
    given = value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict) or not isinstance(value.get("text"), list) or not isinstance(value.get("answer_start"), list) \
            or len(value["text"]) != len(value["answer_start"]):
        raise RowError(split, row, f"column {column!r} must be {{text: [...], answer_start: [...]}} with one start per "
                       f"answer text (empty lists for an unanswerable question), got {str(given)[:80]!r}; fix the row")
    try:
        starts = [int(s) for s in value["answer_start"]]
    except (TypeError, ValueError):
        raise RowError(split, row, f"answer_start {value['answer_start']!r} in {column!r} must be whole numbers") from None
    return [str(t) for t in value["text"]], starts


def _misplaced(answers: list[tuple[list[str], list[int]]], contexts: list[str]) -> Iterator[tuple[int, str]]:
    """(row, problem) of each row with an answer text that its context does not hold at the answer's start."""
    for row, ((given, starts), context) in enumerate(zip(answers, contexts)):
        for text, start in zip(given, starts):
            found = context[start : start + len(text)]
            if found != text:
                yield row, (f"answer {text!r} is not at answer_start {start} of its context (the context has {found!r} there); "
                            "fix answer_start or the answer text")
                break


def _check_question_lengths(tokenizer: Any, questions: list[str], split: str, max_length: int, stride: int) -> None:
    """A question must leave room for more context than the windows share (special tokens counted generously)."""
    limit = max_length - stride - 4
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    refuse_rows(split, ((row, f"the question is {length} tokens long, but with data.max_length {max_length} and a doc_stride of "
                              f"{stride} at most {limit} fit; raise data.max_length, lower data.doc_stride or shorten the question")
                        for row, length in enumerate(lengths) if length > limit), like="a question too long")


def _answer_tokens(starts: list[int], ends: list[int], texts_: list[str], answer_starts: list[int]) -> tuple[int, int]:
    """Token positions of the first gold answer inside this window, or (0, 0) when it is not inside (or there is none)."""
    if not texts_:
        return 0, 0
    first_char, last_char = answer_starts[0], answer_starts[0] + len(texts_[0])
    context = [i for i, s in enumerate(starts) if s >= 0]
    if not context or starts[context[0]] > first_char or ends[context[-1]] < last_char:
        return 0, 0
    first = next(i for i in context if ends[i] > first_char)
    last = next(i for i in reversed(context) if starts[i] < last_char)
    return first, max(first, last)


# -- SQuAD answer metrics -------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: SQuAD's normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:  # an empty answer (unanswerable) matches only an empty answer
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_score(predicted: str, answers: list[str], score: Callable[[str, str], float]) -> float:
    """``score`` of an answer against the gold answer it matches best ('' when the question has none)."""
    return max(score(predicted, a) for a in (answers or [""]))


def squad_scores(predictions: list[str], gold: list[list[str]]) -> dict[str, float]:
    """Mean exact match and token F1 over examples, each against its best gold answer."""
    em = [best_score(p, answers, exact_match) for p, answers in zip(predictions, gold)]
    f1 = [best_score(p, answers, token_f1) for p, answers in zip(predictions, gold)]
    return {"exact_match": float(np.mean(em)) if em else 0.0, "f1": float(np.mean(f1)) if f1 else 0.0}
