"""Worker processes: one per device slot, pinned, supervised; and recovery of trials whose worker died.

``hpsearch run`` starts one ``hpsearch worker`` process per slot (GPU id x workers_per_device, or CPU
workers that split the cores between them). Optuna's storage is the only shared state: workers on
other machines join the same study with ``hpsearch worker --storage URL``.

A worker that dies (kill -9, out of host memory) leaves its trial RUNNING. On the same machine, the
next worker to claim a trial sees that the recorded process is gone, marks the trial failed and runs
its configuration again (at most ``MAX_RETRIES`` times). Across machines, PostgreSQL/MySQL storages
use Optuna's heartbeats with ``RetryHeartbeatStaleTrialCallback`` for the same effect.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hpsearch.spec import StudySpec

MAX_RETRIES = 2
HOST = socket.gethostname()


def _pid_space() -> str:
    """This process's PID namespace ('pid:[4026531836]' on Linux; '' where there is none to read). Containers on one
    machine may share its host name (host networking) while each numbers its processes apart, from 1: a process id
    names a process only within its namespace."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


PID_SPACE = _pid_space()


def seen_here(attrs: dict[str, Any]) -> bool:
    """Whether the process that ran a trial (its user attrs ``host``, ``pid_space``) numbered its process id where this
    one does: same host, same PID namespace (trials recorded before the namespace was, by the host alone)."""
    return attrs.get("host") == HOST and attrs.get("pid_space", PID_SPACE) == PID_SPACE


def this_process(attrs: dict[str, Any]) -> bool:
    """Whether this very process ran the trial with user attrs ``attrs``."""
    return seen_here(attrs) and attrs.get("pid") == os.getpid()


def process_seed() -> int:
    """A seed of this process's own (host, PID namespace, process id): what sets a worker's sampler apart from the others'."""
    from hpsearch.study import derived_seed

    return derived_seed(HOST, PID_SPACE, os.getpid())


@dataclass(frozen=True)
class Slot:
    label: str
    device: str  # as the worker sees it: "cpu" or "cuda:0" (each GPU worker sees only its own GPU)
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


def plan_slots(spec: StudySpec, gpu_count: int | None = None, cpu_count: int | None = None) -> list[Slot]:
    """Worker slots for the spec's devices: GPU ids pinned through CUDA_VISIBLE_DEVICES, CPU threads split."""
    per = spec.execution.workers_per_device
    devices = spec.execution.devices
    if devices == "auto":
        if gpu_count is None:
            import torch

            gpu_count = torch.cuda.device_count()
        devices = list(range(gpu_count)) if gpu_count else "cpu"
    if devices == "cpu":
        threads = max(1, (cpu_count or usable_cores()) // per)  # the cores this process may use (taskset, a batch job's share)
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
        return [Slot(f"cpu-{w}", "cpu", env, threads) for w in range(per)]
    return [Slot(f"gpu{g}-{w}", "cuda:0", {"CUDA_VISIBLE_DEVICES": str(g)}) for g in devices for w in range(per)]


def run_pool(study_path: Path, slots: list[Slot], say: Callable[..., None], storage: str | None = None, extra_args: Sequence[str] = (),
             stop: threading.Event | None = None) -> list[int]:
    """Run one worker process per slot until the study has n_trials; returns their exit codes.

    SIGINT and SIGTERM given to this process are passed on to every worker, which marks its running
    trial as interrupted (to be run again on resume) and exits; ``stop`` is set, so the caller stops
    too, even when the workers happened to finish just before the signal came.
    """
    processes = []
    for index, slot in enumerate(slots, start=1):
        command = [sys.executable, "-m", "hpsearch", "worker", str(study_path), "--device", "cpu" if slot.device == "cpu" else "0",
                   "--label", slot.label, "--seed-offset", str(index)]
        if storage:
            command += ["--storage", storage]
        command += list(extra_args)
        processes.append(subprocess.Popen(command, env={**os.environ, **slot.env}))
        register(processes[-1].pid)  # counted from the start, so the first trials already share the cores
    say(f"started {len(processes)} workers: {', '.join(s.label for s in slots)}", event="workers_started", workers=[s.label for s in slots])

    def forward(signum: int, _frame: Any) -> None:
        if stop is not None:
            stop.set()
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(process.poll() is None for process in processes):  # reap each worker as soon as it ends
            time.sleep(0.5)
        for slot, process in zip(slots, processes):
            if process.returncode not in (0, 130):
                say(f"worker {slot.label} ended with exit code {process.returncode}", event="worker_exit", worker=slot.label, code=process.returncode)
        return [process.returncode for process in processes]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def crowded(workers: int, cores: int | None = None) -> str | None:
    """A warning where more CPU workers than cores are asked for: each gets one thread and they take turns on the cores,
    each holding its own model and data."""
    cores = cores or usable_cores()
    if workers <= cores:
        return None
    return (f"{workers} CPU workers on {cores} core(s): each gets 1 thread and they take turns on the cores, each with its own "
            f"copy of the model and data in memory; set execution.workers_per_device to at most {cores}")


def registry() -> Path:
    """The folder where the hpsearch workers of this machine register (see :class:`ThreadShare`), whoever runs them."""
    import tempfile

    return Path(tempfile.gettempdir()) / "hpsearch-workers"


def register(pid: int, folder: Path | None = None) -> bool:
    """Enter worker ``pid`` in the registry; False where this user may not write there (then the others do not count it).

    The folder is made writable by every user, with the sticky bit, as the temporary directory itself: the workers of
    every user of a shared machine count each other, and none can remove another's entry while its process lives.
    """
    folder = folder or registry()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        made = folder.stat()
        if made.st_uid == os.getuid() and made.st_mode & 0o7777 != 0o1777:  # its owner opens one made without (or by a umask)
            folder.chmod(0o1777)
        (folder / str(pid)).write_text(_started(pid))
    except OSError:  # another user's folder without the others' write permission, or a read-only temporary directory
        return False
    return True


def unregister(pid: int, folder: Path | None = None) -> None:
    try:
        ((folder or registry()) / str(pid)).unlink(missing_ok=True)
    except OSError:  # another user's dead worker, in the sticky folder: only its owner (or a later reboot) clears it
        pass


@contextlib.contextmanager
def counted_as_worker() -> Iterator[None]:
    """Count this process among the machine's hpsearch workers (:class:`ThreadShare`) from the start of its command: its
    start-up (the libraries' imports, the data, the first model) takes a core from a worker already training, which gives
    up a thread within a second instead of fighting for the core (its epoch then ran at a seventh of its speed)."""
    register(os.getpid())
    try:
        yield
    finally:
        unregister(os.getpid())


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first); empty where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except OSError:
        return []


def _started(pid: int) -> str:
    """When a process started (clock ticks since boot), so a reused process id is not taken for a worker."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _registered_alive(entry: Path) -> bool:
    pid = int(entry.name)
    if not alive(pid):
        return False
    try:
        recorded = entry.read_text()
    except OSError:
        return False
    return not recorded or recorded == _started(pid)


def other_workers(folder: Path | None = None) -> list[int]:
    """Process ids of the live hpsearch workers of this machine other than this process; the entries of dead ones are
    removed where this user may."""
    folder = folder or registry()
    try:
        entries = list(folder.iterdir())
    except OSError:  # removed meanwhile (a cleaner of the temporary directory) or unreadable: none known
        return []
    found = []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _registered_alive(entry):
            found.append(int(entry.name))
        else:
            unregister(int(entry.name), folder)
    return sorted(found)


class ThreadShare:
    """This worker's share of the machine's CPU cores, with every hpsearch worker on the machine counted.

    Each worker (started by ``run`` or by hand, for any study) registers its process id in a folder of
    the machine's temporary directory; before each trial, and about once a second while a trial runs
    (:meth:`refresh`), it counts the live ones and takes ``cores // workers`` threads (at least 1), so
    hand-started workers and ``run``'s own never ask for more threads than there are cores. A process
    that only waits for trials elsewhere leaves the count (:meth:`idle`). ``fixed`` (``execution.threads``
    or ``--threads``) overrides it.
    """

    CHECK_SECONDS = 1.0  # how often a training worker counts the workers again

    def __init__(self, fixed: int | None, say: Callable[..., None], folder: Path | None = None, cores: int | None = None) -> None:
        self.fixed, self.say = fixed, say
        self.cores = cores or usable_cores()
        self.folder = folder or registry()
        register(os.getpid(), self.folder)
        self.checked = -math.inf
        self.threads: int | None = None

    def workers(self) -> int:
        """Live hpsearch workers on this machine, this one included."""
        return 1 + len(other_workers(self.folder))

    def share(self, workers: int | None = None) -> int:
        return self.fixed or max(1, self.cores // (workers or self.workers()))

    def apply(self) -> int:
        import torch

        if not (self.folder / str(os.getpid())).exists():  # after idle(), or a registry removed meanwhile
            register(os.getpid(), self.folder)
        workers = self.workers()
        threads = self.share(workers)
        self.checked = time.monotonic()
        if threads != self.threads:
            torch.set_num_threads(threads)
            why = "as set" if self.fixed else f"{self.cores} cores shared by {workers} hpsearch worker(s) on this machine"
            self.say(f"using {threads} CPU thread(s) ({why})", event="threads", threads=threads)
            self.threads = threads
        return threads

    def refresh(self) -> None:
        """:meth:`apply` at most once a ``CHECK_SECONDS``, between the batches of a fit (its training steps, its validation,
        the frozen layers' outputs it computes): a worker that joins the machine during a long trial makes this one give
        up threads within about a second, not at its next trial (a trial on 2 threads beside a new 1-thread worker on 2
        cores trained 20 times slower), and one that leaves gives them back as soon."""
        if not self.fixed and time.monotonic() - self.checked >= self.CHECK_SECONDS:
            self.apply()

    def idle(self) -> None:
        """Leave the count while this process only waits for trials that run elsewhere, so that their workers take
        its cores; :meth:`apply` (before its next trial) counts it again."""
        unregister(os.getpid(), self.folder)

    def close(self) -> None:
        self.idle()

    def __enter__(self) -> ThreadShare:
        """For work outside the trials' loop (a calibration, an export's final model): its share, counted till its end."""
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_name(name: str) -> str:
    """``name`` marked with this process and machine: how a temporary folder begins that is moved into place or removed
    when its work is done, so that one a killed process left behind can be told (:func:`remove_left_behind`)."""
    return f"{name}.{os.getpid()}@{HOST}"


def remove_left_behind(parent: Path, name: str) -> None:
    """Remove the folders in ``parent`` that :func:`own_name` marked for ``name`` where their process, on this machine, is
    gone: what a process killed (kill -9, the out-of-memory killer) before it moved or removed them left behind. Others'
    (of live processes, or of other machines sharing the folder) are theirs."""
    import glob
    import re
    import shutil

    pattern = re.compile(rf"{re.escape(name)}\.(\d+)@{re.escape(HOST)}\..+")
    for folder in parent.glob(f"{glob.escape(name)}.*"):
        found = pattern.fullmatch(folder.name)
        if found and folder.is_dir() and not alive(int(found.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return not fields or fields[0] != "Z"  # a killed child its parent has not reaped yet is a zombie: dead for our purpose


def worker_gone(trial: Any) -> bool:
    """Whether ``trial`` is RUNNING in the storage while the process of this machine that ran it has ended (killed, say):
    what recovery fails and runs again, and what ``status`` notes until then."""
    pid = trial.user_attrs.get("pid")
    return (trial.state.name == "RUNNING" and seen_here(trial.user_attrs) and pid is not None and not this_process(trial.user_attrs)
            and not alive(int(pid)))


def recover_dead_trials(study: Any, say: Callable[..., None], on_recovered: Callable[[Any, str], None] | None = None) -> list[int]:
    """Fail the RUNNING trials of this machine whose worker process is gone; run their configuration again.

    ``on_recovered(trial, reason)`` lets the caller close what the dead worker left open (its MLflow run).
    """
    from optuna.trial import TrialState

    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not worker_gone(trial):
            continue
        reason = f"worker process {trial.user_attrs['pid']} on {HOST} died during the trial"
        storage = study._storage  # noqa: SLF001 - storage calls are Optuna's public storage API
        storage.set_trial_user_attr(trial._trial_id, "failure_reason", reason)  # noqa: SLF001
        retries = int(trial.user_attrs.get("retries", 0))
        # A trial that died before it drew its settings has none to run again: it is not counted, and a new draw takes its place.
        storage.set_trial_user_attr(trial._trial_id, "requeued", retries < MAX_RETRIES or not trial.params)  # noqa: SLF001
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
        if on_recovered is not None:
            on_recovered(trial, reason)
        if not trial.params:
            say(f"trial {trial.number}: {reason}, before it drew its settings; a new trial takes its place", event="replaced", trial=trial.number)
        elif retries < MAX_RETRIES:
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number, "retries": retries + 1})
            say(f"trial {trial.number}: {reason}; its configuration runs again (retry {retries + 1} of {MAX_RETRIES})", event="retry", trial=trial.number)
        else:
            say(f"trial {trial.number}: {reason}; not retried again ({MAX_RETRIES} retries used)", event="retry_exhausted", trial=trial.number)
        recovered.append(trial.number)
    return recovered
