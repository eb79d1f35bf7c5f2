"""Selecting the winner from cross-validation results, with honest uncertainty.

Pure functions over plain rows (no Optuna, no torch), so they are tested on hand-made numbers.

Uncertainty: k-fold CV scores are not independent (the training sets overlap), so the plain
standard error understates the spread. Intervals and paired comparisons here use the corrected
resampled t statistic (Nadeau & Bengio, 2003): variance factor 1/k + n_val/n_train, which is
1/k + 1/(k-1) for k-fold CV.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

CV_FIELDS = ("rank", "trial", "model", "mean_score", "std_score", "best_epochs", "total_parameters")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] ({self.confidence:.0%} CI)"


def corrected_interval(scores: Sequence[float], confidence: float = 0.95, test_train_ratio: float | None = None) -> Interval:
    """Confidence interval of the mean of k CV scores, with the corrected resampled variance."""
    from scipy.stats import t

    k = len(scores)
    mean = sum(scores) / k
    if k < 2:
        return Interval(mean, mean, mean, confidence)
    ratio = 1 / (k - 1) if test_train_ratio is None else test_train_ratio
    variance = sum((s - mean) ** 2 for s in scores) / (k - 1)
    half = t.ppf(0.5 + confidence / 2, k - 1) * math.sqrt((1 / k + ratio) * variance)
    return Interval(mean, mean - half, mean + half, confidence)


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, test_train_ratio: float | None = None) -> dict[str, float]:
    """Corrected resampled t-test of fold-paired scores: difference a - b, its interval and p-value."""
    from scipy.stats import t

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired comparison needs two equally long score lists of at least 2 folds, got {len(a)} and {len(b)}")
    k = len(a)
    diffs = [x - y for x, y in zip(a, b)]
    interval = corrected_interval(diffs, confidence, test_train_ratio)
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
    sign = -1 if direction == "maximize" else 1
    table = []
    for row in rows:
        scores = list(row["fold_scores"])
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))  # population std, as scikit-learn's cv_results_
        entry: dict[str, Any] = {
            "trial": row["trial"], "model": row["model"], "mean_score": mean, "std_score": std,
            "best_epochs": row["best_epochs"], "total_parameters": row["total_parameters"],
        }
        entry.update({f"split{k}_score": s for k, s in enumerate(scores)})
        entry.update({f"param_{name}": value for name, value in sorted(row["params"].items())})
        entry["params"] = dict(row["params"])
        table.append(entry)
    table.sort(key=lambda r: (sign * r["mean_score"], r["trial"]))
    for rank, entry in enumerate(table, start=1):
        entry["rank"] = rank
    return table


def select(table: Sequence[dict[str, Any]], rule: str, direction: str) -> dict[str, Any]:
    """The winner under ``rule``: 'best' (rank 1) or 'one-standard-error'.

    One-standard-error: among trials whose mean is within one standard error of the best mean
    (standard error = the best trial's fold std / sqrt(k)), take the cheapest to train and serve:
    fewest parameters, then fewest epochs, then the better mean.
    """
    if not table:
        raise ValueError("no completed trial to select from")
    best = min(table, key=lambda r: r["rank"])
    if rule == "best":
        return best
    if rule != "one-standard-error":
        raise ValueError(f"unknown selection rule {rule!r}")
    k = len(fold_scores(best))
    standard_error = best["std_score"] * math.sqrt(k / (k - 1)) / math.sqrt(k) if k > 1 else 0.0
    sign = 1 if direction == "maximize" else -1
    eligible = [r for r in table if sign * (best["mean_score"] - r["mean_score"]) <= standard_error + 1e-12]
    return min(eligible, key=lambda r: (r["total_parameters"], r["best_epochs"], r["rank"]))


def fold_scores(row: dict[str, Any]) -> list[float]:
    keys = sorted((k for k in row if k.startswith("split") and k.endswith("_score")), key=lambda k: int(k[5:-6]))
    return [row[k] for k in keys]


def compare_top(table: Sequence[dict[str, Any]], selected: dict[str, Any], confidence: float, top: int = 3) -> list[dict[str, Any]]:
    """Paired comparison of the selected trial against the next best ``top`` trials."""
    others = [r for r in sorted(table, key=lambda r: r["rank"]) if r["trial"] != selected["trial"]][:top]
    out = []
    for other in others:
        a, b = fold_scores(selected), fold_scores(other)
        if len(a) == len(b) and len(a) >= 2:
            out.append({"selected": selected["trial"], "other": other["trial"], "other_model": other["model"],
                        **paired_comparison(a, b, confidence)})
    return out


def write_table(table: Sequence[dict[str, Any]], folder: Path) -> tuple[Path, Path]:
    """Save the CV table as CSV (flat columns) and JSON; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    split_cols = sorted({k for r in table for k in r if k.startswith("split")}, key=lambda k: int(k[5:-6]))
    param_cols = sorted({k for r in table for k in r if k.startswith("param_")})
    columns = [*CV_FIELDS, *split_cols, *param_cols]
    csv_path, json_path = folder / "cv_results.csv", folder / "cv_results.json"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(table, key=lambda r: r["rank"]))
    json_path.write_text(json.dumps(sorted(table, key=lambda r: r["rank"]), indent=2, default=str), encoding="utf-8")
    return csv_path, json_path
