"""A worker's session over one study: its data, folds, device, fine-tuner and tracker, and the loop that claims and
runs trials until the study has enough (:class:`Session`); what ``run``, ``worker``, ``export`` and ``plan`` share to
set one up (the device, the folds, candidates that cannot be loaded).
"""
from __future__ import annotations

import datetime
import functools
import gc
import os
import threading
import time
import warnings
from typing import Any, Callable, Sequence

from hpsearch.accounting import counted_among, counted_trials, requeue_interrupted, seconds_to_go
from hpsearch.binding import objective_digest, scored, superseded
from hpsearch.errors import CannotWrite, HpsearchError, StorageUnavailable
from hpsearch.selection import trained_complete
from hpsearch.spec import StudySpec


def pick_device(spec: StudySpec, asked: str | None = None) -> str:
    """The device this process trains on: ``asked`` (a worker's --device), else the study's first. A GPU this machine
    does not have is refused before any trial: every trial on it would fail."""
    import torch

    if asked is not None:
        if asked != "cpu":
            check_gpus([int(asked.split(":")[1])], "--device", "--device cpu")
        return asked
    devices = spec.execution.devices
    if isinstance(devices, list):
        check_gpus(devices, "execution.devices", "devices: auto (every GPU there is, else the CPU) or cpu")
        return f"cuda:{devices[0]}"
    return "cpu" if devices == "cpu" or not torch.cuda.is_available() else "cuda:0"


def check_gpus(ids: Sequence[int], setting: str, other: str) -> None:
    """Refuse GPU ids that torch does not see on this machine, naming those it does and ``other`` setting."""
    import torch

    count = torch.cuda.device_count()
    missing = [i for i in ids if not 0 <= i < count]
    if missing:
        have = f"{count} GPU(s), ids 0 to {count - 1}" if count else "no GPU that torch can use"
        raise HpsearchError(f"{setting} asks for GPU {', '.join(map(str, missing))}, but this machine has {have}; use "
                            f"{'ids among those, or ' if count else ''}{other}")


def make_folds(spec: StudySpec, data: Any) -> tuple[list[tuple[list[int], list[int]]], str]:
    """The folds every trial uses, and the split they are scored on."""
    from hpsearch.data import cv_splits

    if "validation" in data.splits:
        return [(list(range(len(data.train))), list(range(len(data.splits["validation"]))))], "validation"
    labels = data.task.strata(data.train) if spec.stratify else None
    groups = data.groups if data.groups is not None else data.task.groups(data.train)
    splits = cv_splits(len(data.train), spec.cv.folds, labels=labels, groups=groups, shuffle=spec.cv.shuffle, seed=spec.cv_seed,
                       label_names=data.label_map.labels or None)
    return [(train.tolist(), val.tolist()) for train, val in splits], "train"


def refuse_unavailable(problems: list[str], study: Any = None) -> None:
    """Stop before the first trial (or calibration, with no ``study``) where candidates cannot be loaded (``problems``,
    from :func:`hpsearch.finetune.core.unavailable`): no trial is spent failing on them."""
    if problems:
        fix = "make each of them loadable, or remove it from models"
        if study is not None and scored(study.get_trials(deepcopy=False)):
            fix += " and run with --new-study (the study has trials scored with it)"
        spared = "no trial was started" if study is not None else "nothing was timed"
        raise HpsearchError("\n".join([f"{len(problems)} candidate(s) cannot be loaded, so {spared}:", *(f"  - {p}" for p in problems), fix]))


class Session:
    """Everything a worker needs to run trials of one study in this process."""

    def __init__(self, spec: StudySpec, say: Callable[..., None], device: str | None = None, seed_offset: int = 0,
                 stop: threading.Event | None = None, read_only: bool = False, threads: int | None = None,
                 data_warnings: bool = True, study: Any | None = None, data: Any | None = None) -> None:
        from hpsearch.data import prepare_data
        from hpsearch.finetune import FineTuner
        from hpsearch.finetune.baseline import baseline_scores
        from hpsearch.finetune.loop import describe_precision
        from hpsearch.plateau import PlateauAware
        from hpsearch.rungs import OnRungs
        from hpsearch.search import Objective
        from hpsearch.study import open_study
        from hpsearch.tracking import Tracker

        self.spec, self.say = spec, say
        self.stop = stop or threading.Event()  # set by a signal handler: no new trial starts
        self.threads = threads  # CPU threads asked for on the command line; None: the machine's share
        self.share: Any = None  # this process's share of the machine's cores (hpsearch.workers.ThreadShare), from work()
        out = spec.out_dir
        out.mkdir(parents=True, exist_ok=True)
        # The study first: a spec that no longer matches its study stops before data or models are loaded.
        self.study = study if study is not None else open_study(spec, seed_offset=seed_offset, say=say, read_only=read_only)
        self.ran = 0  # trials this process ran
        self.superseded = superseded(self.study)
        self.said_space_tried = False  # "every configuration tried" is said once per process (run sets it after its workers said it)
        self.data = data if data is not None else prepare_data(spec, cache_dir=out / "cache" / "datasets")
        self.data.label_map.save(out / "labels.json")
        for warning in self.data.warnings if data_warnings else ():  # not where run said them for its workers
            say(f"warning: {warning}", event="warning")
        self.folds, eval_split = make_folds(spec, self.data)
        # The trivial baseline on these folds: the plateau of the sampler and of successive halving (hpsearch.plateau,
        # hpsearch.rungs), the winner's bar at the end.
        self.baseline = baseline_scores(self.data, self.folds, eval_split, spec.metric)
        if isinstance(self.study.sampler, PlateauAware):
            self.study.sampler.set_baseline(self.baseline["fold_scores"], self.baseline["fold_losses"])
        if isinstance(self.study.pruner, OnRungs):
            self.study.pruner.set_baseline(self.baseline["fold_scores"], self.baseline["fold_losses"])
        self.device = pick_device(spec, device)
        self.tuner = FineTuner(self.data, cache_dir=out / "cache", max_length=spec.data.max_length, device=self.device,
                               precision=spec.execution.precision, metric=spec.metric, direction=spec.direction,
                               warn=lambda message: say(f"warning: {message}", event="warning"), info=say)
        say(describe_precision(spec.execution.precision, self.tuner.precision, self.device), event="precision", precision=self.tuner.precision)
        if not read_only:
            from hpsearch.finetune.core import unavailable

            refuse_unavailable(unavailable(spec.models, self.tuner.tokenizer, say, task=self.tuner.task), self.study)
        self.tracker = Tracker.from_spec(spec, say)
        self.parent_run = self.tracker.study_run(spec, objective_digest(self.study))
        self.objective = Objective(spec, self.tuner, self.folds, eval_split=eval_split, device=self.device, on_event=say,
                                   checkpoints=out / "checkpoints", tracker=self.tracker, parent_run=self.parent_run)
        self.objective.study = self.study

    def catch_up_tracking(self) -> None:
        """Log the trial runs MLflow is missing, where tracking stopped in this run or an earlier one (a server that
        was down) and works now; said where there were any."""
        if not self.tracker.reconnect():
            return
        if self.parent_run is None:  # tracking stopped before the study's run was found
            self.parent_run = self.objective.parent_run = self.tracker.study_run(self.spec, objective_digest(self.study))
        # Trials failed under settings the study no longer has keep their runs under its earlier study run.
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.number not in self.superseded]
        logged = self.tracker.catch_up(self.parent_run, trials)
        if logged:
            self.say(f"MLflow: logged the runs of {len(logged)} trial(s) it was missing ({', '.join(map(str, logged))}), with their "
                     "settings and final figures", event="tracking_caught_up", trials=logged)

    def _close_dead_run(self, trial: Any, reason: str) -> None:
        """End the MLflow run a dead worker left open (found by the id the trial recorded, else by its tags:
        the worker may have died before recording it); a worker killed before it started one gets a failed
        run now, so every trial of the study appears in MLflow exactly once."""
        run = trial.user_attrs.get("mlflow_run_id") or self.tracker.open_trial_run(self.parent_run, trial.number)
        if not run:
            attrs = trial.user_attrs
            run = self.tracker.start_trial(self.parent_run, trial.number, attrs.get("model", trial.params.get("model", "?")),
                                           attrs.get("params", dict(trial.params)), attrs.get("device", "?"))
        if run:
            self.tracker.end_trial(run, "FAIL", {**trial.user_attrs, "failure_reason": reason})

    def work(self, started: float | None = None, wait_for_others: bool = False, unfreeze: bool = True) -> bool:
        """Run trials until the study has n_trials counted ones, or until ``search.timeout`` seconds after
        ``started`` (a ``time.monotonic()`` value; default now); False if interrupted.

        With ``wait_for_others`` (the process that selects the winner) it returns only once no trial of
        the study is running anywhere, so the selection sees every trial; a running trial whose worker
        died is recovered meanwhile, and run here if it comes back to the queue. The heap stays frozen
        (see ``_settle_heap``) when it returns True if not ``unfreeze``: the caller then calls ``gc.unfreeze()``.
        """
        from hpsearch.storage import claim_lock
        from hpsearch.workers import ThreadShare

        started = time.monotonic() if started is None else started
        timeout = self.spec.search.timeout
        lock = claim_lock(self.spec, self.say)
        objective = _interruptible(self.objective, on_start=lock.release)
        self.share = ThreadShare(self.spec.execution.threads if self.threads is None else self.threads, self.say)
        self.tuner.between_batches = self.between_batches
        waiting, said_timeout = Waiting(self.say), False
        gc.freeze()  # without a collection first: that would walk the whole heap (0.26 s) to free a few objects
        finished, began, began_at = False, time.monotonic(), datetime.datetime.now()
        try:
            while True:
                if self.stop.is_set():  # the signal's KeyboardInterrupt was lost somewhere: stop all the same
                    raise KeyboardInterrupt
                may_start = timeout is None or time.monotonic() - started <= timeout
                if not may_start and not said_timeout:
                    self.say(f"timeout of {timeout:g}s reached: no new trial is started", event="timeout", seconds=timeout)
                    said_timeout = True
                outcome = self._claim_and_run(objective, lock, may_start, wait_for_others, waiting)
                if outcome == "done":
                    finished = True
                    break
                if outcome == "ran":
                    self.ran += 1
                    prune_checkpoints(self.spec, self.study)
                    _settle_heap()
                    self._say_progress(began, began_at, started)
        except KeyboardInterrupt:
            self.say(f"interrupted: {self.spec.search.done_text(counted_trials(self.study))} finished; run the same command to resume", event="stopped", reason="interrupted")
            self.tracker.end_study(self.parent_run, "KILLED")
            return False
        except (StorageUnavailable, CannotWrite):
            self.tracker.end_study(self.parent_run, "KILLED")  # tolerant: MLflow's own disk may be the full one
            raise
        finally:
            self.tuner.between_batches = None
            self.share.close()
            if unfreeze or not finished:
                gc.unfreeze()  # whatever outlives the trials is the caller's again, collectable as usual
        return True

    def _untried(self, trials: list[Any]) -> list[Any] | None:
        """:func:`hpsearch.repeats.untried` for a finite space (listed once, by the objective); None for another."""
        from hpsearch.repeats import untried

        every = self.objective.configurations
        return None if every is None else untried(self.spec, trials, every)

    def _space_tried(self, trials: list[Any]) -> bool:
        """:func:`hpsearch.repeats.space_taken` (said once)."""
        from hpsearch.repeats import space_taken

        if not space_taken(self.spec, trials, self.objective.configurations):
            return False
        if not self.said_space_tried:
            self.said_space_tried = True
            count = len(self.objective.configurations or ())
            self.say(f"every one of the {count} configurations of the search space has been tried: no new trial "
                     "is started (more trials would only repeat them)", event="space_tried", configurations=count)
        return True

    def _say_progress(self, began: float, began_at: datetime.datetime, started: float) -> None:
        """How many trials are finished and, at the pace of the study since this process began (other workers'
        trials included, see :func:`seconds_to_go`), about how long the rest will take; under a time budget, what
        is left of it."""
        from hpsearch.status import duration

        trials, now, search = self.study.get_trials(deepcopy=False), time.monotonic(), self.spec.search
        done, elapsed = counted_among(trials, self.superseded), now - began
        text = f"progress: {search.done_text(done)} finished, {duration(elapsed)} in this run"
        left = None
        if search.n_trials is not None and done < search.n_trials:
            to_run, configurations = search.n_trials - done, self._untried(trials)
            if configurations is not None:  # a finite space's search ends once all of them are tried
                to_run = min(to_run, len(configurations) + sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING")))
            left = seconds_to_go(to_run, trials, began_at) if to_run else None
        if search.timeout is not None:
            budget = max(search.timeout - (now - started), 0.0)
            left = budget if left is None else min(left, budget)
            text += f"; {duration(budget)} of the {duration(search.timeout)} time budget left"
        if left is not None and search.n_trials is not None and done < search.n_trials:
            text += f"; about {duration(left)} to go at this pace"
        self.say(text, event="progress", finished=done, n_trials=search.n_trials, seconds=elapsed, seconds_left=left)

    def between_batches(self) -> None:
        """After each batch of a fit (the tuner's ``between_batches``): this process's share of the cores looked at again,
        and a stop request honoured where the signal's KeyboardInterrupt was lost (raised in a finalizer, which Python only
        prints): the fit stops all the same, and a trial is recorded as interrupted."""
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.share.refresh()

    def _claim_and_run(self, objective: Callable[[Any], Any], lock: Any, may_start: bool, wait_for_others: bool,
                       waiting: Waiting) -> str:
        """Run one trial if the study has room for it ("ran"), on this process's share of the cores; else "wait"
        (trials still run elsewhere and the caller selects; meanwhile this process leaves the cores to them) or "done"."""
        import optuna

        from hpsearch.errors import TrialError
        from hpsearch.storage import lost_storage
        from hpsearch.workers import recover_dead_trials

        # Checking for room and starting the trial happen under one lock that every worker of the study
        # sees (in its database, or a file beside the embedded storage), so they never start more than n_trials.
        lock.acquire()
        try:
            recover_dead_trials(self.study, self.say, self._close_dead_run)
            with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we rely on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # silent workers elsewhere (database heartbeats)
            requeue_interrupted(self.study)
            trials = self.study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state.name == "RUNNING"]
            if not may_start or self._space_tried(trials) or counted_among(trials, self.superseded) + len(running) >= self.spec.search.trial_limit:
                if wait_for_others and running:
                    lock.release()
                    self.share.idle()
                    waiting.show(running)
                    waiting.pause()
                    return "wait"
                return "done"
            self.share.apply()
            try:
                self.study.optimize(objective, n_trials=1, catch=(TrialError,))
            except Exception as exc:
                lost = lost_storage(exc)
                if lost is None:
                    raise
                raise lost from None
        finally:
            if lock.is_locked:
                lock.release(force=True)
        return "ran"


class Waiting:
    """While the selecting process waits for trials that run elsewhere: which, where, for how long."""

    PAUSE_SECONDS = 2.0  # between looks at the storage
    REPEAT_SECONDS = 60.0  # the same waiting line again after this long

    def __init__(self, say: Callable[..., None]) -> None:
        self.say = say
        self._shown: tuple[int, ...] = ()
        self._when = 0.0

    def show(self, running: list[Any]) -> None:
        from datetime import datetime

        numbers = tuple(t.number for t in running)
        if numbers == self._shown and time.monotonic() - self._when < self.REPEAT_SECONDS:
            return
        self._shown, self._when = numbers, time.monotonic()
        now = datetime.now()
        where = "; ".join(
            f"trial {t.number} ({t.user_attrs.get('model', '?')}) on {t.user_attrs.get('device', '?')}@{t.user_attrs.get('host', '?')}"
            f" for {int((now - t.datetime_start).total_seconds()) if t.datetime_start else 0}s" for t in running)
        self.say(f"waiting for {len(running)} trial(s) still running before selecting: {where}",
                 event="waiting", trials=list(numbers))

    def pause(self) -> None:
        time.sleep(self.PAUSE_SECONDS)


def _settle_heap() -> None:
    """Take what this worker holds for good (libraries, data, caches) out of the garbage collector's sight.

    Each fit ends with a full collection to free the model; a full collection walks every tracked
    object, and a worker holds millions (mostly the imported libraries): about 0.4 s per fold on 2 cores.
    Frozen objects are skipped, so the collection after a fit walks little more than what the fit made.
    ``work`` unfreezes them when it returns (``run_study`` after the study's end).

    Then the C heap's free pages go back to the operating system: what a fit freed (activations,
    gradients, optimizer state) otherwise stays in the process, and its resident memory keeps the
    largest trial's peak for the rest of the study (300 MB and more for MiniLM), memory that other
    workers on the machine cannot use.
    """
    gc.collect()
    gc.freeze()
    trim_heap()


def trim_heap() -> bool:
    """Return the C heap's free memory to the operating system (glibc's ``malloc_trim``, some tens of ms); False
    where the C library has no such call (macOS, musl, Windows)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def prune_checkpoints(spec: StudySpec, study: Any) -> list[int]:
    """Keep on disk only the checkpoints export may need: those of the current top-k finished trials."""
    import shutil

    from hpsearch.selection import rank_key

    folder = spec.out_dir / "checkpoints"
    if not folder.is_dir():
        return []
    finished = {t.number: t for t in study.get_trials(deepcopy=False) if t.state.name != "RUNNING"}
    complete = [t for t in finished.values() if trained_complete(t)]
    keep = {t.number for t in sorted(complete, key=lambda t: rank_key(t.user_attrs["cv_mean"], t.number, spec.direction))[: spec.export.keep_top_k]}
    removed = []
    for path in folder.glob("trial-*"):
        number = int(path.name.split("-")[1])
        if number in finished and number not in keep:  # a running trial's folder is left alone
            shutil.rmtree(path, ignore_errors=True)
            removed.append(number)
    return removed


def _interruptible(objective: Callable[[Any], Any], on_start: Callable[[], None] = lambda: None) -> Callable[[Any], Any]:
    """The objective, recording which process runs the trial and marking it when interrupted."""
    from hpsearch.workers import HOST, PID_SPACE

    def run(trial: Any) -> Any:
        try:  # from its claim on: a signal that comes while the trial is set up marks it interrupted too
            trial.set_user_attr("pid_space", PID_SPACE)  # before the pid, which recovery waits for (workers.recover_dead_trials)
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            on_start()  # the trial is claimed (RUNNING): other workers may look for room again
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("failure_reason", "interrupted")
            raise
        except CannotWrite as exc:
            try:  # as an interruption: the trial runs again once the write can be made, and does not count as failed
                trial.set_user_attr("interrupted", True)
                trial.set_user_attr("failure_reason", f"interrupted: {exc.reason}")
            except Exception:  # noqa: BLE001 - the storage's own disk: the trial stays running there, and runs again as a crashed one does
                pass
            raise

    return run
