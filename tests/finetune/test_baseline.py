"""The trivial baseline per task, on the study's own folds."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpsearch.data import prepare_data
from hpsearch.finetune.baseline import baseline_scores
from hpsearch.spec import load_spec
from toydata import toy_study, write_csv


def _data(tmp_path: Path, model: Path, task: str, rows: int = 60):  # noqa: ANN202
    return prepare_data(load_spec(toy_study(tmp_path, model, task=task, rows=rows)))


def test_majority_class_of_each_folds_training_rows(tmp_path: Path, tiny_bert: Path) -> None:
    write_csv(tmp_path / "skew.csv", [{"text": "good film", "label": "pos"}] * 6 + [{"text": "bad film", "label": "neg"}] * 2)
    path = toy_study(tmp_path, tiny_bert)
    path.write_text(path.read_text().replace("train: cls.csv", "train: skew.csv\n  test: skew.csv"))
    data = prepare_data(load_spec(path))
    pos = data.label_map.label2id["pos"]
    folds = [([0, 1, 2, 6], [3, 4, 7]), ([3, 4, 5, 7, 6], [0, 1])]  # majority pos in the first, pos (3 of 5) in the second
    result = baseline_scores(data, folds, "train", "accuracy")
    labels = data.train.columns["label"]
    expected = [sum(labels[i] == pos for i in rows) / len(rows) for _, rows in folds]
    assert result["fold_scores"] == pytest.approx(expected) and result["cv_mean"] == pytest.approx(sum(expected) / 2)
    assert result["predicts"] == "the majority class 'pos'" and result["test"] == pytest.approx(6 / 8)
    # the loss of predicting each fold's training class frequencies (add-one), as cross-entropy on its validation rows
    def cross_entropy(train: list[int], rows: list[int]) -> float:
        p = {c: (sum(labels[i] == c for i in train) + 1) / (len(train) + 2) for c in (0, 1)}
        return -sum(math.log(p[labels[i]]) for i in rows) / len(rows)

    assert result["loss"] == pytest.approx(sum(cross_entropy(list(t), list(r)) for t, r in folds) / 2)


def test_regression_predicts_the_training_mean(tmp_path: Path, tiny_bert: Path) -> None:
    data = _data(tmp_path, tiny_bert, "regression")
    labels = data.train.columns["label"]
    train = [i for i in range(60) if labels[i] <= 1]  # a fold whose mean is not that of every row
    rows = [i for i in range(60) if labels[i] > 1]
    result = baseline_scores(data, [(train, rows)], "train", "rmse")
    mean = sum(labels[i] for i in train) / len(train)
    expected = (sum((labels[i] - mean) ** 2 for i in rows) / len(rows)) ** 0.5
    assert result["fold_scores"][0] == pytest.approx(expected)
    assert result["loss"] == pytest.approx(expected ** 2)  # the regression head's loss: mean squared error
    # In words: the mean of every training row (what the test split is scored with), not of the last fold's.
    assert result["predicts"] == f"the training mean {sum(labels) / len(labels):.4g}" != f"the training mean {mean:.4g}"


def test_token_classification_predicts_all_o(tmp_path: Path, tiny_bert: Path) -> None:
    data = _data(tmp_path, tiny_bert, "token-classification")
    result = baseline_scores(data, [(list(range(40)), list(range(40, 60)))], "train", "f1")
    assert result["fold_scores"] == [0.0] and result["predicts"] == "'O' for every word"
    assert result["loss"] is None  # no prior loss for token classification: the sampler uses the score alone
    assert baseline_scores(data, [(list(range(40)), list(range(40, 60)))], "train", "accuracy")["cv_mean"] < 1.0
