"""The calibration behind ``hpsearch plan``: each candidate and scope trained for a few batches of the study's own
tokenized rows on the study's device, timed per training and validation example, with its one-off costs and peak
memory (:class:`hpsearch.plan.Calibration`). :func:`hpsearch.plan.estimate` turns the figures into the plan."""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from hpsearch.errors import HpsearchError
from hpsearch.plan import Calibration
from hpsearch.space import param_values
from hpsearch.spec import StudySpec


@dataclass
class Measured:
    """What :func:`calibrate` found: the calibrations, the rows per fold and of the test split, the device, and warnings
    (a candidate's scope that ran out of memory)."""

    calibrations: list[Calibration]
    train_rows: int
    eval_rows: int
    folds: int
    test_rows: int
    device: str
    warnings: list[str]


def calibrate(spec: StudySpec, say: Callable[..., None], batches: int = 8) -> Measured:
    """Time each (candidate, scope) on a few batches of the study's data, at the largest batch size it can draw (its peak
    memory), and where the space draws smaller ones, at the smallest too: its time per training example is the mean over
    the batch sizes drawn (:func:`drawn_mean`; on 2 CPU cores a batch of 16 cost 1.2x a batch of 32 per example). One
    that runs out of memory is timed again with half the batch and twice the accumulation, as ``run`` retries such a
    fold (``execution.memory_retries`` times); one that does not fit even then is left out of the estimate, with a
    warning."""
    from hpsearch.data import prepare_data
    from hpsearch.errors import OutOfMemory
    from hpsearch.finetune import FineTuner
    from hpsearch.finetune.core import unavailable
    from hpsearch.session import make_folds, pick_device, refuse_unavailable
    from hpsearch.search import within_memory

    out = spec.out_dir
    data = prepare_data(spec, cache_dir=out / "cache" / "datasets")
    folds, eval_split = make_folds(spec, data)
    device = pick_device(spec)
    tuner = FineTuner(data, cache_dir=out / "cache", max_length=spec.data.max_length, device=device,
                      precision=spec.execution.precision, metric=spec.metric, direction=spec.direction, warn=lambda m: say(f"warning: {m}"))
    refuse_unavailable(unavailable(spec.models, tuner.tokenizer, say, task=tuner.task))
    found, warnings, refused = [], [], []
    for candidate in spec.models:
        space = spec.space_for(candidate)
        batch = int(max(space["batch_size"].values_hint()))
        train_sample = list(folds[0][0])[: batches * batch]
        eval_sample = list(folds[0][1])[: batches * batch]
        for scope in spec.scopes_of(candidate):
            # Two epochs, timed on the second: the first batches of a fresh model run slower than the rest.
            params = {"learning_rate": 1e-5, "epochs": 2, "batch_size": batch, "scope": scope, "warmup_ratio": 0.0, "grad_accumulation": 1}
            tried: list[int] = []

            def retried(exc: OutOfMemory, before: dict[str, Any]) -> None:
                tried.append(before["batch_size"])
                say(f"{candidate.name} {scope}: out of memory on {device}; calibrating again with batch_size {params['batch_size']}, "
                    f"as run retries such a fold")

            try:
                timed = within_memory(lambda: _timed(tuner, candidate, params, train_sample, eval_sample, eval_split, spec.seed),
                                      params, spec.execution.memory_retries, retried)
            except OutOfMemory:
                refused.append(f"{candidate.name} {scope} at batch_size {' or '.join(map(str, [*tried, params['batch_size']]))}")
                warnings.append(f"{refused[-1]} does not fit in the memory of {device}: each of its trials will fail, and the estimate "
                                "leaves it out; lower batch_size or data.max_length, train less of it (freeze-K, lora), or raise "
                                "execution.memory_retries")
                say(f"{candidate.name} {scope}: out of memory on {device} at batch_size {params['batch_size']}; left out of the estimate")
                continue
            if params["batch_size"] != batch:
                warnings.append(f"{candidate.name} {scope} runs out of memory on {device} at batch_size {batch}: run retries each "
                                f"such fold with batch_size {params['batch_size']} and grad_accumulation {params['grad_accumulation']} "
                                "(the same effective batch), as the estimate assumes; lower batch_size to save the failed tries")
            small, by_batch = int(min(space["batch_size"].values_hint())), ""
            if small < params["batch_size"] == batch:  # not where it ran out of memory: that batch is run's, whatever is drawn
                at = {small: _train_seconds(tuner, candidate, {**params, "batch_size": small}, train_sample, eval_split, spec.seed),
                      batch: timed.train_seconds_per_example}
                timed = dataclasses.replace(timed, train_seconds_per_example=drawn_mean(space["batch_size"], at))
                by_batch = f" (the mean over the batch sizes drawn; {', '.join(f'{1000 * t:.1f} at batch {b}' for b, t in sorted(at.items()))})"
            found.append(timed)
            say(f"calibrated {candidate.name} {scope}: {1000 * timed.train_seconds_per_example:.1f} ms per training example{by_batch}, "
                f"{1000 * timed.eval_seconds_per_example:.1f} ms per validation example on {device}")
    if not found:
        raise HpsearchError(f"no candidate fits in the memory of {device} ({'; '.join(refused)}): lower batch_size or data.max_length, "
                            "train less of each model (freeze-K, lora), or raise execution.memory_retries")
    train_rows = round(statistics.fmean(len(t) for t, _ in folds))
    eval_rows = round(statistics.fmean(len(e) for _, e in folds))
    test_rows = len(data.splits["test"]) if "test" in data.splits else 0
    return Measured(found, train_rows, eval_rows, len(folds), test_rows, device, warnings)


def _timed(tuner: Any, candidate: Any, params: dict[str, Any], train_sample: list[int], eval_sample: list[int], eval_split: str,
           seed: int) -> Calibration:
    """Two fits of ``params`` on the samples; the second timed (the first pays the one-off costs: tokenization, the
    frozen-layer cache)."""
    from hpsearch.cost import peak_memory_mb, reset_peak_memory

    reset_peak_memory(tuner.device)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        fitted = tuner.fit(candidate, params, train_rows=train_sample, eval_rows=eval_sample, eval_split=eval_split, seed=seed)
        first, record = fitted.result.history
        timings.append((time.perf_counter() - started - first.seconds - first.eval_seconds, record.seconds, record.eval_seconds))
        fitted.close()
    (first_wall, _, _), (wall, train_s, eval_s) = timings
    return Calibration(candidate.name, str(params["scope"]), train_s / len(train_sample), eval_s / max(len(eval_sample), 1),
                       max(wall - train_s - eval_s, 0.0), max(first_wall - wall, 0.0), peak_memory_mb(tuner.device))


def _train_seconds(tuner: Any, candidate: Any, params: dict[str, Any], train_sample: list[int], eval_split: str, seed: int) -> float:
    """Seconds per training example with ``params``: one fit of two epochs with no validation, timed on the second (the
    one-off costs were paid by :func:`_timed`'s fits)."""
    fitted = tuner.fit(candidate, params, train_rows=train_sample, eval_rows=[], eval_split=eval_split, seed=seed)
    try:
        return fitted.result.history[-1].seconds / len(train_sample)
    finally:
        fitted.close()


def drawn_mean(batch_size: Any, at: dict[int, float]) -> float:
    """The mean seconds per training example over the batch sizes ``batch_size`` (a space's parameter) draws, uniformly,
    from the times ``at`` two of them: a cost per example and one per batch, ``t(b) = a + c / b``, fitted to the two."""
    (small, t_small), (big, t_big) = sorted(at.items())
    per_batch = (t_small - t_big) / (1 / small - 1 / big)
    per_example = t_big - per_batch / big
    drawn = param_values(batch_size) or [big]
    return per_example + per_batch * statistics.fmean(1 / int(b) for b in drawn)
