"""The Optuna study of a spec: its sampler and pruner (registries of factories), opening it (created, or resumed and
checked against the spec) and loading one that has run, for the commands that only read it."""
from __future__ import annotations

import random
import warnings
from typing import Any, Callable

from hpsearch.errors import SpecError
from hpsearch.space import enqueue_params, grid, max_epochs
from hpsearch.spec import StudySpec
from hpsearch.storage import make_storage

SAMPLERS: dict[str, Callable[..., Any]] = {}
PRUNERS: dict[str, Callable[..., Any]] = {}


def _register_factories() -> None:
    import optuna

    from hpsearch.rungs import OnRungs

    s, p = optuna.samplers, optuna.pruners
    SAMPLERS.update({
        "tpe": lambda spec, seed, opts: s.TPESampler(seed=seed, **opts),
        "random": lambda spec, seed, opts: s.RandomSampler(seed=seed, **opts),
        "grid": lambda spec, seed, opts: s.GridSampler(grid(spec), seed=seed, **opts),
        "cmaes": lambda spec, seed, opts: s.CmaEsSampler(seed=seed, **opts),
        "gp": lambda spec, seed, opts: s.GPSampler(seed=seed, **opts),
        "nsga2": lambda spec, seed, opts: s.NSGAIISampler(seed=seed, **opts),
    })
    PRUNERS.update({
        "none": lambda spec, opts: p.NopPruner(**opts),
        "median": lambda spec, opts: p.MedianPruner(**opts),
        "percentile": lambda spec, opts: p.PercentilePruner(**{"percentile": 25.0, **opts}),
        "successive-halving": lambda spec, opts: OnRungs(max_epochs(spec) + 1, opts),
        "hyperband": lambda spec, opts: p.HyperbandPruner(**opts),
        "wilcoxon": lambda spec, opts: p.WilcoxonPruner(**opts),
    })


LEARNS_FROM_SCORES = ("tpe", "gp")
"""Samplers shown trials that learned nothing as one plateau ordered by loss (see :mod:`hpsearch.plateau`)."""
STARTUP_DEFAULTS = {"tpe": 10, "gp": 10}
"""Optuna's random start-up trials per sampler, unless ``search.sampler.options.n_startup_trials`` says otherwise."""


def derived_seed(*parts: object) -> int:
    """A 32-bit seed that depends on every one of ``parts`` (the same on every machine and run)."""
    return random.Random("/".join(map(str, parts))).getrandbits(32)


def make_sampler(spec: StudySpec, seed_offset: int = 0, held: int = 0) -> Any:
    """The spec's sampler. Parallel workers pass distinct offsets: equal seeds would propose equal trials.

    ``held``: the trials the study already holds. A resumed study's sampler seeded as on its first run would
    draw the first run's settings again (a resumed random start-up repeated every trial it had run); with the
    count mixed into the seed it goes on with settings of its own, still the same on every replay.
    """
    if not SAMPLERS:
        _register_factories()
    sampler = spec.search.sampler
    seed = (spec.sampler_seed + seed_offset) % 2**32  # numpy's seeds are 32-bit
    if held:
        seed = derived_seed(seed, held)
    try:
        made = SAMPLERS[sampler.name](spec, seed, dict(sampler.options))
    except (TypeError, ValueError) as exc:
        raise SpecError([f"search.sampler.options: {sampler.name} sampler rejected {sampler.options}: {exc}"]) from None
    if sampler.name in LEARNS_FROM_SCORES and not spec.search.second_objective:
        from hpsearch.plateau import PlateauAware

        return PlateauAware(made, spec.direction, spec.selection.confidence)
    return made


def make_pruner(spec: StudySpec) -> Any:
    if not PRUNERS:
        _register_factories()
    pruner = spec.search.pruner
    try:
        return PRUNERS[pruner.name](spec, dict(pruner.options))
    except (TypeError, ValueError) as exc:
        raise SpecError([f"search.pruner.options: {pruner.name} pruner rejected {pruner.options}: {exc}"]) from None


def directions(spec: StudySpec) -> list[str]:
    return [spec.direction] + (["minimize"] if spec.search.second_objective else [])


def open_study(spec: StudySpec, storage: Any | None = None, seed_offset: int = 0, say: Callable[..., None] | None = None,
               read_only: bool = False, enqueue: bool = True) -> Any:
    """Create the study, or load it when it exists (re-running a spec resumes its study); ``enqueue``: add the
    ``search.enqueue`` entries it has not had yet (else the next opening does).

    The study is bound to the settings that define its objective (see :mod:`hpsearch.binding`): a
    resumed study whose spec changed them stops here, before any data or model is loaded.
    """
    import optuna

    from hpsearch.binding import bind

    # Failed and pruned trials are reported by hpsearch itself, with their reasons.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=storage or make_storage(spec, say, read_only=read_only),
            sampler=make_sampler(spec, seed_offset), pruner=make_pruner(spec), directions=directions(spec), load_if_exists=True,
        )
    except ValueError as exc:
        raise SpecError([f"search: the existing study {spec.name!r} does not match this spec ({exc}); rename the study or delete its storage"]) from None
    held = len(study.get_trials(deepcopy=False))
    if held:
        study.sampler = make_sampler(spec, seed_offset, held)
    bind(spec, study, say)  # first: it names the setting that changed, where the check below only sees its effect
    if [d.name.lower() for d in study.directions] != directions(spec):
        raise SpecError([f"search.direction: study {spec.name!r} already exists with directions {[d.name.lower() for d in study.directions]}; "
                         "give the study a new 'name' or run with --new-study"])
    names = [spec.metric] + ([spec.search.second_objective] if spec.search.second_objective else [])
    if study.metric_names != names:  # so optuna-dashboard and the optuna CLI name the objective (new, or taken by bind)
        with warnings.catch_warnings():  # marked experimental since Optuna 3.2; stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    if study.user_attrs.get("metric") != spec.metric:
        study.set_user_attr("metric", spec.metric)
    if enqueue:
        _enqueue_new_settings(spec, study)
    return study


def _enqueue_new_settings(spec: StudySpec, study: Any) -> None:
    """Enqueue the ``search.enqueue`` entries this study has not enqueued yet (entries added on resume too)."""
    import json

    attrs = study.user_attrs
    wanted = json.loads(json.dumps(spec.search.enqueue))  # as the storage gives them back (JSON values)
    done = attrs.get("enqueued_settings")
    if done is None:  # a study from before entries were recorded one by one: its flag covered the list it had
        done = wanted if attrs.get("enqueued") else []
    new = [s for s in wanted if s not in done]
    for settings in new:
        study.enqueue_trial(enqueue_params(spec, settings), skip_if_exists=True)
    if new or "enqueued_settings" not in attrs:
        study.set_user_attr("enqueued_settings", done + new)


def load_existing_study(spec: StudySpec, say: Callable[..., None] | None = None) -> Any:
    """The spec's study as stored, for commands that only read it; an error (not a new empty study)
    when it was never run, and at once (not after ``storage_patience``) when its database cannot be reached."""
    import optuna

    from hpsearch.errors import StudyNotRun

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not spec.search.storage and not (spec.out_dir / "optuna.journal").is_file():
        raise StudyNotRun(f"study {spec.name!r} has not run yet (no {spec.out_dir / 'optuna.journal'}); start it with 'hpsearch run'")
    storage = make_storage(spec, say, read_only=True)
    try:
        return optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        held = f"it holds {', '.join(repr(n) for n in names[:10])}{' ...' if len(names) > 10 else ''}" if names else "it holds none"
        raise StudyNotRun(f"no study named {spec.name!r} in the storage ({held}); start it with 'hpsearch run', or check the "
                          "study's name and search.storage (or --storage)") from None
