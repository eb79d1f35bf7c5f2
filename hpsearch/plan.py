"""``hpsearch plan``: what a study will cost, before it runs.

For each candidate and each training scope it can draw, a short calibration on the study's device
(one epoch over a few batches of the study's own tokenized rows, then an evaluation pass) measures
seconds per training and per validation example, the one-off cost of loading the model and of the
frozen-layer cache, and peak memory. From those the plan estimates seconds per epoch, per fold and per
trial, and the study's total with and without pruning. The tokenized data and frozen-layer outputs it
computes stay in the study's cache, so ``run`` reuses them.

The arithmetic (:func:`estimate`) is pure and tested on hand-made numbers.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hpsearch.errors import HpsearchError
from hpsearch.spec import CategoricalParam, FixedParam, FloatParam, IntParam, StudySpec

PRUNED_SHARE = {"median": 0.5, "wilcoxon": 0.5, "hyperband": 2 / 3, "none": 0.0}
"""Share of the trials after the pruner's start-up that the plan assumes pruned: the median pruner stops
those below the running median (about half); Hyperband keeps about a third; the percentile pruner keeps
its ``percentile`` (see :func:`pruned_share`). Successive halving has its own arithmetic (:mod:`hpsearch.rungs`)."""


def pruned_share(spec: StudySpec) -> float:
    pruner = spec.search.pruner
    if pruner.name == "percentile":
        return 1 - float(pruner.options.get("percentile", 25.0)) / 100
    return PRUNED_SHARE[pruner.name]


def pruning(spec: StudySpec, folds: int, epochs: float) -> tuple[int, float, str]:
    """(trials the pruner never stops, share of a complete trial's work that each later trial costs on
    average, the assumption in words with ``{later}`` for the number of later trials); ``epochs``: a
    typical trial's epoch count."""
    from hpsearch.rungs import REDUCTION_FACTOR, expected_work

    pruner = spec.search.pruner
    if pruner.name == "none" or spec.search.second_objective is not None or folds * epochs <= 1:
        return 0, 1.0, "no trial is pruned"
    if pruner.name == "successive-halving":
        factor = int(pruner.options.get("reduction_factor", REDUCTION_FACTOR))
        work = expected_work(folds, epochs, factor)
        # The first `factor` trials that learn pass every rung (hpsearch.rungs): counted as the first `factor` trials.
        return factor, work, (f"successive halving keeps 1/{factor} of the trials at each rung (epoch 1 of fold 1, then each fold's "
                              f"end) after the first {factor}, which run in full: each of the {{later}} later trials costs {work:.0%} "
                              f"of a complete trial on average; trials that learn pass more often than that")
    startup = int(pruner.options.get("n_startup_trials", 5))
    share = pruned_share(spec)
    # Trials report every epoch and the CV score so far after each fold: a pruned trial stops within its first fold.
    first = 1 / folds if folds > 1 else 1 / max(2.0, epochs)
    return startup, (1 - share) + share * first, (f"{share:.0%} of the {{later}} trials after the pruner's start-up of {startup} are pruned, "
                                                  f"each within its first fold ({first:.0%} of a trial's work)")


@dataclass(frozen=True)
class Calibration:
    """What one candidate with one scope cost per example on this device."""

    model: str
    scope: str
    train_seconds_per_example: float
    eval_seconds_per_example: float
    setup_seconds: float
    """Per fit: loading the model (and, the first time only, building the frozen-layer cache: see ``once_seconds``)."""
    once_seconds: float
    peak_memory_mb: float


@dataclass(frozen=True)
class Layout:
    """Where the study's trials run (:func:`hpsearch.workers.plan_slots`): ``devices`` GPUs, or one CPU machine, with
    ``per_device`` workers each; ``memory_mb``: one device's memory (a GPU's, or the machine's), None where unknown.

    Trials on different GPUs run side by side, each at its GPU's full speed. Workers that share a device share its speed:
    on the CPU they split its cores, and two one-thread workers were as fast as one two-thread worker (1.02x,
    benchmarks/README.md); on a GPU they fill its idle time, up to 1.4x the trials per hour measured for a small model,
    and less the more a trial fills the GPU. The plan counts no gain from sharing a device, so its time is an upper
    bound where workers share a GPU."""

    devices: int = 1
    per_device: int = 1
    kind: str = "cpu"
    memory_mb: float | None = None
    cores: int | None = None
    """The CPU cores this process may use (None: not known)."""

    def describe(self) -> str | None:
        """The layout in words, where it is not one worker on one device."""
        if self.kind == "cpu":
            if self.per_device == 1:
                return None
            if self.cores is not None and self.per_device > self.cores:
                return f"{self.per_device} workers share this machine's {self.cores} core(s): more workers than cores, so they take turns"
            return (f"{self.per_device} workers share this machine's cores, together as fast as one worker with all of them "
                    "(measured: 1.02x)")
        said = f"trials run on {self.devices} GPU(s) side by side" if self.devices > 1 else None
        if self.per_device > 1:
            shared = (f"{self.per_device} workers share each GPU: counted as fast as one (sharing added up to 1.4x for a small "
                      "model, measured), so the study may end sooner")
            said = f"{said}; {shared}" if said else shared
        return said


def typical(param: FloatParam | IntParam | CategoricalParam | FixedParam) -> float:
    """The value a parameter takes on average under uniform sampling (used for epochs)."""
    if isinstance(param, FixedParam):
        return float(param.value)
    if isinstance(param, CategoricalParam):
        return statistics.fmean(float(c) for c in param.choices)
    return (param.low + param.high) / 2


def estimate(spec: StudySpec, calibrations: list[Calibration], train_rows: int, eval_rows: int, folds: int, test_rows: int = 0,
             layout: Layout = Layout(), finished: int = 0) -> dict[str, Any]:
    """Seconds per epoch, fold and trial for each calibrated (candidate, scope), and the study's totals.

    ``train_rows``/``eval_rows``: examples one fold trains and validates on; ``test_rows``: the test split
    the final model is scored on. Trials are assumed spread evenly over the calibrated pairs (the sampler
    decides in truth), and over the ``layout``'s GPUs, side by side. The totals include the one-off costs (paid
    once, by the first worker) and the final model's refit (policy refit) and test pass. ``finished``: the trials a
    study that has run already counts towards n_trials; the plan is for the rest (a time budget is one run's, whole).
    """
    rows = []
    for c in calibrations:
        epochs = typical(spec.space_for(spec.candidate(c.model))["epochs"])
        epoch = train_rows * c.train_seconds_per_example + eval_rows * c.eval_seconds_per_example
        fold = c.setup_seconds + epochs * epoch
        rows.append({**asdict(c), "epochs": epochs, "epoch_seconds": epoch, "fold_seconds": fold, "trial_seconds": folds * fold})
    per_trial = statistics.fmean(r["trial_seconds"] for r in rows)
    # The final model: a refit on every training row (with k folds, one fold's training and validation rows; on one
    # validation split, its training rows) and one test pass; with best-fold, the kept model's test pass alone.
    # Where no test split scores it and no export is written, run trains none (hpsearch.finish.finish_study).
    used = test_rows > 0 or spec.export.enabled
    refit_rows = (train_rows + (eval_rows if folds > 1 else 0)) if spec.final_policy == "refit" and used else 0
    final = statistics.fmean((r["setup_seconds"] + r["epochs"] * refit_rows * r["train_seconds_per_example"] if refit_rows else 0.0)
                             + test_rows * r["eval_seconds_per_example"] for r in rows)
    once = sum(c.once_seconds for c in calibrations)
    startup, work, assumption = pruning(spec, folds, statistics.fmean(r["epochs"] for r in rows))
    n, n_unpruned = _trials(spec, per_trial, once, startup, work, layout.devices)
    if spec.search.n_trials is not None and finished:  # what is left of a study that has run; its start-up trials first
        n, n_unpruned, startup = max(n - finished, 0), max(n_unpruned - finished, 0), max(startup - finished, 0)
    kept = min(n, startup) if work < 1 else n
    # Trials side by side, one per GPU; fewer trials than GPUs leave some idle (a trial runs on one device).
    def lanes(trials: float) -> int:
        return layout.devices if spec.search.n_trials is None else int(min(layout.devices, max(trials, 1)))

    result: dict[str, Any] = {
        "rows": rows, "n_trials": n, "n_trials_without_pruning": n_unpruned, "time_budget": spec.search.n_trials is None,
        "folds": folds, "train_rows_per_fold": train_rows, "eval_rows_per_fold": eval_rows,
        "seconds_without_pruning": once + n_unpruned * per_trial / lanes(n_unpruned) + final,
        "seconds_with_pruning": once + (kept * per_trial + (n - kept) * work * per_trial) / lanes(n) + final,
        "one_off_seconds": once, "final_model_seconds": final,
        "pruning_assumption": assumption.format(later=f"{n - kept:.0f}") if n > kept else "no trial is pruned",
        "longest_trial_seconds": max(r["trial_seconds"] for r in rows), "layout": asdict(layout), "layout_text": layout.describe(),
        "finished": finished if spec.search.n_trials is not None else 0, "warnings": [],
    }
    timeout = spec.search.timeout
    if timeout is not None:
        expected = result["seconds_with_pruning"] - final
        if spec.search.n_trials is not None and expected > timeout:
            done = max(0, int((timeout - once) * layout.devices / per_trial))
            result["warnings"].append(f"search.timeout {timeout:g}s is shorter than the estimate ({expected:.0f}s): the study will stop "
                                      f"after about {result['finished'] + done} of {spec.search.n_trials} trials")
        # Workers that share a device share its speed: each of their trials takes that many times as long.
        result["warnings"].append(f"search.timeout is checked between trials: the last trial may run up to about "
                                  f"{result['longest_trial_seconds'] * layout.per_device:.0f}s past it")
    if memory := memory_warning(rows, layout):
        result["warnings"].append(memory)
    return result


MEMORY_MARGIN = 0.9
"""Share of a device's memory the plan lets the calibration's peak (times the workers sharing the device) reach before
it warns: the calibration trains on the first batches of a fold, and a batch of longer inputs needs more."""


def memory_warning(rows: list[dict[str, Any]], layout: Layout) -> str | None:
    """Whether the largest calibrated peak, once per worker that shares a device, comes near the device's memory."""
    if not layout.memory_mb or not rows:
        return None
    top = max(rows, key=lambda r: r["peak_memory_mb"])
    peak, room = top["peak_memory_mb"], MEMORY_MARGIN * layout.memory_mb
    if peak * layout.per_device <= room:
        return None
    where = "this machine" if layout.kind == "cpu" else "a GPU"
    # On a GPU the peak is what the fit allocated; each worker's CUDA context comes on top of it.
    what = "the process's resident memory" if layout.kind == "cpu" else "memory allocated by the fit, not counting the CUDA context"
    said = (f"{top['model']} {top['scope']} peaked at {peak:,.0f} MiB in the calibration ({what}) of the {layout.memory_mb:,.0f} MiB "
            f"of {where}")
    fits = int(room // peak)
    if layout.per_device > 1 and fits >= 1:
        return (f"{said}: {layout.per_device} workers sharing {where} need about {layout.per_device * peak:,.0f} MiB; lower "
                f"execution.workers_per_device to {fits}, or batch_size or data.max_length")
    # A GPU that runs out raises an error the fold is retried on; a machine that runs out stops the process.
    then = ("a fold that does is run again with half the batch, execution.memory_retries" if layout.kind != "cpu"
            else "the system then stops the worker, and its trial is run again, as large")
    return (f"{said}: a batch of longer inputs than the calibration's may run out of memory ({then}); lower batch_size or "
            "data.max_length for room" + (", and execution.workers_per_device to 1" if layout.per_device > 1 else ""))


def _trials(spec: StudySpec, per_trial: float, once: float, startup: int, work: float, lanes: int = 1) -> tuple[float, float]:
    """Trials the study will run, with and without pruning: ``n_trials``, or as many as fit in the timeout on ``lanes``
    devices side by side; never more than a finite space's configurations (its search ends when all are tried)."""
    from hpsearch.space import configurations

    every = configurations(spec)
    most = float("inf") if every is None else len(every)
    if spec.search.n_trials is not None:
        return min(spec.search.n_trials, most), min(spec.search.n_trials, most)
    budget = max(spec.search.timeout - once, 0.0) * lanes  # type: ignore[operator]  # the spec requires one of the two
    unpruned = budget / per_trial
    return min(min(startup, unpruned) + max(0.0, budget - startup * per_trial) / (work * per_trial), most), min(unpruned, most)


def finished_trials(spec: StudySpec, say: Callable[..., None]) -> int:
    """The trials a study that has run counts towards n_trials (0 for one that has not, or whose storage cannot be read
    now: said)."""
    from hpsearch.errors import StudyNotRun
    from hpsearch.accounting import counted_trials
    from hpsearch.study import load_existing_study

    try:
        return counted_trials(load_existing_study(spec))
    except StudyNotRun:  # the whole study is to come
        return 0
    except HpsearchError as exc:  # its database cannot be reached now
        say(f"warning: {exc}; the plan is for the whole study, as if none of it had run")
        return 0


def study_layout(spec: StudySpec, device: str) -> Layout:
    """The layout ``run`` gives the study's workers on this machine (workers started by hand elsewhere are not known
    here), and the memory of ``device``, the one the calibration ran on."""
    from hpsearch.cost import device_memory_mb
    from hpsearch.workers import plan_slots, usable_cores

    slots = plan_slots(spec)
    gpus = {slot.env.get("CUDA_VISIBLE_DEVICES") for slot in slots if slot.device != "cpu"}
    return Layout(devices=max(len(gpus), 1), per_device=spec.execution.workers_per_device, kind="gpu" if gpus else "cpu",
                  memory_mb=device_memory_mb(device), cores=usable_cores())


CPU_PEAK_NOTE = ("peak MiB on the CPU: the process's resident peak over the short calibration; a trial trains for many more "
                 "steps and its peak can run higher (10 to 20 % on the demo study; status shows each trial's own)")
"""Said under the plan of a study on the CPU. Measured, the plan's peak and then the trials' (benchmarks/README.md): 815 to 899
and 947 to 998 MiB on the demo's frozen scopes; 1,341 and 1,294 for full fine-tuning on 1,600 WNUT rows. Before batches were
padded to a multiple of 8 tokens (:data:`hpsearch.finetune.batching.PAD_MULTIPLE`), oneDNN kept a bf16 kernel per batch
length and the trials' peaks climbed to up to twice the plan's (2,302 MiB against 1,123 for LoRA on the WNUT study)."""


def render(plan: dict[str, Any]) -> str:
    from hpsearch.status import duration  # as 'run' writes the estimate beside the time it took

    low, high = plan["n_trials_without_pruning"], plan["n_trials"]
    ranged = bool(plan.get("time_budget")) and round(high) > round(low)
    if ranged:
        trials = f"{low:.0f} to {high:.0f} trials in the timeout"
    elif plan.get("time_budget"):
        trials = f"about {high:.0f} trials in the timeout"
    elif plan.get("finished"):
        trials = f"{high} trial{'s' if high != 1 else ''} left of {high + plan['finished']} ({plan['finished']} finished)"
    else:
        trials = f"{high} trial{'s' if high != 1 else ''}"
    lines = [f"plan: {trials} x {plan['folds']} fold(s), {plan['train_rows_per_fold']} training and "
             f"{plan['eval_rows_per_fold']} validation rows per fold",
             f"{'model':<16} {'scope':<10} {'ms/train ex':>11} {'ms/val ex':>9} {'epochs':>6} {'s/epoch':>8} {'s/fold':>8} {'s/trial':>8} {'peak MiB':>9}"]
    for r in plan["rows"]:
        lines.append(f"{r['model']:<16} {r['scope']:<10} {1000 * r['train_seconds_per_example']:>11.2f} {1000 * r['eval_seconds_per_example']:>9.2f} "
                     f"{r['epochs']:>6.1f} {r['epoch_seconds']:>8.1f} {r['fold_seconds']:>8.1f} {r['trial_seconds']:>8.1f} {r['peak_memory_mb']:>9.0f}")
    final = (f"the final model ({duration(plan['final_model_seconds'])})" if plan["final_model_seconds"]
             else "no final model (no test split scores one and no export trains one)")
    lines.append(f"estimated study time: {duration(plan['seconds_with_pruning'])} with pruning ({plan['pruning_assumption']}), "
                 f"{duration(plan['seconds_without_pruning'])} without; both include one-off costs ({duration(plan['one_off_seconds'])}: "
                 f"tokenization, frozen-layer cache, kept for the run) and {final}")
    if plan.get("layout_text"):
        lines.append(f"workers: {plan['layout_text']}")
    if plan.get("layout", {}).get("kind") == "cpu":
        lines.append(CPU_PEAK_NOTE)
    if ranged:
        lines.append(f"trials in the timeout: {low:.0f} if every trial runs in full, {high:.0f} if each rung keeps only its share; "
                     f"the more configurations learn, the more pass the rungs, and the nearer the study gets to the lower end")
    lines += [f"warning: {w}" for w in plan["warnings"]]
    return "\n".join(lines)


def plan_study(spec: StudySpec, say: Callable[..., None]) -> dict[str, Any]:
    """Calibrate, estimate, save ``plan.json`` in the output folder and return the plan."""
    from hpsearch.calibration import calibrate
    from hpsearch.export import spec_hash
    from hpsearch.workers import ThreadShare, crowded, other_workers

    finished = finished_trials(spec, say)  # first: a storage that cannot be reached is said before the calibration's minutes
    busy = set(other_workers())
    # Timed on this process's share of the cores, as the study's workers train, and counted among the machine's workers
    # meanwhile: beside a running study, each would otherwise run threads for every core on the same cores.
    with ThreadShare(spec.execution.threads, say):
        measured = calibrate(spec, say)
    busy.update(other_workers())  # and those that started during the calibration
    plan = estimate(spec, measured.calibrations, measured.train_rows, measured.eval_rows, measured.folds, measured.test_rows,
                    study_layout(spec, measured.device), finished)
    plan["warnings"] = measured.warnings + plan["warnings"]
    if plan["layout"]["kind"] == "cpu" and (crowd := crowded(plan["layout"]["per_device"], plan["layout"]["cores"])):
        plan["warnings"].append(crowd)
    if busy:
        plan["warnings"].append(
            f"{len(busy)} other hpsearch worker(s) ran on this machine during the calibration (process id(s) "
            f"{', '.join(map(str, sorted(busy)))}): it shared the cores and devices with them, so its times, and the "
            "estimate, are longer than the study alone would take; plan again when they have ended")
    plan["spec_hash"] = spec_hash(spec)  # which version of the study the plan is for: `run` sets its time beside it only for that one
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    (spec.out_dir / "plan.json").write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return plan


def saved_plan(spec: StudySpec, before: int) -> tuple[dict[str, Any] | None, bool]:
    """(the plan ``hpsearch plan`` saved for this study file and for what a run that finds ``before`` trials finished
    will do, or None; whether the saved plan is stale: made for an earlier version of the study file)."""
    from hpsearch.export import spec_hash

    path = spec.out_dir / "plan.json"
    plan = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if plan is None:
        return None, False
    if plan.get("spec_hash") not in (None, spec_hash(spec)):  # None: a plan from before plans recorded it
        return None, True
    return (plan if before == plan.get("finished", 0) else None), False


def estimate_fields(plan: dict[str, Any]) -> dict[str, float]:
    """The plan's estimate as the fields of ``run``'s events."""
    return {"estimate": plan["seconds_with_pruning"], "estimate_without_pruning": plan["seconds_without_pruning"]}


def estimate_text(plan: dict[str, Any]) -> str:
    """The plan's estimate in words, as ``run`` says it beside its own time."""
    from hpsearch.status import duration

    return (f"'hpsearch plan' estimated {duration(plan['seconds_with_pruning'])} with pruning, "
            f"{duration(plan['seconds_without_pruning'])} without")
