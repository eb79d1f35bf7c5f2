"""A split's tokenized features, held column by column in numpy arrays rather than as one Python dict per row.

A feature dict of Python lists costs up to 36 bytes per token and field (an int object and its pointer; 8 where Python
shares the number's object, as it does for 0 and 1); a column of int32 costs 4. On a large split that is the difference
between gigabytes and hundreds of megabytes (2.2 KB and 390 bytes a row of 30 tokens in three fields), and the cache on
disk is read back without building a Python object per token. The tasks hand over the tokenizer's columns as they come;
rows are read as dicts of lists and numbers, what the transformers collators take, one batch at a time.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

_STARTS = ".starts"
"""Suffix of the array that holds where each row's values begin in a column of lists."""


class FeatureTable(Sequence[dict[str, Any]]):
    """Rows of numbers and of lists of numbers, stored as one array per field (plus each row's start for the lists)."""

    def __init__(self, values: dict[str, np.ndarray], starts: dict[str, np.ndarray]) -> None:
        self.values, self.starts = values, starts
        key = next(iter(values), None)  # every field has a value in every row
        self.rows = 0 if key is None else len(starts[key]) - 1 if key in starts else len(values[key])

    @classmethod
    def of(cls, parts: Iterable[dict[str, Sequence[Any]]]) -> FeatureTable:
        """The table of features given a part of rows at a time, each part as its columns (field -> every row's value,
        as a tokenizer returns them); each part is turned into arrays, then let go."""
        blocks = [_columns(part) for part in parts if part and len(next(iter(part.values())))]
        if not blocks:
            return cls({}, {})
        keys = list(blocks[0][0])
        values, starts = {}, {}
        for key in keys:
            values[key] = _narrow(np.concatenate([block[0][key] for block in blocks]))
            if key in blocks[0][1]:
                lengths = np.concatenate([block[1][key] for block in blocks])
                starts[key] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(values, starts)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.rows))]
        row = int(index) + (self.rows if index < 0 else 0)
        if not 0 <= row < self.rows:
            raise IndexError(f"row {index} of a table of {self.rows}")
        return {key: self.value(row, key) for key in self.values}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self.rows))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureTable):
            return (self.rows == other.rows and self.values.keys() == other.values.keys() and self.starts.keys() == other.starts.keys()
                    and all(np.array_equal(a, other.values[k]) for k, a in self.values.items())
                    and all(np.array_equal(a, other.starts[k]) for k, a in self.starts.items()))
        return isinstance(other, list) and list(self) == other

    __hash__ = None  # type: ignore[assignment]  # mutable arrays

    def value(self, row: int, key: str) -> Any:
        """One field of one row: a Python number, or a list of them."""
        starts = self.starts.get(key)
        if starts is None:
            return self.values[key][row].item()
        return self.values[key][starts[row]:starts[row + 1]].tolist()

    def column(self, key: str) -> list[Any]:
        """``key``'s value in every row."""
        starts = self.starts.get(key)
        if starts is None:
            return self.values[key].tolist()
        return [self.values[key][a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]

    def lengths(self, key: str = "input_ids") -> list[int]:
        """The length of ``key``'s list in each row (tokens per feature for ``input_ids``)."""
        return np.diff(self.starts[key]).tolist() if self.rows else []

    def save(self, path: Path) -> None:
        arrays = {**self.values, **{key + _STARTS: starts for key, starts in self.starts.items()}}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> FeatureTable:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        starts = {name[: -len(_STARTS)]: arrays.pop(name) for name in list(arrays) if name.endswith(_STARTS)}
        return cls(arrays, starts)


def _columns(part: dict[str, Sequence[Any]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(values per key, list lengths per key whose values are lists) of one part's columns."""
    values, lengths = {}, {}
    rows = len(next(iter(part.values())))
    for key, column in part.items():
        if len(column) != rows:  # a programming error: every field has a value in every row
            raise ValueError(f"feature field {key!r} has {len(column)} values for {rows} rows")
        if isinstance(column[0], (list, tuple)):
            lengths[key] = np.fromiter(map(len, column), np.int64, rows)
            flat = list(itertools.chain.from_iterable(column))
            values[key] = np.array(flat) if flat else np.zeros(0, np.int64)
        else:
            values[key] = np.array(column)
        if values[key].dtype.kind not in "biuf":  # a programming error: features are numbers
            raise TypeError(f"feature field {key!r} holds {values[key].dtype} values, not numbers")
    return values, lengths


def _narrow(values: np.ndarray) -> np.ndarray:
    """Integers in 32 bits where they fit (token ids, masks, labels, positions); floats as they are."""
    if values.dtype.kind in "iu" and values.size and values.min() >= -2**31 and values.max() < 2**31:
        return values.astype(np.int32)
    return values
