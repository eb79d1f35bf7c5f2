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
    score: Callable[[list[np.ndarray], Split, list[int], LabelMap], dict[str, float]]
    """(per-example logits, split, row indices, label map) -> metrics."""
    token_level: bool = False

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


def _score_classes(logits: list[np.ndarray], split: Split, rows: list[int], _: LabelMap) -> dict[str, float]:
    predicted = [int(np.argmax(x)) for x in logits]
    return metrics.classification_metrics(predicted, [split.columns["label"][i] for i in rows])


def _score_regression(logits: list[np.ndarray], split: Split, rows: list[int], _: LabelMap) -> dict[str, float]:
    return metrics.regression_metrics([float(x.reshape(-1)[0]) for x in logits], [split.columns["label"][i] for i in rows])


def _score_entities(logits: list[np.ndarray], split: Split, rows: list[int], label_map: LabelMap) -> dict[str, float]:
    """Logits here are those of each word's first subword, in word order (see ``word_logits``)."""
    names = label_map.labels
    outside = names.index("O") if "O" in names else 0
    predicted, gold = [], []
    for word_logits, row in zip(logits, rows):
        tags = split.columns["tags"][row]
        ids = [int(np.argmax(x)) for x in word_logits][: len(tags)]
        # Words cut off by max_length get no prediction: they count as 'O' (a miss, never a free hit).
        ids += [outside] * (len(tags) - len(ids))
        predicted.append([names[i] for i in ids])
        gold.append([names[i] for i in tags])
    return metrics.entity_metrics(predicted, gold)


TASKS: dict[str, Task] = {
    "text-classification": Task("text-classification", "AutoModelForSequenceClassification", _score_classes),
    "text-pair-classification": Task("text-pair-classification", "AutoModelForSequenceClassification", _score_classes),
    "regression": Task("regression", "AutoModelForSequenceClassification", _score_regression),
    "token-classification": Task("token-classification", "AutoModelForTokenClassification", _score_entities, True),
}


def get_task(name: str) -> Task:
    return TASKS[name]
