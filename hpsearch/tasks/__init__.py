"""The task registry: each task is one module in this package and one entry here.

To add a task, write a :class:`~hpsearch.tasks.base.Task` subclass in its own module (columns, settings,
tokenization, head, outputs, metrics, baseline, predict) and add an instance below; the spec, the search,
the training loop, export and predict find it here.
"""
from __future__ import annotations

from hpsearch.tasks.base import Features, Task, metric_bounds, metric_direction
from hpsearch.tasks.classification import Regression, TextClassification, TextPairClassification
from hpsearch.tasks.entities import TokenClassification
from hpsearch.tasks.qa import QuestionAnswering

TASKS: dict[str, Task] = {task.name: task for task in (
    TextClassification(),
    TextPairClassification(),
    Regression(),
    TokenClassification(),
    QuestionAnswering(),
)}


def get_task(name: str) -> Task:
    return TASKS[name]


__all__ = ["TASKS", "Features", "Task", "get_task", "metric_bounds", "metric_direction"]
