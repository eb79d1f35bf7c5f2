from __future__ import annotations

from pathlib import Path
from typing import get_args

import optuna
import pytest

from hpsearch.study import PRUNERS, SAMPLERS, make_pruner, make_sampler
from hpsearch.space import enqueue_params, grid, max_epochs, suggest
from hpsearch.spec import PrunerSpec, SamplerSpec, load_spec_text


def _spec(tmp_path: Path, extra: str = ""):
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    models = "models:\n  - {name: big, path: m}\n  - {name: small, path: m, num_layers: 1, space: {learning_rate: {type: float, low: 1.0e-3, high: 2.0e-3}, epochs: 7}}\n"
    return load_spec_text("name: s\ntask: text-classification\ndata: {train: d.csv}\n" + models + extra, tmp_path)


def test_sampled_values_respect_bounds_and_overrides(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "space: {batch_size: [8, 16], scope: [full, freeze-1]}\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        name, params = suggest(trial, spec)
        seen.add(name)
        if name == "small":
            assert 1e-3 <= params["learning_rate"] <= 2e-3 and params["epochs"] == 7
            assert "small:learning_rate" in trial.params and "learning_rate" not in trial.params
        else:
            assert 1e-5 <= params["learning_rate"] <= 1e-4 and 2 <= params["epochs"] <= 4
        assert params["batch_size"] in (8, 16) and params["scope"] in ("full", "freeze-1")
        assert params["adam_epsilon"] == 1e-8 and "adam_epsilon" not in trial.params  # fixed values are not searched
        study.tell(trial, 0.0)
    assert seen == {"big", "small"}
    assert max_epochs(spec) == 7


def test_enqueued_settings_map_to_optuna_names(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert enqueue_params(spec, {"model": "small", "learning_rate": 1.5e-3}) == {"model": "small", "small:learning_rate": 1.5e-3}
    assert enqueue_params(spec, {"model": "big", "learning_rate": 3e-5}) == {"model": "big", "learning_rate": 3e-5}


def test_grid_lists_every_value(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    spec = load_spec_text(
        "name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels: [{name: a, path: m}, {name: b, path: m}]\n"
        "space: {learning_rate: {type: float, low: 1.0e-4, high: 3.0e-4, step: 1.0e-4}, epochs: {type: int, low: 2, high: 3}, "
        "batch_size: 16, weight_decay: 0.0, warmup_ratio: 0.0}\n",
        tmp_path,
    )
    assert grid(spec) == {"model": ["a", "b"], "learning_rate": [1e-4, 2e-4, 3e-4], "epochs": [2, 3]}


@pytest.mark.parametrize("name", get_args(SamplerSpec.model_fields["name"].annotation))
def test_every_sampler_in_the_spec_has_a_seeded_factory(tmp_path: Path, name: str) -> None:
    _spec(tmp_path)  # writes the data and model folder
    search = f"search: {{sampler: {{name: {name}, seed: 3}}" + (", second_objective: params}" if name == "nsga2" else "}")
    # The grid sampler needs a finite space and no per-candidate overrides.
    space = "space: {learning_rate: [1.0e-5, 2.0e-5], epochs: 2, batch_size: 16, weight_decay: 0.0, warmup_ratio: 0.0}\n" if name == "grid" else ""
    spec = load_spec_text(f"name: s\ntask: text-classification\ndata: {{train: d.csv}}\nmodels: [{{name: big, path: m}}]\n{search}\n{space}", tmp_path)
    assert isinstance(make_sampler(spec), optuna.samplers.BaseSampler)
    assert set(SAMPLERS) == set(get_args(SamplerSpec.model_fields["name"].annotation))


@pytest.mark.parametrize("name", get_args(PrunerSpec.model_fields["name"].annotation))
def test_every_pruner_in_the_spec_has_a_factory(tmp_path: Path, name: str) -> None:
    pruner = make_pruner(_spec(tmp_path, f"search: {{pruner: {{name: {name}}}}}\n"))
    assert isinstance(pruner, optuna.pruners.BasePruner)
    assert set(PRUNERS) == set(get_args(PrunerSpec.model_fields["name"].annotation))


def test_bad_pruner_options_name_the_field(tmp_path: Path) -> None:
    from hpsearch.errors import SpecError

    with pytest.raises(SpecError, match=r"search.pruner.options: median pruner rejected \{'bogus': 1\}"):
        make_pruner(_spec(tmp_path, "search: {pruner: {name: median, options: {bogus: 1}}}\n"))


def test_every_varying_setting_is_shown_and_only_settings_that_apply(tmp_path: Path) -> None:
    from hpsearch.space import shown_params

    spec = _spec(tmp_path, "space: {adam_epsilon: [1.0e-8, 1.0e-6], scope: [full, lora], lora_r: [4, 8], batch_size: 16}\n")
    params = {"learning_rate": 2e-5, "adam_epsilon": 1e-6, "scope": "full", "lora_r": 4, "batch_size": 16, "epochs": 3, "warmup_ratio": 0.1,
              "weight_decay": 0.0, "lora_alpha": 16}
    shown = shown_params(spec, "big", params)
    assert shown == {"learning_rate": 2e-5, "adam_epsilon": 1e-6, "scope": "full", "epochs": 3, "warmup_ratio": 0.1, "weight_decay": 0.0}
    assert shown_params(spec, "big", {**params, "scope": "lora"})["lora_r"] == 4  # LoRA settings only where LoRA trains
    small = shown_params(spec, "small", {**params, "learning_rate": 1.5e-3, "epochs": 7})
    assert "epochs" not in small and small["learning_rate"] == 1.5e-3  # fixed for that candidate: not shown
    assert shown_params(spec, "big", {**params, "batch_size": 8})["batch_size"] == 8  # changed by a memory retry: shown


def test_start_up_trials_are_optunas_unless_set(tmp_path: Path) -> None:
    assert make_sampler(_spec(tmp_path, "search: {n_trials: 8}\n")).inner._n_startup_trials == 10  # TPE behind the plateau view
    mine = _spec(tmp_path, "search: {n_trials: 8, sampler: {name: tpe, options: {n_startup_trials: 2}}}\n")
    assert make_sampler(mine).inner._n_startup_trials == 2


def test_validate_says_when_the_sampler_has_nothing_to_learn_from(tmp_path: Path) -> None:
    from hpsearch.summary import search_budget_lines

    lines = search_budget_lines(_spec(tmp_path, "search: {n_trials: 8}\n"))
    assert lines[0] == "  sampler budget: all 8 trial(s) fall in tpe's random start-up of 10, so none is guided by it"  # one parenthesis after another before
    assert lines[1].startswith("warning: with n_trials 8 the tpe sampler has 0 trial(s) to learn from its start-up of 10")
    assert "n_startup_trials (e.g. 2)" in lines[1]
    shorter = search_budget_lines(_spec(tmp_path, "search: {n_trials: 8, sampler: {name: tpe, options: {n_startup_trials: 2}}, "
                                                  "enqueue: [{learning_rate: 2.0e-5}]}\n"))
    assert shorter == ["  sampler budget: 2 random start-up trial(s) (the 1 enqueued setting(s) count among them), then 6 guided by tpe"]
    tiny = search_budget_lines(_spec(tmp_path, "search: {n_trials: 3}\n"))  # no start-up length would leave 2 guided trials
    assert "n_startup_trials" not in tiny[1] and "raise search.n_trials (this budget is too small" in tiny[1]
    # A space whose every configuration n_trials covers has nothing to learn: each is tried, and a warning would be noise.
    _spec(tmp_path)  # its data and model folder
    covered = search_budget_lines(load_spec_text(
        "name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels: [{name: big, path: m}]\nsearch: {n_trials: 3}\n"
        "space: {learning_rate: [1.0e-5, 2.0e-5], epochs: 1, batch_size: 8, weight_decay: 0.0, warmup_ratio: 0.0}\n", tmp_path))
    assert len(covered) == 1


@pytest.mark.parametrize("space", ["", "space: {epochs: 9}\n", "space: {epochs: {type: int, low: 2, high: 5}}\n", "space: {epochs: [2, 3]}\n"])
def test_the_epoch_range_a_study_was_bound_to_is_read_back_from_its_record(tmp_path: Path, space: str) -> None:
    # What numbers the steps carried-over trials reported (run --new-study --keep-trials renumbers them from it)
    from hpsearch.binding import objective_fields
    from hpsearch.space import stored_max_epochs

    spec = _spec(tmp_path, space)  # 'small' overrides epochs with 7
    for record in (objective_fields(spec), objective_fields(spec, compact=False)):
        assert stored_max_epochs(spec, record) == max_epochs(spec)
    single = load_spec_text(f"name: s\ntask: text-classification\ndata: {{train: d.csv}}\nmodels: [{{name: big, path: m}}]\n{space}", tmp_path)
    assert stored_max_epochs(single, objective_fields(single)) == max_epochs(single)
