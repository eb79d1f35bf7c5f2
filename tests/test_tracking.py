"""MLflow tracking against a real `mlflow server` process, read back through the MLflow client."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hpsearch.errors import HpsearchError
from hpsearch.runner import run_study
from hpsearch.spec import load_spec
from toydata import toy_study

SPACE = """\
space:
  learning_rate: {type: float, low: 5.0e-3, high: 1.0e-2, log: true}
  epochs: 3
  batch_size: 8
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {folds: 2}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(root: Path, port: int) -> subprocess.Popen[bytes]:
    """An `mlflow server` on ``port`` with its database and artifacts in ``root``, once it answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    log = (root / "server.log").open("a")
    # No background job runners (they only cost CPU here); own process group, so teardown stops all of it.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
    _stop_server(process, signal.SIGKILL)
    pytest.fail("mlflow server did not start within 120 s")


def _stop_server(process: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> None:
    os.killpg(process.pid, how)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One `mlflow server` for the whole test session, on a free loopback port."""
    port = _free_port()
    process = _start_server(tmp_path_factory.mktemp("mlflow-server"), port)
    yield f"http://127.0.0.1:{port}"
    _stop_server(process)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(uri: str, experiment: str):
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _quiet(message: str, **fields: object) -> None:
    pass


def test_study_is_logged_nested_with_statuses_and_registered_model(tmp_path: Path, tiny_bert: Path, broken_bert: Path, mlflow_server: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    models = (f"models:\n  - {{name: good, path: {tiny_bert}}}\n  - {{name: stuck, path: {tiny_bert}, space: {{learning_rate: 1.0e-9}}}}\n"
              f"  - {{name: broken, path: {broken_bert}}}\n")
    search = ("search:\n  n_trials: 4\n  sampler: {name: random}\n  pruner: {name: median, options: {n_startup_trials: 2}}\n"
              "  enqueue: [{model: good, learning_rate: 1.0e-2}, {model: good, learning_rate: 8.0e-3}, {model: stuck}, {model: broken}]\n"
              f"tracking: {{uri: '{mlflow_server}', experiment: nested-test}}\n")
    path = toy_study(tmp_path, tiny_bert, rows=120, extra=SPACE + search)
    text = path.read_text()
    start, end = text.index("models:"), text.index("\n", text.index("- {name: tiny")) + 1
    path.write_text(text[:start] + models + text[end:])
    from hpsearch.cli import main

    assert main(["run", str(path), "--quiet"]) == 0
    assert "View run" not in capsys.readouterr().out  # MLflow's links at each run's end, two lines per trial amid the result

    client, runs = _runs(mlflow_server, "nested-test")
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = {int(r.data.tags["hpsearch.trial"]): r for r in runs if r.data.tags.get("hpsearch.role") == "trial"}
    assert sorted(children) == [0, 1, 2, 3]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    assert [children[n].info.status for n in range(4)] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]  # pruned is no failure
    assert [children[n].data.tags["state"] for n in range(4)] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert "cannot load model weights" in children[3].data.tags["failure_reason"]
    first = children[0]
    assert first.data.params["model"] == "good" and float(first.data.params["learning_rate"]) == pytest.approx(1e-2)
    assert first.data.params["epochs"] == "3" and first.data.params["batch_size"] == "8"
    for key in ("cv_mean", "cv_std", "fold1_score", "fold2_score", "train_seconds", "samples_per_second", "best_epochs"):
        assert key in first.data.metrics, key
    history = client.get_metric_history(first.info.run_id, "fold1/val_macro_f1")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(first.info.run_id, "fold2/train_loss")) == 3
    assert not [r for r in runs if r.info.status == "RUNNING"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"study.resolved.yaml", "selection"} <= artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "selection")} >= {"selection/cv_results.csv", "selection/selection.json"}
    logged = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert len(logged) == 1 and logged[0].source_run_id == parent.info.run_id and str(logged[0].status) in ("READY", "LoggedModelStatus.READY")
    versions = client.search_model_versions("name='toy'")
    assert len(versions) == 1 and versions[0].run_id == parent.info.run_id and versions[0].source == logged[0].artifact_location
    assert [o.model_id for o in client.get_run(parent.info.run_id).outputs.model_outputs] == [logged[0].model_id]
    study_metrics = client.get_run(parent.info.run_id).data.metrics
    for key in ("cv_macro_f1", "cv_macro_f1_low", "cv_macro_f1_high", "baseline_cv_macro_f1", "bbc_macro_f1", "model_good_cv_macro_f1"):
        assert key in study_metrics, key
    # each model's cost, as the per-model table in selection.json has it
    per_model = {r["model"]: r for r in json.loads((load_spec(path).out_dir / "selection.json").read_text())["per_model"]}
    for key in ("train_samples", "device_seconds", "flops", "peak_memory_mb"):
        assert study_metrics[f"model_good_{key}"] == pytest.approx(per_model["good"][key]) and per_model["good"][key] > 0, key
    assert client.get_run(parent.info.run_id).data.tags["winner_model"] == "good"


def test_two_workers_logging_at_once_lose_no_run(tmp_path: Path, tiny_bert: Path, mlflow_server: str) -> None:
    search = f"search: {{n_trials: 4, pruner: {{name: none}}}}\ntracking: {{uri: '{mlflow_server}', experiment: two-workers}}\n"
    path = toy_study(tmp_path, tiny_bert, rows=80, extra=SPACE + search)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "hpsearch", "worker", str(path), "--device", "cpu"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    import optuna

    from hpsearch.storage import make_storage

    spec = load_spec(path)
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    assert len(trials) >= 4 and all(t.state.name == "COMPLETE" for t in trials)
    devices_seen = {o.count("trial ") > 0 for o in outputs}
    assert devices_seen == {True}, "both workers ran trials"
    _, runs = _runs(mlflow_server, "two-workers")
    parents = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    children = [r for r in runs if r.data.tags.get("hpsearch.role") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["hpsearch.trial"]) for r in children) == sorted(t.number for t in trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" and "cv_mean" in r.data.metrics for r in children)


def test_a_tracking_server_that_cannot_be_reached_stops_the_run_at_once(tmp_path: Path, tiny_bert: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow's client retried each call for about four minutes, then the run ended with a traceback."""
    from hpsearch.cli import main

    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + f"search: {{n_trials: 1}}\ntracking: {{uri: '{url}'}}\n")
    assert main(["run", str(path), "--quiet"]) == 2
    said = capsys.readouterr().err
    assert f"tracking.uri {url}: cannot reach the MLflow server (" in said and "Connection refused" in said, said
    assert "set tracking: {enabled: false} to run without tracking" in said and "Traceback" not in said


def test_a_tracking_uri_mlflow_will_not_open_stops_the_run_with_the_fix(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow refuses its file store (and a scheme it does not know) with a traceback of its own."""
    from hpsearch.cli import main

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in ((tmp_path / "mlruns").as_uri(), "nowhere://store"):
        path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + f"search: {{n_trials: 1}}\ntracking: {{uri: '{uri}'}}\n")
        assert main(["run", str(path), "--quiet"]) == 2
        said = capsys.readouterr().err
        assert said.startswith(f"hpsearch run: tracking.uri {uri}: MLflow will not track there: ") and "Traceback" not in said, said
        assert said.rstrip().endswith("Set tracking.uri to a database (sqlite:///path/to/mlflow.db) or an MLflow server "
                                      "(http://host:5000), leave it out for the store in the output folder, or set tracking: {enabled: false}")


def test_the_mlflow_ui_command_masks_the_tracking_databases_password(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpsearch.trackingdb as trackingdb
    from hpsearch.spec import load_spec

    monkeypatch.setattr(trackingdb, "runs_page", lambda uri, experiment: "#/experiments/3/runs?workflowType=machine_learning")
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + "tracking: {uri: 'postgresql://alice:s3cret@db.example:5432/mlflow'}\n")
    said = trackingdb.ui_command(load_spec(path))
    assert said == ("mlflow ui --backend-store-uri postgresql://alice:***@db.example:5432/mlflow, then open "
                    "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"), said


@pytest.mark.postgres
def test_a_tracking_database_that_turns_the_connection_down_or_is_not_there_stops_the_run_at_once(
        tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow tried to open its database for about 100 s, then ended with a traceback."""
    from hpsearch.cli import main

    missing = "postgresql+psycopg://postgres@127.0.0.1:5432/hpsearch_no_such_database"
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/mlflow"  # nothing listens there
    for uri, said in ((missing, 'the database turned the connection down: database "hpsearch_no_such_database" does not exist; '
                                'create the database, or correct its name, the user or the password, or set tracking'),
                      (closed, "cannot reach the MLflow database (")):
        path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE + f"search: {{n_trials: 1}}\ntracking: {{uri: '{uri}'}}\n")
        assert main(["run", str(path), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hpsearch run: tracking.uri {uri}: {said}") and "Traceback" not in err, err


def test_a_tracking_server_that_goes_down_costs_no_trial_and_a_later_run_logs_what_it_missed(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server went away during trial 1: each MLflow call was retried for about four minutes and then failed the trial
    it was in (its training lost), and every later trial the same way."""
    import json

    import optuna

    from hpsearch.spec import load_spec

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused call fails at once (the user's setting is kept)
    root, port = tmp_path / "server", _free_port()
    root.mkdir()
    server = _start_server(root, port)
    url = f"http://127.0.0.1:{port}"
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=SPACE.replace("epochs: 3", "epochs: 1")
                     + f"search: {{n_trials: 3, pruner: {{name: none}}}}\ntracking: {{uri: '{url}', experiment: goes-down}}\n")
    events: list[dict[str, object]] = []

    def listen(message: str, **fields: object) -> None:
        events.append({"message": message, **fields})
        if fields.get("event") == "trial_start" and fields.get("trial") == 1:
            _stop_server(server, signal.SIGKILL)  # before trial 1's run is made

    try:
        assert run_study(path, say=listen) == 0
        spec = load_spec(path)
        study = optuna.load_study(study_name="toy", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(spec.out_dir / "optuna.journal"))))
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
        lost = [e for e in events if e.get("event") == "tracking_lost"]
        assert len(lost) == 1 and "cannot reach the MLflow server" in str(lost[0]["message"]), lost
        assert "run the same command again once tracking works" in str(lost[0]["message"])
        selection = json.loads((spec.out_dir / "selection.json").read_text())
        assert "cannot reach the MLflow server" in selection["mlflow"]["stopped"]
        assert selection["registered_model"]["version"] is None and (spec.out_dir / "model" / "config.json").is_file()
        assert not [e for e in events if e.get("event") == "register_model"]  # not said where tracking had stopped

        server = _start_server(root, port)
        events.clear()
        assert run_study(path, say=_record(events)) == 0
        caught = [e for e in events if e.get("event") == "tracking_caught_up"]
        assert len(caught) == 1 and caught[0]["trials"] == [1, 2], caught
        assert any(e.get("event") == "final_model_kept" for e in events)  # the export stays; it gets registered now
        assert [e["message"] for e in events if e.get("event") == "register_model"] == [
            "MLflow: logging the exported model and registering it as a new version of 'toy'"]
        client, runs = _runs(url, "goes-down")
        trials = {int(r.data.tags["hpsearch.trial"]): r for r in runs if r.data.tags.get("hpsearch.role") == "trial"}
        parent = next(r for r in runs if r.data.tags.get("hpsearch.role") == "study")
        assert sorted(trials) == [0, 1, 2] and all(r.info.status == "FINISHED" and r.data.tags["state"] == "COMPLETE" for r in trials.values())
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
        for number, trial in enumerate(study.trials):
            assert trials[number].data.metrics["cv_mean"] == pytest.approx(trial.user_attrs["cv_mean"])
            assert float(trials[number].data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert parent.info.status == "FINISHED" and "cv_macro_f1" in parent.data.metrics
        assert [v.version for v in client.search_model_versions("name='toy'")] == ["1"]
        selection = json.loads((spec.out_dir / "selection.json").read_text())
        assert "stopped" not in selection["mlflow"] and selection["registered_model"]["version"] == "1"
        assert selection["mlflow"]["trial_run"] == trials[selection["selected"]["trial"]].info.run_id

        events.clear()
        assert run_study(path, say=_record(events)) == 0  # nothing missing any more: nothing logged twice
        assert not [e for e in events if e.get("event") in ("tracking_caught_up", "tracking_lost")]
        assert len(_runs(url, "goes-down")[1]) == 4 and len(client.search_model_versions("name='toy'")) == 1
    finally:
        if server.poll() is None:
            _stop_server(server)


def _record(events: list[dict[str, object]]):
    return lambda message, **fields: events.append({"message": message, **fields})


def test_a_failed_tracking_call_stops_tracking_once_and_the_server_back_starts_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> None:
    from hpsearch.tracking import Tracker

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    said: list[str] = []
    tracker = Tracker(mlflow_server, "failing-call", warn=said.append)
    parent = tracker.client.create_run(tracker.experiment_id, run_name="study").info.run_id
    assert tracker.log_epoch("no-such-run", 1, 1, 0.5, {"macro_f1": 0.5}, 10.0) is None  # MLflow refuses it: tracking stops
    assert tracker.lost is not None and tracker.lost.startswith("RestException from MLflow: RESOURCE_DOES_NOT_EXIST") and len(said) == 1
    assert tracker.start_trial(parent, 0, "tiny", {}, "cpu") is None and len(said) == 1  # later calls do nothing, silently
    assert tracker.catch_up(parent, []) is None
    assert not tracker.reconnect() and len(said) == 1  # MLflow refused the call and would again: no second try, no second word
    tracker.server_down = True  # as when the server could not be reached
    assert tracker.reconnect() and tracker.lost is None  # the server answers: tracking starts again
    assert tracker.start_trial(parent, 0, "tiny", {}, "cpu") is not None
    tracker.lost, tracker.uri = "down", f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    assert not tracker.reconnect() and tracker.lost == "down"


def test_an_experiment_deleted_in_mlflow_stops_the_run_at_once_with_how_to_restore_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow refuses every run in a deleted experiment: the study would have run without tracking."""
    from hpsearch.tracking import Tracker

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "study")
    first.client.delete_experiment(first.experiment_id)
    with pytest.raises(HpsearchError) as caught:
        Tracker(uri, "study")
    assert str(caught.value) == (f"MLflow experiment 'study' was deleted (it is in MLflow's trash, id {first.experiment_id}): restore it "
                                 f"(MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {first.experiment_id}), or set "
                                 "tracking.experiment to another name")
    first.client.restore_experiment(first.experiment_id)
    assert Tracker(uri, "study").experiment_id == first.experiment_id


def test_embedded_default_lives_in_the_study_folder(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.spec import load_spec

    path = toy_study(tmp_path, tiny_bert, rows=60, extra=SPACE.replace("epochs: 3", "epochs: 1") + "search: {n_trials: 1}\nexport: {enabled: false}\n")
    assert run_study(path, say=_quiet) == 0
    spec = load_spec(path)
    assert (spec.out_dir / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists() and not Path("mlruns").exists()
    _, runs = _runs(f"sqlite:///{spec.out_dir / 'mlflow.db'}", "toy")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.info.artifact_uri.startswith((spec.out_dir / "mlartifacts").as_uri()) for r in runs)
    experiment = _runs(f"sqlite:///{spec.out_dir / 'mlflow.db'}", "toy")[0].get_experiment_by_name("toy").experiment_id
    assert (f"mlflow ui --backend-store-uri sqlite:///{spec.out_dir / 'mlflow.db'}, then open "
            f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning") in capsys.readouterr().out


def test_an_interrupted_trial_is_killed_in_mlflow_and_interrupted_in_status_with_the_trial_that_ran_it_again(tmp_path: Path, tiny_bert: Path) -> None:
    import optuna

    from hpsearch.status import render, trial_table
    from hpsearch.storage import make_storage

    search = "search: {n_trials: 2, pruner: {name: none}}\n"
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=SPACE.replace("epochs: 3", "epochs: 1") + search + "export: {enabled: false}\n")

    def interrupt(message: str, **fields: object) -> None:
        if message.startswith("trial 1 fold 1/2 epoch 1"):
            raise KeyboardInterrupt

    def table() -> list[dict[str, object]]:
        spec = load_spec(path)
        return trial_table(spec, optuna.load_study(study_name=spec.name, storage=make_storage(spec)))

    assert run_study(path, say=interrupt) == 130
    rows = table()
    assert [(r["state"], r["note"]) for r in rows] == [("COMPLETE", ""), ("INTERRUPTED", "interrupted; runs again when the study resumes")]
    assert "INTERRUPTED" in render(load_spec(path), rows, 1)
    assert run_study(path, say=_quiet) == 0
    rows = table()
    assert [(r["state"], r["note"]) for r in rows] == [("COMPLETE", ""), ("INTERRUPTED", "interrupted; run again as trial 2"),
                                                       ("COMPLETE", "settings of trial 1, run again")]
    _, runs = _runs(f"sqlite:///{load_spec(path).out_dir / 'mlflow.db'}", "toy")
    trials = {int(r.data.tags["hpsearch.trial"]): r for r in runs if r.data.tags.get("hpsearch.role") == "trial"}
    assert [(trials[n].info.status, trials[n].data.tags["state"]) for n in range(3)] == [
        ("FINISHED", "COMPLETE"), ("KILLED", "INTERRUPTED"), ("FINISHED", "COMPLETE")]  # stopped from outside, not failed
    assert trials[1].data.tags["failure_reason"] == "interrupted"
    # Stopped inside its first fold, before the fold's totals were written, the trial's one finished epoch still counts:
    # in status, in its run and in the study's total.
    done = [r["train_samples"] for r in rows]
    assert 0 < done[1] < done[2] and rows[1]["device_seconds"] > 0, rows
    assert trials[1].data.metrics["train_samples"] == done[1] and trials[1].data.metrics["device_seconds"] > 0
    selection = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert selection["study_cost"]["train_samples"] == sum(done) and selection["study_cost"]["trials"] == 3


def test_a_new_embedded_database_starts_from_an_empty_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from hpsearch.trackingdb import seed_database

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for study in ("a", "b"):
        uri = f"sqlite:///{tmp_path / study / 'mlflow.db'}"
        seed_database(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment(f"study-{study}")
        client.create_run(experiment)
    assert len(list((tmp_path / "cache" / "hpsearch").glob("mlflow-*-empty.db"))) == 1
    # each copy is its own database: study b does not see study a's experiment, and the empty one stays empty
    assert [e.name for e in MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}").search_experiments()
            if e.name.startswith("study")] == ["study-b"]
    template = next((tmp_path / "cache" / "hpsearch").glob("mlflow-*-empty.db"))
    assert [e.name for e in MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()] == ["Default"]
    before = (tmp_path / "a" / "mlflow.db").read_bytes()
    seed_database(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")  # an existing database is left alone
    assert (tmp_path / "a" / "mlflow.db").read_bytes() == before


def test_a_trial_run_left_open_before_its_id_was_recorded_is_found_by_its_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker killed between creating a trial's run and recording the run's id in the study: recovery
    # must end that run, not start a second one for the same trial (seen once in the kill -9 test).
    from hpsearch.tracking import Tracker

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "study")
    parent = tracker.client.create_run(tracker.experiment_id, run_name="study").info.run_id
    other = tracker.client.create_run(tracker.experiment_id, run_name="study").info.run_id
    run = tracker.start_trial(parent, 1, "tiny", {"learning_rate": 1e-3}, "cpu")
    tracker.start_trial(parent, 2, "tiny", {"learning_rate": 1e-3}, "cpu")
    assert tracker.open_trial_run(parent, 1) == run
    assert tracker.open_trial_run(other, 1) is None  # another study run's trial 1 is not this one
    tracker.end_trial(run, "FAIL", {"failure_reason": "worker died"})
    assert tracker.open_trial_run(parent, 1) is None  # ended runs are not open


def test_tracking_off_writes_nothing(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.spec import load_spec

    path = toy_study(tmp_path, tiny_bert, rows=60, extra=SPACE.replace("epochs: 3", "epochs: 1") + "search: {n_trials: 1}\ntracking: {enabled: false}\nexport: {enabled: false}\n")
    assert run_study(path, say=_quiet) == 0
    assert not (load_spec(path).out_dir / "mlflow.db").exists()


def test_trials_kept_by_a_new_study_get_runs_under_its_study_run(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.spec import load_spec

    search = "search: {n_trials: 2, pruner: {name: none}, enqueue: [{learning_rate: 0.005}, {learning_rate: 0.009}]}\n"
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=SPACE.replace("epochs: 3", "epochs: 1") + search + "export: {enabled: false}\n")
    assert run_study(path, say=_quiet) == 0
    path.write_text(path.read_text().replace("high: 1.0e-2", "high: 2.0e-2").replace("n_trials: 2", "n_trials: 3"))
    assert run_study(path, say=_quiet, new_study=True, keep_trials=True) == 0
    client, runs = _runs(f"sqlite:///{load_spec(path).out_dir / 'mlflow.db'}", "toy")
    studies = {r.data.tags["hpsearch.study"]: r for r in runs if r.data.tags.get("hpsearch.role") == "study"}
    old = next(r for name, r in studies.items() if name.startswith("toy.replaced-"))
    children = {}
    for run in runs:
        children.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
    assert len(children[old.info.run_id]) == 2  # the old study keeps its runs, with their epoch curves
    mine = sorted(children[studies["toy"].info.run_id], key=lambda r: int(r.data.tags["hpsearch.trial"]))
    assert len(mine) == 3 and all(r.info.status == "FINISHED" for r in mine)  # the 2 carried over, then the new one
    for number, run in enumerate(mine[:2]):
        came = next(r for r in children[old.info.run_id] if r.data.tags["hpsearch.trial"] == str(number))
        assert run.data.tags["carried_from"] == f"trial {number} of {old.data.tags['hpsearch.study']} (run {came.info.run_id})"
        assert run.data.metrics["cv_mean"] == came.data.metrics["cv_mean"] and run.data.params == came.data.params
    assert "carried_from" not in mine[2].data.tags


def test_trials_a_study_set_aside_with_its_old_settings_are_not_logged_again_under_its_new_run(tmp_path: Path, tiny_bert: Path,
                                                                                               broken_bert: Path) -> None:
    """Every trial failed, the study file was fixed and the study took the new settings: the failed trial keeps its run
    under the old study run (renamed), and the end's catching up must not log it again under the new one."""
    from hpsearch.spec import load_spec

    path = toy_study(tmp_path, broken_bert, rows=40, extra=SPACE.replace("epochs: 3", "epochs: 1") + "search: {n_trials: 1}\nexport: {enabled: false}\n")
    with pytest.raises(HpsearchError, match="no trial completed"):  # every trial failed
        run_study(path, say=_quiet)
    path.write_text(path.read_text().replace(f"{{name: tiny, path: {broken_bert}}}", f"{{name: good, path: {tiny_bert}}}"))
    events: list[dict[str, object]] = []
    assert run_study(path, say=_record(events)) == 0
    assert not [e for e in events if e.get("event") == "tracking_caught_up"], events
    _, runs = _runs(f"sqlite:///{load_spec(path).out_dir / 'mlflow.db'}", "toy")
    studies = {r.info.run_id: r.data.tags["hpsearch.study"] for r in runs if r.data.tags.get("hpsearch.role") == "study"}
    trials = sorted((studies[r.data.tags["mlflow.parentRunId"]], r.data.tags["hpsearch.trial"], r.data.tags["state"])
                    for r in runs if r.data.tags.get("hpsearch.role") == "trial")
    assert [(study.split("-")[0], number, state) for study, number, state in trials] == [("toy", "1", "COMPLETE"), ("toy.superseded", "0", "FAIL")]


def test_a_call_failing_inside_another_stops_tracking_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.tracking import Tracker

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    said: list[str] = []
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "study", warn=said.append)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full.")

    monkeypatch.setattr(tracker.client, "create_run", refuse)
    assert tracker.carried_trial(None, 0, "COMPLETE", {"model": "m", "params": {}}, "trial 0 of old") is None  # its run: never made
    assert len(said) == 1 and said[0].startswith("MLflow tracking stopped: RuntimeError from MLflow: disk full. The study goes on"), said


def test_a_tracking_call_refused_by_the_database_names_the_databases_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow wraps the database's error (a full disk, say) in its own, whose first line may say only that SQLAlchemy
    flushed a query: the warning named that, and the reason was in MLflow's log of the SQL, a screenful per call."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    from hpsearch.tracking import Tracker

    said: list[str] = []
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "full-disk", warn=said.append)
    run = tracker.client.create_run(tracker.experiment_id, run_name="trial").info.run_id

    def refused(*args: object, **kwargs: object) -> None:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise MlflowException("(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)") from exc

    monkeypatch.setattr(tracker.client, "log_batch", refused)
    assert tracker.log_epoch(run, 1, 1, 0.5, {"macro_f1": 0.5}, 10.0) is None
    assert tracker.lost == ("MlflowException from MLflow: (raised as a result of Query-invoked autoflush; consider using a session."
                            "no_autoflush block) (caused by OperationalError: database or disk is full)"), tracker.lost
    assert len(said) == 1 and tracker.lost in said[0]
