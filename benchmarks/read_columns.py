"""Reading a data column: one pass over the column (hpsearch now) against iterating it row by row (before).

Writes a csv of ``--rows`` rows (Rotten Tomatoes texts, repeated and numbered) to a temporary folder, loads it
with the same loader a study uses, then times, side by side and alternating, the two ways of turning a column
into a list, and the whole ``prepare_data`` of a study on that file.

    .venv/bin/python benchmarks/read_columns.py [--rows 600000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from hpsearch.data import prepare_data
    from hpsearch.data.sources import load_source
    from hpsearch.spec import load_spec

    source = list(csv.DictReader((ROOT / "studies/data/rotten-tomatoes/train.csv").open(encoding="utf-8")))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with (root / "big.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            for i in range(args.rows):
                row = source[i % len(source)]
                writer.writerow({"text": f"{row['text']} #{i}", "label": row["label"]})
        (root / "m").mkdir()
        (root / "m" / "config.json").write_text("{}")
        (root / "s.yaml").write_text("name: read\ntask: text-classification\ndata: {train: big.csv}\n"
                                     "models: [{name: m, path: m}]\ntracking: {enabled: false}\n")
        spec = load_spec(root / "s.yaml")
        dataset = load_source(spec.data.train, root / "cache")
        times: dict[str, list[float]] = {"row by row (before)": [], "one pass (now)": [], "prepare_data (now)": []}
        for _ in range(args.repeats):
            started = time.perf_counter()
            by_row = list(dataset["label"])
            times["row by row (before)"].append(time.perf_counter() - started)
            started = time.perf_counter()
            at_once = dataset["label"][:]
            times["one pass (now)"].append(time.perf_counter() - started)
            assert by_row == at_once
            started = time.perf_counter()
            prepare_data(spec, cache_dir=root / "cache")
            times["prepare_data (now)"].append(time.perf_counter() - started)
    print(f"{args.rows:,} rows, median of {args.repeats}")
    print("| reading the label column | seconds |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    ratio = statistics.median(times["row by row (before)"]) / statistics.median(times["one pass (now)"])
    print(f"one pass is {ratio:.0f}x faster than row by row")


if __name__ == "__main__":
    main()
