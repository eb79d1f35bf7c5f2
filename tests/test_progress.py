"""Progress output modes of `hpsearch run`: readable lines, JSON lines, quiet."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hpsearch.progress import Progress
from toydata import toy_study

EXTRA = """\
space: {learning_rate: 8.0e-3, epochs: 2, batch_size: 8, warmup_ratio: 0.0, weight_decay: 0.0}
cv: {folds: 2}
search: {n_trials: 1}
tracking: {enabled: false}
export: {enabled: false}
"""


def _run(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path), *flags], capture_output=True, text=True, timeout=300, env=env)


def test_jsonl_mode_writes_one_event_per_line(tmp_path: Path, tiny_bert: Path) -> None:
    # LoRA: peft's wrap reads a property transformers has deprecated, a warning that once broke the stream.
    lora = EXTRA.replace("weight_decay: 0.0}", "weight_decay: 0.0, scope: lora}")
    result = _run(toy_study(tmp_path, tiny_bert, rows=40, extra=lora), "--log-format", "jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = [e.get("event") for e in events]
    assert [e for e in events if "category" in e] == []  # no library warning on a clean run
    assert [e for e in events if "event" not in e] == []  # every event says its kind
    assert kinds.count("epoch") == 4 and "trial_start" in kinds and "best" in kinds
    epoch = next(e for e in events if e.get("event") == "epoch")
    assert {"trial", "fold", "epoch", "metrics", "train_loss", "time", "message"} <= set(epoch)
    end = next(e for e in events if e.get("event") == "trial_end")
    assert end["state"] == "COMPLETE" and 0 <= end["cv_mean"] <= 1
    estimating = next(e for e in events if e.get("event") == "estimating")  # the end's longest step says it is running
    assert (estimating["trials"], estimating["rows"]) == (1, 40) and kinds.index("estimating") > kinds.index("trial_end")
    # The result on the standard output: one event too (batch systems merge the two streams into one log).
    [result_event] = [json.loads(line) for line in result.stdout.splitlines()]
    assert result_event["event"] == "result" and result_event["message"].startswith("winner (best): trial 0")
    assert (result_event["trial"], result_event["model"], result_event["metric"]) == (0, "tiny", "macro_f1")
    assert result_event["cv_mean"] == end["cv_mean"] and result_event["export_dir"] is None


def test_jsonl_mode_says_why_a_command_stopped_as_an_event_too(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.cli import main
    from toydata import write_csv

    path = toy_study(tmp_path, tiny_bert, rows=40, extra=EXTRA)
    write_csv(tmp_path / "test.csv", [{"text": "a film", "label": "meh"}])
    path.write_text(path.read_text().replace("  train: cls.csv\n", "  train: cls.csv\n  test: test.csv\n"))
    assert main(["run", str(path), "--log-format", "jsonl"]) == 2
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]  # every line parses, the last one too
    assert events[-1]["event"] == "error" and events[-1]["exit_code"] == 2, events[-1]
    assert events[-1]["message"].startswith("hpsearch run: ") and "label 'meh' never occurs in the training data" in events[-1]["message"]
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err.strip().startswith("hpsearch run: ")  # as text without it


def test_jsonl_mode_sends_python_warnings_as_events() -> None:
    stream = io.StringIO()
    progress = Progress("jsonl", stream=stream)
    with warnings.catch_warnings():  # restores the warnings module's hook afterwards
        warnings.simplefilter("always")
        progress.route_warnings()
        warnings.warn("this call is deprecated", FutureWarning)
    event = json.loads(stream.getvalue())
    assert event["event"] == "warning" and event["category"] == "FutureWarning" and "this call is deprecated" in event["message"]
    assert event["location"].startswith(__file__)


@pytest.mark.parametrize("flags,shown", [("quiet=True, log_format='text'", False), ("quiet=False, log_format='jsonl'", True)])
def test_the_program_routes_python_warnings_in_quiet_and_jsonl_modes(flags: str, shown: bool) -> None:
    # In a fresh interpreter: pytest records warnings itself, which would hide what the program does.
    code = ("import argparse, warnings\nfrom hpsearch.cli import _progress\n"
            f"_progress(argparse.Namespace({flags}))\nwarnings.warn('this call is deprecated', FutureWarning)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stderr
    assert (json.loads(err)["category"] == "FutureWarning") if shown else err == "", err


def test_quiet_mode_prints_only_the_result(tmp_path: Path, tiny_bert: Path) -> None:
    result = _run(toy_study(tmp_path, tiny_bert, rows=40, extra=EXTRA), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip() == ""
    assert result.stdout.startswith("\nwinner (best): trial 0, tiny") and "CV macro_f1" in result.stdout  # as text, not an event


def test_step_bar_only_in_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("text", label="cpu-0", stream=stream)
    progress.step(3, 10, "trial 0 fold 1/2 epoch 1")
    progress("trial 0: done")
    assert stream.getvalue() == "[cpu-0] trial 0: done\n"  # no bar drawn into a file or pipe


def test_a_long_epoch_says_how_far_it_is_once_a_minute_in_a_log() -> None:
    """Written to a file (a batch job's log) an epoch of an hour said nothing between its trial's first line and its end."""
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("text", stream=stream, clock=lambda: now[0])
    for done in range(1, 301):  # 300 steps of 1 s: a line at 61 s, 121 s, ... after the first step
        now[0] = float(done)
        progress.step(done, 300, "trial 2 fold 1/3 epoch 1")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "trial 2 fold 1/3 epoch 1: 61 of 300 steps (20%), about 3m59s left", lines
    assert len(lines) == 4 and lines[-1] == "trial 2 fold 1/3 epoch 1: 241 of 300 steps (80%), about 59s left", lines
    stream.truncate(0), stream.seek(0)
    for done in range(1, 31):  # a short epoch says nothing
        now[0] += 1.0
        progress.step(done, 30, "trial 2 fold 1/3 epoch 2")
    assert stream.getvalue() == ""

    events = io.StringIO()
    logged = Progress("jsonl", stream=events, clock=lambda: now[0])
    for done in range(1, 80):
        now[0] += 1.0
        logged.step(done, 100, "final model epoch 1")
    [record] = [json.loads(line) for line in events.getvalue().splitlines()]
    assert (record["event"], record["done"], record["total"], record["unit"], record["seconds_left"]) == ("steps", 61, 100, "step", 39.0)
    quiet = Progress("quiet", stream=events, clock=lambda: now[0])
    for done in range(1, 200):
        now[0] += 1.0
        quiet.step(done, 200, "trial 0 fold 1/1 epoch 1")
    assert len(events.getvalue().splitlines()) == 1
