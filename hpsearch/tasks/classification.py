"""One label (or one number) per text or text pair: text classification, pair classification, regression."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from hpsearch.errors import refuse_rows
from hpsearch.tasks.base import Column, Features, Task, chunks, is_missing, texts
from hpsearch.tasks.featuretable import FeatureTable


@dataclass(frozen=True)
class TextClassification(Task):
    name: ClassVar[str] = "text-classification"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "micro_f1", "mcc")
    default_metric: ClassVar[str] = "macro_f1"
    stratifies: ClassVar[bool] = True
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"
    pipeline_task: ClassVar[str] = "text-classification"
    inputs: ClassVar[tuple[str, ...]] = ("text",)
    target: ClassVar[str | None] = "label"
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {
        "text": ("text", "Text column (classification, regression)."),
        "label": ("label", "Label column (classification) or target column (regression)."),
    }

    def standardise(self, column: Column, split: str, label_map: Any) -> dict[str, list[Any]]:
        out = {field: texts(column(field), split, column.name(field)) for field in self.inputs}
        out["label"] = self._targets(column("label"), split, column.name("label"), label_map)
        return out

    def _targets(self, values: list[Any], split: str, name: str, label_map: Any) -> list[Any]:
        # As text a list would be a class of its own, "['neg', 'other']".
        refuse_rows(split, ((row, f"label {str(value)[:60]!r} in {name!r} is a {type(value).__name__}: each row takes one label "
                                  "(multi-label classification is not supported); give the row one label")
                            for row, value in enumerate(values) if isinstance(value, (list, dict))), like="more than one label")
        return label_map.encode(values, split)

    def strata(self, split: Any) -> list[Any] | None:
        return split.columns["label"]

    def one_target(self, train: Any, label_map: Any) -> str | None:
        values = set(train.columns["label"])
        if len(values) != 1:
            return None
        value = values.pop()
        return repr(label_map.labels[value]) if label_map.labels else f"{value:g}"

    def tokenize(self, split: Any, tokenizer: Any, max_length: int) -> Features:
        cols = split.columns
        pairs = cols.get("text_pair")

        def parts() -> Iterator[dict[str, list[Any]]]:
            for part in chunks(len(cols["text"])):
                encoded = tokenizer(cols["text"][part], None if pairs is None else pairs[part], truncation=True, max_length=max_length)
                yield {**encoded, "labels": cols["label"][part]}
        return Features(FeatureTable.of(parts()))

    def decode(self, outputs: list[Any], split: Any, rows: list[int], label_map: Any) -> list[Any]:
        return [int(np.argmax(x)) for x in outputs]

    def measure(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any) -> dict[str, float]:
        from hpsearch.finetune import metrics

        return metrics.classification_metrics(predictions, [split.columns["label"][i] for i in rows])

    def baseline(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> tuple[list[Any], str]:
        majority = Counter(data.train.columns["label"][i] for i in train_rows).most_common(1)[0][0]
        return [majority] * len(rows), f"the majority class {data.label_map.labels[majority]!r}"

    def baseline_loss(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> float | None:
        """Cross-entropy of predicting the training rows' class frequencies (add-one: no class gets probability 0)."""
        counts = Counter(data.train.columns["label"][i] for i in train_rows)
        classes = len(data.label_map)
        labels = split.columns["label"]
        return -statistics.fmean(math.log((counts[labels[i]] + 1) / (len(train_rows) + classes)) for i in rows)

    def predict(self, model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                done: Callable[[int], None] = lambda rows: None) -> list[dict[str, Any]]:
        outputs = _pipeline_outputs(model_dir, meta, rows, batch_size, done, top_k=None)
        result = []
        for scores in outputs:
            best = max(scores, key=lambda s: s["score"])
            result.append({"prediction": best["label"], "score": float(best["score"]),
                           "scores": {s["label"]: round(float(s["score"]), 6) for s in scores}})
        return result


@dataclass(frozen=True)
class TextPairClassification(TextClassification):
    name: ClassVar[str] = "text-pair-classification"
    inputs: ClassVar[tuple[str, ...]] = ("text", "text_pair")
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {
        "text_pair": (None, "Second text column (text-pair-classification)."),
    }

    def spec_problems(self, spec: Any) -> list[str]:
        if spec.data.columns.text_pair is None:
            return ["task text-pair-classification needs data.columns.text_pair (the second text column)"]
        return []

    def load_call(self, folder: str) -> str:
        return f'{super().load_call(folder)}  # call it with {{"text": first, "text_pair": second}} per pair'


@dataclass(frozen=True)
class Regression(TextClassification):
    name: ClassVar[str] = "regression"
    metrics: ClassVar[tuple[str, ...]] = ("rmse", "pearson", "spearman")
    default_metric: ClassVar[str] = "rmse"
    has_label_list: ClassVar[bool] = False
    stratifies: ClassVar[bool] = False
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {}

    def spec_problems(self, spec: Any) -> list[str]:
        return ["task regression predicts a number: remove data.labels"] if spec.data.labels is not None else []

    def learns(self, labels: Sequence[str]) -> str:
        return "predicts a number (regression)"

    def load_call(self, folder: str) -> str:
        return f'{super().load_call(folder)}  # each output\'s "score" is the predicted number'

    def missing_targets(self, values: list[Any]) -> list[int]:
        return []  # a missing number is reported by _targets, with the value found

    def _targets(self, values: list[Any], split: str, name: str, label_map: Any) -> list[Any]:
        out = [_number(value) for value in values]

        def problem(value: Any) -> str:
            found = f"in {name!r} is empty" if is_missing(value) else f"{str(value)[:60]!r} in {name!r} is not a finite number"
            return f"regression target {found}; give the row a number or remove it"

        refuse_rows(split, ((row, problem(values[row])) for row, number in enumerate(out) if not math.isfinite(number)),
                    like="an empty or non-numeric target")
        return out

    def strata(self, split: Any) -> list[Any] | None:
        return None

    def configure_model(self, config: Any, label_map: Any) -> None:
        config.num_labels = 1
        config.problem_type = "regression"
        config.id2label, config.label2id = {0: "prediction"}, {"prediction": 0}  # pipeline's label for the number, as predict's column

    def start_head(self, model: Any, split: Any, rows: Sequence[int]) -> float:
        """Train the head in standard units of the training targets: its output layer computes ``sd * (x W + b) +
        mean`` (:class:`~hpsearch.finetune.modeling.TargetUnitLinear`), and the loss is weighted by ``1 / sd**2``,
        so training follows the same path whatever units the targets come in, as on standardised targets.

        Built as it is, the head predicts about 0, and with the learning rates fine-tuning uses its first epochs go to
        moving towards targets far from 0 (ratings of 1 to 5, say) instead of learning from the text; a head merely
        scaled to the targets keeps its weights in their units, where AdamW's steps (about the learning rate per
        weight) are far too large for targets of 0.001 and too small for targets of 1,000. A head without a bias
        (decoders') keeps the mean aside, and the fine-tune core puts it in the head's weights from what the model
        feeds the head (:meth:`~hpsearch.finetune.modeling.TargetUnitLinear.start_at_shift`)."""
        from hpsearch.finetune.modeling import train_in_target_units

        if not rows:
            return 1.0
        targets = [split.columns["label"][i] for i in rows]
        spread = statistics.pstdev(targets) or 1.0  # all one value: scale 1
        return 1.0 / spread**2 if train_in_target_units(model, spread, statistics.fmean(targets)) else 1.0

    def decode(self, outputs: list[Any], split: Any, rows: list[int], label_map: Any) -> list[Any]:
        return [float(x.reshape(-1)[0]) for x in outputs]

    def measure(self, predictions: list[Any], split: Any, rows: list[int], label_map: Any) -> dict[str, float]:
        from hpsearch.finetune import metrics

        return metrics.regression_metrics(predictions, [split.columns["label"][i] for i in rows])

    def baseline(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> tuple[list[Any], str]:
        mean = float(np.mean([data.train.columns["label"][i] for i in train_rows]))
        return [mean] * len(rows), f"the training mean {mean:.4g}"

    def baseline_loss(self, data: Any, train_rows: Sequence[int], split: Any, rows: list[int]) -> float | None:
        """Mean squared error of the training mean (the regression head's loss)."""
        mean = statistics.fmean(data.train.columns["label"][i] for i in train_rows)
        return statistics.fmean((split.columns["label"][i] - mean) ** 2 for i in rows)

    def predict(self, model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                done: Callable[[int], None] = lambda rows: None) -> list[dict[str, Any]]:
        outputs = _pipeline_outputs(model_dir, meta, rows, batch_size, done, function_to_apply="none")
        return [{"prediction": float(o["score"])} for o in outputs]


def _pipeline_outputs(model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                      done: Callable[[int], None], **options: Any) -> list[Any]:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    text, pair = meta["input_columns"]["text"], meta["input_columns"].get("text_pair")
    inputs = ({"text": str(r[text]), "text_pair": str(r[pair])} if pair else str(r[text]) for r in rows)
    outputs = []
    for output in pipe(inputs, truncation=True, max_length=meta["max_length"], batch_size=batch_size, **options):  # row by row
        outputs.append(output)
        done(len(outputs))
    return outputs


def _number(value: Any) -> float:
    """A regression target as a float; NaN where it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
