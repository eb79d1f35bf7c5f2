"""Metrics per task, computed by scikit-learn, scipy and seqeval on plain predictions."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def classification_metrics(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "mcc": float(matthews_corrcoef(gold, predicted)),
    }


def regression_metrics(predicted: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    p, g = np.asarray(predicted, dtype=float), np.asarray(gold, dtype=float)
    rmse = float(np.sqrt(np.mean((p - g) ** 2)))
    # Correlation is undefined for constant predictions; 0 says "no linear relation found".
    constant = np.ptp(p) == 0 or np.ptp(g) == 0
    pearson = 0.0 if constant else float(pearsonr(p, g).statistic)
    spearman = 0.0 if constant else float(spearmanr(p, g).statistic)
    return {"rmse": rmse, "pearson": _finite(pearson), "spearman": _finite(spearman)}


def entity_metrics(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level precision/recall/F1 (seqeval, IOB2) and token accuracy over words."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
    }


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
