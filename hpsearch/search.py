"""The trial objective: a candidate and its settings, scored by cross-validation (the study itself: :mod:`hpsearch.study`).

What the pruner sees: after every epoch of every fold, the trial reports the validation metric of
that fold and epoch at step ``fold * (E + 1) + epoch - 1``, where E is the largest epoch count the
search space allows; after each fold but the last it also reports its cross-validation score so far
(the mean over the folds done, at their best common epoch count) at step ``fold * (E + 1) + E``.
Every trial uses the same folds, so two trials are compared at the same fold and epoch, and, whatever
their epoch counts, on the score the objective will be made of. The successive-halving pruner decides
only at a few of these steps, its rungs (see :mod:`hpsearch.rungs`).
"""
from __future__ import annotations

import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hpsearch.cost import peak_memory_mb, reset_peak_memory, training_flops
from hpsearch.errors import CannotWrite, DataError, ModelUnavailable, OutOfMemory, StorageUnavailable, TrialError, cannot_write
from hpsearch.numbers import score_figure
from hpsearch.progress import epoch_steps
from hpsearch.repeats import DRAWN_ATTR, Repeats
from hpsearch.selection import LOSS_ATTR, PROGRESS_ATTR, SPLIT_SE_ATTR, better
from hpsearch.space import describe_params, max_epochs, shown_params, suggest
from hpsearch.spec import StudySpec


def best_epoch_aggregate(curves: Sequence[Sequence[float]], direction: str) -> tuple[int, list[float]]:
    """(epoch count, per-fold scores at it) maximising (or minimising) the mean over folds.

    Only epochs that every fold reached are considered, so each fold contributes to every mean.
    """
    reached = min(len(c) for c in curves)
    means = [statistics.fmean(c[e] for c in curves) for e in range(reached)]
    pick = max if direction == "maximize" else min
    best = means.index(pick(means))
    return best + 1, [c[best] for c in curves]


@dataclass
class FoldRecords:
    """What a trial's folds reported so far, per fold and per epoch: the metric, each validation row's compact
    prediction and the validation loss; and the validation loss by reported step where the pruner reads it."""

    curves: list[list[float]] = field(default_factory=list)
    predictions: list[list[Any]] = field(default_factory=list)
    loss_curves: list[list[float]] = field(default_factory=list)
    losses: dict[str, float] | None = None
    samples: int = 0
    """Training samples of every epoch so far, in all folds."""
    seconds: float = 0.0
    """Device-seconds (training and validation) of every epoch so far, in all folds."""

    def new_fold(self) -> tuple[list[float], list[Any], list[float]]:
        """The next fold's (metric, predictions, loss) lists, filled epoch by epoch."""
        for records in (self.curves, self.predictions, self.loss_curves):
            records.append([])
        return self.curves[-1], self.predictions[-1], self.loss_curves[-1]


LATENCY_ATTR = "latency_ms/{}/{}"
"""The study's user attribute that holds a candidate's inference milliseconds per example as served on a kind of
device (cpu, cuda)."""


def candidate_latency(study: Any, tuner: Any, candidate: Any, split: str, say: Callable[..., None] | None = None) -> float:
    """Inference milliseconds per example of ``candidate`` as served (``FineTuner.latency_ms`` on the first 64 rows
    of ``split``), measured once per study and kind of device and kept in its storage for every trial and worker.

    The compute of a model as served depends on its architecture and layer cut, not on its trained weights or
    settings: measured per trial, the figure would differ between one candidate's trials by timing noise alone,
    and a second objective or ``selection.cost: latency`` would rank those trials by that noise.
    """
    key = LATENCY_ATTR.format(candidate.name, tuner.device.type)
    known = study.user_attrs.get(key)
    if known is None:
        rows = list(range(min(64, len(tuner.data.splits[split]))))
        if say is not None:  # a large model on a CPU takes a while: say what runs
            say(f"{candidate.name}: measuring its inference latency as served ({len(rows)} rows in fp32; once per study)",
                event="latency", model=candidate.name, rows=len(rows))
        known = tuner.latency_ms(candidate, split, rows)
        study.set_user_attr(key, known)
    return float(known)


def lowest_loss(loss_curves: Sequence[Sequence[float]]) -> float | None:
    """The mean validation loss over the folds at the epoch count (one every fold reached) that minimises it; None where
    a loss is missing. An overconfident model scored at a late epoch has a high loss there, yet learned: what
    :mod:`hpsearch.plateau` and :mod:`hpsearch.rungs` compare with the loss of a model that learned only the targets."""
    loss = statistics.fmean(best_epoch_aggregate(loss_curves, "minimize")[1])
    return loss if math.isfinite(loss) else None


def within_memory(fit: Callable[[], Any], params: dict[str, Any], retries: int,
                  on_retry: Callable[[OutOfMemory, dict[str, Any]], None]) -> Any:
    """``fit()``, run again while it runs out of memory, at most ``retries`` times: each time with half the batch and twice
    the accumulation, the same effective batch in less memory (``params`` is changed in place; ``on_retry`` is told the
    error and the settings before the change). What ``run`` does with a fold, and ``hpsearch plan`` with its calibration."""
    while True:
        try:
            return fit()
        except OutOfMemory as exc:
            if retries == 0 or int(params["batch_size"]) < 2:
                raise
            retries -= 1
            before = dict(params)
            params.update(batch_size=int(before["batch_size"]) // 2, grad_accumulation=int(before.get("grad_accumulation", 1)) * 2)
            on_retry(exc, before)


class Objective:
    """Scores one (candidate, hyperparameters) trial by k-fold cross-validation."""

    def __init__(self, spec: StudySpec, tuner: Any, folds: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                 eval_split: str = "train", device: str = "cpu", on_event: Callable[..., None] | None = None,
                 checkpoints: Path | None = None, tracker: Any = None, parent_run: str | None = None) -> None:
        from hpsearch.tracking import NullTracker

        self.spec, self.tuner, self.folds, self.eval_split = spec, tuner, folds, eval_split
        self.tracker = tracker or NullTracker()
        self.parent_run = parent_run
        self.study: Any = None  # set by the runner, for the best-so-far line
        self.device = device
        self.on_event = on_event or (lambda message, **fields: None)
        self.checkpoints = checkpoints
        self.step_stride = max_epochs(spec) + 1  # E epoch steps and one fold-end step per fold
        self.prunable = spec.search.second_objective is None  # Optuna does not prune multi-objective trials
        self._said_unavailable: set[str] = set()
        self.repeats = Repeats(spec, self.on_event)

    @property
    def configurations(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """The space's configurations where it has finitely many (:func:`hpsearch.space.configurations`), else None."""
        return self.repeats.configurations

    def __call__(self, trial: Any) -> float | tuple[float, float]:
        import optuna

        try:
            candidate_name, params = suggest(trial, self.spec)
        except ValueError as exc:  # a waiting enqueued trial whose value the space no longer has (a choice removed)
            frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
            reason = f"its enqueued settings {frozen.system_attrs.get('fixed_params')} do not fit the space: {exc}"
            self._failed(trial, reason)
            raise TrialError(reason) from None
        trial.set_user_attr("device", self.device)
        trial.set_user_attr("precision", self.tuner.precision)
        trial.set_user_attr("model", candidate_name)
        trial.set_user_attr("params", params)
        # Exact repeats: a finite space's, or, in any space, two processes whose samplers share a seed (two `run`s of one
        # study started at once; see hpsearch.repeats).
        repeated = self.repeats.score_of_twin(trial, candidate_name, params)
        if repeated is not None:
            return repeated
        self.on_event(f"trial {trial.number}: {candidate_name} {describe_params(shown_params(self.spec, candidate_name, params))}", event="trial_start", trial=trial.number, model=candidate_name, params=params)
        run = self.tracker.start_trial(self.parent_run, trial.number, candidate_name, params, self.device, self.tuner.precision)
        if run:
            trial.set_user_attr("mlflow_run_id", run)
        state = "FAIL"
        try:
            value = self._cross_validate(trial, self.spec.candidate(candidate_name), params, run)
            state = "COMPLETE"
            return value
        except (StorageUnavailable, CannotWrite, KeyboardInterrupt):
            state = "INTERRUPTED"  # not the trial's fault: the worker stops, and the trial runs again later
            raise
        except TrialError as exc:
            self._failed(trial, str(exc))
            if isinstance(exc, ModelUnavailable) and candidate_name not in self._said_unavailable:
                self._said_unavailable.add(candidate_name)
                self.on_event(f"warning: candidate {candidate_name} cannot be loaded, so every trial that draws it fails the same way "
                              f"and counts toward the budget; make it loadable (the study then goes on with it), or remove it from "
                              f"models and run with --new-study", event="warning", candidate=candidate_name)
            raise
        except DataError as exc:  # found once the candidate's tokenizer reads the data (a question too long for it, say)
            self._failed(trial, str(exc))
            raise TrialError(str(exc)) from exc
        except optuna.TrialPruned as exc:
            state = "PRUNED"
            trial.set_user_attr("failure_reason", str(exc))
            self.on_event(f"trial {trial.number} {exc}", event="trial_end", trial=trial.number, state="PRUNED", reason=str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - a fault inside one trial (a library bug, say) fails that trial only
            refused = cannot_write(exc, kept="the finished trials are kept and this one runs again")
            if refused is not None:  # a full or read-only disk: every trial after it would fail the same way; the worker stops
                state = "INTERRUPTED"
                raise refused from exc
            reason = f"unexpected {type(exc).__name__} in the trial: {exc}"
            self._failed(trial, reason)
            raise TrialError(reason) from exc
        finally:
            # Runs end with their true status even when the trial crashes or is interrupted (the reason of an interruption
            # reaches the trial after this, so its run is given it here).
            reason = {"failure_reason": "interrupted"} if state == "INTERRUPTED" and "failure_reason" not in trial.user_attrs else {}
            self.tracker.end_trial(run, state, {**trial.user_attrs, **reason})

    def _failed(self, trial: Any, reason: str) -> None:
        trial.set_user_attr("failure_reason", reason)
        self.on_event(f"trial {trial.number} failed: {reason}", event="trial_end", trial=trial.number, state="FAIL", reason=reason)

    def _cross_validate(self, trial: Any, candidate: Any, params: dict[str, Any], run: str | None) -> float | tuple[float, float]:
        import optuna

        # Validation loss by reported step, kept only for a pruner that reads it (see hpsearch.rungs).
        reports = FoldRecords(losses={} if getattr(trial.study.pruner, "reads_validation_loss", False) else None)
        curves = reports.curves
        seconds, samples, eval_seconds, flops = 0.0, 0, 0.0, 0.0
        started = time.perf_counter()
        reset_peak_memory(self.tuner.device)
        for fold, (train_rows, eval_rows) in enumerate(self.folds):
            outcome = self._fit_fold(trial, candidate, params, fold, train_rows, eval_rows, run, reports)
            seconds += outcome["seconds"]
            samples += outcome["samples"]
            eval_seconds += outcome["eval_seconds"]
            flops += outcome["flops"]
            trial.set_user_attr("flops", flops)
            trial.set_user_attr("device_seconds", seconds + eval_seconds)
            trial.set_user_attr("peak_memory_mb", peak_memory_mb(self.tuner.device))
            trial.set_user_attr("total_parameters", outcome["total_parameters"])
            trial.set_user_attr("trainable_parameters", outcome["trainable_parameters"])
            trial.set_user_attr("epoch_curves", curves)
            trial.set_user_attr("train_seconds", seconds)
            trial.set_user_attr("train_samples", samples)
            trial.set_user_attr("eval_seconds", eval_seconds)
            if outcome["stopped"]:
                raise optuna.TrialPruned(f"pruned at fold {fold + 1}, epoch {len(curves[-1])}: {self.spec.metric}={score_figure(curves[-1][-1])}")
            if fold + 1 < len(self.folds):
                self._prune_after_fold(trial, fold, reports)
        best_epochs, fold_scores = best_epoch_aggregate(curves, self.spec.direction)
        mean = statistics.fmean(fold_scores)
        std = statistics.pstdev(fold_scores) if len(fold_scores) > 1 else 0.0
        if not math.isfinite(mean):
            raise TrialError(f"cross-validation score is {mean}")
        oof = self._out_of_fold(reports.predictions, best_epochs)
        trial.set_user_attr("oof", oof)
        if self.spec.one_split:  # no spread across folds: the one-standard-error rule takes the one over the split's rows
            trial.set_user_attr(SPLIT_SE_ATTR, self._split_standard_error(oof["predictions"]))
        for key, value in (("fold_scores", fold_scores), ("cv_mean", mean), ("cv_std", std), ("best_epochs", best_epochs),
                           (LOSS_ATTR, lowest_loss(reports.loss_curves)),
                           ("wall_seconds", time.perf_counter() - started), ("samples_per_second", samples / seconds if seconds else 0.0)):
            trial.set_user_attr(key, value)
        over = "on the validation split" if self.spec.one_split else f"over {len(fold_scores)} folds"
        self.on_event(f"trial {trial.number}: {self.spec.metric} {self.spec.trial_score_text(mean, std)} {over} (best at {best_epochs} epoch{'s' if best_epochs != 1 else ''})",
                      event="trial_end", trial=trial.number, state="COMPLETE", cv_mean=mean, cv_std=std, best_epochs=best_epochs)
        self._say_best(trial.number, mean, std)
        second = self.spec.search.second_objective
        if second is None:
            return mean
        cost = float(trial.user_attrs["total_parameters"]) if second == "params" else candidate_latency(trial.study, self.tuner, candidate, self.eval_split, self.on_event)
        trial.set_user_attr(f"objective_{second}", cost)  # "params" alone would clash with the parameters
        return mean, cost

    def _split_standard_error(self, predictions: list[Any]) -> float | None:
        """The standard error of a trial's score on the one validation split: the spread of its scores on bootstrap
        samples of the split's rows (None for a metric the bootstrap does not cover)."""
        from hpsearch import estimate

        data, rows = self.tuner.data, [i for i, p in enumerate(predictions) if p is not None]
        found = estimate.task_inputs(data.task, data.splits[self.eval_split], data.label_map, self.spec.metric, [[predictions[i] for i in rows]], rows)
        if found is None:
            return None
        _, resampled = estimate.paired_bootstrap(*found, self.spec.metric, classes=len(data.label_map), seed=self.spec.seed)
        return float(resampled[0].std(ddof=1))

    def _out_of_fold(self, predictions: list[list[Any]], best_epochs: int) -> dict[str, Any]:
        """Each validation row's prediction at the trial's scored epoch (the input of the bias-corrected estimate)."""
        size = max((max(rows) for _, rows in self.folds if len(rows)), default=-1) + 1
        pooled: list[Any] = [None] * size
        for (_, rows), epochs in zip(self.folds, predictions):
            for row, value in zip(rows, epochs[best_epochs - 1]):
                pooled[row] = value
        return {"split": self.eval_split, "epoch": best_epochs, "predictions": pooled}

    def _prune_after_fold(self, trial: Any, fold: int, reports: FoldRecords) -> None:
        """Report the CV score so far at the fold-end step (trials of any epoch count meet on the objective's
        terms) and raise ``TrialPruned`` if the pruner says so."""
        import optuna

        if not self.prunable:
            return
        _, scores = best_epoch_aggregate(reports.curves, self.spec.direction)
        so_far = statistics.fmean(scores)
        step = fold * self.step_stride + self.step_stride - 1
        if reports.losses is not None:  # the lowest loss over the folds so far, as the trial's cv_loss at its end
            self._record_loss(trial, reports.losses, step, lowest_loss(reports.loss_curves))
        trial.report(so_far, step=step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold + 1}: {self.spec.metric} so far {score_figure(so_far)}")

    @staticmethod
    def _record_loss(trial: Any, losses: dict[str, float], step: int, loss: float | None) -> None:
        """Keep a reported step's validation loss where the pruner reads it; a repeated step (memory retry)
        keeps its first value, as Optuna keeps the first report."""
        if loss is None or str(step) in losses:
            return
        losses[str(step)] = loss
        trial.set_user_attr("validation_loss", losses)

    def _fit_fold(self, trial: Any, candidate: Any, params: dict[str, Any], fold: int, train_rows: Sequence[int], eval_rows: Sequence[int],
                  run: str | None, reports: FoldRecords) -> dict[str, Any]:
        metric, losses = self.spec.metric, reports.losses
        curve, predicted, loss_curve = reports.new_fold()

        def on_epoch(record: Any) -> bool:
            curve.append(record.metrics[metric])
            predicted.append(record.predictions)
            loss_curve.append(record.metrics.get("loss", math.nan))
            speed = record.samples_per_second
            reports.samples += record.samples
            reports.seconds += record.seconds + record.eval_seconds
            self.tracker.log_epoch(run, fold + 1, record.epoch, record.train_loss, record.metrics, speed)
            trial.set_user_attr(PROGRESS_ATTR, {"fold": fold + 1, "folds": len(self.folds), "epoch": record.epoch,
                                                "epochs": params.get("epochs"), "score": curve[-1],
                                                "train_samples": reports.samples, "device_seconds": round(reports.seconds, 3)})
            self.on_event(f"trial {trial.number} fold {fold + 1}/{len(self.folds)} epoch {record.epoch}: {metric} {score_figure(curve[-1])} "
                          f"(loss {record.train_loss:.4g}, {speed:.0f} samples/s)",
                          event="epoch", trial=trial.number, fold=fold + 1, epoch=record.epoch, metrics=record.metrics, train_loss=record.train_loss, samples_per_second=speed)
            if not self.prunable:
                return False
            step = fold * self.step_stride + record.epoch - 1
            if losses is not None:
                self._record_loss(trial, losses, step, record.metrics.get("loss"))
            trial.report(curve[-1], step=step)
            return bool(trial.should_prune())

        keep = self.checkpoints is not None and self.spec.final_policy == "best-fold"
        on_step = epoch_steps(self.on_event, f"trial {trial.number} fold {fold + 1}/{len(self.folds)}")
        fitted = self._fit_within_memory(trial, fold, [curve, predicted, loss_curve], lambda: self.tuner.fit(
            candidate, params, train_rows=train_rows, eval_rows=eval_rows, eval_split=self.eval_split,
            seed=self.spec.seed, on_epoch=on_epoch, keep_best=keep, on_step=on_step), params)
        try:
            if keep and not fitted.result.stopped_early:
                self._keep_if_best_fold(trial.number, fold, curve[fitted.result.best_epoch - 1], fitted)
            epochs = len(fitted.result.history)
            lengths = fitted.inputs.tokenized["train"].example_lengths()
            evaluated = fitted.inputs.tokenized[self.eval_split].example_lengths()
            flops = training_flops(epochs * sum(lengths[i] for i in train_rows), epochs * sum(evaluated[i] for i in eval_rows),
                                   fitted.total_parameters, fitted.trainable_parameters, str(params.get("scope", "full")).split("-")[0])
            return {"seconds": fitted.result.train_seconds, "samples": sum(r.samples for r in fitted.result.history),
                    "eval_seconds": sum(r.eval_seconds for r in fitted.result.history),
                    "stopped": fitted.result.stopped_early, "flops": flops,
                    "total_parameters": fitted.total_parameters, "trainable_parameters": fitted.trainable_parameters}
        finally:
            fitted.close()

    def _fit_within_memory(self, trial: Any, fold: int, records: list[list[Any]], fit: Callable[[], Any], params: dict[str, Any]) -> Any:
        """``fit()`` under :func:`within_memory` (``params`` is changed in place, for this and later folds), each retry
        recorded on the trial and said; the fold's records start again."""
        def retried(exc: OutOfMemory, before: dict[str, Any]) -> None:
            if DRAWN_ATTR not in trial.user_attrs:  # the configuration it stands for, tried whatever it ran with
                trial.set_user_attr(DRAWN_ATTR, before)
            trial.set_user_attr("params", params)  # what the trial really ran with; the refit uses it too
            trial.set_user_attr("memory_note", f"out of memory with batch_size={before['batch_size']}; ran with batch_size={params['batch_size']}, "
                                               f"grad_accumulation={params['grad_accumulation']}")
            self.on_event(f"trial {trial.number} fold {fold + 1}: {exc}; retrying with batch_size={params['batch_size']} and "
                          f"grad_accumulation={params['grad_accumulation']} (same effective batch)",
                          event="memory_retry", trial=trial.number, fold=fold + 1, batch_size=params["batch_size"],
                          grad_accumulation=params["grad_accumulation"])
            for record in records:
                record.clear()  # the fold starts again; Optuna keeps the first report of a repeated step

        return within_memory(fit, params, self.spec.execution.memory_retries, retried)

    def _say_best(self, number: int, mean: float, std: float) -> None:
        """The best-so-far line, over every worker's completed trials (read from the storage)."""
        best = (number, mean, std)
        for t in self.study_trials():  # on a tie the earlier trial stays best, as in the selection and status
            if t.state.name == "COMPLETE" and "cv_mean" in t.user_attrs and better((t.user_attrs["cv_mean"], t.number), (best[1], best[0]), self.spec.direction):
                best = (t.number, t.user_attrs["cv_mean"], t.user_attrs["cv_std"])
        self.on_event(f"best so far: trial {best[0]}, {self.spec.metric} {self.spec.trial_score_text(best[1], best[2])}", event="best", trial=best[0], cv_mean=best[1])

    def study_trials(self) -> list[Any]:
        return [] if self.study is None else self.study.get_trials(deepcopy=False)

    def _keep_if_best_fold(self, number: int, fold: int, score: float, fitted: Any) -> None:
        """Policy best-fold: the trial's folder holds its best fold's model (at that fold's best epoch)."""
        import json

        folder = self.checkpoints / f"trial-{number}"  # type: ignore[operator]
        marker = folder / "fold.json"
        if marker.is_file() and not self._better(score, json.loads(marker.read_text())["score"]):
            return
        try:
            fitted.save(folder)
            marker.write_text(json.dumps({"fold": fold, "score": score}))
        except OSError as exc:  # e.g. the disk is full: this trial fails, the study and other checkpoints stay
            shutil.rmtree(folder, ignore_errors=True)
            raise TrialError(f"cannot save the checkpoint of trial {number} to {folder}: {exc}; free disk space or use export.policy: refit") from exc

    def _better(self, a: float, b: float) -> bool:
        return better(a, b, self.spec.direction)

