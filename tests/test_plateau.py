"""The sampler's view of trials that learned nothing: one plateau at the baseline, ordered by loss."""
from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest

from hpsearch.plateau import PlateauAware
from hpsearch.rungs import TIE_BREAK, tie_break
from hpsearch.study import make_sampler
from hpsearch.spec import load_spec_text

BASELINE = [0.36, 0.35, 0.37]
LR = optuna.distributions.FloatDistribution(1e-5, 1e-4, log=True)


def _complete(lr: float, folds: list[float], loss: float | None) -> optuna.trial.FrozenTrial:
    attrs = {"fold_scores": folds, **({"cv_loss": loss} if loss is not None else {})}
    return optuna.trial.create_trial(params={"learning_rate": lr}, distributions={"learning_rate": LR},
                                     value=statistics.fmean(folds), user_attrs=attrs)


def _pruned(lr: float, value: float, loss: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(params={"learning_rate": lr}, distributions={"learning_rate": LR},
                                     state=optuna.trial.TrialState.PRUNED, intermediate_values={0: 0.5, 3: value},
                                     user_attrs={"validation_loss": {"0": 0.7, "3": loss}})


def _plateau_aware(direction: str = "maximize") -> PlateauAware:
    sampler = PlateauAware(optuna.samplers.RandomSampler(seed=0), direction, 0.95)
    sampler.set_baseline(BASELINE)
    return sampler


def test_a_trial_that_learned_nothing_is_seen_at_the_baseline_less_its_loss() -> None:
    sampler = _plateau_aware()
    lucky = _complete(1e-5, [0.40, 0.36, 0.37], loss=0.69)  # above the baseline by chance, not clearly
    closer = _complete(5e-5, [0.36, 0.35, 0.37], loss=0.60)
    learned = _complete(8e-5, [0.70, 0.72, 0.71], loss=0.50)
    seen = {t.params["learning_rate"]: sampler.view(t).value for t in (lucky, closer, learned)}
    assert seen[1e-5] == pytest.approx(statistics.fmean(BASELINE) - tie_break(0.69), abs=0)
    assert seen[5e-5] > seen[1e-5]  # lower loss: closer to learning, though its score is lower
    assert seen[8e-5] == learned.value  # a trial that learned keeps its score, above the whole plateau
    assert lucky.value == pytest.approx(0.3766, abs=1e-4)  # the trial itself is unchanged


def test_a_score_that_beats_the_majority_class_learned_nothing_while_its_loss_is_the_priors() -> None:
    """A model that guesses both classes clearly beats the majority class on macro-F1; its loss says it learned nothing."""
    sampler = _plateau_aware()
    sampler.set_baseline(BASELINE, [0.688, 0.687, 0.686])  # mean 0.687
    guessing = _complete(1.2e-5, [0.47, 0.48, 0.44], loss=0.690)
    starting = _complete(6e-5, [0.40, 0.36, 0.41], loss=0.657)
    learned = _complete(8e-5, [0.70, 0.72, 0.71], loss=0.55)
    assert not sampler.learned(guessing.user_attrs["fold_scores"], 0.690) and sampler.learned(learned.user_attrs["fold_scores"], 0.55)
    assert sampler.view(starting).value > sampler.view(guessing).value  # the one that started to learn leads the plateau
    assert sampler.view(guessing).value < statistics.fmean(BASELINE) < sampler.view(learned).value == learned.value
    assert not sampler.learned([0.70, 0.72, 0.71], None)  # a loss unknown while the prior's is known: not shown as learned
    sampler.set_baseline(BASELINE, [0.688, None, 0.686])  # a fold the task cannot say for: no loss bar
    assert sampler.learned([0.70, 0.72, 0.71], None)


def test_the_plateau_is_ordered_the_other_way_when_the_metric_is_minimised() -> None:
    sampler = _plateau_aware("minimize")
    low, high = _complete(1e-5, [0.36, 0.35, 0.37], loss=0.3), _complete(2e-5, [0.36, 0.35, 0.37], loss=0.9)
    assert sampler.view(low).value < sampler.view(high).value


def test_pruned_trials_break_ties_at_their_last_step_by_loss() -> None:
    sampler = _plateau_aware()
    a, b = _pruned(1e-5, 0.36, loss=0.69), _pruned(5e-5, 0.36, loss=0.55)
    assert sampler.view(b).intermediate_values[3] > sampler.view(a).intermediate_values[3]
    assert sampler.view(a).intermediate_values[0] == 0.5
    assert abs(sampler.view(a).intermediate_values[3] - 0.36) < TIE_BREAK


def test_without_a_baseline_or_fold_scores_the_sampler_sees_the_plain_scores() -> None:
    sampler = PlateauAware(optuna.samplers.RandomSampler(seed=0), "maximize", 0.95)
    trial = _complete(1e-5, [0.36, 0.35, 0.37], loss=0.69)
    assert sampler.view(trial) is trial
    sampler.set_baseline(BASELINE[:2])  # another fold count: not comparable
    assert sampler.view(trial) is trial


def test_tpe_behind_the_view_draws_towards_the_lowest_loss_not_the_luckiest_score() -> None:
    """Ten plateau trials: the luckiest scores sit at the lowest learning rates, the lowest losses at the
    highest. Plain TPE follows the luck; behind the view it follows the loss."""
    def study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        made = optuna.create_study(direction="maximize", sampler=sampler)
        for i in range(10):
            lr = 1e-5 * 10 ** (i / 9)
            luck = 0.06 * (9 - i) / 9  # the least-trained trials flipped a few rows of one fold
            made.add_trial(_complete(lr, [BASELINE[0] + luck, *BASELINE[1:]], loss=0.70 - 0.01 * i))
        return made

    def drawn(made: optuna.Study) -> float:
        lrs = []
        for _ in range(20):
            trial = made.ask({"learning_rate": LR})
            lrs.append(trial.params["learning_rate"])
            made.tell(trial, state=optuna.trial.TrialState.FAIL)  # not counted: every draw sees the same ten
        return statistics.median(lrs)

    plain = drawn(study(optuna.samplers.TPESampler(seed=3, n_startup_trials=5)))
    aware = PlateauAware(optuna.samplers.TPESampler(seed=3, n_startup_trials=5), "maximize", 0.95)
    aware.set_baseline(BASELINE)
    viewed = drawn(study(aware))
    assert plain < 3e-5 < viewed


def test_tpe_and_gp_get_the_view_in_a_single_objective_study_only(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here

    def spec(sampler: str, second: str = "") -> object:
        return load_spec_text("name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels:\n  - {name: m, path: m}\n"
                              f"search: {{sampler: {{name: {sampler}}}{second}}}\n", tmp_path)

    assert isinstance(make_sampler(spec("tpe")), PlateauAware)
    assert isinstance(make_sampler(spec("gp")), PlateauAware)
    assert isinstance(make_sampler(spec("random")), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler(spec("tpe", ", second_objective: params")), optuna.samplers.TPESampler)
