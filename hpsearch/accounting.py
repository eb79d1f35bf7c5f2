"""Which trials count toward ``n_trials``, whether any is left to run, and how long the rest will take."""
from __future__ import annotations

import datetime
import statistics
from typing import Any

from hpsearch.binding import superseded
from hpsearch.finish import FINISHED_STATES
from hpsearch.selection import is_repeat
from hpsearch.spec import StudySpec


def retry_of(trial: Any) -> int | None:
    """The trial whose configuration ``trial`` runs again: after an interrupt or a worker that died on this machine
    (hpsearch's ``retry_of``), or a worker elsewhere that fell silent (Optuna's ``failed_trial``). None for a fresh one."""
    if "retry_of" in trial.user_attrs:
        return int(trial.user_attrs["retry_of"])
    return int(trial.system_attrs["failed_trial"]) if "failed_trial" in trial.system_attrs else None


def retried_numbers(trials: list[Any]) -> set[int]:
    """Trials whose configuration was started again (after an interrupt or a dead worker)."""
    return {number for number in map(retry_of, trials) if number is not None}


def counted_trials(study: Any) -> int:
    """Trials that count towards n_trials: finished ones, except those whose configuration ran again, those
    that failed under settings the study no longer has, and repeats of a completed trial's settings."""
    return counted_among(study.get_trials(deepcopy=False), superseded(study))


def counted_among(trials: list[Any], skipped: set[int]) -> int:
    """:func:`counted_trials` of these trials, ``skipped`` those that failed under settings the study no longer has."""
    skipped = skipped | retried_numbers(trials)
    return sum(1 for t in trials if t.state.name in FINISHED_STATES and t.number not in skipped
               and not t.user_attrs.get("interrupted") and not t.user_attrs.get("requeued") and not is_repeat(t))


def search_over(spec: StudySpec, study: Any, counted: int) -> str | None:
    """Why no trial is left to run in ``study`` (``counted``: :func:`counted_trials`), seen before a worker loads its data,
    models and device: it has n_trials, or finished trials have taken every configuration of its finite space and none
    waits (running ones are left to a worker's session, which recovers those of a worker that died). None if some are."""
    from hpsearch.repeats import space_taken
    from hpsearch.space import configurations

    done = f"{spec.search.done_text(counted)} finished"
    if spec.search.n_trials is not None and counted >= spec.search.n_trials:
        return done
    every = configurations(spec)
    if every is not None and space_taken(spec, [t for t in study.get_trials(deepcopy=False) if t.state.name != "RUNNING"], every):
        return f"{done}, and every one of its {len(every)} configurations has been tried"
    return None


def seconds_to_go(trials_left: int, trials: list[Any], since: datetime.datetime) -> float | None:
    """About how long ``trials_left`` more trials take: the mean wall time of the trials that finished after ``since``
    (on any worker; repeats, not trained, are not a pace), shared among the workers that run trials at once: those whose
    trials ran since ``since``, or the trials running now and the next one here, whichever is more (a worker between
    two trials runs none).
    None before any trial finished. (The finished trials per second of the run so far, the estimate before, put
    the rest at N times its length after the first trial of N workers.)"""
    recent = [t for t in trials if t.datetime_start is not None and not is_repeat(t)
              and (t.state.name == "RUNNING" or (t.datetime_complete is not None and t.datetime_complete >= since))]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in recent if t.state.name in FINISHED_STATES]
    if not durations:
        return None
    workers = {(t.user_attrs.get("host"), t.user_attrs.get("pid_space"), t.user_attrs.get("pid")) for t in recent}
    at_once = max(len(workers), 1 + sum(1 for t in trials if t.state.name == "RUNNING"))
    return trials_left * statistics.fmean(durations) / at_once


def requeue_interrupted(study: Any) -> int:
    """Run the configurations of interrupted trials again (once each). One interrupted before it drew its settings has
    none to run again: it is not counted, so a new draw takes its place."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    todo = [t for t in trials if t.user_attrs.get("interrupted") and t.params and t.number not in retried]
    for trial in todo:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    return len(todo)
