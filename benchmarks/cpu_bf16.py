"""bf16 autocast on the CPU against fp32: training speed of the fine-tune core and the test score.

Same model (packaged all-MiniLM-L6-v2, full fine-tuning), data (Rotten Tomatoes), batch size,
max_length, learning rate, schedule and seed; the two precisions run interleaved (fp32, bf16, fp32,
bf16) in one process. This measurement is why `precision: auto` is bf16 on a CPU with native bf16
(faster, test scores equal within seed noise). Run: `.venv/bin/python benchmarks/cpu_bf16.py [--repeats 2]`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import machine, quiet, rotten_tomatoes_spec, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--test-rows", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    quiet()
    import torch

    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner

    spec = rotten_tomatoes_spec(args.rows, args.test_rows)
    data = prepare_data(spec)
    candidate = spec.models[0]
    params = {"learning_rate": 1e-4, "epochs": args.epochs, "batch_size": 16, "warmup_ratio": 0.1, "weight_decay": 0.01, "scope": "full"}
    rows = list(range(len(data.train)))
    results: dict[str, dict[str, list[float]]] = {"fp32": {"samples_per_second": [], "test_accuracy": []},
                                                  "bf16": {"samples_per_second": [], "test_accuracy": []}}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for precision in ("fp32", "bf16"):
                tuner = FineTuner(data, cache_dir=Path(tmp) / "cache", max_length=64, precision=precision)
                fitted = tuner.fit(candidate, params, train_rows=rows, eval_rows=[], seed=repeat)
                speed = fitted.result.samples_per_second
                accuracy = tuner.score(fitted, "test")["accuracy"]
                fitted.close()
                results[precision]["samples_per_second"].append(speed)
                results[precision]["test_accuracy"].append(accuracy)
                print(f"repeat {repeat + 1} {precision}: {speed:.1f} samples/s, test accuracy {accuracy:.4f}", flush=True)
    summary = {p: {k: statistics.fmean(v) for k, v in r.items()} for p, r in results.items()}
    ratio = summary["bf16"]["samples_per_second"] / summary["fp32"]["samples_per_second"]
    print(f"bf16 / fp32 samples per second: {ratio:.2f}x; test accuracy fp32 {summary['fp32']['test_accuracy']:.4f}, "
          f"bf16 {summary['bf16']['test_accuracy']:.4f}")
    print(f"cpu bf16 support (torch): {torch.backends.mkldnn.is_available()} mkldnn")
    path = save("cpu_bf16", {"machine": machine(), "rows": args.rows, "epochs": args.epochs, "runs": results, "mean": summary, "ratio": ratio})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
