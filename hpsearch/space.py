"""The study's search space as Optuna suggest calls.

The candidate model is the categorical parameter ``model``. A parameter shared by all candidates is
suggested under its own name (``learning_rate``); one that a candidate overrides is suggested under
``<candidate>:<name>`` (``minilm-l3:learning_rate``), so each candidate's range is a separate, well-defined
dimension for the sampler (a conditional space). Fixed values are not suggested at all.
"""
from __future__ import annotations

from typing import Any

from hpsearch.errors import SpecError
from hpsearch.spec import CategoricalParam, FixedParam, FloatParam, IntParam, StudySpec

MODEL_PARAM = "model"


def optuna_name(spec: StudySpec, candidate_name: str, param: str) -> str:
    return f"{candidate_name}:{param}" if param in spec.candidate(candidate_name).space else param


def suggest(trial: Any, spec: StudySpec) -> tuple[str, dict[str, Any]]:
    """(candidate name, plain parameter dict) for one Optuna trial."""
    names = [m.name for m in spec.models]
    candidate = trial.suggest_categorical(MODEL_PARAM, names) if len(names) > 1 else names[0]
    params: dict[str, Any] = {}
    for name, param in spec.space_for(spec.candidate(candidate)).items():
        key = optuna_name(spec, candidate, name)
        if isinstance(param, FixedParam):
            params[name] = param.value
        elif isinstance(param, FloatParam):
            params[name] = trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, IntParam):
            params[name] = trial.suggest_int(key, param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, CategoricalParam):
            params[name] = trial.suggest_categorical(key, param.choices)
    return candidate, params


def enqueue_params(spec: StudySpec, settings: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameter names for a user's ``search.enqueue`` entry."""
    candidate = settings.get(MODEL_PARAM, spec.models[0].name)
    out: dict[str, Any] = {MODEL_PARAM: candidate} if len(spec.models) > 1 else {}
    for name, value in settings.items():
        if name != MODEL_PARAM:
            out[optuna_name(spec, candidate, name)] = value
    return out


def param_values(param: Any) -> list[Any] | None:
    """Every value a searched parameter can take, or None where it has a continuum of them."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam):
        return list(range(param.low, param.high + 1, param.step))
    if isinstance(param, FloatParam) and param.step is not None:
        count = int(round((param.high - param.low) / param.step)) + 1
        return [round(param.low + i * param.step, 12) for i in range(count)]
    return None


def grid(spec: StudySpec) -> dict[str, list[Any]]:
    """The grid sampler's search space; every searched parameter must have finitely many values."""
    space, problems = _grid(spec)
    if problems:
        raise SpecError(problems)
    return space


def grid_problems(spec: StudySpec) -> list[str]:
    """Why ``spec``'s space cannot be a grid (none where it can): what ``validate`` says for the grid sampler."""
    return _grid(spec)[1]


def _grid(spec: StudySpec) -> tuple[dict[str, list[Any]], list[str]]:
    problems = [f"models[{i}].space: per-candidate overrides cannot be combined with the grid sampler; move them to 'space'" for i, m in enumerate(spec.models) if m.space]
    space: dict[str, list[Any]] = {}
    if len(spec.models) > 1:
        space[MODEL_PARAM] = [m.name for m in spec.models]
    for name, param in spec.space.as_dict().items():
        values = None if isinstance(param, IntParam) and param.log else param_values(param)
        if values is not None:
            space[name] = values
        elif not isinstance(param, FixedParam):
            default = "" if name in spec.space.model_fields_set else f" (searched by default, from {param.low} to {param.high}: give it a value to fix it)"
            problems.append(f"space.{name}: the grid sampler needs a list of choices or a float range with 'step'{default}")
    return space, problems


def settings_key(candidate: str, params: dict[str, Any]) -> str:
    """What makes two trials the same training run: the candidate and the settings that act in it (floats to 12
    significant digits, as a stepped range's values may come back from the storage a rounding apart)."""
    import json

    acting = {k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in applicable(params).items()}
    return json.dumps([candidate, acting], sort_keys=True, default=str)


FINITE_LIMIT = 100_000
"""Spaces with more configurations than this are treated as unbounded (their repeats are left to chance)."""


def configurations(spec: StudySpec) -> dict[str, tuple[str, dict[str, Any]]] | None:
    """Every distinct configuration of a space with finitely many (choices, integer ranges, float ranges with a
    step), by :func:`settings_key`, as (candidate, params); None where a searched parameter is continuous or the
    space holds more than FINITE_LIMIT. LoRA settings under another scope do not make a configuration of their own."""
    import itertools
    import math

    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for model in spec.models:
        space = spec.space_for(model)
        values = {name: [param.value] if isinstance(param, FixedParam) else param_values(param) for name, param in space.items()}
        if any(v is None for v in values.values()) or math.prod(len(v) for v in values.values()) + len(found) > FINITE_LIMIT:
            return None
        for combination in itertools.product(*values.values()):
            params = dict(zip(values, combination))
            found.setdefault(settings_key(model.name, params), (model.name, params))
    return found


def max_epochs(spec: StudySpec) -> int:
    """Largest epoch count any trial can ask for (fixes the pruner's step numbering)."""
    best = 1
    for model in spec.models:
        best = max(best, *[int(v) for v in spec.space_for(model)["epochs"].values_hint()])
    return best


def stored_max_epochs(spec: StudySpec, stored: dict[str, Any]) -> int:
    """:func:`max_epochs` of the space a study was bound to (``stored``: its objective fields, see
    :mod:`hpsearch.binding`), which numbered the steps its trials reported."""
    space_type = type(spec.space)
    shared = stored.get("space", {}).get("epochs")  # absent: the default range
    ranges = [(entry.get("space") or {}).get("epochs", shared) for key, entry in stored.items() if key.startswith("models.")]
    params = [space_type.model_validate({} if raw is None else {"epochs": raw}).epochs for raw in ranges or [shared]]
    return max([1] + [int(v) for param in params for v in param.values_hint()])


LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout")


def applicable(params: dict[str, Any]) -> dict[str, Any]:
    """The settings that act in a trial: LoRA settings only for scope 'lora'."""
    lora = str(params.get("scope", "full")) == "lora"
    return {k: v for k, v in params.items() if lora or k not in LORA_SETTINGS}


def shown_params(spec: StudySpec, candidate_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a progress line or summary shows of a trial: every setting that varies in the candidate's space
    (and any that a memory retry changed), of those that apply to its scope."""
    space = spec.space_for(spec.candidate(candidate_name))
    keep = {name for name, param in space.items() if not isinstance(param, FixedParam) or params.get(name, param.value) != param.value}
    return {k: v for k, v in applicable(params).items() if k in keep}


def describe_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
