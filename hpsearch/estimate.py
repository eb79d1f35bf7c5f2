"""How good is the winner really? The selection-bias-corrected estimate (BBC-CV).

The winner's CV score is the best of many, so it is optimistic: with enough configurations one of them
scores high by luck. Bootstrap bias-corrected cross-validation (Tsamardinos, Greasidou & Borboudakis,
"Bootstrapping the out-of-sample predictions for efficient and accurate cross-validation", Machine
Learning 107, 2018) removes that optimism without training anything more: it takes every completed
configuration's out-of-fold predictions (each row predicted by the fold model that did not train on it,
at the configuration's scored epoch), draws bootstrap samples of rows, picks a configuration on each
sample as the study's selection rule would (the best, or the cheapest within one standard error of it)
and scores that pick on the rows the sample left out. Scores are taken fold by fold and
averaged, as the CV score is (see :func:`bbc_cv`). The mean of those scores is the estimate; their
percentiles give its interval. Cost: ``samples`` x configurations x folds metric evaluations on counts
(about 2.5 s on 2 CPU cores for 1,000 samples, 50 configurations, 10,000 rows and 5 folds), no model is run.

Pure numpy: tested on synthetic predictions whose true score is known. Class and value metrics are scored
from predictions against gold; the metrics that are ratios of sums over rows (entity F1, precision and
recall, word accuracy, the mean F1 or exact match of questions) from each row's parts, which the task gives.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

CLASS_METRICS = ("accuracy", "macro_f1", "micro_f1", "mcc")
VALUE_METRICS = ("rmse", "pearson", "spearman")


def supported(metric: str) -> bool:
    return metric in CLASS_METRICS or metric in VALUE_METRICS


def scores(predictions: np.ndarray, gold: np.ndarray, metric: str, classes: int = 0) -> np.ndarray:
    """``metric`` of each row of ``predictions`` (configurations x rows) against ``gold``; the same
    definitions as the study's metrics (scikit-learn / scipy), computed on counts so that many samples are cheap."""
    if metric in CLASS_METRICS:
        return _class_scores(predictions.astype(np.int64, copy=False), gold.astype(np.int64, copy=False), metric, classes)
    if metric in VALUE_METRICS:
        return _value_scores(predictions.astype(float, copy=False), gold.astype(float, copy=False), metric)
    raise ValueError(f"no bias-corrected estimate for metric {metric!r}; supported: {CLASS_METRICS + VALUE_METRICS}")


def task_inputs(task: Any, split: Any, label_map: Any, metric: str, predictions: list[list[Any]],
                rows: list[int]) -> tuple[list[Any], list[Any] | None] | None:
    """What the estimates here take for ``predictions`` (one list per configuration, for ``rows`` of ``split``): each
    row's ratio parts with gold None for the metrics that are ratios of sums over rows (``task.ratio_parts``), else the
    predictions and the gold labels; None for a metric neither covers."""
    parts = [task.ratio_parts(p, split, rows, label_map, metric) for p in predictions]
    if parts[0] is not None:
        return parts, None
    if supported(metric):
        return predictions, [split.columns["label"][i] for i in rows]
    return None


def ratio_scores(parts: np.ndarray) -> np.ndarray:
    """Sum of numerators over sum of denominators of each configuration's per-row (numerator, denominator) parts
    (configurations x rows x 2): entity F1, precision, recall and word accuracy, means of per-question scores
    (see ``Task.ratio_parts``); 0 where nothing is counted, as the study's metrics say."""
    numerator, denominator = parts[..., 0].sum(axis=1), parts[..., 1].sum(axis=1)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _class_scores(predicted: np.ndarray, gold: np.ndarray, metric: str, classes: int) -> np.ndarray:
    return _coded_class_scores(gold[None, :] * classes + predicted, metric, classes)


def _coded_class_scores(codes: np.ndarray, metric: str, classes: int) -> np.ndarray:
    """:func:`_class_scores` of each row of ``codes`` (configurations x rows of ``gold * classes + predicted``)."""
    count, n = codes.shape
    flat = (np.arange(count)[:, None] * classes * classes + codes).ravel()
    confusion = np.bincount(flat, minlength=count * classes * classes).reshape(count, classes, classes)  # [config, gold, predicted]
    hits = np.trace(confusion, axis1=1, axis2=2).astype(float)
    if metric in ("accuracy", "micro_f1"):  # single-label: micro F1 is accuracy
        return hits / n
    true, said = confusion.sum(axis=2).astype(float), confusion.sum(axis=1).astype(float)
    if metric == "macro_f1":  # over the classes that occur in gold or predictions, as scikit-learn does
        tp = np.diagonal(confusion, axis1=1, axis2=2).astype(float)
        denominator = true + said
        present = denominator > 0
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=present)
        return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    covariance = hits * n - (true * said).sum(axis=1)
    spread = np.sqrt((n * n - (said * said).sum(axis=1)) * (n * n - (true * true).sum(axis=1)))
    return np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 0)


def _value_scores(predicted: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    if metric == "rmse":
        return np.sqrt(((predicted - gold[None, :]) ** 2).mean(axis=1))
    if metric == "spearman":
        from scipy.stats import rankdata

        predicted, gold = rankdata(predicted, axis=1), rankdata(gold)
    p = predicted - predicted.mean(axis=1, keepdims=True)
    g = gold - gold.mean()
    spread = np.sqrt((p * p).sum(axis=1) * (g * g).sum())
    return np.divide(p @ g, spread, out=np.zeros(len(p)), where=spread > 0)  # constant predictions: 0, as the study's metrics


def _checked(predictions: Sequence[Sequence[Any]], gold: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The predictions (configurations x rows, or x rows x 2 ratio parts when ``gold`` is None), the gold and the row count."""
    matrix = np.asarray(predictions, dtype=float if gold is None else None)
    truth = np.asarray(gold) if gold is not None else None
    rows = len(truth) if truth is not None else (matrix.shape[1] if matrix.ndim == 3 else 0)
    if matrix.ndim != (2 if truth is not None else 3) or matrix.shape[1] != rows or rows < 2 or (truth is None and matrix.shape[2] != 2):
        raise ValueError(f"need configurations x rows {'predictions' if truth is not None else 'x 2 ratio parts'} for {rows} rows, got shape {matrix.shape}")
    return matrix, truth, rows


def _scorer(matrix: np.ndarray, truth: np.ndarray | None, metric: str, classes: int) -> Callable[[Any, np.ndarray], np.ndarray]:
    """score(configurations, rows): the metric of the chosen configurations on the chosen rows."""
    # Class metrics: each (gold, predicted) pair coded once, so that a sample takes one gather and one count.
    codes = truth.astype(np.int64)[None, :] * classes + matrix.astype(np.int64) if truth is not None and metric in CLASS_METRICS else None

    def score(configurations: Any, on: np.ndarray) -> np.ndarray:
        if truth is None:
            return ratio_scores(matrix[configurations, on])
        if codes is not None:
            return _coded_class_scores(codes[configurations, on], metric, classes)
        return scores(matrix[configurations, on], truth[on], metric, classes)

    return score


def paired_bootstrap(predictions: Sequence[Sequence[Any]], gold: Sequence[Any] | None, metric: str, *, classes: int = 0,
                     samples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each configuration's score on all the rows (configurations) and on ``samples`` bootstrap samples of them
    (configurations x samples). The samples depend only on ``seed`` and the number of rows, so every configuration is
    scored on the same ones, in one call or in several, and the difference of two configurations' scores on a sample
    is paired: the intervals and comparisons of trials scored on one fixed validation split, where there are no folds
    to compare. ``predictions`` and ``gold`` as in :func:`bbc_cv`."""
    matrix, truth, rows = _checked(predictions, gold)
    score = _scorer(matrix, truth, metric, classes)
    rng = np.random.default_rng(seed)
    resampled = np.column_stack([score(slice(None), rng.integers(0, rows, rows)) for _ in range(samples)])
    return score(slice(None), np.arange(rows)), resampled


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The bootstrap percentile interval of ``values`` (the samples' scores or differences)."""
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


BBC_SAMPLES = 1000
"""Bootstrap samples of the bias-corrected estimate."""


def bbc_cv(predictions: Sequence[Sequence[Any]], gold: Sequence[Any] | None, metric: str, direction: str, *, folds: Sequence[int] | None = None,
           classes: int = 0, samples: int = BBC_SAMPLES, confidence: float = 0.95, seed: int = 0,
           pick: Callable[[np.ndarray], int] | None = None) -> dict[str, Any]:
    """The bias-corrected estimate of the selected configuration's score, with a percentile interval.

    ``predictions``: one row per completed configuration, each with a prediction for every row of ``gold``; with
    ``gold`` None, each with every row's (numerator, denominator) parts of a ratio metric (see :func:`ratio_scores`).
    ``folds``: the fold each row was predicted in (None: one fold). A configuration is scored on each fold's rows
    and the fold scores are averaged, as its CV score is: scored on the pooled rows, a configuration whose fold
    models predicted one class each (a different one per fold) would score a macro-F1 above every fold's. Each
    bootstrap sample draws every fold's rows from that fold, so each fold keeps its size.
    ``pick``: which configuration the selection would take, given every configuration's fold scores on a sample
    (configurations x folds); None: the best mean (ties: the first listed).
    """
    matrix, truth, rows = _checked(predictions, gold)
    fold_of = np.zeros(rows, dtype=np.int64) if folds is None else np.asarray(folds)
    if fold_of.shape != (rows,):
        raise ValueError(f"need a fold for each of the {rows} rows, got {len(fold_of)}")
    score = _scorer(matrix, truth, metric, classes)
    members = [np.flatnonzero(fold_of == fold) for fold in np.unique(fold_of)]
    rng = np.random.default_rng(seed)
    picked, drawn = [], np.zeros(rows, dtype=bool)
    for _ in range(samples):
        bags = [rows[rng.integers(0, len(rows), len(rows))] for rows in members]
        drawn[:] = False
        for bag in bags:
            drawn[bag] = True
        left_out = [out for rows in members if len(out := rows[~drawn[rows]])]  # each fold's rows no bag drew, in order
        if not left_out:
            continue
        on_bag = np.column_stack([score(slice(None), bag) for bag in bags])
        if pick is None:
            mean = on_bag.mean(axis=1)
            best = int(np.argmax(mean) if direction == "maximize" else np.argmin(mean))  # ties: the first listed
        else:
            best = pick(on_bag)
        picked.append(float(np.mean([score(slice(best, best + 1), out)[0] for out in left_out])))
    values = np.asarray(picked)
    low, high = percentile_interval(values, confidence)
    return {"estimate": float(values.mean()), "low": low, "high": high,
            "confidence": confidence, "samples": len(values), "configurations": int(matrix.shape[0]), "rows": rows,
            "folds": len(members), "method": "BBC-CV (Tsamardinos, Greasidou & Borboudakis 2018), scored per fold, percentile interval"}
