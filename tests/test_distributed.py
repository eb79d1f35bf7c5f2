"""One study on PostgreSQL, many workers as on many machines: exact trial counts and the true winner."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.accounting import counted_trials
from hpsearch.selection import PROGRESS_ATTR
from hpsearch.spec import load_spec
from hpsearch.storage import make_storage
from test_workers import check_recovered
from toydata import toy_study

pytestmark = pytest.mark.postgres

SETTINGS = """\
space:
  learning_rate: {{type: float, low: 5.0e-3, high: 1.0e-2, log: true}}
  epochs: {epochs}
  batch_size: 8
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {{folds: 2}}
search: {{n_trials: {n_trials}, pruner: {{name: none}}, sampler: {{name: random}}, storage: '{storage}'}}
tracking: {{enabled: false}}
execution: {{devices: cpu, workers_per_device: {workers}}}
export: {{enabled: {export}}}
"""
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
HERE = Path(__file__).resolve().parent


def _study(folder: Path, model: Path, url: str, n_trials: int, workers: int = 1, epochs: int = 1, export: bool = False, rows: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    extra = SETTINGS.format(n_trials=n_trials, storage=url, workers=workers, epochs=epochs, export=str(export).lower())
    return toy_study(folder, model, rows=rows, extra=extra)


def _study_of(path: Path) -> optuna.Study:
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec, read_only=True))


def _wait_for(condition, what: str, seconds: float = 240):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (KeyError, optuna.exceptions.OptunaError):  # the study may not exist yet
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _hpsearch(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hpsearch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)


def test_run_waits_for_a_trial_running_elsewhere_and_exports_the_true_best(tmp_path: Path, tiny_bert: Path, postgres_url: str) -> None:
    path = _study(tmp_path, tiny_bert, postgres_url, n_trials=3, export=True)
    gate = tmp_path / "gate"
    held = subprocess.Popen([sys.executable, str(HERE / "heldworker.py"), str(gate), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**ENV, "PYTHONPATH": str(HERE)})
    try:
        first = _wait_for(lambda: [t for t in _study_of(path).get_trials() if t.state.name == "RUNNING" and t.user_attrs.get("pid") == held.pid],
                          "the held worker's trial")[0]
        run = _hpsearch("run", str(path))
        # run does the other trials, then must wait: selecting now would miss the held trial.
        _wait_for(lambda: sum(t.state.name == "COMPLETE" for t in _study_of(path).get_trials()) == 2, "run's two trials")
        assert run.poll() is None, run.communicate()[1][-3000:]
        gate.write_text("go")
        out, err = run.communicate(timeout=300)
        held.communicate(timeout=120)
    finally:
        gate.write_text("go")
        held.kill()
    assert run.returncode == 0, err[-3000:]
    assert f"waiting for 1 trial(s) still running before selecting: trial {first.number}" in err
    study = _study_of(path)
    trials = study.get_trials()
    assert counted_trials(study) == 3 and not [t for t in trials if t.state.name == "RUNNING"]
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.user_attrs["cv_mean"])
    assert best.number == first.number  # the held trial scored 0.99: it is the true winner
    spec = load_spec(path)
    selection = json.loads((spec.out_dir / "selection.json").read_text())
    assert selection["selected"]["trial"] == first.number
    assert selection["considered_trials"] == sorted(t.number for t in trials if t.state.name == "COMPLETE")
    assert selection["running_trials"] == []
    assert json.loads((spec.export_dir / "hpsearch.json").read_text())["trial"] == first.number


def test_three_machines_run_exactly_n_trials(tmp_path: Path, tiny_bert: Path, postgres_url: str) -> None:
    # Three working folders, as on three machines: no lock file is shared, only the database.
    paths = [_study(tmp_path / f"machine{i}", tiny_bert, postgres_url, n_trials=5) for i in range(3)]
    workers = [subprocess.Popen([sys.executable, str(HERE / "slowclaimworker.py"), str(p), "--threads", "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**ENV, "PYTHONPATH": str(HERE)}) for p in paths]
    outputs = [w.communicate(timeout=420) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    study = _study_of(paths[0])
    trials = study.get_trials()
    assert len(trials) == 5, [(t.number, t.state.name, t.user_attrs.get("pid")) for t in trials]
    assert counted_trials(study) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 5, "a configuration ran twice"
    assert {t.user_attrs["pid"] for t in trials} <= {w.pid for w in workers}


def test_a_killed_worker_is_recovered_on_postgresql(tmp_path: Path, tiny_bert: Path, postgres_url: str) -> None:
    path = _study(tmp_path, tiny_bert, postgres_url, n_trials=4, workers=2, epochs=4, rows=100)
    run = _hpsearch("run", str(path))
    victim = _wait_for(lambda: next((int(t.user_attrs["pid"]) for t in _study_of(path).get_trials()  # one that trains: its settings are drawn
                                     if t.state.name == "RUNNING" and PROGRESS_ATTR in t.user_attrs), None), "a training trial")
    os.kill(victim, signal.SIGKILL)
    out, err = run.communicate(timeout=420)
    assert run.returncode == 0, err[-3000:]
    check_recovered(_study_of(path), victim, 4)


def test_claim_lock_is_held_in_the_database(tmp_path: Path, tiny_bert: Path, postgres_url: str) -> None:
    """Two locks of one study (as on two machines) exclude each other; another study's lock does not."""
    import threading

    from hpsearch.storage import claim_lock

    spec = load_spec(_study(tmp_path / "a", tiny_bert, postgres_url, n_trials=1))
    other = load_spec(_study(tmp_path / "b", tiny_bert, postgres_url, n_trials=1))
    other = other.model_copy(update={"name": "another"})
    first, second, unrelated = claim_lock(spec), claim_lock(spec), claim_lock(other)
    first.acquire()
    unrelated.acquire()  # does not wait
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(), got.set()))
    waiter.start()
    assert not got.wait(1.0)  # blocked by the first
    first.release()
    assert got.wait(30)
    waiter.join()
    second.release()
    unrelated.release()
    shutil.rmtree(tmp_path / "a", ignore_errors=True)


def test_a_database_or_user_the_server_does_not_have_stops_the_run_at_once(tmp_path: Path, tiny_bert: Path, postgres_url: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The server answered and turned the connection down: waiting out storage_patience (300 s by default) as for an
    outage would not mend it."""
    from hpsearch.cli import main

    missing = postgres_url + "_missing"
    stranger = postgres_url.replace("://postgres@", "://nobody_here@")
    for folder, url, said in (("db", missing, f'database "{missing.rsplit("/", 1)[1]}" does not exist'),
                              ("user", stranger, 'role "nobody_here" does not exist')):
        path = _study(tmp_path / folder, tiny_bert, url, n_trials=1)
        path.write_text(path.read_text().replace("storage: '", "storage_patience: 30, storage: '"))
        for command in ("run", "status"):
            assert main([command, str(path)]) == 2
            err = capsys.readouterr().err
            assert f"hpsearch {command}: the study storage {url} turned the connection down: {said}; create the database" in err, err
