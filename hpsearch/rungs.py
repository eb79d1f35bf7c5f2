"""Successive halving on the study's rungs: epoch 1 of fold 1, then the end of each fold but the last.

A trial reports after every epoch of every fold and, after each fold but the last, its CV score so
far (see :mod:`hpsearch.search` for the step layout). Successive halving needs a few of those as
rungs, each costlier than the one before: the first epoch of the first fold (skipped when no trial
trains more than one epoch: it would be the first fold's end), then the end of fold 1, fold 2, ...
A trial passes a rung when its value there is in the top 1/``reduction_factor`` of the values every
trial of the study had at that rung; the rest stop. So most configurations cost one epoch of one
fold, and only the promising ones pay for all folds: under a fixed budget (``search.timeout``) the
study looks at several times as many configurations.

Ties are broken by the validation loss. Below some learning rate every trial sits at the same
plateau (a classifier that predicts the majority class has the same accuracy and F1 whatever its
weights), and a plain comparison would let all of them through at full cost; the lower validation
loss says which trial is closer to learning. The loss enters as a difference far smaller than any
difference in the metric, so it never reorders trials whose scores differ.

Once the study's trivial baseline is known (:meth:`OnRungs.set_baseline`), a trial that has not
learned by a rung sits on that plateau whatever its score: its value there is the baseline's (on the
same folds), ordered by loss. Not learned means a score no better than the baseline's, or a
validation loss no lower than that of a model that learned only the targets' distribution (where the
task can say). A trial that predicts a few rows of the minority class by chance scores above the
plateau without having learned anything, and would otherwise pass the rung ahead of one whose loss is
falling but whose predictions have not changed yet.

A rung keeps the top third rounded up (Optuna's own rule rounds down, and keeps only the best while
fewer than six trials reached a rung, so at the last rungs, which few trials reach, a good trial stopped
unless it beat every one before it). And it ranks the trials that learned only once ``reduction_factor``
of them have reached it: before that the first trial that learned would stop every later one that is
not better on one fold's noisy score, so a small budget would compare nothing with its first good
trial. So, with the baseline known, each of the first ``reduction_factor`` trials that learned by a
rung passes it; from the next learned trial on the rung ranks as usual.

At the end of a fold (every rung but epoch 1 of fold 1) a trial that has not learned stops, unless no
other trial has reached that rung yet: it trained all its epochs on a whole fold and stayed on the
plateau, so its CV score would be the baseline's, and the winner has to beat that. Ranking such
trials by loss (as at epoch 1, where more epochs may still lift them) let the early ones run every
fold while few trials had reached the last rungs. The first trial to reach a rung goes on whatever
it scored, so a study in which nothing learns still completes one trial, and says that nothing beat
the baseline.

The whole rule is :func:`passes`. Nothing is stored for it: a trial's value at a rung is computed again, by the same function, from
what every trial reports (its intermediate values and validation losses), so parallel workers on one
storage see the same rungs.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import optuna

REDUCTION_FACTOR = 3
"""Default share kept at each rung: a third (Optuna's own default is a quarter)."""
TIE_BREAK = 1e-9
"""Weight of the validation loss (squashed into [0, 1)) in the value the pruner and the sampler compare."""


def tie_break(loss: float | None, missing: float = 0.0) -> float:
    """The validation loss squashed into [0, TIE_BREAK): far smaller than any difference in a metric.
    ``missing``: what a trial without a usable loss gets (0: no tie-break; TIE_BREAK: behind every loss)."""
    if loss is None or not math.isfinite(loss) or loss < 0:
        return missing
    return TIE_BREAK * loss / (1 + loss)


def on_plateau(baseline: float, loss: float | None, better: float) -> float:
    """The value a trial that learned nothing is compared at: the baseline's score, behind it by the tie-break of its
    loss (a trial without a loss last). ``better``: 1 where higher scores are better, -1 where lower are."""
    return baseline - better * tie_break(loss, missing=TIE_BREAK)


def known_losses(fold_losses: Sequence[float | None] | None) -> list[float] | None:
    """The baseline's validation loss per fold, or None when the task cannot say for some fold (no loss bar then)."""
    return None if not fold_losses or None in fold_losses else [float(v) for v in fold_losses]  # type: ignore[arg-type]


def at_fold_end(step: int, stride: int) -> bool:
    """Whether a reported step is a fold's end (the CV score so far). ``stride``: steps per fold (epochs + 1)."""
    return step % stride == stride - 1


def rung_of(step: int, stride: int) -> int | None:
    """The rung a reported step is (None: not a rung). ``stride``: steps per fold (epochs + 1)."""
    several_epochs = stride > 2
    if step == 0 and several_epochs:
        return 0
    if at_fold_end(step, stride):
        return step // stride + (1 if several_epochs else 0)
    return None


def rung_positions(folds: int, epochs: float) -> list[float]:
    """Where the rungs sit, as shares of a complete trial's work (``epochs``: a trial's epoch count)."""
    first = [1 / (folds * epochs)] if epochs > 1 else []
    return first + [f / folds for f in range(1, folds)]


def expected_work(folds: int, epochs: float, reduction_factor: float) -> float:
    """Share of a complete trial's work that one configuration costs on average once every rung keeps
    1/``reduction_factor`` of the trials reaching it (the plan's arithmetic)."""
    work, alive, done = 0.0, 1.0, 0.0
    for position in rung_positions(folds, epochs):
        work += alive * (position - done)
        done, alive = position, alive / reduction_factor
    return work + alive * (1 - done)


def passes(value: float, others: Sequence[float], reduction_factor: int, better: float, plateau: float | None = None,
           fold_end: bool = False) -> bool:
    """Whether a trial whose value at a rung is ``value`` passes it, where the study's other trials had ``others``: the
    top ``ceil(n / reduction_factor)`` of the n values, itself included, pass (ties pass). With the ``plateau`` score
    known, each of the first ``reduction_factor`` trials above it passes too, and at a ``fold_end`` a trial not above it
    stops unless it is the first there. ``better``: 1 where higher is better, -1 where lower is."""
    if plateau is not None:
        if better * (value - plateau) <= 0:
            if fold_end and others:
                return False  # a whole fold trained and nothing learned: it cannot win
        elif sum(1 for v in others if better * (v - plateau) > 0) < reduction_factor:
            return True
    ahead = sum(1 for v in others if better * (v - value) > 0)
    return ahead < math.ceil((len(others) + 1) / reduction_factor)


class OnRungs(optuna.pruners.BasePruner):
    """Successive halving deciding only at the study's rungs (see the module's text)."""

    reads_validation_loss = True
    """Tells the objective to record each reported step's validation loss (user attr ``validation_loss``)."""

    OPTIONS = {"reduction_factor": "the share kept at each rung is 1/reduction_factor (default 3)",
               "min_early_stopping_rate": "how many of the first rungs stop no one (default 0)"}

    def __init__(self, stride: int, options: dict[str, Any]) -> None:
        if "min_resource" in options:
            raise ValueError("min_resource does not apply: the rungs are epoch 1 of fold 1 and each fold's end")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            known = "; ".join(f"{name}: {meaning}" for name, meaning in self.OPTIONS.items())
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; successive halving takes {known}")
        self.stride = stride
        self.reduction_factor = int(options.get("reduction_factor", REDUCTION_FACTOR))
        self.first_rung = int(options.get("min_early_stopping_rate", 0))
        if self.reduction_factor < 2 or self.first_rung < 0:
            raise ValueError(f"reduction_factor must be 2 or more and min_early_stopping_rate 0 or more, not {dict(options)}")
        self.baseline: list[float] | None = None
        self.baseline_losses: list[float] | None = None

    def set_baseline(self, fold_scores: Sequence[float], fold_losses: Sequence[float | None] | None = None) -> None:
        """The trivial baseline's score on each of the study's folds, and the validation loss on each of a model that
        learned only the targets' distribution (None: the task cannot say; the score alone then decides)."""
        self.baseline = list(fold_scores)
        self.baseline_losses = known_losses(fold_losses)

    def plateau(self, step: int) -> tuple[float, float | None]:
        """The baseline's score and loss at a rung step: fold 1's at its first epoch, else the mean over the folds so far."""
        assert self.baseline is not None
        folds = step // self.stride + 1 if at_fold_end(step, self.stride) else 1
        loss = None if self.baseline_losses is None else sum(self.baseline_losses[:folds]) / folds
        return sum(self.baseline[:folds]) / folds, loss

    def knows_plateau(self, step: int) -> bool:
        """Whether the baseline covers the folds a rung step has seen."""
        return self.baseline is not None and len(self.baseline) > step // self.stride

    def rung_value(self, step: int, value: float, loss: float | None, better: float) -> float:
        """What the rung compares: the reported value, or the baseline's where the trial has not learned; minus the
        loss's tie-break."""
        if not self.knows_plateau(step):
            return value - better * tie_break(loss)
        score, baseline_loss = self.plateau(step)
        if better * (value - score) > 0 and (baseline_loss is None or (loss is not None and loss < baseline_loss)):
            return value - better * tie_break(loss)
        return on_plateau(score, loss, better)

    def prune(self, study: Any, trial: Any) -> bool:
        step = trial.last_step
        rung = None if step is None else rung_of(step, self.stride)
        if rung is None or rung < self.first_rung:
            return False
        if math.isnan(trial.intermediate_values[step]):
            return True
        better = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0

        def at_rung(reported: Any) -> float:  # a trial's value at this rung (losses by step, as the objective records them)
            loss = reported.user_attrs.get("validation_loss", {}).get(str(step))
            return self.rung_value(step, reported.intermediate_values[step], loss, better)

        others = [at_rung(t) for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and not math.isnan(t.intermediate_values.get(step, math.nan))]
        plateau = self.plateau(step)[0] if self.knows_plateau(step) else None
        return not passes(at_rung(trial), others, self.reduction_factor, better, plateau, at_fold_end(step, self.stride))
