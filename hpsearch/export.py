"""The winner as a ready-to-serve Hugging Face folder, with a model card and machine-readable metadata.

The folder holds the weights, the config (with id2label/label2id) and the tokenizer, so
``transformers.pipeline(task, model=DIR)`` loads it offline; ``README.md`` is the model card and
``hpsearch.json`` the metadata that ``hpsearch predict`` reads.
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from hpsearch import __version__
from hpsearch.errors import HpsearchError
from hpsearch.numbers import score_figure
from hpsearch.progress import epoch_steps
from hpsearch.selection import counts_text, score_text
from hpsearch.space import applicable
from hpsearch.spec import StudySpec
from hpsearch.tasks import Task, get_task
from hpsearch.workers import own_name, remove_left_behind

METADATA = "hpsearch.json"


def spec_hash(spec: StudySpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def check_target(folder: Path, force: bool, run: bool = False) -> None:
    """Refuse to overwrite a non-empty folder that hpsearch did not write, unless forced. ``run``: said for `run`, which
    exports to ``export.dir`` and has no --out or --force (it checks before its search, not after)."""
    if folder.exists() and not folder.is_dir():
        fix = "set export.dir to a folder (or run with --no-export)" if run else "choose a folder with --out"
        raise HpsearchError(f"export target {folder} is a file; {fix}")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / METADATA).is_file() and not force:
        fix = "set export.dir to another folder, or move what is in it (or run with --no-export)" if run else "choose another --out or pass --force"
        raise HpsearchError(f"export target {folder} is not empty and was not written by hpsearch; {fix}")


def kept_export(spec: StudySpec, target: Path, report: dict[str, Any]) -> dict[str, Any] | None:
    """The selection of the run that exported ``target``, where that run ended with the same study file, trials and
    winner (settings and scores alike, so not a study deleted and run again) as ``report``: training the final model
    again would give the same weights, so the folder stays as it is. None otherwise, and where the folder lacks its
    weights."""
    from hpsearch.selection import same_selection
    from hpsearch.spec._files import no_weights

    try:
        meta = json.loads((target / METADATA).read_text(encoding="utf-8"))
        last = json.loads((spec.out_dir / "selection.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (meta.get("spec_hash") == spec_hash(spec) and meta.get("trial") == report["selected"]["trial"]
            and last.get("export_dir") == str(target) and same_selection(last, report))
    return last if same and no_weights(target) is None else None


def final_model(spec: StudySpec, tuner: Any, chosen: dict[str, Any], say: Callable[..., None]) -> tuple[Any, str]:
    """Refit on all training rows for the chosen epoch count (policy refit), or the best fold's model; and the policy
    that made it."""
    from hpsearch.finetune import load_fitted

    candidate = spec.candidate(chosen["model"])
    folder = spec.out_dir / "checkpoints" / f"trial-{chosen['trial']}"
    checkpointed = (folder / "config.json").is_file()
    if spec.final_policy == "best-fold" and (checkpointed or spec.export.policy is not None):
        if not checkpointed:
            raise HpsearchError(f"the best-fold checkpoint of trial {chosen['trial']} is missing from {folder.parent}; "
                                "use export.policy: refit, or run the study again")
        say(f"final model: best fold of trial {chosen['trial']} ({folder})", event="final_model", policy="best-fold", trial=chosen["trial"])
        return load_fitted(tuner, candidate, folder), "best-fold"
    if spec.final_policy == "best-fold":  # by default, for a trial that ran before checkpoints were kept for it
        say(f"final model: trial {chosen['trial']} kept no checkpoint (it ran under export.policy refit): refitting it instead",
            event="warning")
    started = time.perf_counter()
    say(f"final model: refit of trial {chosen['trial']} on all {len(tuner.data.train)} training rows for {chosen['best_epochs']} epoch(s)",
        event="final_model", policy="refit", trial=chosen["trial"])
    params = {**chosen["params"], "epochs": chosen["best_epochs"]}

    def on_epoch(record: Any) -> bool:  # a refit on large data takes as long as a trial's folds: it says how it goes
        speed = record.samples_per_second
        say(f"final model: epoch {record.epoch}/{params['epochs']} done (loss {record.train_loss:.4g}, {speed:.0f} samples/s)",
            event="refit_epoch", epoch=record.epoch, train_loss=record.train_loss, samples_per_second=speed)
        return False

    fitted = tuner.fit(candidate, params, train_rows=list(range(len(tuner.data.train))), eval_rows=[], seed=spec.seed,
                       on_epoch=on_epoch, on_step=epoch_steps(say, "final model"))
    seconds = time.perf_counter() - started
    from hpsearch.status import duration

    say(f"refit took {duration(seconds)}", event="refit_end", seconds=seconds)
    return fitted, "refit"


def write_export(spec: StudySpec, fitted: Any, report: dict[str, Any], table: list[dict[str, Any]], target: Path, force: bool,
                 task: Task | None = None) -> Path:
    """Write the folder atomically: a crash leaves the previous export (or nothing), never half a folder."""
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_left_behind(target.parent, f".{target.name}")  # what exports killed before their end left: each a whole model
    staging = Path(tempfile.mkdtemp(prefix=f"{own_name(f'.{target.name}')}.", dir=target.parent))
    try:
        fitted.save(staging)
        (task or get_task(spec.task).configured(spec)).finish_export(staging)
        (staging / METADATA).write_text(json.dumps(metadata(spec, report), indent=2, default=str), encoding="utf-8")
        (staging / "README.md").write_text(model_card(spec, report, table), encoding="utf-8")
        _put_in_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _put_in_place(staging: Path, target: Path, attempts: int = 5) -> None:
    """Move the finished ``staging`` folder to ``target``, the previous export out of the way first. Two runs of one
    study that finish together (two 'hpsearch run' in two shells) both export: when the other one's folder lands
    between the two moves, it is moved aside too and the move tried again, so the last to finish wins and neither fails."""
    for attempt in range(attempts):
        aside = target.with_name(f"{own_name(f'.{target.name}')}.old-{attempt}")
        try:
            target.rename(aside)
        except FileNotFoundError:
            aside = None
        try:
            staging.rename(target)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == attempts - 1:
                raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)


def metadata(spec: StudySpec, report: dict[str, Any]) -> dict[str, Any]:
    chosen = report["selected"]
    task = get_task(spec.task)
    return {
        "hpsearch_version": __version__,
        "study": spec.name,
        "spec_hash": spec_hash(spec),
        "task": spec.task,
        "pipeline_task": task.pipeline_task,
        "input_columns": task.input_columns(spec.data.columns),
        "task_settings": report.get("task_settings", {}),
        "labels": report.get("labels"),
        "max_length": report["max_length"],
        "metric": spec.metric,
        "trial": chosen["trial"],
        "model": chosen["model"],
        "params": chosen["params"],
        "best_epochs": chosen["best_epochs"],
        "policy": report["final_policy"],
        "cv": {"mean": chosen["mean_score"], "std": chosen["std_score"],
               **{k: v for k, v in report["cv_interval"].items() if k in ("low", "high", "confidence")}},
        "test_scores": report.get("test_scores"),
        "mlflow": report.get("mlflow", {}),
        "versions": {name: _version(name) for name in ("torch", "transformers", "optuna", "mlflow", "peft", "datasets")},
    }


def model_card(spec: StudySpec, report: dict[str, Any], table: list[dict[str, Any]]) -> str:
    from hpsearch.finish import findings

    chosen, ci = report["selected"], report["cv_interval"]
    train = spec.data.train.path.name if spec.data.train.path else spec.data.train.hub
    test = report.get("test_scores")
    lines = [
        f"# {spec.name}: {chosen['model']} fine-tuned for {spec.task}",
        "",
        f"Selected by hpsearch {__version__} (rule `{report['rule']}`) from the study's trials: {counts_text(report['trials'])}.",
        "",
        "## Data",
        "",
        f"- training data: `{train}`, {report.get('train_rows', '?')} rows; {get_task(spec.task).learns(report.get('labels') or [])}",
        *_test_data(spec, report.get("test_rows")),
        f"- scoring: {'the fixed validation split' if spec.one_split else f'{spec.cv.folds}-fold cross-validation'}, metric `{spec.metric}`",
        f"- candidates considered: {', '.join(m.name for m in spec.models)}",
        "",
        "## Selected configuration",
        "",
        f"- model: `{chosen['model']}` (trial {chosen['trial']}), {chosen['best_epochs']} epoch(s), "
        f"final model by `{report['final_policy']}`",
        *[f"- {k}: `{v}`" for k, v in applicable({**chosen["params"], "epochs": chosen["best_epochs"]}).items()],
        "",
        "## Scores",
        "",
        f"- {score_text(spec.metric, ci, chosen['std_score'], spec.one_split)}",
        *[f"- {sentence}" for _, sentence in findings(spec, report)],
        *([f"- every test metric: {', '.join(f'{k} {score_figure(v)}' for k, v in sorted(test.items()))}"] if test else ["- test: no test split was given"]),
        *[f"- warning: {w}" for w in report.get("warnings", [])],
        "",
        f"## Top trials ({'the validation split' if spec.one_split else 'cross-validation'})",
        "",
        "| rank | trial | model | mean | std | epochs |",
        "|---|---|---|---|---|---|",
        *[f"| {r['rank']} | {r['trial']} | {r['model']} | {score_figure(r['mean_score'])} | {score_figure(r['std_score'])} | {r['best_epochs']} |" for r in table[:5]],
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import pipeline",
        f"model = {get_task(spec.task).load_call('path/to/this/folder')}",
        "```",
        "",
        "or, for a file of inputs: `hpsearch predict path/to/this/folder --input data.csv --output predictions.csv`.",
        "",
    ]
    return "\n".join(lines)


def _test_data(spec: StudySpec, rows: int | None) -> list[str]:
    """The model card's line on the test data: a file, or the share held out of the training data."""
    if spec.data.holdout is not None:
        return [f"- test data: {rows} rows held out of the training data (`data.holdout: {spec.data.holdout:g}`), never seen by the search"]
    if spec.data.test is not None:
        name = spec.data.test.path.name if spec.data.test.path else spec.data.test.hub
        return [f"- test data: `{name}`, {rows} rows"]
    return []


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
