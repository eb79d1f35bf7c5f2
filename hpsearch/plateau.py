"""What a learning sampler (TPE, GP) sees of trials that learned nothing: one plateau, ordered by loss.

Below some learning rate or epoch count a classifier has learned nothing: it predicts the majority
class, or guesses. Its score is then noise around a trivial level, and a sampler that ranks trials on
the metric learns from that noise: its "good" trials are the lucky ones, and it keeps drawing near
them. Seen on the small-budget benchmark (macro-F1): after 39 configurations one seed's winner was a
learning rate of 1e-5 for one epoch, CV 0.41 against the majority class's 0.36; on another seed TPE
followed four trials at 1.2e-5 to 1.4e-5 whose macro-F1 (0.44 to 0.48) clearly beat the majority
class, because a model that guesses both classes does, while their validation loss (0.690) was no
lower than that of predicting the class frequencies (0.687). The one trial that had started to learn
(loss 0.657) scored 0.39 and ranked below them.

So a complete trial counts as learned only when its score clearly beats the trivial baseline on the
study's folds (the paired test the study's selection applies to its winner) and its validation loss
is below that of a model that learned only the targets' distribution (where the task can say:
classification, regression). The loss read is the trial's lowest: the mean over the folds at the
epoch count that minimises it (``cv_loss``), since a model that learned and then grew overconfident
has a high loss at a late scored epoch (seen on the demo study: 0.72 at epoch 3, 0.56 at epoch 1).
The sampler is shown every other complete trial at the
baseline's score, less a tie-break by its validation loss: among trials that learned nothing, the
lowest loss is closest to learning. Pruned trials keep their last reported value, with the same
tie-break where it is a tie. Trials that learned keep their scores, and every one of them ranks above
the plateau, so the sampler's order among them does not change. Only the sampler's view changes: the
stored values, the selection and every report keep the measured scores.

:class:`PlateauAware` wraps Optuna's sampler and passes it that view of the study; the study's session
gives it the baseline (:meth:`PlateauAware.set_baseline`) before the first trial.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import optuna

from hpsearch.rungs import known_losses, on_plateau
from hpsearch.selection import LOSS_ATTR, clearly_beats


class PlateauAware(optuna.samplers.BaseSampler):
    """A single-objective sampler that sees trials at the baseline's plateau as one level, ordered by loss."""

    def __init__(self, inner: optuna.samplers.BaseSampler, direction: str, confidence: float) -> None:
        self.inner, self.direction, self.confidence = inner, direction, confidence
        self.baseline: list[float] | None = None
        self.baseline_loss: float | None = None
        self._seen: dict[int, optuna.trial.FrozenTrial] = {}  # finished trials do not change: viewed once

    def set_baseline(self, fold_scores: Sequence[float], fold_losses: Sequence[float | None] | None = None) -> None:
        """The trivial baseline's score on each of the study's folds (none: the sampler sees the plain scores), and the
        validation loss on each of a model that learned only the targets' distribution (None: the task cannot say);
        the same arguments as :meth:`hpsearch.rungs.OnRungs.set_baseline`. A complete trial's loss is compared with
        their mean."""
        self.baseline = list(fold_scores)
        losses = known_losses(fold_losses)
        self.baseline_loss = None if losses is None else sum(losses) / len(losses)
        self._seen.clear()

    def view(self, trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
        """The trial as the inner sampler sees it (the same object when nothing changes)."""
        if not trial.state.is_finished() or trial._trial_id < 0:  # running, or not in a storage (no stable id)
            return self._view(trial)
        seen = self._seen.get(trial._trial_id)
        if seen is None:
            seen = self._seen[trial._trial_id] = self._view(trial)
        return seen

    def _view(self, trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
        better = 1.0 if self.direction == "maximize" else -1.0
        state = trial.state
        if state == optuna.trial.TrialState.COMPLETE and self.baseline and trial.value is not None:
            folds = trial.user_attrs.get("fold_scores")
            if not folds or len(folds) != len(self.baseline) or self.learned(folds, trial.user_attrs.get(LOSS_ATTR)):
                return trial
            seen = copy.copy(trial)
            seen.value = on_plateau(sum(self.baseline) / len(self.baseline), trial.user_attrs.get(LOSS_ATTR), better)
            return seen
        if state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            losses = trial.user_attrs.get("validation_loss") or {}
            step = max(trial.intermediate_values)
            if str(step) not in losses:
                return trial
            seen = copy.copy(trial)
            seen.intermediate_values = {**trial.intermediate_values,
                                        step: on_plateau(trial.intermediate_values[step], losses[str(step)], better)}
            return seen
        return trial

    def learned(self, fold_scores: Sequence[float], loss: float | None) -> bool:
        """Whether a complete trial learned: its score clearly beats the baseline's on the same folds, and its
        validation loss is below that of a model that learned only the targets' distribution (where known)."""
        if not clearly_beats(fold_scores, self.baseline or [], self.confidence, self.direction)[0]:
            return False
        return self.baseline_loss is None or (loss is not None and loss < self.baseline_loss)

    # The sampler's hooks: those that read the study get the view; those that write get the study.
    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(_StudyView(study, self), trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(_StudyView(study, self), trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(_StudyView(study, self), trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class _StudyView:
    """The study, with its trials as :meth:`PlateauAware.view` shows them; everything else is the study's."""

    def __init__(self, study: Any, sampler: PlateauAware) -> None:
        self._study, self._sampler = study, sampler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        return [self._sampler.view(t) for t in self._study._get_trials(*args, **kwargs)]

    def get_trials(self, *args: Any, **kwargs: Any) -> list[optuna.trial.FrozenTrial]:
        return [self._sampler.view(t) for t in self._study.get_trials(*args, **kwargs)]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()
