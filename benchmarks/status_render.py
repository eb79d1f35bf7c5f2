"""How long ``hpsearch status`` takes to lay out its table for a long study.

Synthetic rows (no study is run): 500 trials of two states, three searched parameters, a note on half of
them and every cost field, laid out at 160, 100 and 80 columns; each width timed three times, the best kept.
With ``--old DIR`` (a checkout of an earlier commit, e.g. from ``git worktree add DIR REV``), the same rows are
laid out by that version's ``hpsearch.status.render`` too, in a child process, one right after the other.
Run: `.venv/bin/python benchmarks/status_render.py [--old DIR]` (under a minute).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (160, 100, 80)


def rows(count: int = 500) -> list[dict]:
    draw = random.Random(0)
    return [{"trial": i, "state": draw.choice(["COMPLETE", "PRUNED"]), "model": "minilm-l6",
             "params": {"learning_rate": draw.random() * 1e-3, "scope": "freeze-4", "weight_decay": draw.random()},
             "cv_mean": 0.7, "cv_std": 0.02, "epochs": 2, "seconds": 17.0, "device": "cpu", "host": "h",
             "note": draw.choice(["", "pruned at fold 1, epoch 1: macro_f1=0.6305"]), "train_samples": 3600,
             "device_seconds": 14.2, "flops": 8e12, "peak_memory_mb": 1168.0, "latency_ms": None} for i in range(count)]


def timings() -> dict[int, float]:
    """Best of three layouts of :func:`rows` at each width, by the ``hpsearch`` on ``sys.path``."""
    import inspect

    from hpsearch.spec import load_spec
    from hpsearch.status import render

    spec, table = load_spec(ROOT / "studies" / "rotten-tomatoes.yaml"), rows()
    takes_width = "width" in inspect.signature(render).parameters  # versions before it rendered at 160 only
    best = {}
    for width in WIDTHS if takes_width else (160,):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            render(spec, table, len(table), **({"width": width} if takes_width else {}))
            times.append(time.perf_counter() - started)
        best[width] = min(times)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="a checkout of an earlier commit to time beside this one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(timings()))
        return
    sides = {"now": timings()}
    if args.old:
        child = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(args.old.resolve())})
        sides["old"] = {int(k): v for k, v in json.loads(child.stdout).items()}
    print("| version | " + " | ".join(f"{w} columns" for w in WIDTHS) + " |")
    print("|---|" + "---|" * len(WIDTHS))
    for name, best in sides.items():
        print(f"| {name} | " + " | ".join(f"{best[w]:.2f} s" if w in best else "-" for w in WIDTHS) + " |")


if __name__ == "__main__":
    main()
