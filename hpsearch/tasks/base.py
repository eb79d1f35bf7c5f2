"""What every task provides: the base class the search, the loop, export and predict talk to.

A task owns its whole path: the spec fields it adds (columns, data settings), reading and checking its
columns, tokenization and label alignment, the model head, the collator, turning model outputs into
predictions, its metrics, its trivial baseline, the pipeline that serves its exports and how ``predict``
reads and writes rows. Nothing outside ``hpsearch.tasks`` branches on a task's name.

Importing a task module is cheap (no torch, no transformers): the spec reads the registry to validate
metric names and columns before anything heavy loads.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable, Iterator, Literal, Protocol, Sequence

from hpsearch.errors import refuse_rows
from hpsearch.tasks.featuretable import FeatureTable

if TYPE_CHECKING:
    from hpsearch.data.labels import LabelMap
    from hpsearch.data.prepare import Split, StudyData

Direction = Literal["maximize", "minimize"]


class Column(Protocol):
    """Reads the column a ``data.columns`` field names, in one split (a DataError names the split when it is missing)."""

    def __call__(self, field: str) -> list[Any]: ...

    def name(self, field: str) -> str:
        """The column's name in the data (for messages)."""
        ...

IGNORE_INDEX = -100
"""Label of positions that carry no loss (special tokens, non-first subwords)."""

_MINIMIZED = {"rmse", "loss"}
_BOUNDS = {"mcc": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0), "rmse": (0.0, math.inf), "loss": (0.0, math.inf)}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric can take: [0, 1] for accuracy, F1, precision, recall, exact match."""
    return _BOUNDS.get(metric, (0.0, 1.0))


def metric_direction(metric: str) -> Direction:
    """Direction in which ``metric`` improves."""
    return "minimize" if metric in _MINIMIZED else "maximize"


@dataclass(frozen=True)
class Features:
    """A split's model inputs: one feature per model input (unpadded; read as dicts, stored as columns).

    ``windows`` is None when each example is one feature (feature i is example i); otherwise it lists,
    per example, the indices of its features (a long question-answering context gives several windows).
    """

    rows: FeatureTable
    windows: list[list[int]] | None = None

    def of(self, examples: Sequence[int]) -> list[int]:
        """The feature indices of ``examples``, in order."""
        if self.windows is None:
            return list(examples)
        return [feature for example in examples for feature in self.windows[example]]


@dataclass(frozen=True)
class Task:
    """One kind of work. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    """The scores a study can select by (every evaluation also reports the validation loss)."""
    default_metric: ClassVar[str]
    auto_class: ClassVar[str]
    """Name of the transformers AutoModelFor... class that adds this task's head."""
    pipeline_task: ClassVar[str]
    """The ``transformers.pipeline`` task that serves an export."""
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    has_label_list: ClassVar[bool] = True
    """Whether the task predicts one of a fixed list of labels (cv.stratify and data.labels apply)."""
    stratifies: ClassVar[bool] = False
    """Whether folds can keep the proportions of something (``strata``); cv.stratify acts only then."""
    inputs: ClassVar[tuple[str, ...]] = ()
    """Fields of ``data.columns`` that hold the model's inputs (every split, and ``predict``'s input, needs them);
    ``standardise`` keeps each under its field's name."""
    target: ClassVar[str | None] = None
    """Field of ``data.columns`` that holds what is learned (every labelled split needs it)."""
    columns: ClassVar[dict[str, tuple[str | None, str]]] = {}
    """``data.columns`` fields this task adds: name -> (default column name, description)."""
    settings: ClassVar[dict[str, tuple[Any, Any]]] = {}
    """``data`` settings this task adds: name -> (type, pydantic Field)."""
    grouped_by: ClassVar[str | None] = None
    """What ``groups`` keeps in one fold, in words (None: nothing)."""
    target_keys: ClassVar[tuple[str, ...]] = ("labels",)
    """Feature keys the loss needs (the frozen-layer batches carry them beside the stored states)."""
    loss_sees_padding: ClassVar[bool] = False
    """Whether the model's loss spans the padding too (an answer span's start and end are chosen among every position):
    its batches are then padded to their longest row only, as more padding would change the loss (see
    :func:`hpsearch.finetune.batching.pad_multiple`)."""
    split_words: ClassVar[bool] = False
    """Whether inputs come as words (a list per row) rather than text: a byte-level BPE tokenizer (RoBERTa, GPT-2)
    must then put a space before each word, as before every word of a text but the first."""

    # -- the spec -----------------------------------------------------------------------------

    def configured(self, spec: Any) -> Task:
        """This task with the study's settings (for tasks that declare ``settings``)."""
        values = {name: getattr(spec.data, name) for name in self.settings}
        return dataclasses.replace(self, **values) if values else self

    def cut_at(self, max_length: int) -> Task:
        """This task for inputs cut at ``max_length`` tokens, where a model takes fewer than data.max_length (for the
        tasks whose settings depend on it)."""
        return self

    def with_data(self, train: Split) -> Task:
        """This task fitted to the study's training data (for what depends on it)."""
        return self

    def spec_problems(self, spec: Any) -> list[str]:
        """What in the spec does not fit this task, each with its fix."""
        return []

    def column_fields(self) -> tuple[str, ...]:
        return tuple(f for f in (*self.inputs, self.target) if f is not None)

    # -- data ---------------------------------------------------------------------------------

    def missing_targets(self, values: list[Any]) -> list[int]:
        """Rows (of the file as read) whose target is missing or empty."""
        return [row for row, value in enumerate(values) if is_missing(value)]

    def label_map(self, train_targets: list[Any], declared: Sequence[str] | None) -> LabelMap:
        from hpsearch.data.labels import LabelMap

        return LabelMap.from_values(train_targets, declared) if self.has_label_list else LabelMap(())

    def one_target(self, train: Split, label_map: LabelMap) -> str | None:
        """The one value every training target has, where they all have the same (a study that has nothing to learn
        from); None where they differ or the task has no such targets."""
        return None

    def metric_problem(self, metric: str, label_map: LabelMap) -> str | None:
        """Why ``metric`` cannot score the training data's labels, with the fix; None where it can."""
        return None

    def standardise(self, column: Column, split: str, label_map: LabelMap) -> dict[str, list[Any]]:
        """The split in standard columns (checked, label-encoded)."""
        raise NotImplementedError

    def strata(self, split: Split) -> list[Any] | None:
        """What stratified folds keep in proportion (None: folds cannot be stratified)."""
        return None

    def groups(self, split: Split) -> list[Any] | None:
        """Rows that must stay in one fold when cv.group_column is not set (None: no such rows)."""
        return None

    def input_key(self, split: Split, row: int) -> Hashable:
        """Identity of a row's input, to find validation or test rows that also occur in training: its input columns'
        values, a list (an entity task's words) as a tuple."""
        return tuple(tuple(value) if isinstance(value, list) else value for value in (split.columns[field][row] for field in self.inputs))

    # -- tokens and the model -----------------------------------------------------------------

    def cache_key(self) -> list[Any]:
        """What, beside data, tokenizer and max_length, changes this task's features."""
        return [self.name, *[getattr(self, name) for name in sorted(self.settings)]]

    def tokenize(self, split: Split, tokenizer: Any, max_length: int) -> Features:
        raise NotImplementedError

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        """Batches of features, each padded to its longest row, rounded up to ``pad_to_multiple_of`` tokens where given."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def num_labels(self, label_map: LabelMap) -> int:
        return len(label_map) if label_map.labels else 1

    def configure_model(self, config: Any, label_map: LabelMap) -> None:
        """Set the head's size and labels on a model config before the model is built."""
        config.num_labels = self.num_labels(label_map)
        if label_map.labels:
            config.id2label, config.label2id = label_map.id2label, label_map.label2id

    def model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.auto_class)

    def start_head(self, model: Any, split: Split, rows: Sequence[int]) -> float:
        """Adjust the freshly initialised head of ``model`` to the targets of ``rows`` of ``split`` (the fit's training
        rows) before training; returns the weight of the training loss (:attr:`TrainConfig.loss_weight`). Most tasks
        leave the head as built, with weight 1."""
        return 1.0

    # -- outputs, predictions, metrics --------------------------------------------------------

    def outputs(self, output: Any, batch: dict[str, Any]) -> list[Any]:
        """The part of a model output each feature of ``batch`` keeps (numpy arrays), in batch order."""
        return list(output.logits.float().cpu().numpy())

    def decode(self, outputs: list[Any], split: Split, rows: list[int], label_map: LabelMap) -> list[Any]:
        """Per-example outputs (a list of (feature, output) pairs where examples have several features)
        -> one compact, JSON-friendly prediction per row: what metrics, out-of-fold estimates and exports use."""
        raise NotImplementedError

    def measure(self, predictions: list[Any], split: Split, rows: list[int], label_map: LabelMap) -> dict[str, float]:
        raise NotImplementedError

    def ratio_parts(self, predictions: list[Any], split: Split, rows: list[int], label_map: LabelMap, metric: str) -> list[tuple[float, float]] | None:
        """Where ``metric`` is a ratio of sums over rows (entity F1 is 2 x matched entities over predicted plus gold
        entities; a mean of per-row scores is their sum over the row count): each row's (numerator, denominator),
        from which the bias-corrected estimate scores any sample of rows. None where it is not such a ratio (class and
        value metrics, which :mod:`hpsearch.estimate` scores from predictions against gold; the loss)."""
        return None

    def baseline(self, data: StudyData, train_rows: Sequence[int], split: Split, rows: list[int]) -> tuple[list[Any], str]:
        """Predictions of a model that learned nothing from the text, fitted on ``train_rows``, and what it predicts."""
        raise NotImplementedError

    def baseline_loss(self, data: StudyData, train_rows: Sequence[int], split: Split, rows: list[int]) -> float | None:
        """The validation loss (as the model's head measures it) of a model that learned only the distribution of
        ``train_rows``' targets; None where the task cannot say. A trial whose loss is no lower learned nothing."""
        return None

    # -- export and predict -------------------------------------------------------------------

    def export_settings(self) -> dict[str, Any]:
        """Settings ``predict`` needs beside the model (written to the export's metadata)."""
        return {}

    def learns(self, labels: Sequence[str]) -> str:
        """What the model predicts, in words (for the model card)."""
        return f"labels: {', '.join(labels)}"

    @property
    def mlflow_pipeline(self) -> str | None:
        """Pipeline task MLflow's transformers flavour logs the export as (None: the folder is logged as it is)."""
        return self.pipeline_task

    def load_call(self, folder: str) -> str:
        """The ``transformers.pipeline`` call that serves an export in ``folder``."""
        return f'pipeline("{self.pipeline_task}", model="{folder}")'

    def finish_export(self, folder: Path) -> None:
        """Add what the exported folder needs beyond weights, config and tokenizer (before it is moved into place)."""

    def input_columns(self, columns: Any) -> dict[str, str]:
        """Standard input name -> the column the study read it from (written to the export's metadata)."""
        return {field: getattr(columns, field) for field in self.inputs if getattr(columns, field) is not None}

    def predict(self, model_dir: str, meta: dict[str, Any], rows: list[dict[str, Any]], batch_size: int,
                done: Callable[[int], None] = lambda rows: None) -> list[dict[str, Any]]:
        """One dict of output columns per input row, from an exported folder; ``done`` hears how many rows are done."""
        raise NotImplementedError


TOKENIZE_CHUNK = 8192
"""Rows a task hands the tokenizer at once. Its output for a whole split (one encoding per row, with tokens and offsets)
took several times the memory of the features kept from it, and the process held that memory on."""


def chunks(rows: int) -> Iterator[slice]:
    """The slices of ``rows`` rows a task tokenizes one after the other (TOKENIZE_CHUNK each)."""
    for start in range(0, rows, TOKENIZE_CHUNK):
        yield slice(start, min(start + TOKENIZE_CHUNK, rows))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def texts(values: list[Any], split: str, column: str) -> list[str]:
    """Non-empty strings, or a DataError naming the empty rows."""
    refuse_rows(split, ((row, f"column {column!r} is empty; fill in or remove the row") for row, value in enumerate(values)
                        if is_missing(value) or not str(value).strip()))
    return [str(v) for v in values]

