"""What pruning and frozen bottom layers save, and what they cost in score.

The same study (packaged all-MiniLM-L6-v2 on a Rotten Tomatoes subsample, same space apart from
the variable studied, same trial budget, folds and sampler seed) runs four times with `hpsearch run`:
full fine-tuning without pruning (the baseline), with the median pruner, with embeddings + bottom 4
layers frozen (frozen-layer cache on), and with both. Compute saved is the wall time and the training
samples against the baseline; score lost is the baseline's best CV and test accuracy minus each variant's.

Run: `.venv/bin/python benchmarks/savings.py` (about 10 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import machine, quiet, run_study, save, study_text

SPACE = """\
  learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  epochs: 3
  batch_size: 16
  scope: SCOPE
  warmup_ratio: 0.1
  weight_decay: 0.01"""

PRUNER = "{name: median, options: {n_startup_trials: 2}}"
VARIANTS = [  # label, scope, pruner
    ("full", "full", "{name: none}"),
    ("full-pruned", "full", PRUNER),
    ("frozen", "freeze-{frozen}", "{name: none}"),
    ("frozen-pruned", "freeze-{frozen}", PRUNER),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=240, help="training rows (folds are cut from these)")
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--frozen", type=int, default=4, help="K of the freeze-K variants")
    args = parser.parse_args()
    quiet()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, scope, pruner in VARIANTS:
            study = Path(folder) / f"{label}.yaml"
            study.write_text(study_text(f"savings-{label}", args.rows, args.test_rows, SPACE.replace("SCOPE", scope.format(frozen=args.frozen)),
                                        args.folds, f"  n_trials: {args.trials}\n  pruner: {pruner}", "tracking: {enabled: false}\n"))
            print(f"{label} ...", flush=True)
            results[label] = run_study(study)
            r = results[label]
            print(f"  {r['wall_s']:.0f} s, {r['samples']} samples, best CV {r['best_cv']:.4f}, test {r['test_scores']['accuracy']:.4f}, trials {r['trials']}", flush=True)
    base = results["full"]
    print("\n| variant | wall time | compute saved (wall) | training samples | saved (samples) | best CV accuracy | CV lost | test accuracy | test lost | pruned |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        r["wall_saved"] = 1 - r["wall_s"] / base["wall_s"]
        r["samples_saved"] = 1 - r["samples"] / base["samples"]
        r["cv_lost"] = base["best_cv"] - r["best_cv"]
        r["test_lost"] = base["test_scores"]["accuracy"] - r["test_scores"]["accuracy"]
        print(f"| {label} | {r['wall_s']:.0f} s | {r['wall_saved']:.0%} | {r['samples']} | {r['samples_saved']:.0%} | {r['best_cv']:.4f} | "
              f"{r['cv_lost']:+.4f} | {r['test_scores']['accuracy']:.4f} | {r['test_lost']:+.4f} | {r['trials']['PRUNED']} of {args.trials} |")
    print(f"written to {save('savings', {'machine': machine(), 'settings': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
