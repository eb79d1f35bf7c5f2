"""Repeated configurations in a finite space: what plain Optuna trains, and what hpsearch trains.

The space is the classic BERT grid, learning rate {2e-5, 3e-5, 5e-5} x batch size {16, 32} x epochs {1, 2, 3}
(18 configurations; weight decay and warm-up fixed), on MiniLM-L6 and ``--rows`` Rotten Tomatoes rows, 2 folds.

- hpsearch: ``hpsearch run`` of that study with TPE (Optuna's defaults: 10 random start-up trials), ``--trials``
  trials, pruner off. A trial that draws a completed trial's settings is not trained again, an untried
  configuration is queued instead, and the search ends once all 18 are tried; so the run also measures every
  configuration's CV score and training time.
- the anchor, a plain Optuna loop: the same TPE, seed and trial count asking for the same space, every draw trained.
  Its draws are scored with the CV score and charged the training seconds hpsearch measured for that
  configuration in the run above (training is seeded, so the loop would have measured the same), in the same run.

Printed per side: trainings, distinct configurations, training seconds, best CV found. First, without training, the
distinct configurations that TPE's 20 draws cover on the same 18 with a synthetic objective, for sampler seeds 0-7.

    .venv/bin/python benchmarks/repeats.py [--rows 160] [--trials 20] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import machine, run_study, save, study_text

SPACE = """\
  learning_rate: [2.0e-5, 3.0e-5, 5.0e-5]
  batch_size: [16, 32]
  epochs: [1, 2, 3]
  weight_decay: 0.01
  warmup_ratio: 0.1"""


def anchor(measured: dict[tuple, tuple[float, float]], trials: int, seed: int) -> dict:
    """A plain Optuna loop: TPE with the study's seed asks ``trials`` times; every draw is trained (looked up)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    seconds, seen = 0.0, set()
    for _ in range(trials):
        trial = study.ask()
        key = (trial.suggest_categorical("learning_rate", [2.0e-5, 3.0e-5, 5.0e-5]), trial.suggest_categorical("batch_size", [16, 32]),
               trial.suggest_categorical("epochs", [1, 2, 3]))
        score, cost = measured[key]
        seconds += cost
        seen.add(key)
        study.tell(trial, score)
    return {"trainings": trials, "distinct": len(seen), "train_seconds": seconds, "best_cv": max(measured[k][0] for k in seen)}


def draws_only(trials: int, seeds: range) -> list[int]:
    """Distinct configurations among TPE's ``trials`` draws on the 18, scored by a smooth synthetic objective."""
    import math

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counts = []
    for seed in seeds:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        seen = set()
        for _ in range(trials):
            trial = study.ask()
            key = (trial.suggest_categorical("learning_rate", [2.0e-5, 3.0e-5, 5.0e-5]), trial.suggest_categorical("batch_size", [16, 32]),
                   trial.suggest_categorical("epochs", [1, 2, 3]))
            seen.add(key)
            study.tell(trial, -abs(math.log(key[0] / 3.0e-5)) - 0.01 * key[1] / 16 + 0.02 * key[2])
        counts.append(len(seen))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.spec import load_spec

    print(f"TPE alone, {args.trials} draws on the 18 configurations, seeds 0-7: distinct {draws_only(args.trials, range(8))}", flush=True)
    results = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "study.yaml"
            path.write_text(study_text(f"repeats-{seed}", args.rows, 0, SPACE, 2, f"  n_trials: {args.trials}\n  pruner: {{name: none}}",
                                       seed=seed, metric="macro_f1"))
            run = run_study(path)
            spec = load_spec(path)
            trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
        trained = [t for t in trials if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
        measured = {(t.params["learning_rate"], t.params["batch_size"], t.params["epochs"]): (t.user_attrs["cv_mean"], t.user_attrs["train_seconds"])
                    for t in trained}
        ours = {"trainings": len(trained), "distinct": len(measured), "repeats": sum("repeat_of" in t.user_attrs for t in trials),
                "train_seconds": sum(t.user_attrs["train_seconds"] for t in trained), "best_cv": max(v[0] for v in measured.values()),
                "wall_s": run["wall_s"]}
        row = {"seed": seed, "hpsearch": ours, "anchor": anchor(measured, args.trials, seed) if len(measured) == 18 else None}
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.trials} trials asked, 18 configurations, {args.rows} rows, 2 folds\n")
    print("| seed | side | trainings | distinct configurations | training seconds | best CV macro-F1 found |\n|---|---|---|---|---|---|")
    for row in results:
        for side in ("anchor", "hpsearch"):
            r = row[side]
            if r is not None:
                print(f"| {row['seed']} | {side} | {r['trainings']} | {r['distinct']} | {r['train_seconds']:.1f} | {r['best_cv']:.4f} |")
    print(f"written to {save('repeats', {'machine': machine(), 'args': vars(args), 'results': results})}")


if __name__ == "__main__":
    main()
