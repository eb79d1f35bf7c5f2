"""MLflow tracking: one experiment per study, a parent run for the study, a child run per trial.

With :mod:`hpsearch.trackingdb` (where the runs are kept), the only module that imports mlflow. It uses
``MlflowClient`` with explicit run ids and never the global active run, so any number of worker processes
(or machines) can log into the same parent run at once.

Per-fold results are fold-indexed metrics of the trial run (``fold1/val_macro_f1`` with step =
epoch, ``fold1_score``), not grandchild runs: the trial is the unit users compare, and MLflow's
compare view then shows one row per trial with its parameters, CV mean and std, while the fold
curves stay one click away in the same run.

Tracking never costs a study its results: where a call fails (a tracking server that went down, say), the
tracker says so once and stops logging, the study goes on, and the end of a later run (or of this one, where
the server is back by then) logs the trial runs MLflow is missing (:meth:`Tracker.catch_up`).
"""
from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hpsearch.errors import HpsearchError, cannot_write, exception_chain, first_line
from hpsearch.selection import REPEAT_ATTR, SPLIT_SE_ATTR, ended_state, spent
from hpsearch.spec import StudySpec
from hpsearch.trackingdb import check_reachable, experiment_name, quiet_logger, seed_database, tracking_uri, unreachable

ROLE, STUDY, TRIAL = "hpsearch.role", "hpsearch.study", "hpsearch.trial"
OBJECTIVE = "hpsearch.objective"
"""Tag of a study run: the digest of the objective its study was bound to when the run was made (hpsearch.binding)."""
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "INTERRUPTED": "KILLED"}
"""MLflow run status per trial state: a pruned trial ended as planned (its ``state`` tag says PRUNED), so it
does not get the failure mark; an interrupted one (Ctrl-C, a stop signal, a disk or storage it could not write to)
was stopped from outside, and its settings run again as a new trial."""


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:300].rstrip(".")


def _tolerant(method: Callable[..., Any]) -> Callable[..., Any]:
    """A tracking call that cannot fail the study: where it raises, the tracker stops (:meth:`Tracker.lose`) and the
    call returns None, as every later one does."""

    @functools.wraps(method)
    def call(self: "Tracker", *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever MLflow raised, the study's own results come first
            if self.lost is None:  # else a call inside this one stopped tracking, and said so
                self.lose(exc)
            return None

    return call


class NullTracker:
    """Tracking switched off: every call does nothing."""

    enabled = False
    lost: str | None = None
    """Why tracking stopped in this process (see ``Tracker.lose``); None while it works."""

    def study_run(self, spec: StudySpec, objective: str | None = None) -> str | None:
        return None

    def start_trial(self, parent: str | None, number: int, model: str, params: dict[str, Any], device: str, precision: str = "fp32") -> str | None:
        return None

    def log_epoch(self, run: str | None, fold: int, epoch: int, train_loss: float, metrics: dict[str, float], samples_per_second: float) -> None:
        pass

    def open_trial_run(self, parent: str | None, number: int) -> str | None:
        return None

    def end_trial(self, run: str | None, state: str, attrs: dict[str, Any]) -> None:
        pass

    def end_study(self, parent: str | None, status: str, files: Sequence[Path] = ()) -> None:
        pass

    def carried_trial(self, parent: str | None, number: int, state: str, attrs: dict[str, Any], came_from: str) -> str | None:
        return None

    def log_model(self, parent: str | None, folder: Path, task: str | None, registered_name: str) -> str | None:
        return None

    def rename_study_run(self, spec: StudySpec, new_name: str) -> None:
        pass

    def log_study_result(self, parent: str | None, metrics: dict[str, float], tags: dict[str, str]) -> None:
        pass

    def reconnect(self) -> bool:
        return False

    def catch_up(self, parent: str | None, trials: Sequence[Any]) -> list[int] | None:
        return None

    def trial_run(self, parent: str | None, number: int) -> str | None:
        return None


class Tracker(NullTracker):
    """Logs through one ``MlflowClient``; every method takes the run id it writes to. ``warn`` is told once, where a
    call fails and tracking stops."""

    enabled = True

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None, warn: Callable[[str], None] | None = None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from hpsearch.summary import redact

        self.uri, self.lost, self.server_down = uri, None, False
        self.warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr, flush=True))
        check_reachable(uri)
        seed_database(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
        except MlflowException as exc:  # a store MLflow will not open (its file store, an unknown scheme): not a write refused
            if cannot_write(exc) is not None:
                raise
            raise HpsearchError(f"tracking.uri {redact(uri)}: MLflow will not track there: {first_line(exc).rstrip('.')}. Set tracking.uri to a "
                                "database (sqlite:///path/to/mlflow.db) or an MLflow server (http://host:5000), leave it out for "
                                "the store in the output folder, or set tracking: {enabled: false}") from None
        if found is not None and found.lifecycle_stage == "deleted":  # MLflow would refuse every run in it
            raise HpsearchError(f"MLflow experiment {experiment!r} was deleted (it is in MLflow's trash, id {found.experiment_id}): "
                                f"restore it (MLFLOW_TRACKING_URI={redact(uri)} mlflow experiments restore --experiment-id "
                                f"{found.experiment_id}), or set tracking.experiment to another name")
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            except MlflowException:  # another worker created it first
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id

    @classmethod
    def from_spec(cls, spec: StudySpec, say: Callable[..., None] | None = None) -> NullTracker:
        """The study's tracker; ``say`` (a progress callback) hears that tracking stopped, if it does."""
        if not spec.tracking.enabled:
            return NullTracker()
        artifacts = None if spec.tracking.uri else (spec.out_dir / "mlartifacts").as_uri()
        warn = None if say is None else (lambda message: say(f"warning: {message}", event="tracking_lost", reason=message))
        return cls(tracking_uri(spec), experiment_name(spec), artifacts, warn)

    def lose(self, exc: BaseException) -> None:
        """Stop tracking in this process after ``exc``, and say so once: why, and how the runs it misses get logged."""
        from hpsearch.summary import redact

        down = unreachable(self.uri)
        self.server_down = down is not None
        if down is not None:
            self.lost = f"cannot reach the MLflow server at {redact(self.uri)} ({down})"
        else:
            self.lost = f"{type(exc).__name__} from MLflow: {_first_line(exc)}"
            root = list(exception_chain(exc))[-1]  # what it was raised from (or while handling), at the bottom
            if root is not exc and _first_line(root) not in self.lost:  # MLflow wraps the store's error: name what went wrong
                self.lost += f" (caused by {type(root).__name__}: {_first_line(root)})"
        self.warn(f"MLflow tracking stopped: {self.lost}. The study goes on without it and keeps every result; run the same "
                  "command again once tracking works: it logs the trial runs MLflow is missing (the epochs not logged stay missing)")

    def reconnect(self) -> bool:
        """Whether tracking works (again): where it stopped for a server that could not be reached and answers now, it
        starts again (where MLflow refused a call, it would refuse it again)."""
        if self.lost is not None and self.server_down and unreachable(self.uri) is None:
            self.lost = None
        return self.lost is None

    @_tolerant
    def study_run(self, spec: StudySpec, objective: str | None = None) -> str:
        """The study's parent run: found again on resume, so a study never gets two.

        Workers starting at the same moment may each create one; all of them then keep the oldest
        and the others delete their own, so every worker ends up logging under the same parent.
        ``objective`` (:func:`hpsearch.binding.objective_digest`) tags the run. A run tagged with another
        one was logged before its study took new settings (possible only while no trial was scored): its
        parameters and resolved spec no longer describe the study, so it is kept under another name and
        the study gets a new run.
        """
        existing = self._study_runs(spec)
        if existing and objective is not None and existing[0].data.tags.get(OBJECTIVE, objective) != objective:
            self.rename_study_run(spec, f"{spec.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}")
            existing = []
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {ROLE: "study", STUDY: spec.name, "task": spec.task, **({OBJECTIVE: objective} if objective else {})}
        mine = self.client.create_run(self.experiment_id, run_name=spec.name, tags=tags).info.run_id
        chosen = self._study_runs(spec)[0].info.run_id
        if chosen != mine:
            self.client.delete_run(mine)
            return chosen
        self._log_spec(mine, spec)
        return mine

    @_tolerant
    def log_study_result(self, parent: str | None, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """The winner's figures on the study run, so the experiment table compares studies at a glance."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],  # type: ignore[arg-type]
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_tolerant
    def rename_study_run(self, spec: StudySpec, new_name: str) -> None:
        """The study's parent run, kept under the name of a study set aside (so a new study gets its own)."""
        for run in self._study_runs(spec):
            self.client.set_tag(run.info.run_id, STUDY, new_name)
            self.client.update_run(run.info.run_id, name=new_name)

    def _study_runs(self, spec: StudySpec) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{spec.name}'",
            order_by=["attributes.start_time ASC"], max_results=10,
        )

    def _log_spec(self, run_id: str, spec: StudySpec) -> None:
        import yaml

        from hpsearch.summary import redact

        resolved = spec.model_dump(mode="json")
        for section, key in (("search", "storage"), ("tracking", "uri")):
            if resolved[section][key]:
                resolved[section][key] = redact(resolved[section][key])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "study.resolved.yaml"
            path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
            self.client.log_artifact(run_id, str(path))
        self.client.log_batch(run_id, params=_params({"metric": spec.metric, "direction": spec.direction, "folds": spec.cv.folds,
                                                      "n_trials": spec.search.n_trials or "until timeout", "sampler": spec.search.sampler.name,
                                                      "pruner": spec.search.pruner.name, "candidates": ",".join(m.name for m in spec.models)}))

    @_tolerant
    def start_trial(self, parent: str | None, number: int, model: str, params: dict[str, Any], device: str, precision: str = "fp32") -> str:
        tags = {ROLE: "trial", TRIAL: str(number), "device": device, "precision": precision, "state": "RUNNING"}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}", tags=tags)
        self.client.log_batch(run.info.run_id, params=_params({"model": model, **params}))
        return run.info.run_id

    @_tolerant
    def open_trial_run(self, parent: str | None, number: int) -> str | None:
        """The run still open for trial ``number``: a worker killed between starting it and recording its id
        in the study leaves one that only its tags lead to."""
        return self._trial_run(parent, number, " and attributes.status = 'RUNNING'")

    @_tolerant
    def trial_run(self, parent: str | None, number: int) -> str | None:
        """The run of trial ``number`` (one that :meth:`catch_up` logged has no id in the trial)."""
        return self._trial_run(parent, number)

    def _trial_run(self, parent: str | None, number: int, condition: str = "") -> str | None:
        query = f"tags.`{ROLE}` = 'trial' and tags.`{TRIAL}` = '{number}'" + condition
        if parent:
            query += f" and tags.`mlflow.parentRunId` = '{parent}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    @_tolerant
    def catch_up(self, parent: str | None, trials: Sequence[Any]) -> list[int]:
        """Log the finished ``trials`` (Optuna's) whose run MLflow lacks or holds still open, as tracking stopped in
        their worker: each one's settings, final figures and state (the epochs logged before it stopped stay,
        the others are missing). Trials that repeat another one's settings have no run of their own, and get none.
        Returns the numbers of the trials logged."""
        query = f"tags.`{ROLE}` = 'trial'" + (f" and tags.`mlflow.parentRunId` = '{parent}'" if parent else "")
        runs: dict[int, Any] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1000, page_token=token)
            runs.update((int(run.data.tags[TRIAL]), run) for run in page if run.data.tags.get(TRIAL, "").isdigit())
            token = page.token
            if not token:
                break
        logged = []
        for trial in trials:
            attrs = trial.user_attrs
            if ended_state(trial) not in STATUS or "model" not in attrs or REPEAT_ATTR in attrs:
                continue
            found = runs.get(trial.number)
            if found is not None and found.info.status != "RUNNING":
                continue
            run = found.info.run_id if found is not None else self.start_trial(
                parent, trial.number, attrs["model"], attrs.get("params", {}), attrs.get("device", "?"), attrs.get("precision", "?"))
            self.end_trial(run, ended_state(trial), dict(attrs))
            if self.lost is not None:
                break
            logged.append(trial.number)
        return logged

    @_tolerant
    def log_epoch(self, run: str | None, fold: int, epoch: int, train_loss: float, metrics: dict[str, float], samples_per_second: float) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {f"fold{fold}/train_loss": train_loss, f"fold{fold}/samples_per_second": samples_per_second}
        values.update({f"fold{fold}/val_{name}": value for name, value in metrics.items()})
        self.client.log_batch(run, metrics=[Metric(k, float(v), now, epoch) for k, v in values.items()])  # type: ignore[arg-type]

    @_tolerant
    def end_trial(self, run: str | None, state: str, attrs: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        attrs = {**attrs, **spent(state, attrs)}  # a run stopped inside a fold counts that fold's finished epochs too
        numbers = {k: attrs[k] for k in ("cv_mean", "cv_std", "best_epochs", "train_seconds", "samples_per_second",
                                         "total_parameters", "trainable_parameters", "objective_latency", "objective_params", "train_samples",
                                         "device_seconds", "flops", "peak_memory_mb", SPLIT_SE_ATTR) if isinstance(attrs.get(k), (int, float))}
        numbers.update({f"fold{k + 1}_score": s for k, s in enumerate(attrs.get("fold_scores") or [])})
        tags = [RunTag("state", state)]
        if attrs.get("failure_reason"):
            tags.append(RunTag("failure_reason", str(attrs["failure_reason"])[:5000]))
        self.client.log_batch(run, metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items()], tags=tags)  # type: ignore[arg-type]
        self.client.set_terminated(run, status=STATUS.get(state, "FAILED"))  # type: ignore[arg-type]

    @_tolerant
    def carried_trial(self, parent: str | None, number: int, state: str, attrs: dict[str, Any], came_from: str) -> str:
        """A run for a trial that ``run --new-study --keep-trials`` took over, under the new study's run beside its new
        trials: the trial's settings and final figures, tagged with where it came from (its epoch curves stay in the
        run it had there)."""
        run = self.start_trial(parent, number, attrs["model"], attrs["params"], attrs.get("device", "?"), attrs.get("precision", "?"))
        self.client.set_tag(run, "carried_from", came_from)
        self.end_trial(run, state, attrs)
        return run

    @_tolerant
    def end_study(self, parent: str | None, status: str, files: Sequence[Path] = ()) -> None:
        for path in files:
            if path.is_file():
                self.client.log_artifact(parent, str(path), artifact_path="selection")  # type: ignore[arg-type]
        self.client.set_terminated(parent, status=status)  # type: ignore[arg-type]

    @_tolerant
    def log_model(self, parent: str | None, folder: Path, task: str | None, registered_name: str) -> str | None:
        """Log the exported folder and register a new version: with MLflow's transformers flavour as a ``task``
        pipeline, or (``task`` None: a pipeline MLflow cannot rebuild) as the folder itself."""
        import mlflow.transformers
        from mlflow.entities import LoggedModelOutput
        from mlflow.exceptions import MlflowException
        from transformers import pipeline

        from hpsearch import __version__

        with tempfile.TemporaryDirectory() as tmp:
            flavour_dir = Path(tmp) / "model"
            # Explicit requirements: inferring them imports optional packages that may be absent or broken.
            requirements = [f"transformers=={_version('transformers')}", f"torch=={_version('torch').split('+')[0]}", f"hpsearch=={__version__}"]
            if task is None:
                shutil.copytree(folder, flavour_dir)
            else:
                with quiet_logger("mlflow.transformers"):  # warns that a local folder has no hub model card
                    mlflow.transformers.save_model(pipeline(task, model=str(folder), tokenizer=str(folder)), str(flavour_dir), pip_requirements=requirements)
            # A logged model of the study run (MLflow 3's model entity: listed under the run's "Logged models"),
            # written through the client with explicit ids like everything else here.
            logged = self.client.create_logged_model(self.experiment_id, name="model", source_run_id=parent,
                                                     model_type="transformers" if task is not None else "hpsearch-export",
                                                     tags={ROLE: "final-model", STUDY: registered_name})
            try:
                self.client.log_model_artifacts(logged.model_id, str(flavour_dir))
            except BaseException:
                self.client.finalize_logged_model(logged.model_id, "FAILED")
                raise
            self.client.finalize_logged_model(logged.model_id, "READY")
            self.client.log_outputs(parent, [LoggedModelOutput(logged.model_id, 0)])  # type: ignore[arg-type] - the run's "Logged models"
        try:
            self.client.create_registered_model(registered_name)
        except MlflowException:
            pass  # already registered: add a version
        # The artifact location, not "models:/<id>": MLflow's database registry resolves a models:/ source
        # through the process-wide tracking URI, not this client's (it would open ./mlflow.db).
        version = self.client.create_model_version(registered_name, logged.artifact_location, run_id=parent, model_id=logged.model_id)
        return str(version.version)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _params(values: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in values.items()]
