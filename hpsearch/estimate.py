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
percentiles give its interval. Cost: ``samples`` x configurations x folds metric evaluations, each a product of
the predictions with how often the sample drew each row (about 1 s on 2 CPU cores for 1,000 samples, 50
configurations, 10,000 rows and 5 folds of macro-F1), no model is run.

NumPy and SciPy only: tested on synthetic predictions whose true score is known. Class and value metrics are scored
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
    count = codes.shape[0]
    flat = (np.arange(count)[:, None] * classes * classes + codes).ravel()
    confusion = np.bincount(flat, minlength=count * classes * classes).reshape(count, classes, classes)  # [config, gold, predicted]
    return _confusion_scores(confusion, metric)


def _confusion_scores(confusion: np.ndarray, metric: str) -> np.ndarray:
    """The class metric of each confusion matrix (``[..., gold, predicted]`` counts, whole or weighted)."""
    n = confusion.sum(axis=(-2, -1)).astype(float)
    hits = np.trace(confusion, axis1=-2, axis2=-1).astype(float)
    if metric in ("accuracy", "micro_f1"):  # single-label: micro F1 is accuracy
        return np.divide(hits, n, out=np.zeros_like(hits), where=n > 0)
    true, said = confusion.sum(axis=-1).astype(float), confusion.sum(axis=-2).astype(float)
    if metric == "macro_f1":  # over the classes that occur in gold or predictions, as scikit-learn does
        tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(float)
        denominator = true + said
        present = denominator > 0
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=present)
        return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)
    covariance = hits * n - (true * said).sum(axis=-1)
    spread = np.sqrt((n * n - (said * said).sum(axis=-1)) * (n * n - (true * true).sum(axis=-1)))
    return np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 0)


def _value_scores(predicted: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    if metric == "rmse":
        return np.sqrt(((predicted - gold[None, :]) ** 2).mean(axis=1))
    if metric == "spearman":
        from scipy.stats import rankdata

        predicted, gold = rankdata(predicted, axis=1), rankdata(gold)
    p = predicted - predicted.mean(axis=1, keepdims=True)
    g = gold - gold.mean()
    # Constant values leave rounding in their deviations from the mean (about 1e-16 of it), not 0: counted as 0.
    own, gold_own = (p * p).sum(axis=1), (g * g).sum()
    own = np.where(own > 1e-20 * (predicted * predicted).sum(axis=1), own, 0.0)
    spread = np.sqrt(own * (gold_own if gold_own > 1e-20 * (gold * gold).sum() else 0.0))
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


def _counting_scorer(matrix: np.ndarray, truth: np.ndarray | None, metric: str, classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """score(counts): each configuration's metric with row ``r`` counted ``counts[r, s]`` times, for every sample ``s``
    (rows x samples; configurations x samples out). A bootstrap sample is the rows it drew, duplicates and all, so
    its score is the score of the rows weighted by how often it drew each: computed as products of the predictions'
    sums with those counts, for many samples at once, where gathering each sample's rows costs a copy per sample
    (Spearman's ranks change with the sample: it takes them one at a time, from rows sorted once)."""
    from scipy import sparse

    configurations, rows = matrix.shape[:2]
    if truth is None:  # ratio metrics: numerators and denominators summed over the rows
        numerators, denominators = np.ascontiguousarray(matrix[..., 0]), np.ascontiguousarray(matrix[..., 1])

        def ratio(counts: np.ndarray) -> np.ndarray:
            top, bottom = numerators @ counts, denominators @ counts
            return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

        return ratio
    if metric in CLASS_METRICS:  # the confusion matrices: one-hot codes of each (configuration, gold, predicted) times the counts
        cells = classes * classes
        codes = np.arange(configurations)[:, None] * cells + truth.astype(np.int64)[None, :] * classes + matrix.astype(np.int64)
        onehot = sparse.csr_matrix((np.ones(codes.size), (codes.ravel(), np.tile(np.arange(rows), configurations))),
                                   shape=(configurations * cells, rows))

        def confusion(counts: np.ndarray) -> np.ndarray:
            counted = (onehot @ counts).reshape(configurations, classes, classes, -1)
            return _confusion_scores(np.moveaxis(counted, -1, 1), metric)

        return confusion
    if metric == "rmse":
        squared = (matrix.astype(float) - truth.astype(float)[None, :]) ** 2
        return lambda counts: np.sqrt((squared @ counts) / counts.sum(axis=0))
    if metric == "pearson":  # centred on all rows first: the weighted sums then cancel less
        predicted = matrix.astype(float) - matrix.astype(float).mean(axis=1, keepdims=True)
        gold = truth.astype(float) - truth.astype(float).mean()
        cross, own = predicted * gold[None, :], predicted * predicted

        def pearson(counts: np.ndarray) -> np.ndarray:
            n, p, g = counts.sum(axis=0), predicted @ counts, gold @ counts
            covariance = n * (cross @ counts) - p * g
            spread = np.sqrt(_variance(n * (own @ counts), p) * _variance(n * ((gold * gold) @ counts), g))
            return np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 0)

        return pearson
    if metric == "spearman":
        return _spearman_by_counts(matrix.astype(float), truth.astype(float))
    raise ValueError(f"no bias-corrected estimate for metric {metric!r}; supported: {CLASS_METRICS + VALUE_METRICS}")


class _Ranker:
    """Average ranks (as ``scipy.stats.rankdata`` gives them) of each row of ``values`` (blocks x rows) within a sample
    that holds row ``r`` ``counts[r]`` times: rows of equal value, repeats included, share the mean of the positions
    they fill. Sorted and grouped by value once; a sample costs a count per group and a running total."""

    def __init__(self, values: np.ndarray) -> None:
        self.order = np.argsort(values, axis=1, kind="stable")
        ordered = np.take_along_axis(values, self.order, axis=1)
        starts = np.ones(values.shape, dtype=bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        self.group = (np.cumsum(starts.ravel()) - 1).reshape(values.shape)  # numbered across blocks: each block starts one
        self.groups = int(self.group[-1, -1]) + 1
        self.block_start = np.repeat(self.group[:, 0], starts.sum(axis=1))  # each group's block's first group

    def ranks(self, counts: np.ndarray) -> np.ndarray:
        in_order = counts[self.order]
        per_group = np.bincount(self.group.ravel(), weights=in_order.ravel(), minlength=self.groups)
        before = np.cumsum(per_group) - per_group
        before -= before[self.block_start]
        placed = (before + (per_group + 1) / 2)[self.group]
        ranks = np.empty_like(placed)
        np.put_along_axis(ranks, self.order, placed, axis=1)
        return ranks


def _spearman_by_counts(predicted: np.ndarray, gold: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Spearman's rho of each configuration on counted samples: Pearson's r of the ranks each sample gives, weighted
    by the counts (see :func:`_counting_scorer`); one sample at a time, as the ranks change with it."""
    by_prediction, by_gold = _Ranker(predicted), _Ranker(gold[None, :])

    def spearman(counts: np.ndarray) -> np.ndarray:
        out = np.empty((len(predicted), counts.shape[1]))
        for sample in range(counts.shape[1]):
            weights = counts[:, sample]
            ranks, gold_ranks = by_prediction.ranks(weights), by_gold.ranks(weights)[0]
            n, p, g = weights.sum(), ranks @ weights, gold_ranks @ weights
            covariance = n * ((ranks * gold_ranks) @ weights) - p * g
            spread = np.sqrt(_variance(n * ((ranks * ranks) @ weights), p) * _variance(n * ((gold_ranks * gold_ranks) @ weights), g))
            out[:, sample] = np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 0)
        return out

    return spearman


def _variance(squares: np.ndarray, total: np.ndarray) -> np.ndarray:
    """n * sum(w x^2) - (sum(w x))^2 from its two terms, 0 where it is rounding left over from their difference (one
    row, or one row drawn many times: the gathered rows' spread is exactly 0 there, and Pearson's r 0)."""
    spread = squares - total * total
    return np.where(spread > 1e-9 * squares, spread, 0.0)


def _chunk(configurations: int, rows: int, classes: int, samples: int) -> int:
    """How many samples to count at once: their counts (rows x samples) and the products (up to configurations x
    classes squared x samples) stay near 4 million numbers each."""
    width = max(rows, configurations * max(classes * classes, 1))
    return int(np.clip(4_000_000 // width, 1, samples))


def _counts(draws: list[np.ndarray], rows: int) -> np.ndarray:
    """rows x samples: how often each sample's draw took each row."""
    return np.column_stack([np.bincount(drawn, minlength=rows) for drawn in draws]).astype(float)


def paired_bootstrap(predictions: Sequence[Sequence[Any]], gold: Sequence[Any] | None, metric: str, *, classes: int = 0,
                     samples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each configuration's score on all the rows (configurations) and on ``samples`` bootstrap samples of them
    (configurations x samples). The samples depend only on ``seed`` and the number of rows, so every configuration is
    scored on the same ones, in one call or in several, and the difference of two configurations' scores on a sample
    is paired: the intervals and comparisons of trials scored on one fixed validation split, where there are no folds
    to compare. ``predictions`` and ``gold`` as in :func:`bbc_cv`."""
    matrix, truth, rows = _checked(predictions, gold)
    counted = _counting_scorer(matrix, truth, metric, classes)
    rng = np.random.default_rng(seed)
    chunk = _chunk(len(matrix), rows, classes, samples)
    resampled = np.column_stack([counted(_counts([rng.integers(0, rows, rows) for _ in range(min(chunk, samples - start))], rows))
                                 for start in range(0, samples, chunk)])
    return _scorer(matrix, truth, metric, classes)(slice(None), np.arange(rows)), resampled


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The bootstrap percentile interval of ``values`` (the samples' scores or differences)."""
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _counted_samples(counted: list[Callable[[np.ndarray], np.ndarray]], score: Callable[[Any, np.ndarray], np.ndarray],
                     members: list[np.ndarray], rng: np.random.Generator, samples: int, chunk: int) -> Any:
    """Each bootstrap sample's scores on each fold's bag (configurations x folds), from counts
    (:func:`_counting_scorer`, ``chunk`` samples at a time), and the function that gives a configuration's mean score
    over the folds on the rows the sample left out (``score``, on those rows: only the picked configuration's is
    needed); samples that leave no row out are skipped. Each fold's bag is drawn from that fold, fold after fold for
    each sample in turn."""
    for start in range(0, samples, chunk):
        draws = [[rng.integers(0, len(rows), len(rows)) for rows in members] for _ in range(min(chunk, samples - start))]
        counts = [_counts([bags[fold] for bags in draws], len(rows)) for fold, rows in enumerate(members)]
        on_bag = np.stack([scorer(count) for scorer, count in zip(counted, counts)], axis=1)
        for sample in range(len(draws)):
            outs = [out for rows, count in zip(members, counts) if len(out := rows[count[:, sample] == 0])]
            if outs:
                yield on_bag[:, :, sample], lambda best, outs=outs: float(np.mean([score(slice(best, best + 1), out)[0] for out in outs]))


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
    members = [np.flatnonzero(fold_of == fold) for fold in np.unique(fold_of)]
    rng = np.random.default_rng(seed)
    counted = [_counting_scorer(matrix[:, fold_rows], None if truth is None else truth[fold_rows], metric, classes) for fold_rows in members]
    sampled = _counted_samples(counted, _scorer(matrix, truth, metric, classes), members, rng, samples,
                               _chunk(len(matrix), max(map(len, members)), classes, samples))
    picked = []
    for on_bag, left_out in sampled:  # on_bag: configurations x folds; left_out(c): c's mean over the folds' left-out rows
        if pick is None:
            mean = on_bag.mean(axis=1)
            best = int(np.argmax(mean) if direction == "maximize" else np.argmin(mean))  # ties: the first listed
        else:
            best = pick(on_bag)
        picked.append(left_out(best))
    values = np.asarray(picked)
    low, high = percentile_interval(values, confidence)
    return {"estimate": float(values.mean()), "low": low, "high": high,
            "confidence": confidence, "samples": len(values), "configurations": int(matrix.shape[0]), "rows": rows,
            "folds": len(members), "method": "BBC-CV (Tsamardinos, Greasidou & Borboudakis 2018), scored per fold, percentile interval"}
