"""``run --new-study [--keep-trials]``: set the existing study aside, and carry its trials into the new one."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

from hpsearch.binding import objective_digest
from hpsearch.selection import CARRIED_ATTR, is_repeat
from hpsearch.spec import StudySpec


STUDY_FILES = ("optuna.journal", "checkpoints", "cv_results.csv", "cv_results.json", "selection.json", "labels.json", "report")
"""What belongs to one study in its output folder (``--new-study`` moves them aside)."""


def check_carryable(spec: StudySpec) -> None:
    """Raises SpecError, before anything is set aside, when ``--keep-trials`` cannot carry the existing study's trials into a
    new one for ``spec``: a setting other than the candidates and the space changed, so their scores (other data, folds
    or metric) do not compare with the new study's."""
    from hpsearch.binding import OBJECTIVE_KEY, carryable, changed
    from hpsearch.errors import SpecError, StudyNotRun
    from hpsearch.study import load_existing_study

    try:
        stored = load_existing_study(spec).user_attrs.get(OBJECTIVE_KEY, {})
    except StudyNotRun:  # nothing to carry (a storage that cannot be reached is said as such)
        return
    others = [key for key, _, _ in changed(stored, spec) if not carryable(key)]
    if others:
        raise SpecError([f"--keep-trials: {', '.join(others)} changed since the trials were scored; their scores do not compare with "
                         "the new study's (only candidates and the search space may change), so run with --new-study alone"])


def carry_trials(spec: StudySpec, aside: str, files: Path | None, say: Callable[..., None]) -> None:
    """``run --new-study --keep-trials``: the new study takes over the completed and pruned trials of the set-aside one
    whose candidate and settings its space still holds (each such trial as Optuna would have sampled it now, with its
    scores, out-of-fold predictions, costs, epoch curves and best-fold checkpoint, and its reports to the pruner
    renumbered where the epoch range changed), so that adding a candidate or widening a range keeps what was learned.
    The others are left out, and said."""
    import shutil

    import optuna

    from hpsearch.binding import OBJECTIVE_KEY
    from hpsearch.study import open_study
    from hpsearch.space import MODEL_PARAM, max_epochs, optuna_name, stored_max_epochs, suggest
    from hpsearch.journal import journal_storage
    from hpsearch.storage import make_storage
    from hpsearch.tracking import Tracker

    if spec.search.storage:
        old = optuna.load_study(study_name=aside, storage=make_storage(spec, say))
    else:  # set aside with its files
        old = optuna.load_study(study_name=spec.name, storage=journal_storage(files / "optuna.journal"))  # type: ignore[operator]
    study = open_study(spec, say=say, enqueue=False)  # the carried trials first: numbered as they were, where none is left out
    tracker = Tracker.from_spec(spec, say)
    parent = tracker.study_run(spec, objective_digest(study))
    names = {m.name for m in spec.models}
    old_stride, stride = stored_max_epochs(spec, old.user_attrs.get(OBJECTIVE_KEY, {})) + 1, max_epochs(spec) + 1

    def step(reported: int | str) -> int:  # a report's step (fold x stride + epoch - 1, or the fold's end) under the new stride
        fold, position = divmod(int(reported), old_stride)
        return fold * stride + (stride - 1 if position == old_stride - 1 else position)

    first, kept, left = len(study.get_trials(deepcopy=False)), 0, []
    for trial in old.get_trials(deepcopy=False):
        if trial.state.name not in ("COMPLETE", "PRUNED") or is_repeat(trial) or "params" not in trial.user_attrs:
            continue
        model = trial.user_attrs["model"]
        # What it ran with, under the names Optuna would sample now: a value that was fixed then may be searched now
        ran_as = {optuna_name(spec, model, k): v for k, v in trial.user_attrs["params"].items()} if model in names else {}
        fixed = optuna.trial.FixedTrial({**ran_as, **trial.params, MODEL_PARAM: model})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a value outside the new range: Optuna only warns
                candidate, params = suggest(fixed, spec)
        except (ValueError, UserWarning):
            candidate, params = "", {}
        ran = dict(trial.user_attrs["params"])
        if "memory_note" in trial.user_attrs:  # it ran with a smaller batch after running out of memory
            ran.pop("batch_size", None)
            params.pop("batch_size", None)
        if candidate != model or params != ran:
            left.append(trial.number)
            continue
        number = first + kept
        attrs = {**trial.user_attrs, CARRIED_ATTR: {"study": aside, "trial": trial.number}}
        if "validation_loss" in attrs:
            attrs["validation_loss"] = {str(step(k)): v for k, v in attrs["validation_loss"].items()}
        if tracker.enabled:  # a run under the new study's, beside its new trials
            came_from = f"trial {trial.number} of {aside}" + (f" (run {attrs['mlflow_run_id']})" if attrs.get("mlflow_run_id") else "")
            attrs["mlflow_run_id"] = tracker.carried_trial(parent, number, trial.state.name, attrs, came_from)
        study.add_trial(optuna.trial.FrozenTrial(  # with its own start and end, which status and the report show
            number=number, trial_id=number, state=trial.state, value=None, values=trial.values, datetime_start=trial.datetime_start,
            datetime_complete=trial.datetime_complete, params=fixed.params, distributions=fixed.distributions,
            user_attrs=attrs, system_attrs={}, intermediate_values={step(k): v for k, v in trial.intermediate_values.items()}))
        checkpoint = files / "checkpoints" / f"trial-{trial.number}" if files is not None else None
        if checkpoint is not None and checkpoint.is_dir():  # copied: what was set aside stays whole
            shutil.copytree(checkpoint, spec.out_dir / "checkpoints" / f"trial-{number}")
        kept += 1
    line = f"carried over {kept} trial(s) of {aside!r} into the new study"
    if left:
        line += f"; left out trial(s) {', '.join(map(str, left))}: their candidate or settings are outside the new space"
    if kept and spec.search.n_trials is not None:
        line += f"; they count toward search.n_trials ({spec.search.n_trials}): raise it to run more"
    say(line, event="carried", carried=kept, left_out=left)


def set_aside_study(spec: StudySpec, say: Callable[..., None]) -> tuple[str, Path | None] | None:
    """``run --new-study``: keep the existing study under another name, so the spec starts a new one.

    Nothing is deleted: a database study is copied to ``<name>.replaced-<time>`` in the same storage
    (then removed under its own name), the study's files move to ``replaced/<time>/`` in the output
    folder, and its MLflow study run is tagged with the new name. Returns that name, or None when
    there was no study to set aside.
    """
    import shutil

    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # hpsearch says what it set aside
    out = spec.out_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for count in range(2, 1000):  # twice in one second: never reuse a name, never overwrite what was set aside
        if not (out / "replaced" / stamp).exists():
            break
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{count}"
    aside = f"{spec.name}.replaced-{stamp}"
    if spec.search.storage:
        storage = make_storage(spec, say)
        if spec.name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            return None
        optuna.copy_study(from_study_name=spec.name, from_storage=storage, to_storage=storage, to_study_name=aside)
        optuna.delete_study(study_name=spec.name, storage=storage)
    elif not (out / "optuna.journal").is_file():
        return None
    folder = out / "replaced" / stamp
    for name in STUDY_FILES:
        if (out / name).exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(str(out / name), str(folder / name))
    Tracker.from_spec(spec, say).rename_study_run(spec, aside)
    say(f"study {spec.name!r} set aside as {aside!r}" + (f" (its files in {folder})" if folder.exists() else "") + "; starting a new one",
        event="set_aside", study=aside)
    return aside, folder if folder.exists() else None
