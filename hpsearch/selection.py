"""Selecting the winner from cross-validation results, with honest uncertainty.

Pure functions over plain rows (no Optuna, no torch), so they are tested on hand-made numbers.

Uncertainty: k-fold CV scores are not independent (the training sets overlap), so the plain
standard error understates the spread. Intervals and paired comparisons here use the corrected
resampled t statistic (Nadeau & Bengio, 2003): variance factor 1/k + n_val/n_train, which is
1/k + 1/(k-1) for k-fold CV. Trials scored on one fixed validation split have no folds to compare: their
intervals and comparisons come from a paired bootstrap over the split's rows (:class:`RowEvidence`).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hpsearch.numbers import interval_figure, score_figure

CV_FIELDS = ("rank", "trial", "model", "mean_score", "std_score", "best_epochs", "total_parameters",
             "train_samples", "device_seconds", "flops", "peak_memory_mb")


def better(a: float | tuple[float, int], b: float | tuple[float, int], direction: str) -> bool:
    """Whether score ``a`` beats ``b``. Given (score, trial number) pairs, an exact tie goes to the lower
    number: every place that names a best trial (progress, status, selection, checkpoints) agrees."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        if a[0] == b[0]:
            return a[1] < b[1]
        a, b = a[0], b[0]
    return a > b if direction == "maximize" else a < b  # type: ignore[operator]


def rank_key(score: float, trial: int, direction: str) -> tuple[float, int]:
    """Sort key: best first, ties by trial number."""
    return (-score if direction == "maximize" else score, trial)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{score_figure(self.mean)} {interval_figure(self.low, self.high)} ({self.confidence:.0%} CI)"


def corrected_interval(scores: Sequence[float], confidence: float = 0.95, test_train_ratio: float | None = None,
                       bounds: tuple[float, float] | None = None) -> Interval:
    """Confidence interval of the mean of k CV scores, with the corrected resampled variance.

    ``bounds`` (the metric's range, e.g. (0, 1) for F1) clip the interval: a t interval is symmetric and
    can reach past what the metric can take; the clipped ends are the honest statement of the same interval.
    """
    from scipy.stats import t

    k = len(scores)
    mean = sum(scores) / k
    if k < 2:
        return Interval(mean, mean, mean, confidence)
    ratio = 1 / (k - 1) if test_train_ratio is None else test_train_ratio
    variance = sum((s - mean) ** 2 for s in scores) / (k - 1)
    half = t.ppf(0.5 + confidence / 2, k - 1) * math.sqrt((1 / k + ratio) * variance)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, confidence)


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, test_train_ratio: float | None = None,
                      bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """Corrected resampled t-test of fold-paired scores: difference a - b, its interval and p-value. ``bounds`` (the
    scores' range) clip the interval to the differences two such scores can have (within [-1, 1] for F1)."""
    from scipy.stats import t

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired comparison needs two equally long score lists of at least 2 folds, got {len(a)} and {len(b)}")
    k = len(a)
    diffs = [x - y for x, y in zip(a, b)]
    width = bounds[1] - bounds[0] if bounds is not None else None
    interval = corrected_interval(diffs, confidence, test_train_ratio, bounds=(-width, width) if width is not None else None)
    ratio = 1 / (k - 1) if test_train_ratio is None else test_train_ratio
    variance = sum((d - interval.mean) ** 2 for d in diffs) / (k - 1)
    scale = math.sqrt((1 / k + ratio) * variance)
    if scale == 0:
        p_value = 1.0 if interval.mean == 0 else 0.0
    else:
        p_value = float(2 * t.sf(abs(interval.mean / scale), k - 1))
    return {"difference": interval.mean, "low": interval.low, "high": interval.high, "p_value": p_value}


def cv_table(rows: Sequence[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Flat, ranked table: one row per completed trial, ``split{k}_score`` columns, rank 1 = best.

    Each input row needs: trial, model, params (dict), fold_scores (list), best_epochs, total_parameters.
    """
    table = []
    for row in rows:
        scores = list(row["fold_scores"])
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))  # population std, as scikit-learn's cv_results_
        entry: dict[str, Any] = {
            "trial": row["trial"], "model": row["model"], "mean_score": mean, "std_score": std,
            "best_epochs": row["best_epochs"], "total_parameters": row["total_parameters"],
            "train_seconds": row.get("train_seconds"), "latency_ms": row.get("latency_ms"), SPLIT_SE_ATTR: row.get(SPLIT_SE_ATTR),
            **{key: row.get(key) for key in ("train_samples", "device_seconds", "flops", "peak_memory_mb")},
        }
        entry.update({f"split{k}_score": s for k, s in enumerate(scores)})
        entry.update({f"param_{name}": value for name, value in sorted(row["params"].items())})
        entry["params"] = dict(row["params"])
        table.append(entry)
    table.sort(key=lambda r: rank_key(r["mean_score"], r["trial"], direction))
    for rank, entry in enumerate(table, start=1):
        entry["rank"] = rank
    return table


COSTS = {"parameters": "total_parameters", "latency": "latency_ms", "train_time": "train_seconds"}
"""What ``selection.cost`` orders by, and the CV-table column that holds it."""


def select(table: Sequence[dict[str, Any]], rule: str, direction: str, cost: str = "parameters") -> dict[str, Any]:
    """The winner under ``rule``: 'best' (rank 1) or 'one-standard-error'.

    One-standard-error: among trials whose mean is within one standard error of the best mean
    (standard error = the best trial's fold std / sqrt(k); on one fixed validation split, its score's over the split's
    rows, :data:`SPLIT_SE_ATTR`), take the cheapest by ``cost`` (parameters, latency or train_time), then fewest epochs,
    then the better mean.
    """
    if not table:
        raise ValueError("no completed trial to select from")
    best = min(table, key=lambda r: r["rank"])
    if rule == "best":
        return best
    if rule != "one-standard-error":
        raise ValueError(f"unknown selection rule {rule!r}")
    k = len(fold_scores(best))
    standard_error = best["std_score"] * math.sqrt(k / (k - 1)) / math.sqrt(k) if k > 1 else best.get(SPLIT_SE_ATTR) or 0.0
    sign = 1 if direction == "maximize" else -1
    eligible = [r for r in table if sign * (best["mean_score"] - r["mean_score"]) <= standard_error + 1e-12]
    column = COSTS[cost]
    return min(eligible, key=lambda r: (r.get(column) if r.get(column) is not None else math.inf, r["best_epochs"], r["rank"]))


def picker(rows: Sequence[dict[str, Any]], rule: str, direction: str, cost: str = "parameters") -> Callable[[Any], int] | None:
    """How :func:`select` picks among ``rows`` (CV-table rows) given other fold scores for them (configurations x folds,
    in the order of ``rows``): the pick the bias-corrected estimate repeats on each bootstrap sample. The picked row's
    index; None for 'best', the top mean, which the estimate computes itself."""
    if rule == "best":
        return None

    def pick(scores: Any) -> int:
        table = cv_table([{**row, "fold_scores": [float(s) for s in folds]} for row, folds in zip(rows, scores)], direction)
        chosen = select(table, rule, direction, cost)["trial"]
        return next(i for i, row in enumerate(rows) if row["trial"] == chosen)

    return pick


def gives_up(table: Sequence[dict[str, Any]], chosen: dict[str, Any], cost: str) -> dict[str, Any] | None:
    """What a cheaper choice than the top trial costs in score and saves in ``cost`` (None when the top trial was chosen)."""
    best = min(table, key=lambda r: r["rank"])
    if best["trial"] == chosen["trial"]:
        return None
    column = COSTS[cost]
    return {"best_trial": best["trial"], "best_mean": best["mean_score"], "chosen_mean": chosen["mean_score"],
            "score_given_up": best["mean_score"] - chosen["mean_score"], "cost": cost,
            "best_cost": best.get(column), "chosen_cost": chosen.get(column),
            "best_epochs": best["best_epochs"], "chosen_epochs": chosen["best_epochs"]}


def fold_scores(row: dict[str, Any]) -> list[float]:
    keys = sorted((k for k in row if k.startswith("split") and k.endswith("_score")), key=lambda k: int(k[5:-6]))
    return [row[k] for k in keys]


BASELINE = "baseline"
"""The trivial baseline's key where it is compared as a row (see :func:`scores_row`)."""


def scores_row(scores: Sequence[float], key: int | str = BASELINE) -> dict[str, Any]:
    """Fold scores as a CV-table row keyed ``key`` (default: the trivial baseline's), for :class:`FoldEvidence` and
    :class:`RowEvidence`."""
    return {"trial": key, **{f"split{k}_score": s for k, s in enumerate(scores)}}


class FoldEvidence:
    """Intervals and paired comparisons of trials from their fold scores (corrected resampled t); none from one fold."""

    def __init__(self, confidence: float, bounds: tuple[float, float] | None = None) -> None:
        self.confidence, self.bounds = confidence, bounds

    def interval(self, row: dict[str, Any]) -> Interval | None:
        scores = fold_scores(row)
        return corrected_interval(scores, self.confidence, bounds=self.bounds) if len(scores) > 1 else None

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float] | None:
        """a minus b: difference, interval and p-value; None where they were not scored on the same folds."""
        x, y = fold_scores(a), fold_scores(b)
        return paired_comparison(x, y, self.confidence, bounds=self.bounds) if len(x) == len(y) >= 2 else None


class RowEvidence:
    """Intervals and paired comparisons of trials scored on one fixed validation split: a bootstrap over its rows.

    ``scores(key)`` gives the score of ``key`` (a trial number or :data:`BASELINE`) on all the rows and its scores on
    bootstrap samples of them, the same samples for every key (``estimate.paired_bootstrap``), or None for a key
    without predictions: a difference's interval is the percentile interval of the per-sample differences, its
    p-value twice the share of samples on the smaller side of zero, counted as (k + 1) / (n + 1) so that no finite
    number of samples claims p = 0.
    """

    def __init__(self, scores: Callable[[int | str], tuple[float, Any] | None], confidence: float) -> None:
        self.scores, self.confidence = scores, confidence

    def interval(self, row: dict[str, Any]) -> Interval | None:
        from hpsearch.estimate import percentile_interval

        found = self.scores(row["trial"])
        if found is None:
            return None
        return Interval(float(found[0]), *percentile_interval(found[1], self.confidence), self.confidence)

    def compare(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float] | None:
        from hpsearch.estimate import percentile_interval

        first, second = self.scores(a["trial"]), self.scores(b["trial"])
        if first is None or second is None:
            return None
        differences = first[1] - second[1]
        low, high = percentile_interval(differences, self.confidence)
        tail = min(int((differences <= 0).sum()), int((differences >= 0).sum()))
        p_value = min(1.0, 2 * (tail + 1) / (len(differences) + 1))
        return {"difference": float(first[0] - second[0]), "low": low, "high": high, "p_value": p_value}


Evidence = FoldEvidence | RowEvidence


def compare_top(table: Sequence[dict[str, Any]], selected: dict[str, Any], evidence: Evidence, top: int = 3) -> list[dict[str, Any]]:
    """Paired comparison of the selected trial against the next best ``top`` trials."""
    others = [r for r in sorted(table, key=lambda r: r["rank"]) if r["trial"] != selected["trial"]][:top]
    out = []
    for other in others:
        comparison = evidence.compare(selected, other)
        if comparison is not None:
            out.append({"selected": selected["trial"], "other": other["trial"], "other_model": other["model"], **comparison})
    return out


def compared_by(one_split: bool) -> str:
    """How the intervals and paired comparisons were computed, in words."""
    return "a paired bootstrap over the validation split's rows" if one_split else "the corrected resampled t over the folds"


def score_text(metric: str, interval: dict[str, Any], std: float, one_split: bool) -> str:
    """The winner's score and its interval, as the summary, the report and the model card word them; trials scored on
    one fixed validation split take their interval from a bootstrap over its rows, and say so where there is none."""
    if one_split:
        if "low" not in interval:
            return f"validation {metric} {score_figure(interval['mean'])} (one fixed validation split: no interval across folds)"
        return (f"validation {metric} {score_figure(interval['mean'])}, {interval['confidence']:.0%} interval "
                f"{interval_figure(interval['low'], interval['high'])} (bootstrap over the validation split's rows)")
    return (f"CV {metric} {score_figure(interval['mean'])}, {interval['confidence']:.0%} interval "
            f"{interval_figure(interval['low'], interval['high'])} (corrected resampled t), std {score_figure(std)}")


def latency_measured(table: Sequence[dict[str, Any]]) -> bool:
    """Whether the trials carry a latency (measured only with ``search.second_objective: latency``)."""
    return any(r.get("latency_ms") is not None for r in table)


def write_table(table: Sequence[dict[str, Any]], folder: Path) -> tuple[Path, Path]:
    """Save the CV table as CSV (flat columns) and JSON; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    split_cols = sorted({k for r in table for k in r if k.startswith("split")}, key=lambda k: int(k[5:-6]))
    param_cols = sorted({k for r in table for k in r if k.startswith("param_")})
    columns = [*CV_FIELDS, *(["latency_ms"] if latency_measured(table) else []), *split_cols, *param_cols]
    csv_path, json_path = folder / "cv_results.csv", folder / "cv_results.json"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(table, key=lambda r: r["rank"]))
    json_path.write_text(json.dumps(sorted(table, key=lambda r: r["rank"]), indent=2, default=str), encoding="utf-8")
    return csv_path, json_path


LOSS_ATTR = "cv_loss"
"""Trial user attr: the trial's lowest validation loss (:func:`hpsearch.search.lowest_loss`), what the sampler's view reads."""

REPEAT_ATTR = "repeat_of"
"""Trial user attr of a trial whose settings a completed trial already had: that trial's number. Training is
seeded and its folds and data are bound to the study, so training it again would give the same score (up to
numerical noise between devices and thread counts); it is not trained again: it takes the earlier trial's score,
the sampler sees it, and it neither counts toward n_trials nor enters the selection. One drawn while another
worker trains the same settings is not trained twice either: it ends failed (no score to take yet), marked with
that trial's number. Samplers propose exact repeats only in spaces without a continuous parameter (TPE drew 11
to 15 distinct configurations in 20 trials of an 18-configuration space: 3 learning rates x 2 batch sizes x 3
epoch counts; benchmarks/repeats.py), or, in any space, where two processes' samplers share a seed (two `run`s of
one study started at once draw the same settings; in a space with continuous parameters the process that meets such a
repeat seeds its sampler apart)."""


def is_repeat(trial: Any) -> bool:
    """Whether an Optuna trial repeated the settings of an earlier trial, completed or running (see REPEAT_ATTR)."""
    return REPEAT_ATTR in trial.user_attrs


def same_selection(saved: dict[str, Any], report: dict[str, Any]) -> bool:
    """Whether ``saved`` (a run's selection.json) selected the same winner, with the same settings and scores, from the
    same trials as ``report``: then what that run made of it (the final model, its test score) still stands."""
    chosen = json.loads(json.dumps(report["selected"], default=str))  # as selection.json holds it
    return saved.get("considered_trials") == report["considered_trials"] and saved.get("selected") == chosen


SPLIT_SE_ATTR = "validation_standard_error"
"""Trial user attribute, on one fixed validation split: the standard error of the trial's score over the split's rows
(a bootstrap over them), which the one-standard-error rule takes where there are no folds to take it from."""


PROGRESS_ATTR = "progress"
"""Trial user attr, rewritten after each epoch: how far a trial has got (fold and folds, epoch and epochs, the fold's
score at that epoch; the training samples and device-seconds of every epoch so far), which ``status`` shows for a
running trial and :func:`spent` counts for one stopped inside a fold."""


CARRIED_ATTR = "carried_from"
"""Trial user attribute of a trial that ``run --new-study --keep-trials`` took over from the set-aside study:
{"study": its name, "trial": its number there}."""


def trained_complete(trial: Any) -> bool:
    """Whether an Optuna trial completed by training (not by taking a repeated configuration's score): what the
    selection, the plots and the kept checkpoints are made of."""
    return trial.state.name == "COMPLETE" and not is_repeat(trial)


TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED", "REPEAT")
"""How the summaries count finished trials: a trial stopped by Ctrl-C or SIGTERM (Optuna's FAIL, run again on
resume) is counted as interrupted, not as failed; one that repeated an earlier trial's settings (see REPEAT_ATTR:
Optuna's COMPLETE with that trial's score, or FAIL while that trial was still running) as a repeat."""


def ended_state(trial: Any) -> str:
    """An Optuna trial's state, with INTERRUPTED for a FAIL that was an interruption (see TRIAL_STATES): what status and
    MLflow show."""
    return "INTERRUPTED" if trial.state.name == "FAIL" and trial.user_attrs.get("interrupted") else trial.state.name


def spent(state: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The training samples and device-seconds of a trial in ``state`` with user attrs ``attrs``. A trial records them
    as each fold ends; one stopped inside a fold (interrupted, failed, its worker killed) has its progress count the
    epochs it finished there too (see PROGRESS_ATTR)."""
    samples, seconds = attrs.get("train_samples"), attrs.get("device_seconds")
    progress = attrs.get(PROGRESS_ATTR) or {}
    if state not in ("COMPLETE", "PRUNED") and "device_seconds" in progress:
        samples = max(int(samples or 0), int(progress["train_samples"]))
        seconds = max(float(seconds or 0.0), float(progress["device_seconds"]))
    return {"train_samples": samples, "device_seconds": seconds}


def trial_counts(states: Sequence[str]) -> dict[str, int]:
    return {state: sum(1 for s in states if s == state) for state in TRIAL_STATES}


def counts_text(counts: dict[str, int], sep: str = ", ") -> str:
    """'8 complete, 0 pruned, 1 failed', with the interrupted and repeated trials where there are any (summaries
    written before they were counted apart have none)."""
    parts = [f"{counts['COMPLETE']} complete", f"{counts['PRUNED']} pruned", f"{counts['FAIL']} failed"]
    if counts.get("INTERRUPTED"):
        parts.append(f"{counts['INTERRUPTED']} interrupted (run again)")
    if counts.get("REPEAT"):
        parts.append(f"{counts['REPEAT']} repeated an earlier trial's settings (not trained again)")
    return sep.join(parts)


NEVER_TRIED = "never tried (no trial drew it)"
"""The per-model verdict of a candidate that no finished trial drew: the selection could not weigh it against the winner."""


def untried_warning(models: Sequence[str]) -> str:
    """The warning of a study that ended without trying ``models`` (candidates no finished trial drew)."""
    names = ", ".join(models)
    one = len(models) == 1
    it = "it" if one else "them"
    return (f"{names} {'was' if one else 'were'} never tried: no trial drew {it}, so the winner was chosen without {it}; to "
            f"try {it}, raise search.n_trials and add a trial of {'it' if one else 'each'} to search.enqueue (enqueued trials "
            "run first), then run the same command")


def per_model(table: Sequence[dict[str, Any]], trials: Sequence[dict[str, Any]], models: Sequence[str], winner: dict[str, Any],
              evidence: Evidence, direction: str) -> list[dict[str, Any]]:
    """"Which pretrained model?": one row per candidate model, best trial first.

    ``trials`` holds every finished trial as {trial, model, state, train_samples, device_seconds, flops, peak_memory_mb,
    trainable_parameters, total_parameters}; a model's samples, seconds and FLOPs are its trials' sums, its peak memory
    their largest. Each model's best trial is compared with the winner on the same folds or rows (see
    ``evidence``); the verdict says whether the data can tell them apart.
    """
    rows = []
    for model in models:
        mine = [t for t in trials if t["model"] == model]
        ranked = sorted((r for r in table if r["model"] == model), key=lambda r: r["rank"])
        row: dict[str, Any] = {
            "model": model,
            "trials": trial_counts([t["state"] for t in mine]),
            "train_samples": int(sum(t.get("train_samples") or 0 for t in mine)),
            "device_seconds": float(sum(t.get("device_seconds") or 0.0 for t in mine)),
            "flops": float(sum(t.get("flops") or 0.0 for t in mine)),
            "peak_memory_mb": max((t["peak_memory_mb"] for t in mine if t.get("peak_memory_mb") is not None), default=None),
            "best_trial": None, "verdict": "no completed trial" if mine else NEVER_TRIED,
        }
        if ranked:
            best = ranked[0]
            info = next((t for t in mine if t["trial"] == best["trial"]), {})
            row.update(best_trial=best["trial"], mean_score=best["mean_score"], trainable_parameters=info.get("trainable_parameters"),
                       total_parameters=best.get("total_parameters"), latency_ms=info.get("latency_ms"))
            interval = evidence.interval(best)
            if interval is not None:
                row.update(low=interval.low, high=interval.high)
            row.update(_against_winner(best, winner, evidence, direction))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["best_trial"] is None, rank_key(r.get("mean_score", 0.0), r["best_trial"] or 0, direction)))


def _against_winner(best: dict[str, Any], winner: dict[str, Any], evidence: Evidence, direction: str) -> dict[str, Any]:
    if best["trial"] == winner["trial"]:
        return {"verdict": "winner", "comparison": None}
    comparison = evidence.compare(winner, best)  # winner minus this model
    if comparison is None:
        same = len(fold_scores(winner)) == len(fold_scores(best))
        return {"verdict": "not compared here (one validation split: 'run' and 'export' compare on its rows)" if same
                else "not comparable (different folds)", "comparison": None}
    if best["model"] == winner["model"]:  # a rule that takes a cheaper trial than the model's best (one-standard-error)
        verdict = f"the winner's model (the selection rule chose its trial {winner['trial']})"
    elif clearly_better(comparison, direction):
        verdict = "worse"
    elif clearly_better(comparison, "minimize" if direction == "maximize" else "maximize"):  # the winner clearly behind
        verdict = "better (not chosen by the selection rule)"
    else:
        verdict = "not distinguishable from the winner"
    return {"verdict": verdict, "comparison": comparison}


def clearly_better(comparison: dict[str, float], direction: str) -> bool:
    """Whether the interval of a paired difference (a minus b) lies entirely on a's side of zero."""
    return bool(better(comparison["low"] if direction == "maximize" else comparison["high"], 0.0, direction))


def clearly_beats(winner_folds: Sequence[float], baseline_folds: Sequence[float], confidence: float, direction: str,
                  comparison: dict[str, float] | None = None) -> tuple[bool, dict[str, float] | None]:
    """Whether the winner beats the trivial baseline on the same folds: the paired interval of the
    difference lies entirely on the winner's side. With one fold (a fixed validation split) the
    comparison is the given one (see :class:`RowEvidence`) or else the plain difference."""
    comparison = comparison or FoldEvidence(confidence).compare(scores_row(winner_folds, "winner"), scores_row(baseline_folds))
    if comparison is None:
        difference = sum(winner_folds) / len(winner_folds) - sum(baseline_folds) / len(baseline_folds)
        return bool(better(difference, 0.0, direction)), None
    return clearly_better(comparison, direction), comparison
