"""What the bias-corrected estimate (BBC-CV, hpsearch.estimate.bbc_cv) costs at the end of a study.

Synthetic predictions (no model is run): 50 configurations x 10,000 rows, 3 classes (macro-F1) and a
regression target (RMSE, Spearman on 2,000 rows), 1,000 bootstrap samples, scored on one fold (the rows
pooled) and fold by fold (5 and 10 folds), each timed twice; the best of the two is reported. Then the
bootstrap over one fixed validation split's rows (hpsearch.estimate.paired_bootstrap, 5,000 rows, 1,000
samples): for one trial, as each trial's standard error at its end and each compared trial at the study's
end, and for 50 trials at once, which the study's end no longer does. With a saved copy of an earlier
``hpsearch/estimate.py`` (``git show REV:hpsearch/estimate.py > old.py``) as its argument, each case runs with that
version too, one right after the other on the same predictions.
Run: `.venv/bin/python benchmarks/bbc_cost.py [OLD_ESTIMATE_PY]` (about 2 minutes on 2 cores, 4 with an earlier version).

`--large [OLD_ESTIMATE_PY]`: instead, 20 configurations of macro-F1 (3 classes, 70 % right) on 50,000 and 200,000 rows
in 5 folds, 1,000 samples, timed once each; with a saved copy of an earlier ``hpsearch/estimate.py`` (``git show
REV:hpsearch/estimate.py > old.py``), that version too, one after the other on the same predictions (about 3 minutes).
"""
from __future__ import annotations

import time

import numpy as np

from _common import machine, save

CASES = [  # (metric, rows, folds)
    ("macro_f1", 10_000, 1), ("macro_f1", 10_000, 5), ("macro_f1", 10_000, 10),
    ("rmse", 10_000, 5), ("spearman", 2_000, 5),
]


def _versions(old_path: str | None) -> dict:
    """This checkout's estimate, and an earlier copy of hpsearch/estimate.py where given, by name."""
    import importlib.util

    from hpsearch import estimate

    if not old_path:
        return {"now": estimate}
    spec = importlib.util.spec_from_file_location("old_estimate", old_path)
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)
    return {"before": before, "now": estimate}


def _best_of_two(call) -> float:  # noqa: ANN001
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main(old_path: str | None) -> None:
    versions = _versions(old_path)
    rng = np.random.default_rng(0)
    results = []
    for metric, rows, folds in CASES:
        if metric == "macro_f1":
            gold, predicted, classes = rng.integers(0, 3, rows), rng.integers(0, 3, (50, rows)), 3
        else:
            gold, predicted, classes = rng.normal(size=rows), rng.normal(size=(50, rows)), 0
        direction = "minimize" if metric == "rmse" else "maximize"
        for name, module in versions.items():
            seconds = _best_of_two(lambda: module.bbc_cv(predicted, gold, metric, direction, folds=np.arange(rows) % folds, classes=classes,
                                                         samples=1000))
            results.append({"metric": metric, "rows": rows, "folds": folds, "configurations": 50, "samples": 1000, "version": name,
                            "seconds": seconds})
            print(f"{name}: {metric}, {rows:,} rows, {folds} fold(s): {seconds:.1f} s", flush=True)
    split = []
    for metric in ("macro_f1", "spearman"):
        gold = rng.integers(0, 3, 5_000) if metric == "macro_f1" else rng.normal(size=5_000)
        predicted = rng.integers(0, 3, (50, 5_000)) if metric == "macro_f1" else rng.normal(size=(50, 5_000))
        for configurations in (1, 50):
            for name, module in versions.items():
                seconds = _best_of_two(lambda: module.paired_bootstrap(predicted[:configurations], gold, metric,
                                                                       classes=3 if metric == "macro_f1" else 0))
                split.append({"metric": metric, "rows": 5_000, "configurations": configurations, "samples": 1000, "version": name,
                              "seconds": seconds})
                print(f"{name}: validation-split bootstrap, {metric}, 5,000 rows, {configurations} trial(s): {seconds:.2f} s", flush=True)
    print(f"written to {save('bbc_cost', {'machine': machine(), 'results': results, 'validation_split': split})}")


def large(old_path: str | None) -> None:
    versions = _versions(old_path)
    rng = np.random.default_rng(0)
    results = []
    for rows in (50_000, 200_000):
        gold = rng.integers(0, 3, rows)
        predicted = np.where(rng.random((20, rows)) < 0.7, gold, rng.integers(0, 3, (20, rows)))
        for name, module in versions.items():
            started = time.perf_counter()
            found = module.bbc_cv(predicted, gold, "macro_f1", "maximize", folds=np.arange(rows) % 5, classes=3)
            results.append({"rows": rows, "version": name, "seconds": round(time.perf_counter() - started, 1), "estimate": found["estimate"]})
            print(results[-1], flush=True)
    print(f"written to {save('bbc_cost_large', {'machine': machine(), 'results': results})}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--large"]:
        large(sys.argv[2] if len(sys.argv) > 2 else None)
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else None)
