"""Reliability: failing configurations, a full disk, kill -9 of `run`, hostile output paths."""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch

from hpsearch.accounting import counted_trials
from hpsearch.runner import run_study
from hpsearch.repeats import untried
from hpsearch.storage import make_storage
from hpsearch.space import configurations
from hpsearch.spec import load_spec
from toydata import QUICK, toy_study, write_csv

SPACE = """\
space:
  learning_rate: 8.0e-3
  epochs: EPOCHS
  batch_size: [8, 16]
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {folds: 2}
"""


def _quiet(message: str, **fields: object) -> None:
    pass


def _trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()


def _fail_epochs(monkeypatch: pytest.MonkeyPatch, error: BaseException, batch_size: int = 16) -> list[tuple[int, int]]:
    """Every training epoch with ``batch_size`` raises ``error``; returns the (batch, accumulation) of every epoch."""
    import hpsearch.finetune.loop as loop

    real, seen = loop._train_epoch, []

    def failing(model, batcher, rows, config, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append((config.batch_size, config.grad_accumulation))
        if config.batch_size == batch_size:
            raise error
        return real(model, batcher, rows, config, *args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", failing)
    return seen


def test_out_of_memory_fails_the_trial_and_the_study_goes_on(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_epochs(monkeypatch, torch.OutOfMemoryError("CUDA out of memory (simulated)"))
    extra = SPACE.replace("EPOCHS", "1") + ("search: {n_trials: 2, enqueue: [{batch_size: 16}, {batch_size: 8}]}\ntracking: {enabled: false}\n"
                                            "export: {enabled: false}\nexecution: {memory_retries: 0}\n")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=_quiet) == 0
    first, second = _trials(path)
    assert first.state.name == "FAIL" and "out of memory with batch_size=16: lower batch_size" in first.user_attrs["failure_reason"]
    assert second.state.name == "COMPLETE"


def test_out_of_memory_is_retried_with_half_the_batch_and_the_same_effective_batch(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fail_epochs(monkeypatch, torch.OutOfMemoryError("CUDA out of memory (simulated)"))
    said: list[dict] = []
    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1, enqueue: [{batch_size: 16}]}\ntracking: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=lambda message, **fields: said.append(fields)) == 0
    (trial,) = _trials(path)
    assert trial.state.name == "COMPLETE"
    assert trial.params["batch_size"] == 16  # what was sampled ...
    assert (trial.user_attrs["params"]["batch_size"], trial.user_attrs["params"]["grad_accumulation"]) == (8, 2)  # ... and what ran
    assert "out of memory with batch_size=16" in trial.user_attrs["memory_note"]
    assert [f["fold"] for f in said if f.get("event") == "memory_retry"] == [1]  # fold 2 starts with the smaller batch
    assert seen == [(16, 1), (8, 2), (8, 2), (8, 2)]  # fold 1 twice, fold 2, then the refit with the settings that fit
    spec = load_spec(path)  # batch_size 16 counts as tried: a finite space does not queue it again
    assert [params["batch_size"] for _, params in untried(spec, [trial], configurations(spec))] == [8]


def test_full_disk_while_saving_a_checkpoint_fails_only_that_trial(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.finetune.core import Fitted

    real, calls = Fitted.save, []

    def full_once(self, folder):  # noqa: ANN001, ANN202
        calls.append(folder)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, folder)

    monkeypatch.setattr(Fitted, "save", full_once)
    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 2, enqueue: [{batch_size: 8}, {batch_size: 16}]}\ntracking: {enabled: false}\nexport: {policy: best-fold}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=_quiet) == 0
    first, second = _trials(path)
    assert first.state.name == "FAIL" and "No space left on device" in first.user_attrs["failure_reason"]
    assert second.state.name == "COMPLETE"
    spec = load_spec(path)
    assert not (spec.out_dir / "checkpoints" / "trial-0").exists()
    assert (spec.export_dir / "config.json").is_file()


@pytest.mark.parametrize(("error", "code", "said"), [
    (OSError(errno.ENOSPC, "No space left on device"), 73, "no space left on the device: free some space, or set output_dir to a disk "
                                                           "with room, then run the same command again"),
    (OSError(errno.EROFS, "Read-only file system", "/runs/toy/cache/x"), 73, "read-only file system: /runs/toy/cache/x: make that folder "
                                                                             "writable for this user")])
def test_a_full_disk_inside_a_trial_stops_the_study_and_the_trial_runs_again_once_there_is_room(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: OSError, code: int,
        said: str) -> None:
    """A full (or read-only) disk failed the trial as a library bug would ("unexpected OSError"), and the next trial met the
    same disk: each one spent the budget failing."""
    from hpsearch.cli import main

    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 2, enqueue: [{batch_size: 16}, {batch_size: 8}]}\nexport: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    with monkeypatch.context() as patch:
        _fail_epochs(patch, error)
        assert main(["run", str(path)]) == code
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{load_spec(path).out_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    # none left running; the trial was stopped by the disk, not failed by its settings, and runs again
    assert {r.info.run_name: r.info.status for r in runs} == {"toy": "KILLED", "trial-0": "KILLED"}
    assert next(r for r in runs if r.info.run_name == "trial-0").data.tags["state"] == "INTERRUPTED"
    out = capsys.readouterr()
    last = out.err.rstrip().splitlines()[-1]
    assert last.startswith(f"hpsearch run: {said}") and last.endswith("; the finished trials are kept and this one runs again"), out.err
    assert "trial 0 failed" not in out.out + out.err
    first, second = _trials(path)  # the study stopped: the second trial (enqueued) did not start on the same disk
    assert second.state.name == "WAITING"
    spec = load_spec(path)
    assert first.user_attrs["failure_reason"] == "interrupted: " + said.split(":")[0]  # the refusal in a few words
    assert first.user_attrs["interrupted"] and counted_trials(optuna.load_study(study_name=spec.name, storage=make_storage(spec))) == 0
    assert run_study(path, say=_quiet) == 0  # room again: the trial's settings run again, and the study ends with 2 counted
    trials = _trials(path)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["retry_of"] == 0 and trials[2].params == first.params


def test_a_full_disk_while_exporting_is_said_and_the_next_run_exports(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The export's disk filling up ended the run with OSError's traceback."""
    from hpsearch.cli import main
    from hpsearch.finetune.core import Fitted

    def full(self, folder):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "model.safetensors"))

    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1}\ntracking: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    with monkeypatch.context() as patch:
        patch.setattr(Fitted, "save", full)
        assert main(["run", str(path)]) == 73
    err = capsys.readouterr().err
    assert "hpsearch run: no space left on the device writing " in err and "model.safetensors: free some space" in err, err
    assert "Traceback" not in err
    spec = load_spec(path)
    assert not spec.export_dir.exists() and [t.state.name for t in _trials(path)] == ["COMPLETE"]
    assert main(["run", str(path)]) == 0
    assert (spec.export_dir / "config.json").is_file() and len(_trials(path)) == 1  # the trial was kept, not run again


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError("Not enough disk space. Needed: Unknown size (download: Unknown size)")])
def test_a_full_disk_under_the_datas_cache_is_no_fault_of_the_data(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str], error: OSError) -> None:
    """datasets' copy of the data, in the study's cache, met a full disk: the run blamed the csv ("cannot read ... as csv"),
    with the hint about quoting separators."""
    import datasets

    from hpsearch.cli import main

    def full(*args: object, **kwargs: object) -> None:
        raise error

    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1}\ntracking: {enabled: false}\n")
    monkeypatch.setattr(datasets, "load_dataset", full)
    assert main(["validate", str(path)]) == 73
    assert main(["run", str(path)]) == 73
    err = capsys.readouterr().err
    assert err.count("no space left on the device: free some space, or set output_dir to a disk with room") == 2, err
    assert "cannot read" not in err and "double quotes" not in err


def test_run_with_several_workers_stops_with_a_worker_that_could_not_write(tmp_path: Path, tiny_bert: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that met a full disk exits with the same code as one that lost the storage database once did, and run
    said that the workers lost the study storage."""
    import hpsearch.workers as workers
    from hpsearch.errors import CannotWrite

    said: list[dict[str, object]] = []
    extra = SPACE.replace("EPOCHS", "1") + ("search: {n_trials: 2}\nexecution: {devices: cpu, workers_per_device: 2}\n"
                                            "tracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    monkeypatch.setattr(workers, "run_pool", lambda *args, **kwargs: [CannotWrite.exit_code, 0])  # as the workers would end
    assert run_study(path, say=lambda message, **fields: said.append({"message": message, **fields})) == CannotWrite.exit_code == 73
    (stopped,) = [e for e in said if e.get("event") == "stopped"]
    assert stopped["reason"] == "cannot write" and "storage" not in str(stopped["message"])


@pytest.mark.parametrize(("said", "fix"), [
    ("database or disk is full", "no space left on the device writing {db}: free some space on that disk, or move search.storage to a disk with room"),
    ("attempt to write a readonly database", "read-only database: {db}: make that file and its folder writable for this user")])
def test_a_sqlite_storage_on_a_full_or_read_only_disk_stops_at_once_and_the_study_resumes(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], said: str, fix: str) -> None:
    """SQLite says a full or read-only disk as an OperationalError, which read as the database being out of reach: the
    worker said "unreachable", waited out search.storage_patience, and stopped as if the database had gone away."""
    import sqlite3

    import sqlalchemy

    from hpsearch.cli import main

    db = tmp_path / "study.db"
    extra = SPACE.replace("EPOCHS", "1") + (f"search: {{n_trials: 2, storage: 'sqlite:///{db}', storage_patience: 60}}\n"
                                            "tracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    set_attr = optuna.storages.RDBStorage.set_trial_user_attr

    def refuse(self: object, trial_id: int, key: str, value: object) -> None:
        if key == "params":
            raise sqlalchemy.exc.OperationalError("UPDATE trial_user_attributes", {}, sqlite3.OperationalError(said))
        set_attr(self, trial_id, key, value)

    with monkeypatch.context() as patch:
        patch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr", refuse)
        assert main(["run", str(path)]) == 73
    out = capsys.readouterr()
    assert "unreachable" not in out.err, out.err
    assert out.err.rstrip().splitlines()[-1] == (f"hpsearch run: {fix.format(db=db)}, then run the same command again; the finished "
                                                 "trials are kept in it, and a trial it stopped runs again"), out.err
    assert run_study(path, say=_quiet) == 0  # room again: the study resumes to its 2 trials
    spec = load_spec(path)
    assert counted_trials(optuna.load_study(study_name=spec.name, storage=make_storage(spec))) == 2


def test_a_full_disk_or_a_refused_write_is_told_from_the_errors_that_say_it() -> None:
    """safetensors (written in Rust) and SQLite give no errno: their text says it."""
    import sqlite3

    from hpsearch.errors import CannotWrite, DiskFull, cannot_write

    for full in (OSError(errno.EDQUOT, "Disk quota exceeded"), OSError(errno.ENOSPC, "No space left on device"),
                 RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")):
        assert isinstance(cannot_write(full), DiskFull), full
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as below:
            raise ValueError("a store's own words") from below
    except ValueError as wrapped:
        assert isinstance(cannot_write(wrapped), DiskFull)
    refused = cannot_write(OSError(errno.EROFS, "Read-only file system", "/runs/x/optuna.journal", None, "/runs/x/optuna.journal.lock"))
    assert type(refused) is CannotWrite and str(refused).startswith("read-only file system: /runs/x/optuna.journal.lock: make that folder "
                                                                   "writable for this user, or set output_dir to a folder it can write")
    assert cannot_write(OSError(errno.ENOENT, "No such file or directory")) is None and cannot_write(KeyError("disk")) is None


def test_a_file_where_a_folder_is_to_be_made_is_named(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.cli import main
    from hpsearch.errors import CannotWrite, cannot_write

    (tmp_path / "results").write_text("not a folder")
    for exc in (FileExistsError(errno.EEXIST, "File exists", str(tmp_path / "results")),
                NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "results" / "report"))):
        said = cannot_write(exc)
        assert type(said) is CannotWrite and str(said).startswith(f"a file is where a folder is to be made: {tmp_path / 'results'}: "
                                                                  "move that file, or choose another folder"), said
    assert cannot_write(FileExistsError(errno.EEXIST, "File exists", str(tmp_path))) is None  # a folder there: not this
    study = toy_study(tmp_path, tiny_bert, rows=40, extra=QUICK + "search: {n_trials: 1}\n")
    assert main(["run", str(study), "--quiet", "--no-export"]) == 0
    assert main(["report", str(study), "--out", str(tmp_path / "results")]) == 73
    assert f"hpsearch report: a file is where a folder is to be made: {tmp_path / 'results'}" in capsys.readouterr().err
    study.write_text(study.read_text() + f"output_dir: {tmp_path / 'results' / 'toy'}\n")
    assert main(["validate", str(study)]) == 2
    assert f"output_dir: {tmp_path / 'results'} is a file, and the study's results go in a folder there" in capsys.readouterr().err


def test_a_journal_record_cut_short_is_dropped_before_the_study_appends_after_it(tmp_path: Path, tiny_bert: Path) -> None:
    """A write cut short (a full disk, a killed process) left half a record at the journal's end: Optuna skips it when it
    reads, but the next run appended after it, and the two records made one line that no later read of the study could
    parse (a JSONDecodeError's traceback, from every command)."""
    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1}\ntracking: {enabled: false}\nexport: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=_quiet) == 0
    journal = load_spec(path).out_dir / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":2,"worker_id":"gone","study_id":0,"user_attr":{"x"')
    path.write_text(path.read_text().replace("n_trials: 1", "n_trials: 2"))
    assert run_study(path, say=_quiet) == 0  # the half record is cut off; the second trial is appended after the first's records
    spec = load_spec(path)
    assert counted_trials(optuna.load_study(study_name=spec.name, storage=make_storage(spec))) == 2
    assert {t.state.name for t in _trials(path)} == {"COMPLETE"} and journal.read_bytes().startswith(whole)
    from hpsearch.journal import cut_torn_record

    for content, cut in ((b"", 0), (b"{}\n", 0), (b"{}\n{", 1), (b"{ha", 3), (b"{}\n" * 30000 + b"x" * 70000, 70000)):
        journal.write_bytes(content)
        assert cut_torn_record(journal) == cut and journal.read_bytes() == content[:len(content) - cut]


def _lock_wait_says(monkeypatch: pytest.MonkeyPatch, waiting: threading.Event | None = None) -> None:
    """Optuna's journal lock, when it finds the lock taken, waits: with ``waiting``, the wait sets it; without, it fails."""
    import types

    import optuna.storages.journal._file as journal_file

    def sleep(seconds: float) -> None:
        if waiting is None:
            raise AssertionError("waited for the journal's lock")
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr(journal_file, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))


def test_a_journal_lock_left_by_a_killed_writer_is_taken_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed in the middle of a journal write left Optuna's lock link behind, and every other process of the
    study waited 30 s (Optuna's grace period) before it took the lock, with Optuna's warnings, on the next write."""
    from hpsearch.journal import journal_storage

    journal = tmp_path / "optuna.journal"
    optuna.create_study(study_name="s", storage=journal_storage(journal))
    holds_and_dies = ("import os, signal, sys; from hpsearch.journal import JournalLock; JournalLock(sys.argv[1]).acquire(); "
                      "os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", holds_and_dies, str(journal)]).returncode == -signal.SIGKILL
    assert os.path.lexists(f"{journal}.lock")
    _lock_wait_says(monkeypatch)
    study = optuna.load_study(study_name="s", storage=journal_storage(journal))
    study.set_user_attr("written", True)
    assert optuna.load_study(study_name="s", storage=journal_storage(journal)).user_attrs == {"written": True}
    assert not os.path.lexists(f"{journal}.lock")


@pytest.mark.parametrize("holder", ["an Optuna client", "a process on another machine", "a live process here"])
def test_a_journal_lock_that_is_not_a_dead_local_writers_is_waited_for(holder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """optuna-dashboard or the optuna command writing the same journal takes Optuna's own lock; a writer on another
    machine sharing the file, or a live one here whose system lock this one cannot see, holds it: hpsearch waits."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from hpsearch.journal import journal_storage
    from hpsearch.workers import HOST, PID_SPACE

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=journal_storage(journal))
    theirs = JournalFileSymlinkLock(str(journal))
    theirs.acquire()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    named = {"an Optuna client": "", "a process on another machine": {"host": "elsewhere", "pid_space": PID_SPACE, "pid": int(gone)},
             "a live process here": {"host": HOST, "pid_space": PID_SPACE, "pid": os.getpid()}}[holder]
    Path(f"{journal}.writer").write_text(json.dumps(named) if named else "")
    waiting = threading.Event()
    _lock_wait_says(monkeypatch, waiting)
    writer = threading.Thread(target=study.set_user_attr, args=("written", True))
    writer.start()
    assert waiting.wait(timeout=120)
    assert optuna.load_study(study_name="s", storage=journal_storage(journal)).user_attrs == {}
    theirs.release()
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert optuna.load_study(study_name="s", storage=journal_storage(journal)).user_attrs == {"written": True}


def test_a_damaged_journal_is_said_with_its_line_and_how_to_mend_it(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command failed with json's JSONDecodeError and a traceback, naming neither the file nor the line."""
    from hpsearch.cli import main

    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1}\ntracking: {enabled: false}\nexport: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=_quiet) == 0
    journal = load_spec(path).out_dir / "optuna.journal"
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([*lines[:3], b'{"op_code":4,"wor' + lines[3], *lines[4:]]))  # half a record, then the next
    assert main(["status", str(path)]) == 2
    assert capsys.readouterr().err == (f"hpsearch status: the study's journal {journal} cannot be read: line 4 starts with 17 bytes of a "
                                       "record cut short (a full disk or a process killed while writing), then a whole record; keep a copy "
                                       "of the file, delete those first 17 bytes of the line (up to '{\"op_code\"'), and run the same "
                                       "command again\n")
    journal.write_bytes(b"\n".join(lines))  # mended so
    assert main(["status", str(path)]) == 0


def test_unexpected_error_inside_a_trial_fails_only_that_trial(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_epochs(monkeypatch, KeyError("a library bug"))
    said: list[str] = []
    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 2, enqueue: [{batch_size: 16}, {batch_size: 8}]}\ntracking: {enabled: false}\nexport: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    assert run_study(path, say=lambda message, **fields: said.append(message)) == 0
    first, second = _trials(path)
    assert first.state.name == "FAIL" and first.user_attrs["failure_reason"] == "unexpected KeyError in the trial: 'a library bug'"
    assert second.state.name == "COMPLETE"
    assert any("trial 0 failed: unexpected KeyError" in m for m in said)


def test_texts_longer_than_max_length_are_cut_with_a_warning(tmp_path: Path, tiny_bert: Path) -> None:
    extra = SPACE.replace("EPOCHS", "1") + ("search: {n_trials: 2, enqueue: [{model: tiny, batch_size: 8}, {model: tiny-cut, batch_size: 8}]}\n"
                                            "tracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    # A second candidate with the same tokenizer: its rows are cut as the first's, which is said once.
    path.write_text(path.read_text().replace(f"  - {{name: tiny, path: {tiny_bert}}}\n",
                                             f"  - {{name: tiny, path: {tiny_bert}}}\n  - {{name: tiny-cut, path: {tiny_bert}, num_layers: 1}}\n"))
    data = path.parent / "cls.csv"
    rows = list(csv.DictReader(data.open()))
    # Two extremely long texts (about 300,000 characters each); the rest are short.
    rows[0]["text"], rows[1]["text"] = "good " * 60000, "bad " * 75000
    write_csv(data, rows)
    said: list[str] = []
    assert run_study(path, say=lambda message, **fields: said.append(message)) == 0
    warnings = [m for m in said if "data.max_length" in m]
    assert warnings == ["warning: 2 of 40 train rows fill data.max_length=128 tokens of tiny's tokenizer and are cut there; "
                        "raise data.max_length if the ends of long texts matter"], warnings
    assert [(t.state.name, t.user_attrs["model"]) for t in _trials(path)] == [("COMPLETE", "tiny"), ("COMPLETE", "tiny-cut")]


def test_a_max_length_beyond_the_models_positions_cuts_at_what_the_model_takes(tmp_path: Path, tiny_bert: Path) -> None:
    """The tiny BERT has 128 positions: with data.max_length 512 every trial failed on a tensor size mismatch."""
    import json

    from hpsearch.predict import predict_file

    extra = SPACE.replace("EPOCHS", "1") + "search: {n_trials: 1}\ntracking: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    path.write_text(path.read_text().replace("  train: cls.csv\n", "  train: cls.csv\n  max_length: 512\n"))
    data = path.parent / "cls.csv"
    rows = list(csv.DictReader(data.open()))
    rows[0]["text"] = "good " * 400
    write_csv(data, rows)
    said: list[str] = []
    assert run_study(path, say=lambda message, **fields: said.append(message)) == 0
    assert [m for m in said if "tokens" in m and "warning" in m] == [
        "warning: tiny: data.max_length is 512 but the model takes at most 128 tokens (bert positions): its inputs are cut at 128",
        "warning: 1 of 40 train rows fill the 128 tokens tiny takes and are cut there"], said
    assert [t.state.name for t in _trials(path)] == ["COMPLETE"]
    export = load_spec(path).export_dir
    assert json.loads((export / "hpsearch.json").read_text())["max_length"] == 128
    assert predict_file(export, data, tmp_path / "out.csv")[0] == 40  # the long text included


def test_kill_9_of_run_then_run_again_loses_nothing(tmp_path: Path, tiny_bert: Path) -> None:
    from mlflow.tracking import MlflowClient

    # Four configurations, more than n_trials: a search that has tried all of a space's configurations ends there.
    space = SPACE.replace("EPOCHS", "4").replace("learning_rate: 8.0e-3", "learning_rate: [6.0e-3, 8.0e-3]")
    extra = space + "search: {n_trials: 3, pruner: {name: none}, sampler: {name: random}}\nexecution: {devices: cpu}\nexport: {enabled: false}\n"
    path = toy_study(tmp_path, tiny_bert, rows=100, extra=extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            trials = _trials(path)
        except Exception:  # not created yet
            trials = []
        if any(t.number == 1 and t.state.name == "RUNNING" for t in trials):
            break
        time.sleep(0.3)
    else:
        run.kill()
        pytest.fail("trial 1 never started")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    before = {t.number: t for t in _trials(path) if t.state.name == "COMPLETE"}
    assert 0 in before

    assert run_study(path, export=False, say=_quiet) == 0
    trials = _trials(path)
    assert trials[0].state.name == "COMPLETE" and trials[0].value == before[0].value  # nothing finished is lost
    dead = trials[1]
    assert dead.state.name == "FAIL" and "died" in dead.user_attrs["failure_reason"]
    assert any(t.user_attrs.get("retry_of") == 1 and t.state.name == "COMPLETE" for t in trials)
    study = optuna.load_study(study_name="toy", storage=make_storage(load_spec(path)))
    assert counted_trials(study) == 3

    spec = load_spec(path)
    client = MlflowClient(f"sqlite:///{spec.out_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toy")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(parents) == 1
    numbers = [int(r.data.tags["hpsearch.trial"]) for r in children]
    assert sorted(numbers) == sorted(set(numbers)) == [t.number for t in trials if "repeat_of" not in t.user_attrs]  # repeats train nothing
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert next(r for r in children if r.data.tags["hpsearch.trial"] == "1").info.status == "FAILED"


def test_model_code_does_not_run_unless_trusted(tmp_path: Path) -> None:
    from hpsearch.data.labels import LabelMap
    from hpsearch.errors import TrialError
    from hpsearch.finetune.modeling import load_model
    from hpsearch.tasks import get_task

    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text('{"model_type": "hostile", "auto_map": {"AutoConfig": "configuration_hostile.HostileConfig"}}')
    (folder / "configuration_hostile.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(TrialError, match="cannot load the model config"):
        load_model(folder, get_task("text-classification"), LabelMap(("a", "b")), num_layers=None, trust_remote_code=False, seed=0)
    assert not marker.exists()
