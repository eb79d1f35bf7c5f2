"""The study spec: what to search, on which data, how to score it and where results go."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, create_model, field_validator, model_validator

from hpsearch.architectures import ARCHITECTURES
from hpsearch.numbers import score_figure
from hpsearch.spec._base import OutputPath, ResolvedPath, SpecModel
from hpsearch.spec._files import csv_delimiter
from hpsearch.spec._space import Param, ParamName, SearchSpace, check_domain, value_problem
from hpsearch.tasks import TASKS, metric_direction

TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class DataSource(SpecModel):
    """Where one split comes from: a local file or folder (``path``) or a hub dataset (``hub``).

    A plain string is shorthand for ``{path: ...}``.
    """

    path: ResolvedPath | None = Field(None, description="csv, json, jsonl or parquet file, or a datasets save_to_disk folder.")
    hub: str | None = Field(None, description="Dataset name on the Hugging Face hub (needs network access).")
    config: str | None = Field(None, description="Hub dataset configuration name.")
    split: str = Field("train", description="Split of a hub dataset or of a saved DatasetDict.")
    format: Literal["csv", "json", "jsonl", "parquet", "disk"] | None = Field(
        None, description="File format; null infers it from the file suffix (a folder means 'disk')."
    )
    delimiter: str | None = Field(
        None, min_length=1, max_length=1,
        description="Field separator of a csv file, e.g. ';' (spreadsheets in many locales write it); null: a comma, a tab for .tsv.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (a local file or folder) or 'hub' (a hub dataset name)")
        if self.delimiter is not None and (self.path is None or csv_delimiter(self.path, self.format, None) is None):
            raise ValueError("'delimiter' applies to csv files only; remove it, or set format: csv")
        return self


def _task_columns() -> dict[str, Any]:
    """Every task's ``data.columns`` fields (each task declares its own, see ``hpsearch.tasks``)."""
    fields: dict[str, Any] = {}
    for task in TASKS.values():
        for name, (default, description) in task.columns.items():
            fields.setdefault(name, (str if default is not None else Optional[str], Field(default, description=description)))
    return fields


Columns = create_model("Columns", __base__=SpecModel, __doc__="Which columns of the data hold what.", **_task_columns())


class Subsample(SpecModel):
    """Deterministic random subsample of each split, for quick runs. Null keeps every row."""

    train: int | None = Field(None, ge=1, description="Rows kept from the training data.")
    validation: int | None = Field(None, ge=1, description="Rows kept from the validation data.")
    test: int | None = Field(None, ge=1, description="Rows kept from the test data.")
    seed: int = Field(0, description="Seed of the subsample (independent of the study seed).")


class _DataSpec(SpecModel):
    """The labelled data."""

    train: DataSource = Field(description="Training data; cross-validation folds are cut from it.")
    validation: DataSource | None = Field(
        None, description="Optional fixed validation split; when given, trials are scored on it instead of k-fold CV."
    )
    test: DataSource | None = Field(None, description="Optional held-out test data, evaluated once on the final model (in fp32, as pipeline() serves the export).")
    holdout: float | None = Field(
        None, gt=0, le=0.5, description="Without data.test: the share of the training rows (after their subsample) kept out "
        "of the search as the test split, cut as the CV folds are (stratified, groups whole, cv.seed): one fold of "
        "round(1/holdout), so 0.2 keeps out one row in 5. Null: no test split unless data.test is given."
    )
    columns: Columns = Field(default_factory=Columns, description="Column mapping.")
    labels: list[str] | None = Field(
        None, description="Label list in a fixed order; null takes the sorted labels found in the training data."
    )
    max_length: int = Field(128, ge=8, le=8192, description=("Longest tokenized input; longer inputs are truncated. A model with "
                                                                "fewer positions (BERT: 512) is given at most what it takes."))
    subsample: Subsample = Field(default_factory=Subsample, description="Optional subsample for quick runs.")

    @property
    def holdout_folds(self) -> int | None:
        """The test split ``holdout`` asks for, as one fold of this many (None without a holdout)."""
        return None if self.holdout is None else max(2, round(1 / self.holdout))


DataSpec = create_model(
    "DataSpec", __base__=_DataSpec, __doc__=_DataSpec.__doc__,
    **{name: setting for task in TASKS.values() for name, setting in task.settings.items()},
)
"""The labelled data, with the settings each task adds (see ``hpsearch.tasks``)."""


class Candidate(SpecModel):
    """A pretrained model to consider. Give exactly one of ``hub``, ``path`` or ``package``."""

    name: str = Field(pattern=NAME_PATTERN, description="Short unique name used in results.")
    hub: str | None = Field(None, description="Hugging Face hub id, e.g. 'bert-base-uncased'.")
    path: ResolvedPath | None = Field(None, description="Local folder written by save_pretrained.")
    package: str | None = Field(None, description="Installed Python package that ships the model folder.")
    package_path: str = Field("", description="Folder of the model inside 'package' (relative).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    num_layers: int | None = Field(None, ge=1, description="Keep only the first K encoder layers; null keeps all.")
    trust_remote_code: bool = Field(False, description="Allow code shipped with the model to run. Off by default.")
    lora_targets: list[str] | None = Field(
        None, description="Module names that get LoRA adapters (scope 'lora'); null: the attention projections hpsearch "
        f"knows for the model's family (config model_type {', '.join(ARCHITECTURES)}), or else peft's defaults for it."
    )
    space: dict[ParamName, Param] = Field(
        default_factory=dict, description="Overrides of the search space for this candidate only."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Candidate:
        given = [k for k in ("hub", "path", "package") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one source ('hub', 'path' or 'package'), but got {given or 'none'}"
            )
        return self

    @field_validator("space")
    @classmethod
    def _check_domains(cls, space: dict[str, Any]) -> dict[str, Any]:
        problems = [p for name, param in space.items() if (p := check_domain(name, param))]
        if problems:
            raise ValueError("; ".join(problems))
        return space


class CVSpec(SpecModel):
    """k-fold cross-validation on the training data; every trial sees the same folds."""

    folds: int = Field(5, ge=2, le=100, description="Number of folds (at least 2).")
    stratify: bool | None = Field(None, description="Keep label proportions per fold; null: on for classification.")
    group_column: str | None = Field(None, description="Rows sharing this column's value stay in one fold.")
    shuffle: bool = Field(True, description="Shuffle before cutting folds.")
    seed: int | None = Field(None, description="Seed of the fold assignment; null uses the study seed.")


class SamplerSpec(SpecModel):
    """Which Optuna sampler proposes the next trial."""

    name: Literal["tpe", "random", "grid", "cmaes", "gp", "nsga2"] = Field("tpe", description=(
        "Optuna sampler. tpe and gp (one objective) see the trials that learned nothing (score not clearly above the "
        "trivial baseline, or validation loss no lower than predicting the target distribution) as one level at the "
        "baseline's score, ordered by validation loss; stored scores are unchanged."))
    seed: int | None = Field(None, description="Sampler seed; null uses the study seed.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the sampler.")


class PrunerSpec(SpecModel):
    """Which Optuna pruner stops unpromising trials early."""

    name: Literal["none", "median", "percentile", "successive-halving", "hyperband", "wilcoxon"] = Field(
        "median", description="Optuna pruner. 'successive-halving' decides at rungs (epoch 1 of fold 1, then each fold's "
        "end) and keeps the top 1/reduction_factor (default 3, rounded up) of the trials at each, a trial that has not learned (score "
        "no better than the trivial baseline's, or loss no lower than the target distribution's) counting at the baseline, "
        "ordered by loss, and stopped at a fold's end unless it is the first there; each of the first reduction_factor trials "
        "that learned by a rung passes it: the pruner for a time budget. "
        "Options: reduction_factor, min_early_stopping_rate (how many of the first rungs stop no one)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the pruner.")


class SearchSpec(SpecModel):
    """How candidates are sampled, scored and stopped."""

    n_trials: int | None = Field(
        20, ge=1, description="Trials to finish in total (over all workers and restarts); null: as many as search.timeout "
        "allows (the budget is then time, not a trial count). A space without a continuous parameter ends sooner once each "
        "of its configurations has been tried; a trial that draws a completed trial's settings takes its score without "
        "training and does not count."
    )
    timeout: float | None = Field(
        None, gt=0, description="Stop starting new trials after this many seconds of this run (trials running then finish)."
    )
    metric: str | None = Field(None, description="Validation metric to optimise; null uses the task's default.")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="Null: the metric's natural direction.")
    second_objective: Literal["latency", "params"] | None = Field(
        None, description="Optional second objective (minimised): inference latency or parameter count."
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="Optuna sampler and its seed.")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec, description="Optuna pruner that stops bad trials early.")
    storage: str | None = Field(None, description="Optuna storage URL; null: an embedded store in the output folder.")
    storage_patience: float = Field(
        300, ge=0, description="Seconds a worker keeps retrying a storage database that cannot be reached "
        "(waits of 1 s doubling up to 30 s) before it stops; finished trials stay safe either way. Other workers give "
        "a silent trial up only after this plus a minute."
    )
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="Settings tried first (e.g. known-good defaults), by parameter name; an entry "
        "whose settings a trial of the study already has (a repeated entry, say) is not run again."
    )

    @model_validator(mode="after")
    def _some_budget(self) -> SearchSpec:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("n_trials: null needs a time budget: set search.timeout (seconds), or give n_trials a number")
        return self

    @property
    def trial_limit(self) -> float:
        """The trial count the study stops at (infinite when the timeout alone is the budget)."""
        return float("inf") if self.n_trials is None else self.n_trials

    @property
    def budget_text(self) -> str:
        """'20 trials', or 'trials for 600 s' when the timeout is the budget."""
        if self.n_trials is None:
            return f"trials for {self.timeout:g} s"
        return f"{self.n_trials} trial{'s' if self.n_trials != 1 else ''}"

    def done_text(self, done: int) -> str:
        """'3 of 20 trials', or '3 trials (budget 600 s)' when the timeout is the budget."""
        return f"{done} of {self.n_trials} trials" if self.n_trials is not None else f"{done} trials (budget {self.timeout:g} s)"


class ExecutionSpec(SpecModel):
    """Where trials run."""

    devices: Union[Literal["auto", "cpu"], list[int]] = Field(
        "auto", description="'auto' (every visible GPU, else CPU), 'cpu', or a list of GPU ids."
    )
    workers_per_device: int = Field(1, ge=1, le=64, description="Worker processes per device.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Autocast: 'auto' is bf16 on CUDA where supported (else fp16), and bf16 on a CPU with native "
        "bf16 (avx512_bf16 or AMX; about 1.4x faster there, equal scores, regression included), fp32 on other CPUs. "
        "'run' says which it chose. 'bf16' by name on a CPU "
        "without native bf16 is emulated, many times slower than fp32: kept, with a warning."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per worker; null: the machine's cores divided by the hpsearch workers "
        "running on it (started by 'run' or by hand), at least 1, looked at again before every trial and about once a "
        "second while a trial runs."
    )
    memory_retries: int = Field(
        1, ge=0, le=6, description="Times a fold that runs out of memory is retried with half the batch and twice "
        "the gradient accumulation (same effective batch); 0: the trial fails at once."
    )


class TrackingSpec(SpecModel):
    """MLflow tracking of the study, its trials and folds."""

    enabled: bool = Field(True, description="Log the study to MLflow.")
    uri: str | None = Field(None, description="MLflow tracking URI: a server (http://host:5000) or a database (sqlite:///path/mlflow.db; MLflow refuses a folder); null: an embedded store in the output folder.")
    experiment: str | None = Field(None, description="Experiment name; null uses the study name.")


class SelectionSpec(SpecModel):
    """How the winner is picked from the cross-validation table."""

    rule: Literal["best", "one-standard-error"] = Field("best", description="How the winner is chosen from the CV table.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the reported intervals.")
    cost: Literal["parameters", "latency", "train_time"] = Field(
        "parameters", description="What 'one-standard-error' takes the cheapest of: total parameters, inference latency "
        "(measured only with search.second_objective: latency) or training time."
    )


class ExportSpec(SpecModel):
    """Where and how the winning model is written."""

    enabled: bool = Field(True, description="Export the winner at the end of 'run'.")
    dir: OutputPath | None = Field(None, description="Export folder; null: 'model' inside the output folder.")
    policy: Literal["refit", "best-fold"] | None = Field(
        None, description="'refit' retrains on all training data; 'best-fold' keeps the best fold's model; null: best-fold with "
                          "data.validation (its one fold trained on every training row: the model that was validated), else refit."
    )
    keep_top_k: int = Field(3, ge=1, description="Trials whose checkpoints are kept on disk during the search.")


class StudySpec(SpecModel):
    """A complete study. Load one with :func:`hpsearch.spec.load_spec`."""

    name: str = Field(pattern=NAME_PATTERN, description="Study name (letters, digits, '.', '_', '-').")
    output_dir: OutputPath | None = Field(None, description="Where results go; null: 'runs/<name>' beside the study file.")
    seed: int = Field(0, description="Seed of everything that is not set separately.")
    task: TaskName = Field(description=f"The task to fine-tune for: {', '.join(TASKS)}.")
    data: DataSpec = Field(description="The labelled data and how to read it.")
    models: list[Candidate] = Field(min_length=1, description="Candidate pretrained models.")
    space: SearchSpace = Field(default_factory=SearchSpace, description="Hyperparameters searched for every candidate.")
    cv: CVSpec = Field(default_factory=CVSpec, description="Cross-validation folds.")
    search: SearchSpec = Field(default_factory=SearchSpec, description="Trials, objective, sampler, pruner, storage.")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description="Devices and worker processes.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec, description="How the winner is chosen.")
    export: ExportSpec = Field(default_factory=ExportSpec, description="Export of the winning model.")

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[Candidate]) -> list[Candidate]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"candidate names must be unique, but {dupes} appear more than once; rename them")
        return models

    @model_validator(mode="after")
    def _task_consistency(self) -> StudySpec:
        info = TASKS[self.task]
        problems: list[str] = []
        problems.extend(info.spec_problems(self))
        for other in TASKS.values():
            for name, (_, field) in other.settings.items():
                if name not in info.settings and getattr(self.data, name) != field.default:
                    problems.append(f"data.{name} applies to task {other.name} only, not to {self.task}; remove it")
        if self.search.metric == "loss":
            problems.append(
                f"search.metric 'loss' is not a score to select by: the winner is picked, compared with the trivial baseline and "
                f"tested on a score of task {self.task}, and every epoch's validation loss is logged beside it (fold<k>/val_loss "
                f"in MLflow); choose one of {list(info.metrics)}")
        elif self.search.metric is not None and self.search.metric not in info.metrics:
            problems.append(
                f"search.metric {self.search.metric!r} is not reported for task {self.task}; "
                f"choose one of {list(info.metrics)}"
            )
        if self.data.holdout is not None and self.data.test is not None:
            problems.append("data.holdout keeps test rows out of the training data, but data.test is given too; remove one of them")
        if self.data.holdout is not None and self.data.subsample.test is not None:
            problems.append("data.subsample.test applies to a data.test file; the rows data.holdout keeps out follow "
                            "data.subsample.train: remove data.subsample.test")
        if self.cv.stratify and not info.stratifies:
            problems.append(f"cv.stratify needs one class label per row, which task {self.task} does not have (its folds are cut "
                            "without stratification); remove cv.stratify")
        if self.selection.cost == "latency" and self.search.second_objective != "latency":
            problems.append("selection.cost latency needs search.second_objective: latency (latency is measured only then); "
                            "set it, or use cost parameters or train_time")
        if self.search.sampler.name == "grid":
            from hpsearch.space import grid_problems

            problems.extend(grid_problems(self))
        if self.search.sampler.name == "nsga2" and self.search.second_objective is None:
            problems.append("search.sampler nsga2 is for two objectives: set search.second_objective (latency or params)")
        known = set(SearchSpace.model_fields) | {"model"}
        for i, settings in enumerate(self.search.enqueue):
            unknown = sorted(set(settings) - known)
            if unknown:
                problems.append(f"search.enqueue[{i}] has unknown keys {unknown}; use 'model' and names from 'space'")
            if "model" in settings and settings["model"] not in {m.name for m in self.models}:
                problems.append(f"search.enqueue[{i}].model {settings['model']!r} is not a candidate name")
                continue
            space = self.space_for(self.candidate(settings.get("model", self.models[0].name)))
            for name in sorted(set(settings) & set(space)):
                problem = value_problem(name, space[name], settings[name])
                if problem is not None:
                    problems.append(f"search.enqueue[{i}].{name}: {problem}")
        if problems:  # one per line: the loader reports each at the line of the field it names
            raise ValueError("\n".join(problems))
        return self

    # Derived settings: one place decides each default so every module agrees.
    @property
    def metric(self) -> str:
        return self.search.metric or TASKS[self.task].default_metric

    @property
    def direction(self) -> str:
        return self.search.direction or metric_direction(self.metric)

    @property
    def one_split(self) -> bool:
        """Trials are scored on one fixed validation split (data.validation), not k folds: no interval across folds (see
        ``selection.RowEvidence`` for the bootstrap over its rows instead)."""
        return self.data.validation is not None

    @property
    def scored_on(self) -> str:
        """What a trial's score is, in one word: 'validation' (one fixed split) or 'CV'."""
        return "validation" if self.one_split else "CV"

    @property
    def final_policy(self) -> str:
        """How the final model is made (``export.policy``, else best-fold on one validation split, refit with k folds)."""
        return self.export.policy or ("best-fold" if self.one_split else "refit")

    def trial_score_text(self, mean: float, std: float) -> str:
        """A trial's score as progress and status show it: mean ± std over the folds; on one split, the score alone."""
        return score_figure(mean) if self.one_split else f"{score_figure(mean)} ± {score_figure(std)}"

    @property
    def stratify(self) -> bool:
        return TASKS[self.task].has_label_list if self.cv.stratify is None else self.cv.stratify

    @property
    def cv_seed(self) -> int:
        return self.seed if self.cv.seed is None else self.cv.seed

    @property
    def sampler_seed(self) -> int:
        return self.seed if self.search.sampler.seed is None else self.search.sampler.seed

    @property
    def out_dir(self) -> Path:
        assert self.output_dir is not None, "load_spec always sets output_dir"
        return self.output_dir

    @property
    def export_dir(self) -> Path:
        return self.export.dir or self.out_dir / "model"

    def space_for(self, candidate: Candidate) -> dict[str, Any]:
        """The search space of one candidate: the study's space with its overrides applied."""
        return {**self.space.as_dict(), **candidate.space}

    def scopes_of(self, candidate: Candidate) -> list[str]:
        """The scopes ('full', 'lora', 'freeze-2', ...) that ``candidate``'s trials can draw, each once, in the space's order."""
        return list(dict.fromkeys(str(s) for s in self.space_for(candidate)["scope"].values_hint()))

    def candidate(self, name: str) -> Candidate:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)
