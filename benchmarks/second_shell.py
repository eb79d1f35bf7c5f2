"""A worker started in a second shell while `hpsearch run` trains: how fast each trains while both run.

Runs the demo study (`studies/rotten-tomatoes.yaml`: 8 trials, 3 folds, MiniLM-L6 and its 3-layer cut) with its
output in a temporary folder: `hpsearch run --no-export` first, then, once the run has reported its first epoch,
`hpsearch worker` on the same study (the embedded storage, as two shells on one machine would share it). Both log
jsonl; each epoch's training speed (samples/s) is counted as "beside the other" when it ended while both processes
were up, else "alone". Reports the run's first trial epoch by epoch (the worker starts during it) and the cost it recorded, the study's wall time, its training samples and device-seconds (`selection.json`),
and the thread counts each process said it took.

`--code DIR` runs both processes on the hpsearch package in DIR instead of this checkout's (a `git worktree` of an
earlier commit, say), so two versions can be compared on the same machine, one after the other.
Run: `.venv/bin/python benchmarks/second_shell.py [--code DIR]` (about 2 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, machine, save


def study_text(out: Path) -> str:
    text = (ROOT / "studies" / "rotten-tomatoes.yaml").read_text()
    text = text.replace("name: rotten-tomatoes", "name: second-shell").replace("data/rotten-tomatoes/", f"{ROOT}/studies/data/rotten-tomatoes/")
    return text + f"output_dir: {out}\n"


def read_events(child: subprocess.Popen[str], who: str, events: list[tuple[float, str, dict]]) -> None:
    for line in child.stderr:  # type: ignore[union-attr]
        try:
            events.append((time.perf_counter(), who, json.loads(line)))
        except json.JSONDecodeError:
            events.append((time.perf_counter(), who, {"event": "text", "message": line.rstrip()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, help="folder holding the hpsearch package to run (default: this checkout)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study.yaml"
        study.write_text(study_text(Path(folder) / "runs"))
        hpsearch = [sys.executable, "-m", "hpsearch"]
        events: list[tuple[float, str, dict]] = []
        started = time.perf_counter()
        run = subprocess.Popen([*hpsearch, "run", str(study), "--no-export", "--log-format", "jsonl"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
        readers = [threading.Thread(target=read_events, args=(run, "run", events), daemon=True)]
        readers[0].start()
        while not any(who == "run" and e.get("event") == "epoch" for _, who, e in list(events)):
            if run.poll() is not None:
                sys.exit(f"the run ended before its first epoch: {[e.get('message') for _, _, e in events][-5:]}")
            time.sleep(0.05)
        joined = time.perf_counter()
        worker = subprocess.Popen([*hpsearch, "worker", str(study), "--log-format", "jsonl"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=env)
        readers.append(threading.Thread(target=read_events, args=(worker, "worker", events), daemon=True))
        readers[1].start()
        worker.wait()
        left = time.perf_counter()
        run.wait()
        wall = time.perf_counter() - started
        for reader in readers:  # every line read before the events are counted
            reader.join(timeout=10)
        if run.returncode != 0 or worker.returncode != 0:
            sys.exit(f"run ended {run.returncode}, worker {worker.returncode}: {[e.get('message') for _, _, e in events][-10:]}")
        cost = json.loads((Path(folder) / "runs" / "selection.json").read_text())["study_cost"]
        table = json.loads((Path(folder) / "runs" / "cv_results.json").read_text())
    speeds: dict[str, dict[str, list[float]]] = {"run": {"alone": [], "beside": []}, "worker": {"alone": [], "beside": []}}
    threads: dict[str, list[str]] = {"run": [], "worker": []}
    first = next(e["trial"] for _, who, e in events if who == "run" and e.get("event") == "epoch")
    caught: list[str] = []  # the run's first trial, which was training when the worker started
    for when, who, event in events:
        if event.get("event") == "epoch":
            beside = joined <= when <= left
            speeds[who]["beside" if beside else "alone"].append(float(event["samples_per_second"]))
            if who == "run" and event["trial"] == first:
                caught.append(f"{event['samples_per_second']:.0f}{'*' if beside else ''}")
        elif event.get("event") == "threads":
            threads[who].append(event["message"])
    recorded = next((row for row in table if row["trial"] == first), None)  # complete in the demo: its enqueued settings learn
    result = {"machine": machine(), "code": str(args.code or ROOT), "wall_s": wall, "worker_up_s": left - joined, **cost,
              "samples_per_second": speeds, "first_trial_samples_per_second": caught, "threads": threads,
              "first_trial_cost": recorded and {k: recorded[k] for k in ("train_samples", "device_seconds")}}
    print(f"study: {wall:.1f} s wall; {cost['train_samples']:,} training samples, {cost['device_seconds']:.1f} device-s "
          f"({cost['train_samples'] / cost['device_seconds']:.0f} samples per device-second); the worker was up {left - joined:.1f} s")
    print(f"the run's trial {first}, epoch by epoch (samples/s; * while the worker was up): {' '.join(caught)}")
    if recorded:
        print(f"the run's trial {first} recorded {recorded['train_samples']:,} training samples in {recorded['device_seconds']:.1f} device-s")
    for who in ("run", "worker"):
        for when in ("alone", "beside"):
            got = speeds[who][when]
            if got:
                print(f"{who}, {when}: {len(got)} epochs, samples/s min {min(got):.0f}, median {statistics.median(got):.0f}, max {max(got):.0f}")
        for line in threads[who]:
            print(f"{who}: {line}")
    print(f"written to {save('second_shell', result)}")


if __name__ == "__main__":
    main()
