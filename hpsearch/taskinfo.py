"""What each task is called, which metrics it reports and which way they point.

Pure data (no torch), so the spec can validate metric names before anything heavy is imported.
The implementations live in ``hpsearch.finetune.tasks``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    metrics: tuple[str, ...]
    default_metric: str
    has_label_list: bool
    """Whether the task predicts one of a fixed list of labels (everything but regression)."""
    columns: tuple[str, ...] = ("text", "label")
    """Fields of ``data.columns`` that name the columns every split must have."""


TASKS: dict[str, TaskInfo] = {
    "text-classification": TaskInfo(
        "text-classification", ("accuracy", "macro_f1", "micro_f1", "mcc", "loss"), "macro_f1", True
    ),
    "text-pair-classification": TaskInfo(
        "text-pair-classification", ("accuracy", "macro_f1", "micro_f1", "mcc", "loss"), "macro_f1", True,
        ("text", "text_pair", "label"),
    ),
    "regression": TaskInfo("regression", ("rmse", "pearson", "spearman", "loss"), "rmse", False),
    "token-classification": TaskInfo(
        "token-classification", ("f1", "precision", "recall", "accuracy", "loss"), "f1", True,
        ("tokens", "tags"),
    ),
}

_MINIMIZED = {"rmse", "loss"}


_BOUNDS = {"mcc": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0), "rmse": (0.0, float("inf")), "loss": (0.0, float("inf"))}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric can take: [0, 1] for accuracy, F1, precision, recall, exact match."""
    return _BOUNDS.get(metric, (0.0, 1.0))


def metric_direction(metric: str) -> Direction:
    """Direction in which ``metric`` improves."""
    return "minimize" if metric in _MINIMIZED else "maximize"


PIPELINE_TASKS = {
    "text-classification": "text-classification",
    "text-pair-classification": "text-classification",
    "regression": "text-classification",
    "token-classification": "token-classification",
}
"""The ``transformers.pipeline`` task that serves a model of each hpsearch task."""
