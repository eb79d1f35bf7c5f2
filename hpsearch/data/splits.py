"""Cross-validation folds: the same folds for every trial, cut by scikit-learn's splitters."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from hpsearch.errors import DataError


def cv_splits(
    n_rows: int,
    folds: int,
    *,
    labels: Sequence[int] | None = None,
    groups: Sequence[object] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    setting: str = "cv.folds",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) per fold.

    ``labels`` given means stratified; ``groups`` given means no group is split across folds.
    ``label_names`` (by label id) name the classes in errors; ``setting`` names the study setting that asked for
    ``folds`` (``data.holdout`` holds out one fold), which an error asks to lower (or raise).
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if n_rows < folds:
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} rows, but the training data has {n_rows}; {_fix(setting)}")
    index = np.arange(n_rows)
    random_state = seed if shuffle else None
    if groups is not None:
        n_groups = len(set(groups))
        if n_groups < folds:
            raise DataError(
                f"the group column has {n_groups} distinct values but {setting} asks for {folds} folds; "
                f"{_fix(setting)} or use a column with more groups"
            )
    if labels is not None:
        _check_class_counts(labels, folds, label_names, setting)
        if groups is not None:
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=shuffle, random_state=random_state)
            return list(splitter.split(index, labels, groups))
        splitter = StratifiedKFold(n_splits=folds, shuffle=shuffle, random_state=random_state)
        return list(splitter.split(index, labels))
    if groups is not None:
        # GroupKFold shuffles only from scikit-learn 1.6 on; permuting the group ids keeps older ones seeded too.
        codes = _shuffled_group_codes(groups, seed if shuffle else None)
        return list(GroupKFold(n_splits=folds).split(index, groups=codes))
    return list(KFold(n_splits=folds, shuffle=shuffle, random_state=random_state).split(index))


def _fix(setting: str) -> str:
    return "raise data.holdout" if setting == "data.holdout" else f"lower {setting}"


def _check_class_counts(labels: Sequence[int], folds: int, names: Sequence[str] | None, setting: str) -> None:
    counts = Counter(labels)
    small = {label: n for label, n in sorted(counts.items()) if n < folds}
    if small:
        shown = {names[label]: n for label, n in small.items()} if names is not None else small
        raise DataError(
            f"stratified {folds}-fold CV needs at least {folds} rows per class, but these classes have fewer: "
            f"{shown} ({'label' if names is not None else 'label id'}: rows); {_fix(setting)}, add rows, or set cv.stratify: false"
        )


def _shuffled_group_codes(groups: Sequence[object], seed: int | None) -> np.ndarray:
    unique, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    if seed is None:
        return codes
    permutation = np.random.default_rng(seed).permutation(len(unique))
    return permutation[codes]
