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


def grid(spec: StudySpec) -> dict[str, list[Any]]:
    """The grid sampler's search space; every searched parameter must have finitely many values."""
    problems = [f"models[{i}].space: per-candidate overrides cannot be combined with the grid sampler; move them to 'space'" for i, m in enumerate(spec.models) if m.space]
    space: dict[str, list[Any]] = {}
    if len(spec.models) > 1:
        space[MODEL_PARAM] = [m.name for m in spec.models]
    for name, param in spec.space.as_dict().items():
        if isinstance(param, CategoricalParam):
            space[name] = list(param.choices)
        elif isinstance(param, IntParam) and not param.log:
            space[name] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam) and param.step is not None:
            count = int(round((param.high - param.low) / param.step)) + 1
            space[name] = [round(param.low + i * param.step, 12) for i in range(count)]
        elif not isinstance(param, FixedParam):
            problems.append(f"space.{name}: the grid sampler needs a list of choices or a float range with 'step'")
    if problems:
        raise SpecError(problems)
    return space


def max_epochs(spec: StudySpec) -> int:
    """Largest epoch count any trial can ask for (fixes the pruner's step numbering)."""
    best = 1
    for model in spec.models:
        best = max(best, *[int(v) for v in spec.space_for(model)["epochs"].values_hint()])
    return best


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
