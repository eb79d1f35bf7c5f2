"""Reliability: the PostgreSQL storage refuses connections or drops them in the middle of a study."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.accounting import counted_trials
from hpsearch.session import Session
from hpsearch.study import open_study
from hpsearch.spec import load_spec
from reliability.tcpproxy import TcpProxy
from toydata import toy_study

pytestmark = pytest.mark.postgres

SETTINGS = """\
space:
  learning_rate: {{type: float, low: 5.0e-3, high: 1.0e-2, log: true}}
  epochs: 2
  batch_size: 8
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {{folds: 2}}
search: {{n_trials: {n_trials}, pruner: {{name: none}}, sampler: {{name: random}}, storage: '{storage}', storage_patience: {patience}}}
tracking: {{enabled: false}}
execution: {{devices: cpu, workers_per_device: 1}}
export: {{enabled: false}}
"""


@pytest.fixture
def proxy():
    relay = TcpProxy(5432)
    yield relay
    relay.stop()


def _study(tmp_path: Path, model: Path, url: str, proxy: TcpProxy, n_trials: int, patience: float) -> Path:
    through_proxy = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    return toy_study(tmp_path, model, rows=60, extra=SETTINGS.format(n_trials=n_trials, storage=through_proxy, patience=patience))


def _trials(path: Path, direct_url: str) -> list[optuna.trial.FrozenTrial]:
    spec = load_spec(path)
    return optuna.load_study(study_name=spec.name, storage=direct_url.replace("postgresql://", "postgresql+psycopg://")).get_trials()


def test_workers_wait_for_the_database_and_carry_on(tmp_path: Path, tiny_bert: Path, postgres_url: str, proxy: TcpProxy) -> None:
    path = _study(tmp_path, tiny_bert, postgres_url, proxy, n_trials=3, patience=60)
    said: list[tuple[str, dict]] = []
    outages: list[float] = []

    def outage(seconds: float) -> None:
        proxy.stop()
        outages.append(time.monotonic())
        threading.Timer(seconds, proxy.start).start()

    def say(message: str, **fields: object) -> None:
        said.append((message, fields))
        # Mid-study: the database goes away during the second trial's first epoch, for 4 seconds.
        if fields.get("event") == "epoch" and fields.get("trial") == 1 and len(outages) == 1:
            outage(4)

    outage(2)  # refused when the worker opens the study
    assert open_study(load_spec(path), say=say).study_name == "toy"
    session = Session(load_spec(path), say)
    assert session.work() is True
    assert len(outages) == 2

    trials = _trials(path, postgres_url)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [(t.number, t.state.name, t.user_attrs.get("failure_reason")) for t in trials]
    storage_events = [fields["state"] for _, fields in said if fields.get("event") == "storage"]
    assert storage_events == ["unreachable", "reachable", "unreachable", "reachable"], storage_events
    waited = [fields["waited_seconds"] for _, fields in said if fields.get("state") == "reachable"]
    assert waited[0] >= 2 and waited[1] >= 3  # it really waited for the database, with growing pauses


def test_worker_stops_cleanly_after_its_patience_and_the_study_resumes(tmp_path: Path, tiny_bert: Path, postgres_url: str, proxy: TcpProxy) -> None:
    path = _study(tmp_path, tiny_bert, postgres_url, proxy, n_trials=2, patience=3)
    proxy.start()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "hpsearch", "worker", str(path), "--log-format", "jsonl"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    for line in worker.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("event") == "epoch":
            proxy.stop()  # and it does not come back while this worker waits
            break
    stopped_at = time.monotonic()
    _, rest = worker.communicate(timeout=120)
    output = "".join(lines) + rest
    assert worker.returncode == 75, output[-3000:]
    assert time.monotonic() - stopped_at < 60
    assert "unreachable for more than 3 s" in output and "run the same command again" in output
    assert "Traceback" not in output

    proxy.start()
    spec = load_spec(path)
    session = Session(spec, lambda message, **fields: None)
    assert session.work() is True
    assert counted_trials(session.study) == 2
    trials = _trials(path, postgres_url)
    first = trials[0]
    assert first.state.name == "FAIL" and "died during the trial" in first.user_attrs["failure_reason"]
    assert [t.state.name for t in trials[1:]] == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs.get("retry_of") == 0 and trials[1].params == first.params


def test_database_password_never_reaches_output_files_or_mlflow(tmp_path: Path, tiny_bert: Path, postgres_url: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.cli import main

    secret = "s3cret-Pa55"  # the server trusts local connections, so any password connects
    url = postgres_url.replace("postgres@", f"postgres:{secret}@")
    extra = SETTINGS.format(n_trials=1, storage=url, patience=30).replace("tracking: {enabled: false}\n", "").replace("export: {enabled: false}\n", "")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=extra)
    for command in (["validate"], ["run"], ["status"], ["report"]):
        assert main([*command, str(path)]) == 0
    out, err = capsys.readouterr()
    assert "postgres:***@127.0.0.1" in out + err  # the URL is shown, masked
    assert secret not in out + err
    spec = load_spec(path)
    written = [p for p in spec.out_dir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any(p.suffix == ".html" for p in written)
    assert (spec.export_dir / "config.json").is_file()
    leaks = [p for p in written if secret.encode() in p.read_bytes()]  # MLflow params and artifacts, reports, export
    assert leaks == []
    recorded = {p.name for p in written if b"postgres:***@127.0.0.1" in p.read_bytes()}
    assert "study.resolved.yaml" in recorded  # the URL is logged to MLflow (masked), so the check above is not vacuous


def test_other_workers_give_a_trial_up_only_after_its_worker_stopped_waiting(tmp_path: Path, tiny_bert: Path, postgres_url: str, proxy: TcpProxy) -> None:
    from hpsearch.storage import HEARTBEAT_SECONDS, make_storage

    proxy.start()
    for patience in (0, 500):
        path = _study(tmp_path, tiny_bert, postgres_url, proxy, n_trials=1, patience=patience)
        database = make_storage(load_spec(path))._inner._backend  # PatientStorage -> Optuna's cache -> RDBStorage
        assert database.heartbeat_interval == HEARTBEAT_SECONDS
        assert database.grace_period > patience and database.grace_period >= 4 * HEARTBEAT_SECONDS


def test_a_lost_heartbeat_is_quiet_while_every_other_call_gives_up() -> None:
    from sqlalchemy.exc import OperationalError

    from hpsearch.errors import StorageUnavailable
    from hpsearch.storage import Patience, patient_storage_class

    class Gone:
        def _fail(self, *args: object) -> None:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

        record_heartbeat = get_trial = _fail

    storage = patient_storage_class()(Gone(), Patience(0, "postgresql://u:pw@db/x"))
    assert storage.record_heartbeat(1) is None  # in Optuna's heartbeat thread: no traceback
    with pytest.raises(StorageUnavailable, match=r"postgresql://u:\*\*\*@db/x has been unreachable"):
        storage.get_trial(1)
