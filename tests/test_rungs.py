"""Successive halving on the study's rungs: which steps are rungs, what a configuration costs, who stops."""
from __future__ import annotations

import optuna
import pytest

from hpsearch.rungs import TIE_BREAK, OnRungs, expected_work, passes, rung_of, rung_positions, tie_break


def test_rungs_are_the_first_epoch_then_each_fold_end() -> None:
    stride = 4  # 3 epochs per fold at steps 4k..4k+2, the CV score so far at 4k+3
    assert [s for s in range(12) if rung_of(s, stride) is not None] == [0, 3, 7, 11]
    assert [rung_of(s, stride) for s in (0, 3, 7)] == [0, 1, 2]
    # One epoch per fold: its first epoch is the first fold's end, so the fold ends alone are rungs.
    assert [(s, rung_of(s, 2)) for s in range(6) if rung_of(s, 2) is not None] == [(1, 0), (3, 1), (5, 2)]


def test_expected_work_of_a_configuration() -> None:
    assert rung_positions(3, 3) == pytest.approx([1 / 9, 1 / 3, 2 / 3])
    # 1/9 for everyone, then a third goes on to 1/3, a ninth to 2/3, a 27th to the end.
    assert expected_work(3, 3, 3) == pytest.approx(1 / 9 + (1 / 3) * (2 / 9) + (1 / 9) * (1 / 3) + (1 / 27) * (1 / 3))
    assert expected_work(3, 1, 3) == pytest.approx(1 / 3 + (1 / 3) * (1 / 3) + (1 / 9) * (1 / 3))  # no epoch rung
    assert expected_work(3, 3, 1) == pytest.approx(1.0)  # keeping everyone costs full trials


def _report(study: optuna.Study, values: dict[int, float], losses: dict[int, float] | None = None) -> bool:
    """A new trial reports ``values`` (step -> value) in order, with the validation ``losses`` of those steps; whether
    it was told to stop at its last step."""
    trial = study.ask()
    pruned = False
    for step, value in sorted(values.items()):
        if losses:
            trial.set_user_attr("validation_loss", {str(s): loss for s, loss in losses.items() if s <= step})
        trial.report(value, step)
        pruned = trial.should_prune()
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return True
    study.tell(trial, values[max(values)])
    return pruned


def test_a_trial_is_compared_only_with_what_others_had_at_the_same_rung() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=OnRungs(4, {}))
    # Trial 0 sets the bar at every rung: epoch 1 of fold 1 (step 0) 0.6, fold 1's end (step 3) 0.7.
    assert not _report(study, {0: 0.6, 1: 0.65, 2: 0.7, 3: 0.7, 4: 0.7, 7: 0.71, 8: 0.72})
    # Worse at epoch 1 of fold 1: stopped there, before paying for more.
    assert _report(study, {0: 0.5, 1: 0.9})
    # Between rungs nothing stops a trial, however bad its epochs look; at fold 1's end it is compared
    # with the 0.7 trial 0 had there (not with the epoch-1 values).
    assert not _report(study, {0: 0.6, 1: 0.1, 2: 0.65, 3: 0.71, 4: 0.5, 7: 0.72, 8: 0.8})
    assert _report(study, {0: 0.61, 1: 0.6, 2: 0.6, 3: 0.69})
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    assert sorted(study.get_trials()[1].intermediate_values) == [0]


def test_rungs_are_not_configurable_by_resource() -> None:
    with pytest.raises(ValueError, match="min_resource does not apply"):
        OnRungs(4, {"min_resource": 2})
    with pytest.raises(ValueError, match="unknown option.* bootstrap_count; successive halving takes reduction_factor"):
        OnRungs(4, {"bootstrap_count": 2})
    with pytest.raises(ValueError, match="reduction_factor must be 2 or more"):
        OnRungs(4, {"reduction_factor": 1})


def test_a_rung_keeps_the_top_third_rounded_up() -> None:
    # Of n trials at a rung (the one deciding included), ceil(n/3) pass: 1 of 1 to 3, 2 of 4 to 6, 3 of 7 to 9.
    for n, kept in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 3), (9, 3), (10, 4)]:
        others = [float(v) for v in range(n - 1)]  # 0, 1, ...; a value ahead of k of them ranks k+1 from the top
        ranks = [rank for rank in range(1, n + 1) if passes(n - rank - 0.5, others, 3, 1.0)]
        assert ranks == list(range(1, kept + 1)), n
    assert passes(3.0, [2.0, 3.0, 5.0, 1.0], 3, 1.0) and not passes(2.0, [2.0, 3.0, 5.0, 1.0], 3, 1.0)  # ties with the second pass
    assert passes(0.2, [0.1, 0.3, 0.5, 0.9], 3, -1.0) and not passes(0.31, [0.1, 0.3, 0.5, 0.9], 3, -1.0)  # lower is better
    # With the plateau known, the first three above it pass whatever their rank; the fourth is ranked.
    assert passes(0.5, [0.9, 0.8, 0.3, 0.3, 0.3], 3, 1.0, plateau=0.35)
    assert not passes(0.5, [0.9, 0.8, 0.7, 0.3, 0.3], 3, 1.0, plateau=0.35)
    assert not passes(0.3, [0.9, 0.8, 0.3], 3, 1.0, plateau=0.35)  # on the plateau: ranked


def test_the_first_rungs_can_stop_no_one() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=OnRungs(4, {"min_early_stopping_rate": 1}))
    assert not _report(study, {0: 0.6, 3: 0.7, 7: 0.7, 8: 0.7})
    assert not _report(study, {0: 0.1, 3: 0.8, 7: 0.8, 8: 0.8})  # far behind at epoch 1 of fold 1: rung 0 stops no one
    assert _report(study, {0: 0.1, 3: 0.5})  # fold 1's end decides: behind both


def test_a_tie_on_the_metric_goes_to_the_lower_validation_loss() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=OnRungs(4, {}))

    def plateau(loss: float) -> bool:  # the majority-class score every stuck classifier gets, with its own loss
        trial = study.ask()
        trial.set_user_attr("validation_loss", {"0": loss})
        trial.report(0.3576, 0)
        pruned = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
                   values=None if pruned else [0.3576])
        return pruned

    assert not plateau(0.69)
    assert plateau(0.70)  # same score, higher loss: stopped
    assert not plateau(0.65)  # same score, lower loss: goes on
    assert study.get_trials()[2].intermediate_values[0] == 0.3576  # the reported value itself is untouched


def _at_first_rung(study: optuna.Study, value: float, loss: float | None) -> bool:
    """A new trial reports ``value`` with ``loss`` at epoch 1 of fold 1; whether it was stopped there."""
    trial = study.ask()
    if loss is not None:
        trial.set_user_attr("validation_loss", {"0": loss})
    trial.report(value, 0)
    pruned = trial.should_prune()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE,
               values=None if pruned else [value])
    return pruned


def test_a_trial_that_has_not_learned_sits_at_the_baseline_whatever_its_score() -> None:
    """Macro-F1 of a model that guesses both classes beats the majority class by chance; its loss says it learned nothing."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = OnRungs(4, {})
    pruner.set_baseline([0.36, 0.35, 0.37], [0.687, 0.688, 0.686])
    study = optuna.create_study(direction="maximize", pruner=pruner)
    assert not _at_first_rung(study, 0.45, loss=0.700)  # lucky guessing; the first trial passes alone
    assert not _at_first_rung(study, 0.36, loss=0.660)  # loss falling, predictions not changed yet: ahead of the lucky one
    assert _at_first_rung(study, 0.47, loss=0.710)  # luckier still, but further from learning: stopped
    assert not _at_first_rung(study, 0.62, loss=0.600)  # learned: its own score, above the whole plateau
    assert pruner.rung_value(0, 0.45, 0.700, 1.0) == 0.36 - tie_break(0.700)
    assert pruner.rung_value(0, 0.62, 0.600, 1.0) == 0.62 - tie_break(0.600)
    # A score no better than the baseline's sits on the plateau too, ordered by loss; a missing loss goes last.
    assert pruner.rung_value(0, 0.30, 0.650, 1.0) == 0.36 - tie_break(0.650) > pruner.rung_value(0, 0.36, None, 1.0) == 0.36 - TIE_BREAK


def test_the_plateau_at_a_rung_is_the_baselines_on_the_same_folds() -> None:
    pruner = OnRungs(4, {})  # 3 epochs per fold; fold ends at steps 3, 7, 11
    pruner.set_baseline([0.30, 0.40, 0.50], [0.60, 0.70, 0.80])
    assert pruner.plateau(0) == (0.30, 0.60)  # epoch 1 of fold 1
    assert pruner.plateau(3) == (0.30, 0.60)  # fold 1's end: its CV score so far is fold 1's
    assert pruner.plateau(7) == (pytest.approx(0.35), pytest.approx(0.65))  # fold 2's end: the mean of folds 1 and 2
    # Where the task has no loss for it (token classification, QA), the score alone decides.
    pruner.set_baseline([0.30, 0.40, 0.50], [None, None, None])
    assert pruner.plateau(7)[1] is None
    assert pruner.rung_value(7, 0.36, 2.0, 1.0) == 0.36 - tie_break(2.0)
    assert pruner.rung_value(7, 0.34, 2.0, 1.0) == pytest.approx(0.35 - tie_break(2.0), abs=0)
    # A minimised metric: better is lower.
    pruner.set_baseline([0.30, 0.40, 0.50], [0.60, 0.70, 0.80])
    assert pruner.rung_value(0, 0.20, 0.50, -1.0) == 0.20 + tie_break(0.50)
    assert pruner.rung_value(0, 0.35, 0.50, -1.0) == 0.30 + tie_break(0.50)


def test_the_first_trials_that_learned_pass_a_rung_until_it_can_rank_them() -> None:
    """A third of fewer than three is nobody: a strong first trial must not stop every later one that learned."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = OnRungs(4, {})  # a third kept at each rung
    pruner.set_baseline([0.36, 0.35, 0.37], [0.687, 0.688, 0.686])
    study = optuna.create_study(direction="maximize", pruner=pruner)
    assert not _at_first_rung(study, 0.72, loss=0.55)  # the first trial that learned
    assert _at_first_rung(study, 0.36, loss=0.690)  # on the plateau: compared as always, and stopped
    assert not _at_first_rung(study, 0.65, loss=0.60)  # learned, worse than the first: the second that learned passes
    assert not _at_first_rung(study, 0.60, loss=0.62)  # and the third
    # From the fourth that learned on, the rung ranks them: the top third of the trials there, rounded up.
    assert not _at_first_rung(study, 0.70, loss=0.58)  # second of 5 (the top 2 pass)
    assert _at_first_rung(study, 0.61, loss=0.61)  # fifth of 6 (the top 2 pass)
    assert not _at_first_rung(study, 0.73, loss=0.50)
    # Without a baseline nothing says who learned: the ranking alone (the second must beat the first).
    plain = optuna.create_study(direction="maximize", pruner=OnRungs(4, {}))
    assert not _at_first_rung(plain, 0.72, loss=0.55)
    assert _at_first_rung(plain, 0.65, loss=0.60)


def test_at_a_folds_end_a_trial_that_has_not_learned_stops_unless_it_is_the_first_there() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    pruner = OnRungs(4, {})  # 3 epochs per fold: epoch 1 of fold 1 at step 0, fold 1's end at step 3
    pruner.set_baseline([0.36, 0.35, 0.37], [0.687, 0.688, 0.686])
    study = optuna.create_study(direction="maximize", pruner=pruner)
    # The first trial goes on alone, learned or not: a study where nothing learns still completes one.
    assert not _report(study, {0: 0.36, 3: 0.36, 7: 0.36}, losses={0: 0.68, 3: 0.68, 7: 0.68})
    # On the plateau at epoch 1 but closer to learning (lower loss): passes that rung; at fold 1's end, a whole
    # fold trained and still on the plateau: stopped, though its loss is lower than the first trial's.
    assert _report(study, {0: 0.36, 3: 0.36, 7: 0.36}, losses={0: 0.60, 3: 0.60, 7: 0.60})
    assert sorted(study.get_trials()[-1].intermediate_values) == [0, 3]
    # A trial that learned by fold 1's end goes on.
    assert not _report(study, {0: 0.36, 3: 0.62, 7: 0.63}, losses={0: 0.58, 3: 0.55, 7: 0.55})
    assert passes(0.36, [0.36, 0.36], 3, 1.0, plateau=0.36) and not passes(0.36, [0.36, 0.36], 3, 1.0, plateau=0.36, fold_end=True)
    assert passes(0.36, [], 3, 1.0, plateau=0.36, fold_end=True)  # the first there
