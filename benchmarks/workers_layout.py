"""One CPU worker with all the cores' threads, or one worker per core: which is faster, and why?

The time-to-quality study (see time_to_quality.py: 480 Rotten Tomatoes rows, MiniLM-L6, 8 trials,
3 folds, full or freeze-4) ran in 0.32x of the anchor's time with one two-thread worker but 0.41x with
two one-thread workers. Three things differ between those layouts: the configurations drawn (each
worker samples with its own seed, and TPE sees the other worker's trials only once they finish), what
the pruner knows when it decides (fewer finished trials at any moment), and how the two cores are used
(two processes, one thread each, against one process with two threads).

This script takes the sampler out: a first one-worker run draws the 8 configurations, and every later
run gets exactly those enqueued (in the same order). Then:
- without pruning, 1 worker x 2 threads against 2 workers x 1 thread: the same work, so the difference
  is the layout's throughput alone;
- with the median pruner (3 start-up trials, as in time_to_quality.py), the same pair: the difference
  beyond the first pair's is what the pruner decided differently.

Run: `.venv/bin/python benchmarks/workers_layout.py` (about 15 minutes on 2 cores).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _common import machine, quiet, run_study, save, study_text
from time_to_quality import PRESETS, SEARCH, space_text

PRUNERS = {"none": "  pruner: {name: none}", "median": "  pruner: {name: median, options: {n_startup_trials: 3}}"}


def drawn_configurations(study: Path) -> list[dict]:
    """The parameters of every trial of a finished study, in trial order."""
    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.spec import load_spec

    spec = load_spec(study)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    return [dict(t.params) for t in sorted(trials, key=lambda t: t.number) if "retry_of" not in t.user_attrs]


def main() -> None:
    quiet()
    preset = PRESETS["core"]
    space = space_text(["full", "freeze-4"], None)
    search = SEARCH.format(trials=preset["trials"]).splitlines()[0]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        def run(label: str, workers: int, pruner: str, enqueue: list[dict] | None) -> dict:
            study = Path(folder) / label / "study.yaml"
            study.parent.mkdir()
            extra = f"  enqueue: {json.dumps(enqueue)}\n" if enqueue else ""
            study.write_text(study_text("workers-layout", preset["rows"], 400, space, preset["folds"],
                                        f"{search}\n{PRUNERS[pruner]}\n{extra}", workers=workers))
            print(f"{label}: {workers} worker(s), pruner {pruner}{', enqueued' if enqueue else ''} ...", flush=True)
            result = run_study(study)
            result["configurations"] = drawn_configurations(study)
            print(f"  {result['wall_s']:.0f} s, best CV {result['best_cv']:.4f}, trials {result['trials']}", flush=True)
            results[label] = result
            return result

        drawn = run("draw", 1, "none", None)["configurations"]
        for pruner in ("none", "median"):
            for workers in (1, 2):
                run(f"{pruner}-{workers}w", workers, pruner, drawn)
    one, two = results["none-1w"]["wall_s"], results["none-2w"]["wall_s"]
    pruned_one, pruned_two = results["median-1w"]["wall_s"], results["median-2w"]["wall_s"]
    print("\n| run | workers x threads | pruner | wall time | trials | best CV | test accuracy |\n|---|---|---|---|---|---|---|")
    for label, result in results.items():
        layout = "2 x 1" if label.endswith("2w") else "1 x 2"
        pruner = "median" if label.startswith("median") else "none"
        print(f"| {label} | {layout} | {pruner} | {result['wall_s']:.0f} s | {result['trials']} | {result['best_cv']:.4f} | {result['test_scores']['accuracy']:.4f} |")
    print(f"\nsame work, no pruning: two workers take {two / one:.2f}x the time of one")
    print(f"same configurations, median pruner: two workers take {pruned_two / pruned_one:.2f}x the time of one")
    print(f"written to {save('workers_layout', {'machine': machine(), 'runs': results})}")


if __name__ == "__main__":
    main()
