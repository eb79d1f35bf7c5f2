"""Trials drawn with the settings of another trial: the repeats of a finite space, and of two processes whose samplers
share a seed. Neither is trained again: a completed twin's score is taken, a running twin's is not trained twice."""
from __future__ import annotations

import functools
import random
from typing import Any, Sequence

from hpsearch.errors import TrialError
from hpsearch.numbers import score_figure
from hpsearch.selection import LOSS_ATTR, REPEAT_ATTR, is_repeat
from hpsearch.space import MODEL_PARAM, configurations, describe_params, enqueue_params, optuna_name, settings_key, shown_params
from hpsearch.spec import FixedParam, StudySpec
from hpsearch.study import derived_seed, make_sampler

DRAWN_ATTR = "drawn_params"
"""Trial user attr: the settings a trial was drawn with, where a memory retry changed what it ran with (``params``)."""


def trial_key(trial: Any) -> str:
    """:func:`hpsearch.space.settings_key` of the settings a trial was drawn with (a memory retry's smaller batch
    with more accumulation is the same configuration)."""
    return settings_key(trial.user_attrs["model"], trial.user_attrs.get(DRAWN_ATTR, trial.user_attrs["params"]))


def twins(trials: Sequence[Any], key: str, number: int) -> tuple[Any, Any]:
    """The first completed trial that was trained with the settings ``key`` (:func:`hpsearch.space.settings_key`), and
    a trial other than ``number`` training them now; None for either where there is none."""
    completed = running = None
    for t in trials:
        if t.number == number or is_repeat(t) or t.state.name not in ("COMPLETE", "RUNNING") or "params" not in t.user_attrs:
            continue
        if trial_key(t) == key:
            if t.state.name == "COMPLETE" and completed is None:
                completed = t
            elif t.state.name == "RUNNING" and running is None:
                running = t
    return completed, running


def untried(spec: StudySpec, trials: Sequence[Any], every: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The configurations of a finite space (``every``: :func:`hpsearch.space.configurations`) that no trial has taken
    yet: none completed, pruned, running or waiting with them."""
    taken = set()
    for t in trials:
        if t.state.name in ("COMPLETE", "PRUNED", "RUNNING") and "model" in t.user_attrs and "params" in t.user_attrs:
            taken.add(trial_key(t))
        elif t.state.name == "WAITING":
            taken.add(settings_key(*_waiting_settings(spec, t)))
    return [every[key] for key in every if key not in taken]


def space_taken(spec: StudySpec, trials: Sequence[Any], every: dict[str, Any] | None) -> bool:
    """Whether every configuration of a finite space (``every``, None for another space) has been taken by a trial
    and none waits to run: the search ends there, before n_trials, as any further trial would repeat one."""
    return every is not None and not any(t.state.name == "WAITING" for t in trials) and not untried(spec, trials, every)


def _waiting_settings(spec: StudySpec, trial: Any) -> tuple[str, dict[str, Any]]:
    """(candidate, params) of a waiting enqueued trial, from its fixed Optuna parameters and the space's fixed
    values (None for a setting it leaves to the sampler)."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    candidate = fixed.get(MODEL_PARAM, spec.models[0].name)
    if candidate not in {m.name for m in spec.models}:
        return candidate, {}
    space = spec.space_for(spec.candidate(candidate))
    return candidate, {name: param.value if isinstance(param, FixedParam) else fixed.get(optuna_name(spec, candidate, name))
                       for name, param in space.items()}


class Repeats:
    """What a trial drawn with taken settings does instead of training (see the module's docstring)."""

    def __init__(self, spec: StudySpec, on_event: Any) -> None:
        self.spec, self.on_event = spec, on_event
        self._seeded_apart = False

    def score_of_twin(self, trial: Any, candidate_name: str, params: dict[str, Any]) -> float | tuple[float, float] | None:
        """The score of a completed trial with the same settings (this trial then counts as its repeat); a TrialError where
        a trial with them is running elsewhere; None where no trial took them: this one trains."""
        trials = trial.study.get_trials(deepcopy=False, states=None)
        twin, running = twins(trials, settings_key(candidate_name, params), trial.number)
        if twin is not None:
            return self._repeat(trial, candidate_name, params, twin, trials)
        if running is not None:
            self._running_elsewhere(trial, candidate_name, params, running, trials)
        return None

    @functools.cached_property
    def configurations(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """The space's configurations where it has finitely many (:func:`hpsearch.space.configurations`), else None."""
        return configurations(self.spec)

    def _repeat(self, trial: Any, candidate_name: str, params: dict[str, Any], twin: Any, trials: list[Any]) -> float | tuple[float, float]:
        """A trial with the settings of completed trial ``twin``: its score without training again (see
        REPEAT_ATTR). In a finite space one configuration no trial has taken yet is queued, so the search goes on
        with something new rather than with the sampler's next guess at the same place."""
        trial.set_user_attr(REPEAT_ATTR, twin.number)
        for key in ("fold_scores", LOSS_ATTR, "best_epochs"):  # what the sampler's view of a trial reads
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        shown = describe_params(shown_params(self.spec, candidate_name, params))
        self.on_event(f"trial {trial.number}: {candidate_name} {shown}: the settings of trial {twin.number}, not trained again "
                      f"({self.spec.metric} {score_figure(twin.user_attrs.get('cv_mean', twin.values[0]))}); it does not count toward n_trials",
                      event="trial_end", trial=trial.number, state="COMPLETE", repeat_of=twin.number)
        self._seed_apart(trial, twin, trials)
        self._queue_untried(trial, trials)
        return tuple(twin.values) if len(twin.values) > 1 else twin.values[0]  # type: ignore[return-value]

    def _running_elsewhere(self, trial: Any, candidate_name: str, params: dict[str, Any], running: Any, trials: list[Any]) -> None:
        """A trial drawn with the settings of a trial that another worker is training: it is not trained twice (it
        ends failed, marked REPEAT_ATTR, with no score to take yet) and an untried configuration is queued."""
        trial.set_user_attr(REPEAT_ATTR, running.number)
        where = f"{running.user_attrs.get('device', '?')}@{running.user_attrs.get('host', '?')}"
        reason = f"the settings of trial {running.number}, running on {where}: not trained twice"
        trial.set_user_attr("failure_reason", reason)
        self.on_event(f"trial {trial.number}: {candidate_name} {describe_params(shown_params(self.spec, candidate_name, params))}: {reason}; "
                      "it does not count toward n_trials", event="trial_end", trial=trial.number, state="FAIL", repeat_of=running.number)
        self._seed_apart(trial, running, trials)
        self._queue_untried(trial, trials)
        raise TrialError(reason)

    def _seed_apart(self, trial: Any, twin: Any, trials: list[Any]) -> None:
        """In a space with continuous parameters a draw repeats another process's trial ``twin`` only where the two
        samplers share a seed: two `run`s of one study started at once (each seeds its sampler with the study's seed and
        the trials it found), where the later one would go on replaying the other's draws, one step behind, and add
        almost nothing to the search. From the first such repeat on, this process's sampler is seeded with its machine
        and process id, as a worker's is from its start. A lone run never meets one, so its draws stay reproducible."""
        from hpsearch.workers import process_seed, this_process

        if self._seeded_apart or self.configurations is not None:
            return  # a finite space repeats by chance too; its untried configurations are queued instead
        drawn_by = (twin.user_attrs.get("host"), twin.user_attrs.get("pid"))
        if this_process(twin.user_attrs) or None in drawn_by:  # this process's own draw, or one that names no process
            return
        self._seeded_apart = True
        trial.study.sampler = make_sampler(self.spec, process_seed(), len(trials))
        self.on_event(f"trial {trial.number} drew the settings of trial {twin.number}, drawn by process {drawn_by[1]} on {drawn_by[0]}: "
                      "two processes of this study share the sampler's seed (two `hpsearch run`s of it started at once), so this one "
                      "now seeds its sampler apart; start the second process as `hpsearch worker`, which does so from its start",
                      event="sampler_seeded_apart", trial=trial.number, repeat_of=twin.number)

    def _queue_untried(self, trial: Any, trials: list[Any]) -> None:
        """Enqueue one configuration of the finite space that no trial of ``trials`` has taken (chosen by the study's
        seed), if one is left (in a space without end, the sampler's next draw is new enough)."""
        if self.configurations is None:
            return
        left = untried(self.spec, trials, self.configurations)
        if left:
            candidate, chosen = random.Random(derived_seed(self.spec.sampler_seed, trial.number)).choice(left)
            space = self.spec.space_for(self.spec.candidate(candidate))
            searched = {name: value for name, value in chosen.items() if not isinstance(space[name], FixedParam)}
            trial.study.enqueue_trial(enqueue_params(self.spec, {"model": candidate, **searched}), skip_if_exists=True)
