"""The trivial baseline every winner must beat: the score of a model that learned nothing from the text.

Each task says what that model predicts (classification: the most frequent label of the fold's training
rows; regression: their mean; token classification: 'O' for every word; question answering: the first
words of the context). It is scored on the same folds (and the test split) with the task's own metrics,
so a winner can be compared with it fold by fold.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hpsearch.data.prepare import StudyData


def baseline_scores(data: StudyData, folds: Sequence[tuple[Sequence[int], Sequence[int]]], eval_split: str, metric: str) -> dict[str, Any]:
    """Per-fold scores of the trivial baseline on ``folds``, their mean, its validation loss per fold and their mean
    (None where the task cannot say; see ``Task.baseline_loss``), and its test scores when there is a test split."""
    task = data.task
    scores, losses = [], []
    for train_rows, eval_rows in folds:
        split, rows = data.splits[eval_split], list(eval_rows)
        predictions, _ = task.baseline(data, train_rows, split, rows)
        scores.append(task.measure(predictions, split, rows, data.label_map)[metric])
        losses.append(task.baseline_loss(data, train_rows, split, rows))
    # What it predicts, in words, fitted on every training row (each fold's differs a little: a regression's mean,
    # say): the model the test split scores, and the one a reader can check against the data.
    _, said = task.baseline(data, list(range(len(data.train))), data.splits[eval_split], [])
    result: dict[str, Any] = {"predicts": said, "fold_scores": scores, "cv_mean": float(np.mean(scores)),
                              "fold_losses": losses, "loss": None if None in losses else float(np.mean(losses))}
    if "test" in data.splits:
        split = data.splits["test"]
        rows = list(range(len(split)))
        predictions, _ = task.baseline(data, list(range(len(data.train))), split, rows)
        result["test"] = task.measure(predictions, split, rows, data.label_map)[metric]
    return result
