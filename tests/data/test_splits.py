from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hpsearch.data.splits import cv_splits
from hpsearch.errors import DataError


def test_stratified_folds_keep_class_proportions_and_cover_every_row() -> None:
    labels = [0] * 60 + [1] * 30
    folds = cv_splits(90, 3, labels=labels, seed=1)
    assert len(folds) == 3
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(90))
    for train, val in folds:
        assert not set(train) & set(val)
        assert Counter(labels[i] for i in val) == {0: 20, 1: 10}


def test_groups_never_straddle_a_fold() -> None:
    groups = [f"movie{i // 5}" for i in range(100)]
    labels = [i % 2 for i in range(100)]
    for kwargs in ({"labels": labels}, {}):
        for train, val in cv_splits(100, 4, groups=groups, seed=0, **kwargs):
            assert not {groups[i] for i in train} & {groups[i] for i in val}


def test_same_seed_same_folds_other_seed_other_folds() -> None:
    a = cv_splits(50, 5, labels=[i % 2 for i in range(50)], seed=3)
    b = cv_splits(50, 5, labels=[i % 2 for i in range(50)], seed=3)
    c = cv_splits(50, 5, labels=[i % 2 for i in range(50)], seed=4)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b))
    assert any((x[1] != y[1]).any() for x, y in zip(a, c))


def test_class_smaller_than_folds_names_counts_and_fix() -> None:
    with pytest.raises(DataError) as info:
        cv_splits(12, 5, labels=[0] * 10 + [1] * 2)
    message = str(info.value)
    assert "{1: 2}" in message and "lower cv.folds" in message and "cv.stratify: false" in message
    with pytest.raises(DataError, match=r"have fewer: \{'rare': 2\} \(label: rows\)"):
        cv_splits(12, 5, labels=[0] * 10 + [1] * 2, label_names=["common", "rare"])


def test_too_few_groups() -> None:
    with pytest.raises(DataError, match="2 distinct values but cv.folds asks for 3 folds; lower cv.folds"):
        cv_splits(10, 3, groups=["a"] * 5 + ["b"] * 5)
