"""Task registry: the model head, the collator and the metrics of each task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hpsearch.data.labels import LabelMap
from hpsearch.data.prepare import Split
from hpsearch.finetune import metrics


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str
    """Name of the transformers AutoModelFor... class that adds this task's head."""
    decode: Callable[[list[np.ndarray], Split, list[int], LabelMap], list[Any]]
    """(per-example logits, split, row indices, label map) -> one compact prediction per row (a class id,
    a number, or a list of tag ids, one per word): what metrics, out-of-fold estimates and exports use."""
    measure: Callable[[list[Any], Split, list[int], LabelMap], dict[str, float]]
    """(predictions from ``decode``, split, row indices, label map) -> metrics."""
    token_level: bool = False

    def score(self, logits: list[np.ndarray], split: Split, rows: list[int], label_map: LabelMap) -> dict[str, float]:
        """Metrics of per-example logits on ``rows`` of ``split``."""
        return self.measure(self.decode(logits, split, rows, label_map), split, rows, label_map)

    def num_labels(self, label_map: LabelMap) -> int:
        return len(label_map) if label_map.labels else 1

    def model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.auto_class)

    def collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

        if self.token_level:
            return DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
        return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def _decode_classes(logits: list[np.ndarray], split: Split, rows: list[int], _: LabelMap) -> list[int]:
    return [int(np.argmax(x)) for x in logits]


def _measure_classes(predicted: list[Any], split: Split, rows: list[int], _: LabelMap) -> dict[str, float]:
    return metrics.classification_metrics(predicted, [split.columns["label"][i] for i in rows])


def _decode_regression(logits: list[np.ndarray], split: Split, rows: list[int], _: LabelMap) -> list[float]:
    return [float(x.reshape(-1)[0]) for x in logits]


def _measure_regression(predicted: list[Any], split: Split, rows: list[int], _: LabelMap) -> dict[str, float]:
    return metrics.regression_metrics(predicted, [split.columns["label"][i] for i in rows])


def _decode_entities(logits: list[np.ndarray], split: Split, rows: list[int], label_map: LabelMap) -> list[list[int]]:
    """Logits here are those of each word's first subword, in word order (see ``word_logits``)."""
    outside = label_map.labels.index("O") if "O" in label_map.labels else 0
    predicted = []
    for word_logits, row in zip(logits, rows):
        words = len(split.columns["tags"][row])
        ids = [int(np.argmax(x)) for x in word_logits][:words]
        # Words cut off by max_length get no prediction: they count as 'O' (a miss, never a free hit).
        predicted.append(ids + [outside] * (words - len(ids)))
    return predicted


def _measure_entities(predicted: list[Any], split: Split, rows: list[int], label_map: LabelMap) -> dict[str, float]:
    names = label_map.labels
    gold = [[names[i] for i in split.columns["tags"][row]] for row in rows]
    return metrics.entity_metrics([[names[i] for i in ids] for ids in predicted], gold)


TASKS: dict[str, Task] = {
    "text-classification": Task("text-classification", "AutoModelForSequenceClassification", _decode_classes, _measure_classes),
    "text-pair-classification": Task("text-pair-classification", "AutoModelForSequenceClassification", _decode_classes, _measure_classes),
    "regression": Task("regression", "AutoModelForSequenceClassification", _decode_regression, _measure_regression),
    "token-classification": Task("token-classification", "AutoModelForTokenClassification", _decode_entities, _measure_entities, True),
}


def get_task(name: str) -> Task:
    return TASKS[name]
