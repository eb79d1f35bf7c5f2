"""``hpsearch run``: search, cross-validated selection, final model, test score, export."""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hpsearch.accounting import counted_among, counted_trials, search_over
from hpsearch.binding import objective_digest, superseded
from hpsearch.errors import CannotWrite, StorageUnavailable
from hpsearch.finish import finish_study
from hpsearch.newstudy import carry_trials, check_carryable, set_aside_study
from hpsearch.session import Session, pick_device, refuse_unavailable
from hpsearch.spec import StudySpec, load_spec
from hpsearch.summary import redact
from hpsearch.tasks import get_task


def _say(message: str, **fields: Any) -> None:
    print(message, file=sys.stderr, flush=True)


def run_study(study_path: Path, *, export: bool = True, say: Callable[..., None] = _say, worker_args: Sequence[str] = (),
              stop: threading.Event | None = None, new_study: bool = False, keep_trials: bool = False) -> int:
    """``hpsearch run``: trials until n_trials (in this process, or one worker process per device
    slot), then selection, final model, test and export."""
    from hpsearch.workers import crowded, plan_slots

    spec = load_spec(study_path)
    if export and spec.export.enabled:  # a folder the export may not write: said now, not after the search
        from hpsearch.export import check_target

        check_target(spec.export_dir, force=False, run=True)
    if new_study:
        if keep_trials:
            check_carryable(spec)
        aside = set_aside_study(spec, say)
        if keep_trials and aside is not None:
            carry_trials(spec, *aside, say=say)
    begun = time.monotonic()
    pick_device(spec)  # GPUs this machine lacks are refused before any worker starts
    slots = plan_slots(spec)
    if slots[0].device == "cpu" and (crowd := crowded(len(slots))):
        say(f"warning: {crowd}", event="warning")
    if len(slots) > 1:
        ended = _run_on_workers(spec, Path(study_path), slots, say, worker_args, stop or threading.Event())
        if isinstance(ended, int):
            return ended
        session, before = ended
    else:
        session = Session(spec, say, stop=stop)
        before = counted_trials(session.study)
        todo = (f"{max(spec.search.n_trials - before, 0)} of {spec.search.n_trials} trials" if spec.search.n_trials is not None
                else f"trials for {spec.search.timeout:g} s ({before} finished before)")
        expected, estimate = _expected(spec, before)
        say(f"study {spec.name!r}: {len(session.data.train)} training rows, {len(session.folds)} fold(s), {todo} to run on {session.device}"
            f"{expected}", event="study_start", training_rows=len(session.data.train), folds=len(session.folds),
            device=str(session.device), **estimate)
        if before == 0:
            _say_search_warnings(spec, say)
        if not session.work(wait_for_others=True, unfreeze=False):
            return 130
    # The latency measured as served and the final model run on this process's share of the cores as they are now: its
    # last trial may have run beside another worker, on fewer threads, and a run that started workers set none. As in
    # the trials, the share is looked at again between batches: a worker may join the machine during the final model.
    session.share.apply()
    session.tuner.between_batches = session.between_batches
    try:
        # Still frozen: the fits of the end (latency, final model) free their models without walking the
        # libraries' objects (a full collection of the whole heap took 0.36 s after each).
        code = finish_study(session, export=export)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the selection, the final model or the export: the trials are all kept
        session.tracker.end_study(session.parent_run, "KILLED")
        say("interrupted at the end of the study (selection, final model, test, export): every finished trial is kept; run the "
            "same command to finish it (no trial runs again)", event="stopped", reason="interrupted")
        return 130
    except BaseException:
        session.tracker.end_study(session.parent_run, "FAILED")
        raise
    finally:
        gc.unfreeze()
        session.tuner.between_batches = None
        session.share.close()
    say_time(spec, time.monotonic() - begun, before, say)
    return code



def _run_on_workers(spec: StudySpec, study_path: Path, slots: Sequence[Any], say: Callable[..., None], worker_args: Sequence[str],
                    stop: threading.Event) -> tuple[Session, int] | int:
    """``run`` with one worker process per device slot: the trials run in those; this process opens the study, checks
    the data and candidates once, waits, then recovers what dead workers left. Returns the session for the study's end
    and the trials counted before the run, or the exit code where the run stops here."""
    from hpsearch.data import prepare_data
    from hpsearch.finetune.core import unavailable
    from hpsearch.study import open_study
    from hpsearch.tracking import Tracker
    from hpsearch.workers import run_pool, unregister

    unregister(os.getpid())  # its workers train; this process only waits for them (the hpsearch program counted it)
    # The study and its parent run exist before any worker starts, so all of them join the same ones.
    started = time.monotonic()
    study = open_study(spec, say=say)
    # Once here, rather than once by each worker: data with a bad row stopped every worker, each saying so, after
    # each had started (a CUDA context per GPU); data on the hub is fetched once; its warnings are said once, here,
    # not by each worker and again at the end. Kept for the end only where no worker starts: while workers train,
    # this process does not hold it (they read it from the cache, and the end reads it again).
    data = prepare_data(spec, cache_dir=spec.out_dir / "cache" / "datasets")
    for warning in data.warnings:
        say(f"warning: {warning}", event="warning")
    refuse_unavailable(unavailable(spec.models, say=say, task=get_task(spec.task)), study)
    tracker = Tracker.from_spec(spec, say)
    parent = tracker.study_run(spec, objective_digest(study))
    before = counted_trials(study)
    if (over := search_over(spec, study, before)) is not None:  # run again on a finished study: to its end
        say(f"study {spec.name!r}: {over}; no trial left to run, so no worker is started", event="study_start", finished=before, workers=0)
        codes: list[int] = []
    else:
        data = None
        expected, estimate = _expected(spec, before)
        say(f"study {spec.name!r}: {spec.search.done_text(before)} finished; running the rest on {len(slots)} workers{expected}",
            event="study_start", finished=before, workers=len(slots), **estimate)
        if before == 0:
            _say_search_warnings(spec, say)
        codes = run_pool(study_path, slots, say, extra_args=list(worker_args), stop=stop)
    if CannotWrite.exit_code in codes:  # each such worker said what it could not write, and its trial runs again
        say("stopped: a worker could not write (its message above says what and why); run the same command to resume once it can",
            event="stopped", reason="cannot write")
        tracker.end_study(parent, "KILLED")
        return CannotWrite.exit_code
    if StorageUnavailable.exit_code in codes:
        say(f"stopped: the workers lost the study storage {redact(spec.search.storage or '')}; run the same command to resume once it is back",
            event="stopped", reason="storage unreachable")
        return StorageUnavailable.exit_code
    if stop.is_set() or any(code in (130, -signal.SIGINT, -signal.SIGTERM) for code in codes):
        say(f"stopped: {spec.search.done_text(counted_trials(study))} finished; run the same command to resume", event="stopped", reason="interrupted")
        tracker.end_study(parent, "KILLED")
        return 130
    try:  # the data, the models and the devices for the end: loaded only when the study goes on to it
        session = Session(spec, say, stop=stop, data_warnings=False, study=study, data=data)
    except BaseException:  # the workers' error (bad data, say) is the run's: its study run did not stay open
        tracker.end_study(parent, "FAILED")
        raise
    session.said_space_tried = True  # each worker said it where it stopped; not once more here
    # Workers that died may have left trials behind: recover them and finish here, within the
    # same timeout the workers had (not a fresh one); trials still running elsewhere are waited for.
    if not session.work(started, wait_for_others=True, unfreeze=False):
        return 130
    return session, before


def _say_search_warnings(spec: StudySpec, say: Callable[..., None]) -> None:
    """What ``validate`` warns of in the search (see :func:`hpsearch.summary.search_warnings`), said as a new study's first
    trials start (not on resuming it: its finished trials may have drawn every candidate since)."""
    from hpsearch.summary import search_warnings

    for warning in search_warnings(spec):
        say(f"warning: {warning}", event="warning")


def _expected(spec: StudySpec, before: int) -> tuple[str, dict[str, float]]:
    """What ``hpsearch plan`` estimated for this run, to say as it starts (words and event fields; empty without a plan
    made for this study file and for the trials left)."""
    from hpsearch.plan import estimate_fields, estimate_text, saved_plan

    plan, _ = saved_plan(spec, before)
    return ("", {}) if plan is None else (f"; {estimate_text(plan)}", estimate_fields(plan))


def say_time(spec: StudySpec, seconds: float, before: int, say: Callable[..., None]) -> None:
    """The time this run took, and beside it the estimate of ``hpsearch plan`` where one was made for this study
    file and for what this run did (``before``: trials that had finished before it started; a plan made then is for
    the rest)."""
    from hpsearch.plan import estimate_fields, estimate_text, saved_plan
    from hpsearch.status import duration

    text, fields = f"time: {duration(seconds)}", {"seconds": seconds}
    plan, stale = saved_plan(spec, before)
    if before:
        text += f" (this run only: {before} trial(s) had finished before it)"
    if stale:
        text += "; plan.json was made for an earlier version of this study file: run 'hpsearch plan' again for an estimate"
    elif plan is not None:
        text += f"; {estimate_text(plan)}"
        fields.update(estimate_fields(plan))
    say(text, event="time", **fields)


def run_worker(study_path: Path, *, storage: str | None = None, device: str | None = None, seed_offset: int | None = None,
               say: Callable[..., None] = _say, stop: threading.Event | None = None, threads: int | None = None,
               data_warnings: bool = True) -> int:
    """``hpsearch worker``: join the study and run trials until it has n_trials; no selection. ``data_warnings``: say
    the data's warnings (not in a worker that ``run`` started: it said them)."""
    spec = load_spec(study_path)
    if storage:
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"storage": storage})})
    from hpsearch.study import open_study
    from hpsearch.workers import process_seed

    # Workers of one study need different sampler seeds, or they would propose the same trials; the process id
    # alone is not enough, as workers in containers often have the same one (1, in every pod of a Kubernetes Job),
    # and the host name neither, where containers share the machine's (host networking): the PID namespace tells them apart.
    offset = process_seed() if seed_offset is None else seed_offset
    study = open_study(spec, seed_offset=offset, say=say)
    if (over := search_over(spec, study, counted_trials(study))) is not None:  # said before the data, models and device are loaded
        say(f"study {spec.name!r}: {over}; nothing left for a worker to run", event="worker_done", ran=0)
        return 0
    session = Session(spec, say, device=device, seed_offset=offset, stop=stop, threads=threads, data_warnings=data_warnings, study=study)
    say(f"worker on {session.device} joined study {spec.name!r} ({spec.search.done_text(counted_trials(session.study))} finished)",
        event="worker_joined", device=str(session.device))
    if not session.work():
        return 130
    trials = session.study.get_trials(deepcopy=False)
    running = sum(1 for t in trials if t.state.name == "RUNNING")
    counted = counted_among(trials, superseded(session.study))
    say(f"worker done: it ran {session.ran} trial(s); the study has {spec.search.done_text(counted)} finished"
        + (f", {running} still running elsewhere" if running else ""), event="worker_done", ran=session.ran)
    return 0


def export_study(study_path: Path, *, target: Path | None = None, force: bool = False, say: Callable[..., None] = _say) -> int:
    """``hpsearch export``: the selected model of a study (finished or still running), as a folder."""
    from hpsearch.export import check_target
    from hpsearch.finish import select_from_study
    from hpsearch.study import load_existing_study
    from hpsearch.workers import ThreadShare

    spec = load_spec(study_path)
    select_from_study(spec, load_existing_study(spec, say))  # a study never run, or with no completed trial: said before any data is read
    if spec.export.enabled or target is not None:  # as finish_study will, before the data and models are loaded
        check_target(target or spec.export_dir, force)
    session = Session(spec, say, read_only=True)
    # The final model and the latency measured as served run on this process's share of the cores, looked at again between
    # batches: the study's workers may still be training on this machine, or start meanwhile (each takes its share too).
    with ThreadShare(spec.execution.threads, say) as share:
        session.tuner.between_batches = share.refresh
        try:
            return finish_study(session, export=True, target=target, force=force)
        except BaseException:
            session.tracker.end_study(session.parent_run, "FINISHED" if counted_trials(session.study) else "FAILED")
            raise
