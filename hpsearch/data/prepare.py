"""From the spec's sources to clean, standard columns (each task says which: text / label, tokens / tags, ...)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

from hpsearch.data.labels import LabelMap
from hpsearch.data.sources import load_source
from hpsearch.errors import DataError, Gathered, RowError, row_list
from hpsearch.spec import StudySpec
from hpsearch.tasks import Task, get_task
from hpsearch.tasks.base import is_missing

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """One split in standard columns, plus a fingerprint of its content (for cache keys)."""

    name: str
    columns: dict[str, list[Any]]
    fingerprint: str
    source_rows: list[int] | None = None
    """The row of the data source each example came from (after a subsample); None where they are the same."""
    source: str = ""
    """The data source, as a problem with one of its rows names it (a file path, or a hub dataset)."""

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def row_error(self, problem: RowError) -> RowError:
        """``problem`` (raised on this split's examples) named by the row of the data source it came from."""
        return problem.in_source(self.source_rows, self.source)


@dataclass
class StudyData:
    task: Task
    """The study's task, configured with its settings and fitted to the training data."""
    label_map: LabelMap
    splits: dict[str, Split] = field(default_factory=dict)
    groups: list[Any] | None = None
    """Group value of each training row, when cv.group_column is set."""
    warnings: list[str] = field(default_factory=list)
    """Problems that do not stop the study but that the user should see (e.g. train/test overlap)."""

    @property
    def train(self) -> Split:
        return self.splits["train"]


def prepare_data(spec: StudySpec, cache_dir: Path | None = None) -> StudyData:
    """Load, check, subsample and standardise every split of the study (the task reads its own columns)."""
    task = get_task(spec.task).configured(spec)
    raw: dict[str, Any] = {}
    target = getattr(spec.data.columns, task.target) if task.target else None
    notes: list[str] = []
    rows: dict[str, list[int] | None] = {}
    groups: list[Any] | None = None
    found = Gathered()  # every split's problems, said together
    for name in SPLITS:
        source = getattr(spec.data, name)
        if source is not None:
            dataset = load_source(source, cache_dir)
            if target is not None:  # on the file's own rows, so the row numbers point into it
                with found.each():
                    _check_targets(task, _column(dataset, target, name), name, target, spec)
            if name == "train" and spec.cv.group_column is not None and spec.data.validation is None:
                groups = _column(dataset, spec.cv.group_column, name)
                with found.each():
                    _refuse_missing([row for row, group in enumerate(groups) if is_missing(group)], spec, name, spec.cv.group_column,
                                    "group", "give each of them its group (a row alone may take a value of its own) or remove them")
            limit = getattr(spec.data.subsample, name)
            rows[name] = None
            if limit is not None and limit < len(dataset):
                rows[name] = subsample_rows(len(dataset), limit, spec.data.subsample.seed)
                dataset = dataset.select(rows[name])
            elif limit is not None and limit > len(dataset):
                notes.append(f"data.subsample.{name} asks for {limit} rows but the {name} data has {len(dataset)}: all of them are used; "
                             f"lower data.subsample.{name} to at most {len(dataset)}")
            raw[name] = dataset
    found.raise_any()  # the label map is made of the training targets: they must be whole first
    targets = _column(raw["train"], target, "train") if target else None
    try:
        label_map = task.label_map(targets, spec.data.labels) if targets is not None else LabelMap(())
    except DataError as exc:
        raise DataError(f"{_where(spec, 'train')}: {exc}") from None
    if spec.data.labels is not None and targets is not None:
        notes += _unseen_labels(spec.data.labels, targets)
    notes += _lookalike_labels(label_map, _target_word(task) if task.target else "label", target)
    data = StudyData(task, label_map, warnings=notes)
    if groups is not None:  # as text, so numbers and names mixed in one column sort; the subsample's rows
        data.groups = [str(groups[row]) for row in (rows["train"] or range(len(groups)))]
    for name, dataset in raw.items():
        with found.each(lambda problem, name=name: _in_source(problem, rows[name], _where(spec, name))):
            data.splits[name] = _standardise(task, dataset, name, spec, label_map, rows[name])
    found.raise_any()
    _refuse_unusable(task, data, spec, target)
    if spec.data.holdout is not None:
        _hold_out(spec, task, data)
    if said := _one_target(task, data, spec, "test", target):
        data.warnings.append(f"{said}: the test {spec.metric} measures how the final model does on that one value only")
    data.task = task.with_data(data.train)
    keys = [task.input_key(data.train, i) for i in range(len(data.train))]
    if spec.data.validation is None and spec.cv.group_column is None:
        data.warnings += _repeated_inputs(task, keys, getattr(spec.data.columns, task.inputs[0]))
    seen = set(keys)
    for name in ("validation", "test"):
        if name in data.splits:
            other = data.splits[name]
            shared = sum(1 for i in range(len(other)) if task.input_key(other, i) in seen)
            if shared:
                data.warnings.append(
                    f"{shared} of {len(data.splits[name])} {name} rows also occur in the training data: "
                    f"their {name} scores are optimistic; remove them from one side"
                )
    return data


def _hold_out(spec: StudySpec, task: Task, data: StudyData) -> None:
    """``data.holdout``: one fold of round(1/holdout) of the training rows, cut as the CV folds are (stratified,
    groups whole), becomes the test split; the search never sees it."""
    from hpsearch.data.splits import cv_splits

    train, folds = data.train, spec.data.holdout_folds
    labels = task.strata(train) if spec.stratify else None
    groups = data.groups if data.groups is not None else task.groups(train)
    kept, held = cv_splits(len(train), folds, labels=labels, groups=groups, seed=spec.cv_seed,
                           label_names=data.label_map.labels or None, setting="data.holdout")[0]
    data.splits["train"], data.splits["test"] = _rows_of(train, "train", kept.tolist()), _rows_of(train, "test", held.tolist())
    if data.groups is not None:
        data.groups = [data.groups[i] for i in kept]


def _rows_of(split: Split, name: str, rows: list[int]) -> Split:
    """The examples ``rows`` of ``split`` as a split of its own, named ``name`` (rows still point into the source)."""
    columns = {column: [values[i] for i in rows] for column, values in split.columns.items()}
    source_rows = [split.source_rows[i] for i in rows] if split.source_rows is not None else rows
    return Split(name, columns, _fingerprint(columns), source_rows, split.source)


def _unseen_labels(declared: list[str], targets: list[Any]) -> list[str]:
    """A declared label that no training row has: the model gets an output for it but never learns it."""
    seen = {str(t) for value in targets for t in (value if isinstance(value, list) else [value])}
    unseen = [label for label in declared if label not in seen]
    if not unseen:
        return []
    them = "it" if len(unseen) == 1 else "them"
    return [f"data.labels declares {unseen}, which no training row has: the model can never learn to predict {them}; "
            f"add training rows with {them} or remove {them} from data.labels"]


def _lookalike_labels(label_map: LabelMap, what: str, column: str | None) -> list[str]:
    """A warning naming the labels that differ only in case, spacing or the writing of a number: each is a class of its
    own, which splits one class's rows between outputs that compete for them."""
    groups = label_map.lookalikes()
    if not groups:
        return []
    shown = "; ".join(", ".join(repr(label) for label in group) for group in groups)
    return [f"{len(groups)} group(s) of {what}s in column {column!r} differ only in case, spacing or the writing of a number "
            f"({shown}): each is trained as a class of its own ({len(label_map)} in all); if they mean the same, write them alike "
            f"in the data (or list the one spelling in data.labels to have the others refused by name)"]


REPEATS_WARNED = 0.01
"""Share of training rows repeating an earlier row's input from which the CV score is said to be optimistic."""


def _repeated_inputs(task: Task, keys: list[Hashable], column: str) -> list[str]:
    """A warning when many training rows repeat another row's input (``keys``: each row's, as the task compares
    inputs): copies split between a fold's training and validation rows are scored on what the model was trained on.
    ``column``: the (first) input column, which cv.group_column can name to keep copies in one fold, where the task
    has no grouping of its own."""
    copies = len(keys) - len(set(keys))
    if copies < max(1, REPEATS_WARNED * len(keys)):
        return []
    fix = "remove the copies" if task.grouped_by else f"remove the copies, or set cv.group_column: {column} to keep each input's copies in one fold"
    return [f"{copies} of {len(keys)} training rows ({100 * copies / len(keys):.1f} %) repeat another row's input: a copy in a fold's "
            f"validation rows whose twin is in its training rows makes the CV score optimistic; {fix}"]


class _Reader:
    """The columns of one split, by ``data.columns`` field (see ``hpsearch.tasks.base.Column``)."""

    def __init__(self, dataset: Any, split: str, spec: StudySpec) -> None:
        self.dataset, self.split, self.columns = dataset, split, spec.data.columns

    def name(self, field: str) -> str:
        return getattr(self.columns, field)

    def __call__(self, field: str) -> list[Any]:
        return _column(self.dataset, self.name(field), self.split)


def subsample_rows(size: int, limit: int, seed: int) -> list[int]:
    """The rows a subsample of ``limit`` of ``size`` keeps, in its order: those of ``datasets``' seeded shuffle
    (``shuffle(seed).select(range(limit))``), which depends on the length and the seed only."""
    from datasets import Dataset

    return Dataset.from_dict({"row": range(size)}).shuffle(seed=seed).select(range(limit))["row"][:]


def _standardise(task: Task, dataset: Any, split: str, spec: StudySpec, label_map: LabelMap, rows: list[int] | None) -> Split:
    """The split in the task's columns (its problems name the task's rows: see :func:`_in_source`)."""
    if len(dataset) == 0:
        raise DataError(f"the {split} data is empty; check the file or the subsample settings")
    out = task.standardise(_Reader(dataset, split, spec), split, label_map)
    return Split(split, out, _fingerprint(out), rows, _where(spec, split))


def _in_source(problem: DataError, rows: list[int] | None, where: str) -> DataError:
    """A problem with rows named by the rows of the data source ``where`` they came from (``rows``: see Split)."""
    return problem.in_source(rows, where) if isinstance(problem, RowError) else problem


def _refuse_unusable(task: Task, data: StudyData, spec: StudySpec, target: str | None) -> None:
    """Splits that are whole, row by row, but that no study can use: too small a validation split, one target value in
    the training or validation data, a metric the labels do not allow. Said together."""
    found = Gathered()
    count = len(data.splits["validation"]) if "validation" in data.splits else None
    if count is not None and count < 2:  # then its one value goes without saying
        found.problems.append(DataError(
            f"{_where(spec, 'validation')}: {count} validation row{'' if count == 1 else 's'}: trials scored on a fixed validation "
            f"split need at least 2 (the interval and comparisons are a bootstrap over its rows); add rows, or leave "
            f"data.validation out to score by k-fold cross-validation"))
    for name, consequence in ONE_VALUE.items():
        said = None if name == "validation" and count is not None and count < 2 else _one_target(task, data, spec, name, target)
        if said:
            found.problems.append(DataError(f"{_where(spec, name)}: {said}: {consequence}"))
    problem = task.metric_problem(spec.metric, data.label_map)
    if problem:
        found.problems.append(DataError(f"{_where(spec, 'train')}: {problem}"))
    found.raise_any()


def _where(spec: StudySpec, split: str) -> str:
    source = getattr(spec.data, split)
    return str(source.path) if source.path is not None else f"hub dataset {source.hub!r}"


def _column(dataset: Any, name: str, split: str) -> list[Any]:
    if name not in dataset.column_names:
        raise DataError(
            f"the {split} data has no column {name!r} (columns: {dataset.column_names}); "
            "set data.columns in the study file"
        )
    values = dataset[name][:]  # a list in one pass; iterating the column reads it row by row (4 s for 600,000 rows)
    feature = dataset.features[name]
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if names and values:  # datasets' ClassLabel stores ids; the label map works on names
        def name(v: Any) -> str | None:  # -1 (GLUE's test splits) and other ids without a name: a missing label
            return names[v] if isinstance(v, int) and 0 <= v < len(names) else None

        if isinstance(values[0], list):
            return [[name(v) for v in row] for row in values]
        return [name(v) for v in values]
    return list(values)


def _check_targets(task: Task, values: list[Any], split: str, column: str, spec: StudySpec) -> None:
    """Missing or empty labels are an error: they would otherwise become a class named 'None' or ''."""
    what = _target_word(task)
    _refuse_missing(task.missing_targets(values), spec, split, column, what, f"fill in the {what}s or remove those rows")


def _target_word(task: Task) -> str:
    """The task's target in words, singular: 'label', 'tag', 'answer'."""
    return task.target[:-1] if task.target.endswith("s") else task.target


ONE_VALUE = {
    "train": "a model learns nothing from one value, and every score would be perfect or undefined; check that data.columns "
             "names the right column, or add rows with other values",
    "validation": "scores on it cannot tell a model that learned from one that predicts that value everywhere, so they cannot "
                  "pick a winner; add rows with other values to the validation split, or leave data.validation out to score "
                  "by k-fold cross-validation",
}
"""What targets that are all one value mean in each split that refuses them (a test split only warns)."""


def _one_target(task: Task, data: StudyData, spec: StudySpec, split: str, column: str | None) -> str | None:
    """Where every target of ``split`` has the same value, that fact in words; None where they differ (or no such split)."""
    value = task.one_target(data.splits[split], data.label_map) if split in data.splits else None
    if value is None:
        return None
    kept = f" kept by data.subsample.{split}" if getattr(spec.data.subsample, split, None) is not None else ""
    count = len(data.splits[split])
    return f"every {_target_word(task)} of the {count} {split} row{'' if count == 1 else 's'}{kept} in column {column!r} is {value}"


def _refuse_missing(rows: list[int], spec: StudySpec, split: str, column: str, what: str, fix: str) -> None:
    """A DataError naming the first ``rows`` (of the file, from 0) whose ``what`` in ``column`` is missing, with ``fix``."""
    if not rows:
        return
    shown, many = row_list(rows, 5), len(rows) != 1
    raise DataError(
        f"{_where(spec, split)}: {len(rows)} {split} row{'s' if many else ''} {'have' if many else 'has'} a missing or empty {what} "
        f"in column {column!r} (row{'s' if many else ''} {shown}, counting data rows from 0); {fix}"
    )


def _fingerprint(columns: dict[str, list[Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(columns):
        digest.update(name.encode())
        digest.update(json.dumps(columns[name], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]
