"""The trivial baseline every winner must beat: the score of a model that learned nothing from the text.

Classification predicts the most frequent label of the fold's training rows, regression their mean,
token classification 'O' for every word. Each is scored on the same folds (and the test split) with the
task's own metrics, so a winner can be compared with it fold by fold.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from hpsearch.data.prepare import StudyData
from hpsearch.finetune.tasks import Task, get_task


def _constant_logits(task: Task, data: StudyData, train_rows: Sequence[int], count: int) -> tuple[list[np.ndarray], str]:
    """The baseline's outputs for ``count`` rows, in the shape the task's scorer takes, and what it predicts."""
    train = data.train.columns
    if task.token_level:  # no logits for any word: every word counts as 'O' (see the entity scorer)
        return [np.zeros((0, len(data.label_map)))] * count, "'O' for every word"
    if not data.label_map.labels:
        mean = float(np.mean([train["label"][i] for i in train_rows]))
        return [np.array([mean])] * count, f"the training mean {mean:.4g}"
    majority = Counter(train["label"][i] for i in train_rows).most_common(1)[0][0]
    one_hot = np.eye(len(data.label_map))[majority]
    return [one_hot] * count, f"the majority class {data.label_map.labels[majority]!r}"


def baseline_scores(data: StudyData, folds: Sequence[tuple[Sequence[int], Sequence[int]]], eval_split: str, metric: str) -> dict[str, Any]:
    """Per-fold scores of the trivial baseline on ``folds``, their mean, and its test scores when there is a test split."""
    task = get_task(data.task)
    scores, said = [], ""
    for train_rows, eval_rows in folds:
        logits, said = _constant_logits(task, data, train_rows, len(eval_rows))
        scores.append(task.score(logits, data.splits[eval_split], list(eval_rows), data.label_map)[metric])
    result: dict[str, Any] = {"predicts": said, "fold_scores": scores, "cv_mean": float(np.mean(scores))}
    if "test" in data.splits:
        every = list(range(len(data.train)))
        logits, _ = _constant_logits(task, data, every, len(data.splits["test"]))
        result["test"] = task.score(logits, data.splits["test"], list(range(len(data.splits["test"]))), data.label_map)[metric]
    return result
