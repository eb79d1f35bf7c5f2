"""The column store of tokenized features: rows read back as the dicts the tasks made, on disk and in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpsearch.tasks.featuretable import FeatureTable

ROWS = [
    {"input_ids": [101, 7592, 102], "attention_mask": [1, 1, 1], "labels": 1, "offset_start": [-1, 0, -1]},
    {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0, "offset_start": [-1, -1]},
    {"input_ids": [101, 2023, 2003, 102], "attention_mask": [1, 1, 1, 1], "labels": 2, "offset_start": [-1, 0, 5, -1]},
]


def _columns(rows: list[dict]) -> dict[str, list]:
    """Rows as a tokenizer gives them: field -> every row's value."""
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def test_rows_read_back_as_the_dicts_they_were_made_from_in_any_parts(tmp_path: Path) -> None:
    table = FeatureTable.of([_columns(ROWS[:1]), {}, {"input_ids": []}, _columns(ROWS[1:])])
    assert len(table) == 3 and list(table) == ROWS and table == ROWS
    assert table[-1] == ROWS[2] and table[0:2] == ROWS[:2]
    assert all(type(v) is int for row in table for value in row.values() for v in (value if isinstance(value, list) else [value]))
    assert table.lengths() == [3, 2, 4] and table.column("labels") == [1, 0, 2] and table.column("offset_start")[2] == [-1, 0, 5, -1]
    assert table.values["input_ids"].dtype == np.int32  # 4 bytes a token, not a Python int object and its pointer
    table.save(tmp_path / "t.npz")
    again = FeatureTable.load(tmp_path / "t.npz")
    assert again == table and list(again) == ROWS
    with pytest.raises(IndexError):
        table[3]


def test_numbers_keep_their_kind_and_value() -> None:
    """Regression targets stay floats (one part of whole numbers and one of fractions give floats, exactly); integers past
    32 bits keep 64; an empty list is a row of length 0; something that is not a number is refused."""
    table = FeatureTable.of([{"input_ids": [[]], "labels": [3]}, {"input_ids": [[5]], "labels": [0.1]}])
    assert list(table) == [{"input_ids": [], "labels": 3.0}, {"input_ids": [5], "labels": 0.1}]
    assert type(table[0]["labels"]) is float and table.lengths() == [0, 1]
    assert FeatureTable.of([{"example": [2**40]}])[0] == {"example": 2**40}
    assert len(FeatureTable.of([])) == 0 and FeatureTable.of([]).lengths() == []
    with pytest.raises(TypeError, match="'labels'"):
        FeatureTable.of([{"input_ids": [[1]], "labels": [None]}])
    with pytest.raises(ValueError, match="'labels' has 1 values for 2 rows"):
        FeatureTable.of([{"input_ids": [[1], [2]], "labels": [0]}])
