"""Parallel workers on one machine: embedded storage, PostgreSQL, a killed worker, Ctrl-C."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpsearch.accounting import counted_trials
from hpsearch.selection import PROGRESS_ATTR
from hpsearch.storage import make_storage
from hpsearch.spec import load_spec, load_spec_text
from hpsearch.workers import plan_slots
from toydata import QUICK, toy_study

SPACE = """\
space:
  learning_rate: {type: float, low: 5.0e-3, high: 1.0e-2, log: true}
  epochs: EPOCHS
  batch_size: 8
  warmup_ratio: 0.0
  weight_decay: 0.0
cv: {folds: 2}
tracking: {enabled: false}
execution: {devices: cpu, workers_per_device: 2}
export: {enabled: false}
"""


def _study(tmp_path: Path, model: Path, n_trials: int, epochs: int = 1, rows: int = 60, storage: str | None = None) -> Path:
    search = f"search: {{n_trials: {n_trials}, pruner: {{name: none}}, sampler: {{name: random}}"
    search += f", storage: '{storage}'}}\n" if storage else "}\n"
    return toy_study(tmp_path, model, rows=rows, extra=SPACE.replace("EPOCHS", str(epochs)) + search)


def _trials(path: Path):
    import optuna

    spec = load_spec(path)
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec))


def _run(path: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "hpsearch", "run", str(path)], capture_output=True, text=True, timeout=timeout, env=env)


def test_slots_pin_gpus_and_split_cpu_threads(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    base = "name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels: [{name: m, path: m}]\n"
    cpu = plan_slots(load_spec_text(base + "execution: {devices: cpu, workers_per_device: 2}\n", tmp_path), cpu_count=8)
    assert [(s.device, s.threads, s.env["OMP_NUM_THREADS"], s.env["CUDA_VISIBLE_DEVICES"]) for s in cpu] == [("cpu", 4, "4", ""), ("cpu", 4, "4", "")]
    gpus = plan_slots(load_spec_text(base + "execution: {devices: [0, 3], workers_per_device: 2}\n", tmp_path))
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "0", "3", "3"] and {s.device for s in gpus} == {"cuda:0"}
    assert len({s.label for s in gpus}) == 4
    auto = plan_slots(load_spec_text(base, tmp_path), gpu_count=0, cpu_count=2)
    assert [s.device for s in auto] == ["cpu"] and auto[0].threads == 2
    assert len(plan_slots(load_spec_text(base, tmp_path), gpu_count=2)) == 2


def test_gpus_the_machine_lacks_are_refused_before_any_trial(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two listed GPUs on a machine without them: each trial failed on 'Torch not compiled with CUDA enabled' and
    counted; one listed GPU ran on the CPU without a word; `worker --device cuda` ended in a traceback."""
    import torch

    from hpsearch.cli import main

    path = toy_study(tmp_path, tiny_bert, rows=40, extra=QUICK + "search: {n_trials: 2}\nexecution: {devices: [0, 1]}\n")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["run", str(path), "--quiet"]) == 2
    assert ("execution.devices asks for GPU 1, but this machine has 1 GPU(s), ids 0 to 0; use ids among those, or devices: auto "
            "(every GPU there is, else the CPU) or cpu") in capsys.readouterr().err
    assert not (load_spec(path).out_dir / "optuna.journal").exists()  # no study was opened, no trial spent
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(["worker", str(path), "--device", "0"]) == 2
    assert "--device asks for GPU 0, but this machine has no GPU that torch can use; use --device cpu" in capsys.readouterr().err
    assert main(["worker", str(path), "--device", "cuda"]) == 2
    assert "--device takes a GPU id (0, 1, ...) or cpu, got 'cuda'" in capsys.readouterr().err
    assert main(["worker", str(path), "--device", "0", "--label", "gpu0-1"]) == 2  # a worker run started: its error says which
    assert capsys.readouterr().err.startswith("[gpu0-1] hpsearch worker: --device asks for GPU 0")


def _check_exact(path: Path, n_trials: int, output: str) -> None:
    study = _trials(path)
    trials = study.get_trials()
    assert len(trials) == n_trials, [(t.number, t.state.name) for t in trials]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.number for t in trials}) == n_trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials, "workers proposed the same configuration"
    assert len({t.user_attrs["pid"] for t in trials}) == 2, "both workers ran trials"
    assert "database is locked" not in output


def test_two_local_workers_finish_exactly_n_trials(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The data's warning is said once (each worker said it, and the run again at its end). Then the finished study run
    again goes straight to its end: it started both workers, each of which imported its libraries and loaded the data
    (seconds; on a GPU machine, a CUDA context per GPU) only to find nothing to do."""
    from hpsearch.cli import main

    path = _study(tmp_path, tiny_bert, n_trials=5)
    data = tmp_path / "cls.csv"
    data.write_text(data.read_text() + data.read_text().splitlines()[1] + "\n")  # a row twice: a warning
    repeated = "warning: 1 of 61 training rows (1.6 %) repeat another row's input"
    result = _run(path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started 2 workers: cpu-0, cpu-1" in result.stderr
    # The cores are the two workers': run, which only waits for them, does not count itself among them.
    shared = re.findall(r"^\[cpu-[01]\] using \d+ CPU thread\(s\) \(\d+ cores shared by (\d+) hpsearch", result.stderr, re.MULTILINE)
    assert "2" in shared and "3" not in shared, result.stderr[-3000:]
    assert result.stderr.count(repeated) == 1, result.stderr[-3000:]
    _check_exact(path, 5, result.stdout + result.stderr)
    ran = [int(n) for n in re.findall(r"^\[cpu-[01]\] worker done: it ran (\d+) trial\(s\); the study has [45] of 5 trials finished",
                                      result.stderr, re.MULTILINE)]
    assert len(ran) == 2 and sum(ran) == 5, result.stderr[-3000:]  # each worker says where it stopped, and what it did
    import hpsearch.data

    read = hpsearch.data.prepare_data
    reads: list[object] = []
    monkeypatch.setattr(hpsearch.data, "prepare_data", lambda *a, **k: reads.append(a) or read(*a, **k))
    assert main(["run", str(path)]) == 0
    assert len(reads) == 1  # checked before any worker would start, and kept for the end, as none did
    said = capsys.readouterr().err
    assert "study 'toy': 5 of 5 trials finished; no trial left to run, so no worker is started" in said
    assert "started 2 workers" not in said and "[cpu-" not in said, said
    assert said.count(repeated) == 1, said
    assert main(["worker", str(path)]) == 0  # one started by hand, late: it says so, without loading data, models or a device
    said = capsys.readouterr().err
    assert said == "study 'toy': 5 of 5 trials finished; nothing left for a worker to run\n"
    assert counted_trials(_trials(path)) == 5


def test_a_finite_space_tried_through_is_said_by_each_worker_and_not_again_by_run(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture) -> None:
    path = _study(tmp_path, tiny_bert, n_trials=5)
    path.write_text(path.read_text().replace("learning_rate: {type: float, low: 5.0e-3, high: 1.0e-2, log: true}",
                                             "learning_rate: [5.0e-3, 1.0e-2]"))
    result = _run(path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = (result.stdout + result.stderr).count("every one of the 2 configurations of the search space has been tried")
    assert said == 2, result.stderr[-3000:]  # cpu-0 and cpu-1, each where it stopped
    from hpsearch.cli import main

    over = "study 'toy': 2 of 5 trials finished, and every one of its 2 configurations has been tried; "
    capsys.readouterr()
    assert main(["run", str(path)]) == 0  # run again: no worker is started to find that out
    said = capsys.readouterr().err
    assert over + "no trial left to run, so no worker is started" in said and "[cpu-" not in said, said
    assert main(["worker", str(path)]) == 0  # one started by hand: said before it loads data, models or a device
    assert capsys.readouterr().err == over + "nothing left for a worker to run\n"


@pytest.mark.postgres
def test_two_workers_share_a_postgresql_study(tmp_path: Path, tiny_bert: Path, postgres_url: str) -> None:
    path = _study(tmp_path, tiny_bert, n_trials=4, storage=postgres_url)
    result = _run(path)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_exact(path, 4, result.stdout + result.stderr)
    assert "postgresql" in type(_trials(path)._storage).__module__ + str(load_spec(path).search.storage)


def _wait_for_running_trial(path: Path, deadline: float, before_step: int | None = None) -> int:
    """The process id of a trial from trial 1 on that trains (it has reported progress, so it has drawn all its settings;
    with ``before_step``, it has reported no epoch from that step on)."""
    while time.monotonic() < deadline:
        try:
            for trial in _trials(path).get_trials(deepcopy=False):
                early = before_step is None or all(step < before_step for step in trial.intermediate_values)
                if trial.state.name == "RUNNING" and PROGRESS_ATTR in trial.user_attrs and trial.number >= 1 and early:
                    return int(trial.user_attrs["pid"])
        except Exception:  # the journal may not exist yet
            pass
        time.sleep(0.5)
    raise AssertionError("no running trial appeared")


def test_killed_worker_loses_nothing(tmp_path: Path, tiny_bert: Path) -> None:
    path = _study(tmp_path, tiny_bert, n_trials=4, epochs=4, rows=100)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = _wait_for_running_trial(path, time.monotonic() + 180)
    os.kill(victim, signal.SIGKILL)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    check_recovered(_trials(path), victim, 4)
    assert "runs again" in err


def check_recovered(study, victim: int, n_trials: int) -> None:  # noqa: ANN001 - an Optuna study
    """The killed worker's trial is FAIL, its configuration ran again once, and the study has exactly n_trials."""
    trials = study.get_trials()
    dead = [t for t in trials if "died" in t.user_attrs.get("failure_reason", "")]
    assert len(dead) == 1 and dead[0].state.name == "FAIL" and dead[0].user_attrs["pid"] == victim
    retry = [t for t in trials if t.user_attrs.get("retry_of") == dead[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == dead[0].params
    assert counted_trials(study) == n_trials and not [t for t in trials if t.state.name == "RUNNING"]


def test_recovery_replaces_a_trial_without_settings_and_leaves_a_trial_of_another_pid_namespace(tmp_path: Path, tiny_bert: Path) -> None:
    """A worker killed, or a study interrupted, between a trial's claim and its first setting leaves nothing to run
    again: the trial is not counted, no empty retry is queued, and its note says a new trial takes its place. A trial
    whose worker numbered its processes in another PID namespace is neither recovered nor said to be without a worker."""
    import optuna

    from hpsearch.accounting import requeue_interrupted
    from hpsearch.status import render, trial_table
    from hpsearch.workers import HOST, recover_dead_trials

    spec = load_spec(_study(tmp_path, tiny_bert, n_trials=3))
    study = optuna.create_study(study_name=spec.name, storage=make_storage(spec))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    bare, drawn, elsewhere = study.ask(), study.ask(), study.ask()
    drawn.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    for trial in (bare, drawn, elsewhere):
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", gone.pid)
    # A container that shares this machine's host name (host networking) numbers its processes apart: its worker's
    # process id says nothing here, so its trial is left to it (and, on a database, to Optuna's heartbeats).
    elsewhere.set_user_attr("pid_space", "pid:[1]")
    stopped = study.ask()
    stopped.set_user_attr("interrupted", True)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    rows = trial_table(spec, study)  # before any worker recovers them, status says their worker is gone
    assert [r["worker_gone"] for r in rows] == [True, True, False, False]
    assert f"running: trial 1 (tiny) on ?@{HOST} for" in render(spec, rows, 0) and f"its worker process {gone.pid} is gone" in render(spec, rows, 0)
    said: list[str] = []
    assert recover_dead_trials(study, lambda message, **fields: said.append(message)) == [0, 1]
    assert requeue_interrupted(study) == 0
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "RUNNING", "FAIL", "WAITING"]  # only the trial with settings runs again
    assert trials[4].params == {} and trials[4].system_attrs["fixed_params"] == drawn.params and trials[4].user_attrs["retry_of"] == 1
    assert "before it drew its settings" in said[0] and "runs again" in said[1]
    assert counted_trials(study) == 0
    notes = [row["note"] for row in trial_table(spec, study)]
    assert [("a new trial takes its place" in note) for note in notes] == [True, False, False, True, False], notes


def test_a_trial_retried_by_optunas_heartbeat_callback_is_noted_as_a_retry(tmp_path: Path, tiny_bert: Path) -> None:
    """A worker elsewhere that fell silent: Optuna fails its trial and queues the settings again (``failed_trial``);
    status links the two as it does hpsearch's own retries, and the failed trial is not counted."""
    import warnings

    import optuna

    from hpsearch.status import trial_table

    spec = load_spec(_study(tmp_path, tiny_bert, n_trials=3))
    study = optuna.create_study(study_name=spec.name, storage=make_storage(spec))
    silent = study.ask()
    silent.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    study.tell(silent, state=optuna.trial.TrialState.FAIL)
    with warnings.catch_warnings():  # experimental in Optuna; what hpsearch.storage gives a database storage
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, study.get_trials()[0])
    notes = [(row["state"], row["note"]) for row in trial_table(spec, study)]
    assert notes == [("FAIL", "run again as trial 1"), ("WAITING", "settings of trial 0, run again")], notes
    assert counted_trials(study) == 0


def test_workers_started_in_containers_with_one_process_id_propose_different_settings(tmp_path: Path, tiny_bert: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from hpsearch import runner, workers
    from hpsearch.study import make_sampler

    offsets: list[int] = []

    class Joined(Exception):
        pass

    def session(spec, say, **options):  # noqa: ANN001, ANN003, ANN202
        offsets.append(options["seed_offset"])
        raise Joined

    monkeypatch.setattr(runner, "Session", session)
    for pod in ("train-0-x7k2p", "train-1-q9d4m"):  # two pods of one Job: each worker is process 1 of its pod
        monkeypatch.setattr(workers, "HOST", pod)
        monkeypatch.setattr(os, "getpid", lambda: 1)
        with pytest.raises(Joined):
            runner.run_worker(_study(tmp_path, tiny_bert, n_trials=2))
    assert offsets[0] != offsets[1]
    spec = load_spec(_study(tmp_path, tiny_bert, n_trials=2))
    first = []
    for offset in offsets:
        study = optuna.create_study(sampler=make_sampler(spec, offset))
        first.append(study.ask().suggest_float("learning_rate", 1e-5, 1e-3, log=True))
    assert first[0] != first[1]


def test_sigint_stops_every_worker_and_the_study_resumes(tmp_path: Path, tiny_bert: Path) -> None:
    path = _study(tmp_path, tiny_bert, n_trials=6, epochs=12, rows=100)  # trials left to interrupt after trial 1 starts
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # A trial in its first fold of two, with its second still to train when the signal comes: one seen running near its
    # end had finished by then once, and no trial was left to interrupt.
    _wait_for_running_trial(path, time.monotonic() + 180, before_step=12)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    trials = _trials(path).get_trials()
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert any(t.user_attrs.get("interrupted") for t in trials)
    assert "run the same command to resume" in err
    assert not [line for line in err.splitlines() if line.startswith("training in")]  # stopping loads no data, model or device
    result = _run(path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _trials(path)
    assert counted_trials(study) == 6 and not [t for t in study.get_trials() if t.state.name == "RUNNING"]


def test_a_stop_request_is_honoured_even_when_its_keyboardinterrupt_was_lost(tmp_path: Path, tiny_bert: Path) -> None:
    import threading

    from hpsearch.session import Session

    path = _study(tmp_path, tiny_bert, n_trials=2)
    said: list[str] = []
    stop = threading.Event()
    session = Session(load_spec(path), lambda message, **fields: said.append(message), stop=stop)
    stop.set()  # as the signal handler does; its KeyboardInterrupt never reached the loop
    assert session.work() is False
    assert session.study.get_trials() == []
    assert any("interrupted: 0 of 2 trials finished" in m for m in said)


def test_a_stop_request_whose_keyboardinterrupt_was_lost_during_a_trial_stops_it_at_its_next_batch(tmp_path: Path, tiny_bert: Path) -> None:
    """Where the signal's KeyboardInterrupt was lost (raised in a finalizer, which Python only prints), the trial ran to its
    end, minutes on real data after a Ctrl-C, and counted as finished. It stops after the batch it is in, as interrupted."""
    import threading

    from hpsearch.session import Session

    path = _study(tmp_path, tiny_bert, n_trials=2)
    stop = threading.Event()

    def say(message: str, **fields: object) -> None:
        if fields.get("event") == "trial_start":
            stop.set()  # as the signal handler does; its KeyboardInterrupt never reached the trial

    session = Session(load_spec(path), say, stop=stop)
    assert session.work() is False
    [trial] = session.study.get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs.get("interrupted") and not trial.intermediate_values


def test_every_worker_on_the_machine_takes_its_share_of_the_cores(tmp_path: Path, torch_threads: None) -> None:
    from hpsearch.workers import ThreadShare, register

    said: list[str] = []
    share = ThreadShare(None, lambda m, **f: said.append(m), folder=tmp_path, cores=8)
    assert share.workers() == 1 and share.share() == 8
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        register(other.pid, tmp_path)  # a worker started by hand beside this one
        assert share.workers() == 2 and share.share() == 4
        assert share.apply() == 4 and said == ["using 4 CPU thread(s) (8 cores shared by 2 hpsearch worker(s) on this machine)"]
    finally:
        other.kill()
        other.wait()
    assert share.workers() == 1 and not (tmp_path / str(other.pid)).exists()  # a dead worker's entry is cleared
    assert ThreadShare(3, lambda m, **f: None, folder=tmp_path, cores=8).share() == 3  # execution.threads / --threads wins
    share.idle()  # waiting for trials elsewhere: the others may take its cores
    assert not (tmp_path / str(os.getpid())).exists()
    assert share.apply() == 8 and (tmp_path / str(os.getpid())).exists()  # before its next trial it counts again
    share.close()
    assert not (tmp_path / str(os.getpid())).exists()


def test_every_user_of_a_machine_registers_in_one_folder_and_its_troubles_never_stop_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                               torch_threads: None) -> None:
    """The folder was made with the first user's permissions (others could read, not write): a second user's run stopped at
    its start on a PermissionError. And a folder removed while a worker trained (a cleaner of the temporary directory)
    would have stopped it mid-trial, now that it counts the workers every second."""
    import shutil

    from hpsearch.workers import ThreadShare, register

    folder = tmp_path / "hpsearch-workers"
    assert register(os.getpid(), folder) is True
    assert folder.stat().st_mode & 0o7777 == 0o1777  # as the temporary directory: anyone writes, only owners remove
    folder.chmod(0o755)  # as an earlier version made it
    assert register(os.getpid(), folder) is True and folder.stat().st_mode & 0o7777 == 0o1777
    shutil.rmtree(folder)
    share = ThreadShare(None, lambda m, **f: None, folder=folder, cores=2)
    shutil.rmtree(folder)  # while it trains
    assert share.workers() == 1 and share.apply() == 2 and (folder / str(os.getpid())).exists()  # and it is back in the count
    share.close()

    refused = Path.write_text

    def write_text(path: Path, *args: object, **kwargs: object) -> int:
        if path.parent == folder:
            raise PermissionError(13, "Permission denied", str(path))  # another user's folder (the tests may run as root)
        return refused(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    assert register(os.getpid(), folder) is False
    share = ThreadShare(None, lambda m, **f: None, folder=folder, cores=2)
    assert share.apply() == 2  # not counted by the others, but it runs, on its share of what it sees
    share.close()


def test_a_worker_that_joins_during_a_trial_takes_threads_from_it_within_the_trial(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                  torch_threads: None, other_workers) -> None:  # noqa: ANN001
    """A trial kept the threads it started with to its end: beside a worker started by hand during it, a 2-thread trial
    on 2 cores trained 20 times slower (16 samples/s against 350) until its last fold. Between training steps the
    worker counts the workers again (here at every step), so it gives up the thread before the trial's first epoch ends."""
    from hpsearch import workers
    from hpsearch.session import Session

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    monkeypatch.setattr(workers.ThreadShare, "CHECK_SECONDS", 0.0)
    path = _study(tmp_path, tiny_bert, n_trials=1)
    said: list[str] = []

    def say(message: str, **fields: object) -> None:
        said.append(message)
        if fields.get("event") == "trial_start":  # a worker starts in another shell while this trial runs
            other_workers.start()

    assert Session(load_spec(path), say).work() is True
    start = next(i for i, m in enumerate(said) if m.startswith("trial 0:"))
    first_epoch = next(i for i, m in enumerate(said) if m.startswith("trial 0 fold 1/2 epoch 1"))
    assert "using 2 CPU thread(s) (2 cores shared by 1 hpsearch worker(s) on this machine)" in said[:start]
    assert "using 1 CPU thread(s) (2 cores shared by 2 hpsearch worker(s) on this machine)" in said[start:first_epoch]


def test_the_end_of_a_run_takes_back_the_cores_a_worker_beside_it_left(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       torch_threads: None, other_workers) -> None:  # noqa: ANN001
    """The run's last trial ran beside a worker, on 1 thread of 2 cores; the worker ended with it, and the final model
    and the latency measured as served kept that 1 thread on a machine with nothing else to do."""
    from hpsearch import workers
    from hpsearch.runner import run_study

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    monkeypatch.setattr(workers.ThreadShare, "CHECK_SECONDS", 0.0)
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=QUICK + "search: {n_trials: 1}\n")
    said: list[str] = []

    def say(message: str, **fields: object) -> None:
        said.append(message)
        if fields.get("event") == "trial_start":  # a worker of another study starts beside the trial
            other_workers.start()
        if fields.get("event") == "trial_end":  # and ends with it
            other_workers.stop()

    assert run_study(path, say=say) == 0
    ended = next(i for i, m in enumerate(said) if m.startswith("trial 0: macro_f1"))
    refit = next(i for i, m in enumerate(said) if m.startswith("final model: refit"))
    assert "using 1 CPU thread(s) (2 cores shared by 2 hpsearch worker(s) on this machine)" in said[:ended]
    assert "using 2 CPU thread(s) (2 cores shared by 1 hpsearch worker(s) on this machine)" in said[ended:refit], said


def test_a_worker_that_joins_during_the_final_model_takes_threads_from_it(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          torch_threads: None, other_workers) -> None:  # noqa: ANN001
    """The final model (of run, and of export) kept the threads it started with: trained on all of a study's rows, it can
    take as long as a trial, and a worker started beside it meanwhile ran with more threads than cores till its end."""
    from hpsearch import workers
    from hpsearch.runner import export_study, run_study

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    monkeypatch.setattr(workers.ThreadShare, "CHECK_SECONDS", 0.0)
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=QUICK + "search: {n_trials: 1}\n")
    for command in (lambda say: run_study(path, say=say), lambda say: export_study(path, target=tmp_path / "again", say=say)):
        said: list[str] = []

        def say(message: str, **fields: object) -> None:
            said.append(message)
            if fields.get("event") == "final_model":  # a worker starts in another shell as the final model starts training
                other_workers.start()

        assert command(say) == 0
        other_workers.stop()
        refit = next(i for i, m in enumerate(said) if m.startswith("final model: refit"))
        took = next(i for i, m in enumerate(said) if m.startswith("refit took"))
        assert "using 1 CPU thread(s) (2 cores shared by 2 hpsearch worker(s) on this machine)" in said[refit:took], said


def test_a_worker_counts_among_the_machines_workers_from_the_start_of_its_command(tmp_path: Path, tiny_bert: Path) -> None:
    """A worker counted itself only at its first trial: its start-up before that (the libraries, the data, the first model)
    took a core from a worker already training on both, whose epoch then ran at a seventh of its speed. Here the new
    worker waits for a storage that does not answer, long before any trial: it is counted all the same, and no longer once
    it has stopped."""
    from hpsearch.workers import registry

    path = _study(tmp_path, tiny_bert, n_trials=1, storage="postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
    path.write_text(path.read_text().replace("search: {", "search: {storage_patience: 60, "))
    worker = subprocess.Popen([sys.executable, "-m", "hpsearch", "worker", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    entry = registry() / str(worker.pid)
    try:
        while not entry.exists() and worker.poll() is None:
            time.sleep(0.05)
        assert entry.exists(), worker.stderr.read() if worker.stderr else ""
    finally:
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130 and "using" not in err, err  # stopped before any trial (no storage to take one from)
    assert not entry.exists()


def test_a_hand_started_worker_and_runs_workers_share_the_cores(tmp_path: Path, tiny_bert: Path, other_workers) -> None:  # noqa: ANN001
    path = _study(tmp_path, tiny_bert, n_trials=1)
    other_workers.start()  # one more hpsearch worker on this machine
    result = subprocess.run([sys.executable, "-m", "hpsearch", "worker", str(path)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    other_workers.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    workers = [line for line in result.stderr.splitlines() if "CPU thread(s)" in line]
    assert workers and f"using {max(1, cores // 2)} CPU thread(s) ({cores} cores shared by 2 hpsearch worker(s) on this machine)" in workers[0]


def test_a_bad_row_stops_the_run_before_any_worker_starts_and_the_fixed_study_runs(tmp_path: Path, tiny_bert: Path) -> None:
    """The run reads the data once before it starts its workers: a bad row is said once, by the run, and no worker starts
    (each worker started, read the data and stopped on the row, saying so, and the run said it a third time). The user
    fixes the row and changes a setting: no trial had started, so the study takes it, says so, and logs one study run."""
    from mlflow.tracking import MlflowClient

    path = _study(tmp_path, tiny_bert, n_trials=1)
    path.write_text(path.read_text().replace("tracking: {enabled: false}\n", ""))
    data = tmp_path / "cls.csv"
    lines = data.read_text().splitlines()
    good = lines[4]
    lines[4] = "," + good.split(",", 1)[1]  # data row 3: an empty text
    data.write_text("\n".join(lines) + "\n")
    result = _run(path)
    said = "cls.csv: train row 3 (counting data rows from 0): column 'text' is empty"
    assert result.returncode == 2 and result.stderr.count(said) == 1, result.stderr[-3000:]
    assert "started 2 workers" not in result.stderr and "[cpu-" not in result.stderr, result.stderr[-3000:]
    lines[4] = good
    data.write_text("\n".join(lines) + "\n")
    path.write_text(path.read_text().replace("cv: {folds: 2}", "cv: {folds: 3}"))
    result = _run(path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cv.folds changed since the last run: 2 -> 3; no trial had started, so the study takes the new setting" in result.stderr
    client = MlflowClient(f"sqlite:///{load_spec(path).out_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id], filter_string="tags.`hpsearch.role` = 'study'")
    assert sorted((r.data.tags["hpsearch.study"], r.info.status, r.data.params["folds"]) for r in runs) == [("toy", "FINISHED", "3")]
