"""From the spec's sources to clean, standard columns: text / text_pair / label, or tokens / tags."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.data.labels import LabelMap
from hpsearch.data.sources import load_source
from hpsearch.errors import DataError
from hpsearch.spec import StudySpec

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """One split in standard columns, plus a fingerprint of its content (for cache keys)."""

    name: str
    columns: dict[str, list[Any]]
    fingerprint: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


@dataclass
class StudyData:
    task: str
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
    """Load, check, subsample and label-encode every split of the study."""
    raw: dict[str, Any] = {}
    token_task = spec.task == "token-classification"
    label_key = spec.data.columns.tags if token_task else spec.data.columns.label
    notes: list[str] = []
    for name in SPLITS:
        source = getattr(spec.data, name)
        if source is not None:
            dataset = load_source(source, cache_dir)
            if spec.task != "regression":  # on the file's own rows, so the row numbers point into it
                _check_labels(_column(dataset, label_key, name, spec), name, label_key, spec, token_task)
            limit = getattr(spec.data.subsample, name)
            if limit is not None and limit < len(dataset):
                dataset = dataset.shuffle(seed=spec.data.subsample.seed).select(range(limit))
            elif limit is not None and limit > len(dataset):
                notes.append(f"data.subsample.{name} asks for {limit} rows but the {name} data has {len(dataset)}: all of them are used")
            raw[name] = dataset
    train_labels = _column(raw["train"], label_key, "train", spec)
    if spec.task == "regression":
        label_map = LabelMap(())
    else:
        seen = [tag for row in train_labels for tag in row] if token_task else train_labels
        label_map = LabelMap.from_values(seen, spec.data.labels)
    data = StudyData(spec.task, label_map, warnings=notes)
    for name, dataset in raw.items():
        data.splits[name] = _standardise(dataset, name, spec, label_map)
    if spec.cv.group_column is not None and spec.data.validation is None:
        data.groups = _column(raw["train"], spec.cv.group_column, "train", spec)
    for name in ("validation", "test"):
        if name in data.splits:
            shared = overlap(data.train, data.splits[name])
            if shared:
                data.warnings.append(
                    f"{shared} of {len(data.splits[name])} {name} rows also occur in the training data: "
                    f"their {name} scores are optimistic; remove them from one side"
                )
    return data


def overlap(train: Split, other: Split) -> int:
    """Rows of ``other`` whose input (text, pair or tokens) also occurs in ``train``."""
    keys = [k for k in ("text", "text_pair", "tokens") if k in train.columns]

    def rows(split: Split) -> list[str]:
        return [json.dumps([split.columns[k][i] for k in keys]) for i in range(len(split))]

    seen = set(rows(train))
    return sum(1 for row in rows(other) if row in seen)


def _standardise(dataset: Any, split: str, spec: StudySpec, label_map: LabelMap) -> Split:
    if len(dataset) == 0:
        raise DataError(f"the {split} data is empty; check the file or the subsample settings")
    cols = spec.data.columns
    out: dict[str, list[Any]] = {}
    if spec.task == "token-classification":
        tokens = _column(dataset, cols.tokens, split, spec)
        tags = _column(dataset, cols.tags, split, spec)
        for row, (words, row_tags) in enumerate(zip(tokens, tags)):
            if not isinstance(words, list) or not isinstance(row_tags, list) or len(words) != len(row_tags):
                raise DataError(
                    f"{split} row {row}: '{cols.tokens}' and '{cols.tags}' must be lists of equal length; "
                    "fix the row"
                )
            if not words:
                raise DataError(f"{split} row {row}: no tokens; remove the row")
        out["tokens"] = [[str(w) for w in words] for words in tokens]
        out["tags"] = [label_map.encode(row_tags, f"{split} (row {i}) tag") for i, row_tags in enumerate(tags)]
    else:
        out["text"] = _texts(_column(dataset, cols.text, split, spec), split, cols.text)
        if spec.task == "text-pair-classification":
            assert cols.text_pair is not None  # the spec guarantees it for this task
            out["text_pair"] = _texts(_column(dataset, cols.text_pair, split, spec), split, cols.text_pair)
        values = _column(dataset, cols.label, split, spec)
        out["label"] = _numbers(values, split, cols.label) if spec.task == "regression" else label_map.encode(values, split)
    return Split(split, out, _fingerprint(out))


def _column(dataset: Any, name: str, split: str, spec: StudySpec) -> list[Any]:
    if name not in dataset.column_names:
        raise DataError(
            f"the {split} data has no column {name!r} (columns: {dataset.column_names}); "
            "set data.columns in the study file"
        )
    values = dataset[name]
    feature = dataset.features[name]
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if names and values:  # datasets' ClassLabel stores ids; the label map works on names
        if isinstance(values[0], list):
            return [[names[v] for v in row] for row in values]
        return [names[v] for v in values]
    return list(values)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _check_labels(values: list[Any], split: str, column: str, spec: StudySpec, token_task: bool) -> None:
    """Missing or empty labels are an error: they would otherwise become a class named 'None' or ''."""
    if token_task:
        rows = [row for row, tags in enumerate(values) if isinstance(tags, list) and any(_missing(t) for t in tags)]
    else:
        rows = [row for row, value in enumerate(values) if _missing(value)]
    if not rows:
        return
    source = getattr(spec.data, split)
    where = str(source.path) if source.path is not None else f"hub dataset {source.hub!r}"
    shown = ", ".join(str(r) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    what = "tags" if token_task else "labels"
    raise DataError(
        f"{where}: {len(rows)} {split} row(s) have a missing or empty {what[:-1]} in column {column!r} "
        f"(rows {shown}, counting data rows from 0); fill in the {what} or remove those rows"
    )


def _texts(values: list[Any], split: str, column: str) -> list[str]:
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
            raise DataError(f"{split} row {row}: column {column!r} is empty; fill in or remove the row")
    return [str(v) for v in values]


def _numbers(values: list[Any], split: str, column: str) -> list[float]:
    out = []
    for row, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise DataError(f"{split} row {row}: regression target {value!r} in {column!r} is not a finite number")
        out.append(number)
    return out


def _fingerprint(columns: dict[str, list[Any]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(columns):
        digest.update(name.encode())
        digest.update(json.dumps(columns[name], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]
