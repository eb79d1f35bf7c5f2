"""A study bound to its spec: trials of one study are only ever scored under the same objective.

When a study is created, the settings that define what a trial's score means (task, data content,
columns, labels, max_length, subsample, holdout, folds, metric, candidates and their spaces, seed, second
objective) are stored in it. Running the study again with any of them changed would mix scores that
cannot be compared, so it stops before any training and says which fields changed; a study in which no
trial was scored (an earlier run stopped on bad data before its first trial, or every trial failed on a
model that could not be loaded, say) takes the changed settings instead, says so, and no longer counts
the failed trials toward n_trials. Settings that only say how much to run or where (n_trials, timeout,
sampler, pruner, storage, tracking, export, execution, selection) may change freely; the changes are
reported.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from hpsearch.errors import SpecError
from hpsearch.spec import StudySpec

OBJECTIVE_KEY, SETTINGS_KEY, SUPERSEDED_KEY = "spec_binding", "spec_settings", "superseded_trials"


def file_digest(path: Path) -> str:
    """Content hash of a file, or of every file in a folder (names and contents)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _source(spec: StudySpec, split: str) -> Any:
    source = getattr(spec.data, split)
    if source is None:
        return None
    if source.path is None:
        return {"hub": source.hub, "config": source.config, "split": source.split}
    content = file_digest(source.path) if source.path.exists() else "missing"
    described = {"content": content, "format": source.format, "split": source.split if source.path.is_dir() else None}
    if source.delimiter is not None:  # only where set: studies bound before the setting existed compare equal
        described["delimiter"] = source.delimiter
    return described


def _model(candidate: Any, compact: bool) -> dict[str, Any]:
    entry = candidate.model_dump(mode="json", exclude={"path"}, exclude_defaults=compact)
    if candidate.path is not None:  # the folder's content, so moving the project does not count as a change
        config = candidate.path / "config.json"
        entry["config"] = file_digest(config) if config.is_file() else "missing"
    return entry


def objective_fields(spec: StudySpec, compact: bool = True) -> dict[str, Any]:
    """Every setting that defines the objective, as JSON values, by dotted field name.

    ``compact`` leaves settings at their defaults out, so a setting that a later hpsearch adds (with
    a default) is not taken for a change (see :func:`changed`).
    """
    cv = spec.cv
    fields: dict[str, Any] = {
        "task": spec.task,
        "seed": spec.seed,
        **{f"data.{split}": _source(spec, split) for split in ("train", "validation", "test")},
        **({"data.holdout": spec.data.holdout} if spec.data.holdout is not None else {}),  # only where set: as for delimiter
        "data.columns": spec.data.columns.model_dump(mode="json", exclude_defaults=compact),
        "data.labels": spec.data.labels,
        "data.max_length": spec.data.max_length,
        "data.subsample": spec.data.subsample.model_dump(mode="json", exclude_defaults=compact),
        "cv.folds": cv.folds, "cv.stratify": spec.stratify, "cv.group_column": cv.group_column,
        "cv.shuffle": cv.shuffle, "cv.seed": spec.cv_seed,
        "search.metric": spec.metric, "search.direction": spec.direction,
        "search.second_objective": spec.search.second_objective,
        "space": spec.space.model_dump(mode="json", exclude_defaults=compact),
    }
    fields.update({f"models.{m.name}": _model(m, compact) for m in spec.models})
    return json.loads(json.dumps(fields))  # plain JSON values, as they come back from the storage


def free_settings(spec: StudySpec) -> dict[str, Any]:
    """Settings that may change between runs of one study (reported when they do)."""
    search = spec.search.model_dump(mode="json", include={"n_trials", "timeout", "sampler", "pruner", "enqueue"})
    fields = {f"search.{k}": v for k, v in search.items()}
    fields.update({"execution": spec.execution.model_dump(mode="json"), "selection": spec.selection.model_dump(mode="json"),
                   "export.policy": spec.final_policy})
    return json.loads(json.dumps(fields))


CARRYABLE = ("models.", "space")
"""Objective fields whose change ``run --new-study --keep-trials`` carries trials across: the candidates and the space."""


def carryable(key: str) -> bool:
    """Whether a change of objective field ``key`` leaves the old trials' scores comparable (see :data:`CARRYABLE`)."""
    return key.startswith(CARRYABLE)


def changed(stored: dict[str, Any], spec: StudySpec) -> list[tuple[str, Any, Any]]:
    """(field, stored value, value now) for every objective setting that differs, innermost first, in a stable order.

    The stored record is compact: a setting missing inside a section was at its default then, and has
    changed only if it is not at its default now.
    """
    return _diff(stored, objective_fields(spec, compact=False), objective_fields(spec), "")


def _diff(old: dict[str, Any], full: dict[str, Any], compact: dict[str, Any], prefix: str) -> list[tuple[str, Any, Any]]:
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(full)):
        o, f, c = old.get(key, ABSENT), full.get(key, ABSENT), compact.get(key, ABSENT)
        if isinstance(o, dict) and isinstance(f, dict):
            inner = _diff(o, f, c if isinstance(c, dict) else {}, f"{prefix}{key}.")
            if inner and _in_space(prefix):
                out.append((f"{prefix}{key}", o, c if isinstance(c, dict) else DEFAULT))  # a parameter whole, not its type, value, ...
            else:
                out += inner
        elif o is ABSENT and isinstance(f, dict) and _in_space(f"{prefix}{key}."):
            out += _diff({}, f, c if isinstance(c, dict) else {}, f"{prefix}{key}.")  # a candidate's overrides, each by name
        elif o is ABSENT:
            if f is not ABSENT and c is not ABSENT and c != {}:  # not at its default now
                out.append((f"{prefix}{key}", DEFAULT if prefix else ABSENT, f))
        elif o != f:
            # ABSENT only for a whole candidate (a top-level field): a setting inside one that is no longer set is at its default.
            out.append((f"{prefix}{key}", o, DEFAULT if f is ABSENT and prefix else f))
    return out


def _in_space(prefix: str) -> bool:
    """Whether the fields under ``prefix`` are search-space parameters: the study's space or a candidate's own."""
    return prefix == "space." or (prefix.startswith("models.") and prefix.endswith(".space."))


class _Unset:
    def __init__(self, word: str) -> None:
        self.word = word


ABSENT, DEFAULT = _Unset("absent"), _Unset("the default")


def _show(value: Any) -> str:
    if isinstance(value, _Unset):
        return value.word
    if isinstance(value, dict) and "type" in value:  # a space parameter, as validate writes it
        from pydantic import TypeAdapter, ValidationError

        from hpsearch.spec._space import Param
        from hpsearch.summary import describe_param

        try:
            return describe_param(TypeAdapter(Param).validate_python(value))
        except ValidationError:  # stored by another version, say: as it is
            pass
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _change_line(key: str, old: Any, new: Any) -> str:
    """One changed objective field as the refusal lists it; a whole candidate added or removed by its name."""
    if key.startswith("models.") and ABSENT in (old, new):  # a whole candidate (a setting of one is DEFAULT where unset)
        return f"{key}: candidate {key[len('models.'):]!r} {'added' if old is ABSENT else 'removed'} since the trials were scored"
    return f"{key}: was {_show(old)}, now {_show(new)}"


def bind(spec: StudySpec, study: Any, say: Callable[..., None] | None = None) -> None:
    """Store the spec's objective in a new study, or check it against the one stored; raises SpecError."""
    say = say or (lambda message, **fields: None)
    attrs = study.user_attrs
    settings = free_settings(spec)
    stored = attrs.get(OBJECTIVE_KEY)
    if stored is None:
        study.set_user_attr(OBJECTIVE_KEY, objective_fields(spec))
        study.set_user_attr(SETTINGS_KEY, settings)
        return
    differences = changed(stored, spec)
    trials = study.get_trials(deepcopy=False)
    if differences and not scored(trials):
        # Nothing was scored under the stored settings (an earlier run stopped before its first trial, or every
        # trial failed): the study takes the new ones, rather than sending a user who fixed the problem to
        # --new-study. The failed trials stay in the study, as failures under settings it no longer has.
        failed = [t.number for t in trials if t.state.name == "FAIL"]
        study.set_user_attr(OBJECTIVE_KEY, objective_fields(spec))
        if failed:
            study.set_user_attr(SUPERSEDED_KEY, sorted(superseded(study) | set(failed)))
        why = (f"no trial was scored ({len(failed)} failed, and no longer count toward n_trials)" if failed
               else "no trial had started")
        for key, old, new in differences:
            say(f"{key} changed since the last run: {_show(old)} -> {_show(new)}; {why}, so the study takes "
                "the new setting", event="setting_changed", field=key)
        differences = []
    if differences:
        raise _refusal(spec, differences)
    for key, old, new in _diff(attrs.get(SETTINGS_KEY, {}), settings, settings, ""):
        say(f"{key} changed since the last run: {_show(old)} -> {_show(new)}", event="setting_changed", field=key)
    if attrs.get(SETTINGS_KEY) != settings:
        study.set_user_attr(SETTINGS_KEY, settings)


def check_bound(spec: StudySpec, study: Any) -> None:
    """For commands that only read ``study`` (status, report): the refusal :func:`bind` makes where the study file changed
    a setting its scored trials were scored under (their scores would be shown as another metric's, say); nothing is
    written."""
    stored = study.user_attrs.get(OBJECTIVE_KEY)
    differences = changed(stored, spec) if stored is not None else []
    if differences and scored(study.get_trials(deepcopy=False)):
        raise _refusal(spec, differences)


def _refusal(spec: StudySpec, differences: list[tuple[str, Any, Any]]) -> SpecError:
    count = len(differences)
    return SpecError(header=f"{count} setting{'s' if count != 1 else ''} changed since study {spec.name!r} scored trials under {'them' if count != 1 else 'it'}:", problems=[
        *(_change_line(key, old, new) for key, old, new in differences),
        f"study {spec.name!r} already has trials scored under the settings above: a study keeps the data, folds, metric, "
        f"candidates and space its trials were scored and sampled under, so that every score compares with every other "
        f"and the sampler learns from all of them; undo the change, give the study a new 'name', or run with "
        f"--new-study to start it afresh (the old study is kept aside)"
        + ("; --new-study --keep-trials starts it with the old trials that the new candidates and space still hold"
           if all(carryable(key) for key, _, _ in differences) else ""),
    ])


def objective_digest(study: Any) -> str:
    """A short digest of the objective ``study`` is bound to: its MLflow study run carries it (see :mod:`hpsearch.tracking`)."""
    return hashlib.sha256(json.dumps(study.user_attrs.get(OBJECTIVE_KEY), sort_keys=True).encode()).hexdigest()[:16]


def scored(trials: list[Any]) -> bool:
    """Whether any of ``trials`` was scored, or is being scored (waiting and failed trials have no score)."""
    return any(t.state.name not in ("WAITING", "FAIL") for t in trials)


def superseded(study: Any) -> set[int]:
    """Numbers of the trials that failed under settings the study no longer has (see :func:`bind`)."""
    return set(study.user_attrs.get(SUPERSEDED_KEY, ()))
