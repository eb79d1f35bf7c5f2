"""Fine-tune core against Hugging Face Trainer, and the frozen-layer cache against full fine-tuning.

Same model (packaged all-MiniLM-L6-v2), data (Rotten Tomatoes), batch size, max_length, learning
rate, schedule and seed; the two trainers run interleaved (core, Trainer, core, Trainer, ...) in one
process so that machine noise hits both alike. Run: `.venv/bin/python benchmarks/core_vs_trainer.py`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, quiet, rotten_tomatoes_spec, save


def run_trainer(tuner, candidate, params: dict, train_rows: list[int], seed: int, device: str = "cpu") -> tuple[float, float]:
    """(training samples/s, test accuracy) of transformers.Trainer on the same tokenized data."""
    import datasets
    from transformers import Trainer, TrainingArguments

    from hpsearch.finetune.modeling import load_model

    inputs = tuner.inputs(candidate)
    features = [inputs.tokenized["train"].features[i] for i in train_rows]
    model = load_model(inputs.folder, tuner.task, tuner.data.label_map, num_layers=None, trust_remote_code=False, seed=seed)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=params["batch_size"], per_device_eval_batch_size=32,
            num_train_epochs=params["epochs"], learning_rate=params["learning_rate"], warmup_steps=params["warmup_ratio"],
            weight_decay=params["weight_decay"], lr_scheduler_type="linear", max_grad_norm=1.0, seed=seed,
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=device == "cpu", bf16=bool(params.get("bf16")),
        )
        trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(features),
                          data_collator=tuner.task.collator(inputs.tokenizer))
        output = trainer.train()
        test = datasets.Dataset.from_list(list(inputs.tokenized["test"].features))
        prediction = trainer.predict(test)
    accuracy = float(np.mean(np.argmax(prediction.predictions, axis=-1) == np.array(prediction.label_ids)))
    return float(output.metrics["train_samples_per_second"]), accuracy


def run_core(tuner, candidate, params: dict, train_rows: list[int], seed: int) -> tuple[float, float, list[float]]:
    """(training samples/s, test accuracy, seconds per epoch) of the hpsearch core."""
    fitted = tuner.fit(candidate, params, train_rows=train_rows, eval_rows=list(range(len(tuner.data.splits["test"]))),
                       eval_split="test", seed=seed, keep_best=False)
    accuracy = tuner.score(fitted, "test")["accuracy"]
    seconds = [r.seconds for r in fitted.result.history]
    speed = fitted.result.samples_per_second
    fitted.close()
    return speed, accuracy, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=480, help="training rows")
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each trainer")
    parser.add_argument("--frozen", type=int, default=4, help="K of the freeze-K comparison")
    args = parser.parse_args()
    quiet()
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner

    spec = rotten_tomatoes_spec(args.rows, args.test_rows)
    data = prepare_data(spec)
    candidate = spec.models[0]
    params = {"learning_rate": 1e-4, "epochs": args.epochs, "batch_size": 16, "warmup_ratio": 0.1, "weight_decay": 0.01}
    rows = list(range(len(data.train)))
    with tempfile.TemporaryDirectory() as cache:
        # Both loops in fp32 (Trainer's default on the CPU): this compares the loops; bf16 is benchmarks/cpu_bf16.py.
        tuner = FineTuner(data, cache_dir=Path(cache), max_length=64, precision="fp32")
        tuner.inputs(candidate)  # tokenize once, outside the timings of both
        core, trainer = [], []
        for rep in range(args.reps):
            core.append(run_core(tuner, candidate, params, rows, seed=rep))
            trainer.append(run_trainer(tuner, candidate, params, rows, seed=rep))
            print(f"rep {rep}: core {core[-1][0]:.1f} samples/s acc {core[-1][1]:.3f} | Trainer {trainer[-1][0]:.1f} samples/s acc {trainer[-1][1]:.3f}", flush=True)
        started = time.perf_counter()
        frozen = run_core(tuner, candidate, {**params, "scope": f"freeze-{args.frozen}"}, rows, seed=0)
        frozen_wall = time.perf_counter() - started
        uncached = FineTuner(data, cache_dir=Path(cache), max_length=64, frozen_cache=False, precision="fp32")
        frozen_plain = run_core(uncached, candidate, {**params, "scope": f"freeze-{args.frozen}"}, rows, seed=0)
    full_epoch = statistics.mean(s for r in core for s in r[2])
    result = {
        "machine": machine(),
        "setup": {"rows": args.rows, "test_rows": args.test_rows, "epochs": args.epochs, "reps": args.reps, "batch_size": 16, "max_length": 64},
        "core_samples_per_s": statistics.mean(r[0] for r in core),
        "trainer_samples_per_s": statistics.mean(r[0] for r in trainer),
        "core_test_accuracy": statistics.mean(r[1] for r in core),
        "trainer_test_accuracy": statistics.mean(r[1] for r in trainer),
        "full_epoch_s": full_epoch,
        "frozen_cached_epoch_s": statistics.mean(frozen[2]),
        "frozen_uncached_epoch_s": statistics.mean(frozen_plain[2]),
        "frozen_cached_wall_s_incl_cache_build": frozen_wall,
        "frozen_test_accuracy": frozen[1],
    }
    result["core_over_trainer"] = result["core_samples_per_s"] / result["trainer_samples_per_s"]
    result["frozen_cache_speedup_per_epoch"] = full_epoch / result["frozen_cached_epoch_s"]
    print("\n| measure | hpsearch core | Trainer | ratio |\n|---|---|---|---|")
    print(f"| training samples/s | {result['core_samples_per_s']:.1f} | {result['trainer_samples_per_s']:.1f} | {result['core_over_trainer']:.2f}x |")
    print(f"| test accuracy | {result['core_test_accuracy']:.3f} | {result['trainer_test_accuracy']:.3f} | |")
    print("\n| scope | seconds per epoch | speed-up over full |\n|---|---|---|")
    print(f"| full | {full_epoch:.1f} | 1.00x |")
    print(f"| freeze-{args.frozen}, no cache | {result['frozen_uncached_epoch_s']:.1f} | {full_epoch / result['frozen_uncached_epoch_s']:.2f}x |")
    print(f"| freeze-{args.frozen}, cached | {result['frozen_cached_epoch_s']:.1f} | {result['frozen_cache_speedup_per_epoch']:.2f}x |")
    print(f"\nfreeze-{args.frozen} test accuracy {frozen[1]:.3f}; wall time incl. one-off cache build {frozen_wall:.1f}s")
    print(f"written to {save('core_vs_trainer', result)}")


if __name__ == "__main__":
    main()
