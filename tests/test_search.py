"""End-to-end `hpsearch run` on the tiny model: search, CV selection, resume, grid, pruning, failures."""
from __future__ import annotations

import csv
import itertools
import json
import platform
from pathlib import Path
from typing import Any

import pytest
import torch

from hpsearch.cli import main
from hpsearch.errors import HpsearchError
from hpsearch.numbers import amount_figure
from hpsearch.accounting import counted_trials
from hpsearch.runner import run_study
from hpsearch.search import best_epoch_aggregate
from hpsearch.storage import make_storage
from hpsearch.study import open_study
from hpsearch.spec import load_spec
from hpsearch.status import trial_table
from toydata import toy_study

FAST = """\
space:
  learning_rate: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}
  epochs: 3
  batch_size: 8
  warmup_ratio: 0.0
cv: {folds: 3}
tracking: {enabled: false}
"""


def _study(tmp_path: Path, model: Path, search: str, models: str | None = None, space: str = FAST, rows: int = 90) -> Path:
    path = toy_study(tmp_path, model, rows=rows, extra=space + search)
    if models is not None:
        text = path.read_text()
        start = text.index("models:")
        end = text.index("\n", text.index("- {name: tiny"))
        path.write_text(text[:start] + models + text[end + 1 :])
    return path


def _trials(path: Path):
    import optuna

    spec = load_spec(path)
    return optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()


def _quiet(message: str, **fields: object) -> None:
    pass


def test_study_with_two_candidates_completes_and_selects_the_best(tmp_path: Path, tiny_bert: Path, tiny_bert_4layers: Path) -> None:
    models = f"models:\n  - {{name: two, path: {tiny_bert}}}\n  - {{name: four, path: {tiny_bert_4layers}}}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 4, pruner: {name: none}, sampler: {name: random}}\n", models)
    said: list[dict] = []
    assert run_study(path, say=lambda message, **fields: said.append(fields)) == 0
    spec = load_spec(path)
    trials = _trials(path)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(trials) == 4 and len(complete) == 4
    from hpsearch.finetune.loop import resolve_precision

    used = resolve_precision("auto", torch.device("cpu"))  # what the study's precision: auto means on this CPU
    assert [f["precision"] for f in said if f.get("event") == "precision"] == [used]
    assert {t.user_attrs["precision"] for t in trials} == {used}
    assert {t.params["model"] for t in trials} <= {"two", "four"}
    table = json.loads((spec.out_dir / "cv_results.json").read_text())
    assert len(table) == len(complete)
    for row in table:
        trial = next(t for t in complete if t.number == row["trial"])
        assert row["mean_score"] == pytest.approx(sum(trial.user_attrs["fold_scores"]) / 3)
        assert [row[f"split{k}_score"] for k in range(3)] == trial.user_attrs["fold_scores"]
        assert trial.value == pytest.approx(row["mean_score"])
        assert trial.user_attrs["best_epochs"] in (1, 2, 3) and trial.user_attrs["device"] == "cpu"
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert report["selected"]["trial"] == max(complete, key=lambda t: (t.value, -t.number)).number
    assert report["cv_interval"]["low"] <= report["selected"]["mean_score"] <= report["cv_interval"]["high"]
    assert len(report["paired_comparisons"]) == 3
    assert report["test_scores"] is None  # no test split in this study
    assert (spec.export_dir / "config.json").is_file()


def _good_then_stuck(tmp_path: Path, tiny_bert: Path, epochs: int, warmup_steps: int, pruner: str = "") -> Path:
    """Two trials of a candidate that learns, then one whose learning rate is 1e-9, under the median pruner
    (or ``pruner``); run."""
    models = (
        f"models:\n  - {{name: good, path: {tiny_bert}}}\n"
        f"  - {{name: stuck, path: {tiny_bert}, space: {{learning_rate: 1.0e-9}}}}\n"
    )
    search = (
        "search:\n  n_trials: 3\n  sampler: {name: random}\n"
        + (pruner or f"  pruner: {{name: median, options: {{n_startup_trials: 2, n_warmup_steps: {warmup_steps}}}}}\n")
        + "  enqueue: [{model: good, learning_rate: 1.0e-2}, {model: good, learning_rate: 8.0e-3}, {model: stuck}]\n"
    )
    space = FAST.replace("epochs: 3", f"epochs: {epochs}").replace("high: 5.0e-3", "high: 1.0e-2")
    path = _study(tmp_path, tiny_bert, search, models, space=space, rows=150)
    assert run_study(path, say=_quiet) == 0
    return path


def test_candidate_that_cannot_learn_is_pruned(tmp_path: Path, tiny_bert: Path) -> None:
    trials = _trials(_good_then_stuck(tmp_path, tiny_bert, epochs=4, warmup_steps=0))
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert "pruned at fold 1" in trials[2].user_attrs["failure_reason"]
    assert trials[2].user_attrs["params"]["learning_rate"] == 1e-9
    assert max(trials[0].user_attrs["fold_scores"]) > 0.9  # the good candidate did learn


def test_fold_end_step_prunes_on_the_cv_score_so_far(tmp_path: Path, tiny_bert: Path) -> None:
    # The warm-up covers fold 1's two epoch steps, so only the fold-end step (the CV score so far) can prune.
    path = _good_then_stuck(tmp_path, tiny_bert, epochs=2, warmup_steps=2)
    first, _, stuck = _trials(path)
    assert stuck.state.name == "PRUNED"
    assert "validation_loss" not in first.user_attrs  # only a pruner that reads it gets it written
    assert stuck.user_attrs["failure_reason"].startswith("pruned after fold 1: macro_f1 so far")
    assert sorted(stuck.intermediate_values) == [0, 1, 2]
    # Steps: fold k's epochs at 3k and 3k+1, its CV score so far at 3k+2; none after the last fold.
    curves = first.user_attrs["epoch_curves"]
    assert sorted(first.intermediate_values) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert [first.intermediate_values[s] for s in (0, 1, 3, 4, 6, 7)] == [v for curve in curves for v in curve]
    assert first.intermediate_values[2] == max(curves[0])
    assert first.intermediate_values[5] == pytest.approx(sum(best_epoch_aggregate(curves[:2], "maximize")[1]) / 2)


def test_successive_halving_stops_a_hopeless_configuration_after_one_epoch_of_one_fold(tmp_path: Path, tiny_bert: Path) -> None:
    path = _good_then_stuck(tmp_path, tiny_bert, epochs=4, warmup_steps=0, pruner="  pruner: {name: successive-halving}\n")
    trials = _trials(path)
    assert trials[0].state.name == "COMPLETE"  # the first trial passes every rung
    # the tie-break's input: the loss of every epoch step (0-3) and of the fold-end steps (4, 9) of 3 folds x 4 epochs
    assert sorted(int(s) for s in trials[0].user_attrs["validation_loss"]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    stuck = trials[2]
    assert stuck.state.name == "PRUNED" and stuck.user_attrs["params"]["learning_rate"] == 1e-9
    assert stuck.user_attrs["failure_reason"].startswith("pruned at fold 1, epoch 1:")
    assert sorted(stuck.intermediate_values) == [0]  # one epoch of one fold was all it cost
    # what the sampler reads (hpsearch.plateau): the lowest mean validation loss over the folds at a common epoch count
    losses = trials[0].user_attrs["validation_loss"]
    means = [sum(losses[str(f * 5 + e)] for f in range(3)) / 3 for e in range(4)]
    assert trials[0].user_attrs["cv_loss"] == pytest.approx(min(means))
    # at a fold's end (a rung) the pruner reads the same: the lowest mean loss over the folds so far
    assert losses["4"] == pytest.approx(min(losses[str(e)] for e in range(4)))
    assert losses["9"] == pytest.approx(min((losses[str(e)] + losses[str(5 + e)]) / 2 for e in range(4)))


def test_the_sampler_is_given_the_baseline_of_the_study_folds(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.plateau import PlateauAware
    from hpsearch.session import Session

    session = Session(load_spec(_study(tmp_path, tiny_bert, "search: {n_trials: 1}\n")), _quiet)
    assert isinstance(session.study.sampler, PlateauAware)
    assert session.study.sampler.baseline == session.baseline["fold_scores"] and len(session.baseline["fold_scores"]) == 3


def test_successive_halving_is_given_the_baseline_of_the_study_folds(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.rungs import OnRungs
    from hpsearch.session import Session

    session = Session(load_spec(_study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: successive-halving}}\n")), _quiet)
    pruner = session.study.pruner
    assert isinstance(pruner, OnRungs)
    assert pruner.baseline == session.baseline["fold_scores"] and len(pruner.baseline) == 3
    assert pruner.baseline_losses == session.baseline["fold_losses"] and all(loss > 0 for loss in pruner.baseline_losses)
    assert session.study.sampler.baseline_loss == session.baseline["loss"] > 0  # cross-entropy of the class frequencies


def test_a_time_budget_instead_of_a_trial_count(tmp_path: Path, tiny_bert: Path) -> None:
    said: list[str] = []
    path = _study(tmp_path, tiny_bert, "search: {n_trials: null, timeout: 2, pruner: {name: successive-halving}}\n",
                  space=FAST.replace("epochs: 3", "epochs: 1"), rows=60)
    assert run_study(path, say=lambda m, **f: said.append(m)) == 0
    assert any("trials for 2 s" in m for m in said)
    assert any(m.startswith("timeout of 2s reached") for m in said)  # the budget, not a count, ended the search
    assert any(t.state.name == "COMPLETE" for t in _trials(path))
    assert json.loads((load_spec(path).out_dir / "selection.json").read_text())["selected"]["trial"] is not None


def test_interrupted_study_resumes_to_exactly_n_trials(tmp_path: Path, tiny_bert: Path) -> None:
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 3, pruner: {name: none}}\n")

    def interrupt(message: str, **fields: object) -> None:
        if message.startswith("trial 1 fold 2/3 epoch 1"):
            raise KeyboardInterrupt

    assert run_study(path, say=interrupt) == 130
    trials = _trials(path)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["interrupted"]
    assert run_study(path, say=_quiet) == 0
    trials = _trials(path)
    counted = [t for t in trials if not t.user_attrs.get("interrupted")]
    assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    assert trials[2].params == trials[1].params  # the interrupted configuration ran again
    # The resumed sampler goes on with settings of its own: seeded as on the first run, it drew trial 0's again.
    assert len({t.params["learning_rate"] for t in counted}) == 3
    selected = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert selected["trials"] == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 0, "INTERRUPTED": 1, "REPEAT": 0}  # stopped by the user, not failed
    assert run_study(path, say=_quiet) == 0  # nothing left to do: no new trial
    assert len(_trials(path)) == 4


def test_an_interrupt_at_the_end_of_the_study_keeps_every_trial_and_says_how_to_finish(tmp_path: Path, tiny_bert: Path) -> None:
    """Ctrl-C during the final model said only 'hpsearch run: interrupted', and the MLflow study run ended as failed."""
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n")
    said: list[tuple[str, dict]] = []

    def interrupt(message: str, **fields: object) -> None:
        said.append((message, fields))
        if message.startswith("final model: refit"):
            raise KeyboardInterrupt

    try:
        assert run_study(path, say=interrupt) == 130
    except KeyboardInterrupt:
        pytest.fail("the interrupt at the end of the study left run_study unsaid")
    stopped = [m for m, f in said if f.get("event") == "stopped"]
    assert stopped == ["interrupted at the end of the study (selection, final model, test, export): every finished trial is kept; "
                       "run the same command to finish it (no trial runs again)"], stopped
    said.clear()
    assert run_study(path, say=lambda message, **fields: said.append((message, fields))) == 0
    assert not [m for m, f in said if f.get("event") == "trial_start"] and len(_trials(path)) == 2
    assert (load_spec(path).export_dir / "config.json").is_file()


def test_settings_a_completed_trial_had_are_not_trained_again_and_a_finite_space_ends_when_all_are_tried(tmp_path: Path, tiny_bert: Path,
                                                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    space = ("space:\n  learning_rate: [2.0e-3, 4.0e-3, 8.0e-3]\n  epochs: 1\n  batch_size: 8\n  weight_decay: 0.0\n  warmup_ratio: 0.0\n"
             "cv: {folds: 2}\ntracking: {enabled: false}\n")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 6, pruner: {name: none}, sampler: {name: random, seed: 0}}\n", space=space, rows=60)
    said: list[tuple[str, dict]] = []
    assert run_study(path, export=False, say=lambda message, **fields: said.append((message, fields))) == 0
    trials = _trials(path)
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    trained = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert repeats, "this seed's random sampler draws a repeat: the case under test"
    assert sorted(t.params["learning_rate"] for t in trained) == [2.0e-3, 4.0e-3, 8.0e-3]  # each configuration trained once
    for repeat in repeats:
        twin = trials[repeat.user_attrs["repeat_of"]]
        assert repeat.params == twin.params and repeat.value == twin.value and "train_seconds" not in repeat.user_attrs
    assert [f["configurations"] for _, f in said if f.get("event") == "space_tried"] == [3]  # ends before n_trials, said once
    last = [f for _, f in said if f.get("event") == "progress"][-1]
    assert last["finished"] == 3 and last["seconds_left"] is None  # nothing left to try: no time to go
    assert any(f.get("repeat_of") is not None and "not trained again" in m for m, f in said)
    selected = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert selected["trials"]["COMPLETE"] == 3 and selected["trials"]["REPEAT"] == len(repeats)
    assert sorted(selected["considered_trials"]) == sorted(t.number for t in trained)
    assert run_study(path, export=False, say=_quiet) == 0  # resumed: nothing left to try, no new trial
    assert len(_trials(path)) == len(trials)
    capsys.readouterr()
    assert main(["status", str(path)]) == 0  # says why 3 of 6 trials is a finished search
    out = capsys.readouterr().out
    assert "3 of 6 trials finished" in out and "every one of its 3 configurations has been tried; the search ended there" in out
    assert main(["status", str(path), "--json"]) == 0
    assert "3 configurations" in json.loads(capsys.readouterr().out)["space"]


def _training_elsewhere(spec: Any, settings: dict[str, Any]) -> None:
    """Trial 0 of ``spec``'s study with ``settings``, running as in another worker (alive: this process), and the same
    settings queued as the next draw."""
    import os

    from hpsearch.space import suggest
    from hpsearch.workers import HOST

    study = open_study(spec)
    study.enqueue_trial(settings)
    elsewhere = study.ask()
    model, params = suggest(elsewhere, spec)
    for key, value in (("model", model), ("params", params), ("host", HOST), ("pid", os.getpid()), ("device", "cpu")):
        elsewhere.set_user_attr(key, value)
    study.enqueue_trial(settings)


def test_settings_another_worker_is_training_are_not_trained_twice(tmp_path: Path, tiny_bert: Path) -> None:
    import optuna

    from hpsearch.runner import run_worker

    space = ("space:\n  learning_rate: [2.0e-3, 4.0e-3, 8.0e-3]\n  epochs: 1\n  batch_size: 8\n  weight_decay: 0.0\n  warmup_ratio: 0.0\n"
             "cv: {folds: 2}\ntracking: {enabled: false}\n")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 3, pruner: {name: none}, sampler: {name: random}}\n", space=space, rows=60)
    spec = load_spec(path)
    _training_elsewhere(spec, {"learning_rate": 2.0e-3})
    said: list[tuple[str, dict]] = []
    assert run_worker(path, seed_offset=0, say=lambda message, **fields: said.append((message, fields))) == 0
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    drawn = trials[1]
    assert drawn.state.name == "FAIL" and drawn.user_attrs["repeat_of"] == 0 and "train_seconds" not in drawn.user_attrs
    assert any("running on cpu@" in m and "not trained twice" in m for m, _ in said)
    stored = optuna.load_study(study_name=spec.name, storage=make_storage(spec))
    assert trial_table(spec, stored)[1]["note"] == drawn.user_attrs["failure_reason"]  # said once, not twice
    trained = sorted(t.params["learning_rate"] for t in trials if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs)
    assert trained == [4.0e-3, 8.0e-3]  # the untried configurations, each once; lr 2e-3 is left to its worker
    assert counted_trials(optuna.load_study(study_name=spec.name, storage=make_storage(spec))) == 2


def test_a_run_that_replays_another_process_draws_seeds_its_sampler_apart(tmp_path: Path, tiny_bert: Path) -> None:
    """Two `run`s of one study started at once seed their samplers alike: the later one drew what the other had drawn,
    one draw behind, and trained almost nothing of its own. After the first such repeat it draws settings of its own."""
    import os

    import optuna

    from hpsearch.runner import run_worker
    from hpsearch.study import make_sampler
    from hpsearch.space import suggest
    from hpsearch.workers import HOST

    space = ("space:\n  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n  epochs: 1\n  batch_size: 8\n"
             "  weight_decay: 0.0\n  warmup_ratio: 0.0\ncv: {folds: 2}\ntracking: {enabled: false}\n")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 5, pruner: {name: none}, sampler: {name: random}}\n", space=space, rows=60)
    spec = load_spec(path)
    open_study(spec)
    # The other process: the sampler this worker will have (seed offset 0, 3 trials held when it opens the study),
    # three draws ahead of it, all still training (alive: this test's parent process).
    other = optuna.load_study(study_name=spec.name, storage=make_storage(spec), sampler=make_sampler(spec, 0, 3))
    for _ in range(3):
        trial = other.ask()
        model, params = suggest(trial, spec)
        for key, value in (("model", model), ("params", params), ("host", HOST), ("pid", os.getppid()), ("device", "cpu")):
            trial.set_user_attr(key, value)
    said: list[tuple[str, dict]] = []
    assert run_worker(path, seed_offset=0, say=lambda message, **fields: said.append((message, fields))) == 0
    mine = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()[3:]
    assert [t.user_attrs.get("repeat_of") for t in mine] == [0, None, None]  # one replayed draw, then its own
    assert all(t.state.name == "COMPLETE" for t in mine[1:])
    assert [fields.get("repeat_of") for _, fields in said if fields.get("event") == "sampler_seeded_apart"] == [0]
    assert any("start the second process as `hpsearch worker`" in m for m, _ in said)


def test_a_finite_space_lists_each_configuration_once(tmp_path: Path) -> None:
    from hpsearch.space import configurations, settings_key
    from hpsearch.spec import load_spec_text

    base = "name: s\ntask: text-classification\ndata: {train: d.csv}\nmodels: [{name: m, path: m}]\n"
    fixed = "weight_decay: 0.0, warmup_ratio: 0.0, epochs: 1, batch_size: 8"
    folder = tmp_path
    (folder / "d.csv").write_text("text,label\na,x\nb,y\n")
    (folder / "m").mkdir()
    (folder / "m" / "config.json").write_text("{}")
    (folder / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    grid_like = load_spec_text(base + f"space: {{learning_rate: [2.0e-5, 3.0e-5, 5.0e-5], {fixed}}}\n", folder)
    assert len(configurations(grid_like)) == 3
    import optuna

    from hpsearch.repeats import untried

    queued = optuna.create_study()
    queued.enqueue_trial({"learning_rate": 3.0e-5})  # waiting: taken, not to be queued again
    assert sorted(params["learning_rate"] for _, params in untried(grid_like, queued.get_trials(), configurations(grid_like))) == [2.0e-5, 5.0e-5]
    # LoRA settings act only under scope lora: full + (lora x 2 ranks), not full x 2.
    lora = load_spec_text(base + f"space: {{learning_rate: 3.0e-5, scope: [full, lora], lora_r: [8, 16], {fixed}}}\n", folder)
    assert len(configurations(lora)) == 3
    continuous = load_spec_text(base + "space: {learning_rate: {type: float, low: 1.0e-5, high: 1.0e-4}}\n", folder)
    assert configurations(continuous) is None
    assert settings_key("m", {"learning_rate": 0.1 + 0.2}) == settings_key("m", {"learning_rate": 0.3})  # a rounding apart


def test_grid_sampler_rejects_continuous_ranges(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.errors import SpecError

    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, sampler: {name: grid}}\n")
    with pytest.raises(SpecError, match="space.learning_rate: the grid sampler needs a list of choices"):
        run_study(path, say=_quiet)
    # validate says it too, and names the ranges searched by default that the study file does not mention
    assert main(["validate", str(path)]) == 2
    with pytest.raises(SpecError, match=r"space.weight_decay: .* \(searched by default, from 0.0 to 0.1: give it a value to fix it\)"):
        load_spec(path)


def test_grid_sampler_covers_its_grid(tmp_path: Path, tiny_bert: Path) -> None:
    space = "space:\n  learning_rate: 3.0e-3\n  epochs: 1\n  batch_size: [8, 16]\n  scope: [full, head]\n  weight_decay: 0.0\n  warmup_ratio: 0.0\ncv: {folds: 2}\ntracking: {enabled: false}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 4, sampler: {name: grid}, pruner: {name: none}}\n", space=space)
    assert run_study(path, export=False, say=_quiet) == 0
    seen = {(t.params["batch_size"], t.params["scope"]) for t in _trials(path)}
    assert seen == set(itertools.product([8, 16], ["full", "head"]))


def test_a_run_says_after_each_trial_how_far_it_is(tmp_path: Path, tiny_bert: Path) -> None:
    space = FAST.replace("epochs: 3", "epochs: 1").replace("folds: 3", "folds: 2")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 3, timeout: 3600, pruner: {name: none}}\n", space=space)
    said: list[tuple[str, dict]] = []
    assert run_study(path, export=False, say=lambda message, **fields: said.append((message, fields))) == 0
    progress = [(m, f) for m, f in said if f.get("event") == "progress"]
    assert [f["finished"] for _, f in progress] == [1, 2, 3]
    assert all(0 < f["seconds_left"] <= 3600 for _, f in progress[:2]) and progress[2][1]["seconds_left"] <= 3600
    assert progress[0][0].startswith("progress: 1 of 3 trials finished, ") and "to go at this pace" in progress[0][0]
    assert "of the 60m00s time budget left" in progress[0][0]
    assert "to go" not in progress[2][0]  # nothing is left to do


def test_the_time_to_go_shares_the_trials_left_among_those_running_at_once() -> None:
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from hpsearch.accounting import seconds_to_go

    begun = datetime(2026, 1, 1, 12)

    def trial(state: str, start: float, end: float | None = None, pid: int = 1) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(name=state), datetime_start=begun + timedelta(seconds=start),
                               datetime_complete=None if end is None else begun + timedelta(seconds=end),
                               user_attrs={"host": "a", "pid": pid})

    # Two workers: the first trial took 9 s and the other worker's is still running: 7 trials are 4 rounds of 2.
    assert seconds_to_go(7, [trial("COMPLETE", 0, 9), trial("RUNNING", 0, pid=2)], begun) == pytest.approx(7 * 9 / 2)
    # The same when the other worker is between two trials: it ran one since the run began (started before it).
    assert seconds_to_go(7, [trial("COMPLETE", 0, 9), trial("COMPLETE", -1, 8, pid=2)], begun) == pytest.approx(7 * 9 / 2)
    # One worker: the trials of this run took 10 s and 20 s; one from before the run is not its pace.
    assert seconds_to_go(4, [trial("COMPLETE", -100, -50, pid=9), trial("COMPLETE", 0, 10), trial("PRUNED", 10, 30)], begun) == pytest.approx(4 * 15)
    assert seconds_to_go(3, [trial("COMPLETE", -100, -50), trial("RUNNING", 0)], begun) is None


def test_a_failing_trial_does_not_stop_the_study(tmp_path: Path, tiny_bert: Path, broken_bert: Path) -> None:
    models = f"models:\n  - {{name: ok, path: {tiny_bert}}}\n  - {{name: broken, path: {broken_bert}}}\n"
    search = "search:\n  n_trials: 3\n  pruner: {name: none}\n  enqueue: [{model: broken}, {model: ok, learning_rate: 2.0e-3}, {model: ok, learning_rate: 4.0e-3}]\n"
    path = _study(tmp_path, tiny_bert, search, models)
    assert run_study(path, export=False, say=_quiet) == 0
    trials = _trials(path)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "cannot load model weights" in trials[0].user_attrs["failure_reason"]


def test_a_candidate_that_cannot_be_loaded_is_named_once_with_the_fix(tmp_path: Path, tiny_bert: Path, broken_bert: Path) -> None:
    models = f"models:\n  - {{name: ok, path: {tiny_bert}}}\n  - {{name: broken, path: {broken_bert}}}\n"
    search = "search:\n  n_trials: 3\n  pruner: {name: none}\n  enqueue: [{model: broken}, {model: broken, learning_rate: 2.0e-3}, {model: ok}]\n"
    path = _study(tmp_path, tiny_bert, search, models, space=FAST.replace("epochs: 3", "epochs: 1"))
    said: list[tuple[str, dict]] = []
    assert run_study(path, export=False, say=lambda message, **fields: said.append((message, fields))) == 0
    warned = [m for m, f in said if f.get("event") == "warning" and f.get("candidate") == "broken"]
    assert len(warned) == 1 and "cannot be loaded" in warned[0] and "--new-study" in warned[0], said
    assert [t.state.name for t in _trials(path)] == ["FAIL", "FAIL", "COMPLETE"]


def test_a_waiting_trial_whose_value_the_space_lost_fails_alone(tmp_path: Path, tiny_bert: Path) -> None:
    """An entry enqueued under an earlier space (a choice since removed) waits in the study: its trial fails with the
    reason, and the study goes on (Optuna's own error would stop the run)."""
    space = FAST.replace("  batch_size: 8\n", "  batch_size: [8, 16]\n").replace("epochs: 3", "epochs: 1")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n", space=space)
    open_study(load_spec(path)).enqueue_trial({"batch_size": 64})  # as an earlier version of the study file enqueued it
    assert run_study(path, export=False, say=_quiet) == 0
    trials = _trials(path)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].user_attrs["failure_reason"].startswith("its enqueued settings {'batch_size': 64} do not fit the space")


def test_all_trials_failing_is_an_error_with_the_reasons(tmp_path: Path, tiny_bert: Path, broken_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = f"models:\n  - {{name: broken, path: {broken_bert}}}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n", models)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no trial completed" in err and "cannot load model weights" in err and "(trials 0, 1)" in err, err
    assert "raise search.n_trials" in err and "--new-study" in err
    with pytest.raises(HpsearchError, match="cannot load model weights"):
        run_study(path, say=_quiet)


def test_no_completed_trial_says_how_to_go_on(tmp_path: Path, tiny_bert: Path) -> None:
    """Interrupted trials run again when the study resumes: only failures that used up the budget call for a larger one."""
    import optuna

    from hpsearch.finish import select_from_study

    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2}\n")
    spec, study = load_spec(path), open_study(load_spec(path))
    failed = optuna.trial.TrialState.FAIL
    study.add_trial(optuna.trial.create_trial(state=failed, user_attrs={"interrupted": True, "failure_reason": "interrupted"}))
    with pytest.raises(HpsearchError) as caught:
        select_from_study(spec, study)
    assert str(caught.value).splitlines() == ["no trial completed, so there is nothing to select or export",
                                             "run the study: 'hpsearch run' resumes it"]
    for reason in ("loss is nan", "loss is nan"):
        study.add_trial(optuna.trial.create_trial(state=failed, user_attrs={"failure_reason": reason}))
    with pytest.raises(HpsearchError) as caught:
        select_from_study(spec, study)
    assert str(caught.value).splitlines()[1:] == ["  - loss is nan (trials 1, 2)", "fix the cause, then raise search.n_trials to "
                                                  "run more trials (failed ones count toward it) or start afresh with --new-study"]


def test_a_study_whose_trials_all_failed_takes_the_fixed_candidate_and_runs_its_budget(tmp_path: Path, tiny_bert: Path,
                                                                                         tiny_bert_4layers: Path, broken_bert: Path) -> None:
    """Every trial failed on a damaged weights file; the user points the candidate at another model: nothing was
    scored, so the study takes the change, and the failed trials no longer use up n_trials."""
    space = FAST.replace("epochs: 3", "epochs: 1").replace("folds: 3", "folds: 2")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n", f"models:\n  - {{name: m, path: {broken_bert}}}\n", space=space)
    with pytest.raises(HpsearchError, match="no trial completed"):
        run_study(path, export=False, say=_quiet)
    path.write_text(path.read_text().replace(str(broken_bert), str(tiny_bert_4layers)))
    said: list[str] = []
    assert run_study(path, export=False, say=lambda message, **fields: said.append(message)) == 0
    assert any(m.startswith("models.m.config changed") and "no trial was scored (2 failed" in m for m in said), said
    assert [t.state.name for t in _trials(path)] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    study = open_study(load_spec(path))
    assert counted_trials(study) == 2
    notes = [row["note"] for row in trial_table(load_spec(path), study)]
    assert [note.startswith("under earlier settings: ") for note in notes] == [True, True, False, False]


def test_a_candidate_that_cannot_be_loaded_stops_the_run_before_its_first_trial(tmp_path: Path, tiny_bert: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_bert, weightless)
    (weightless / "model.safetensors").unlink()
    untokenized = tmp_path / "untokenized"
    shutil.copytree(tiny_bert, untokenized)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (untokenized / name).unlink(missing_ok=True)
    models = f"models:\n  - {{name: ok, path: {tiny_bert}}}\n  - {{name: weightless, path: {weightless}}}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2}\n", models)
    assert main(["run", str(path)]) == 2  # a local folder without weights: named when the study file is read
    err = capsys.readouterr().err
    assert "models[1].path: no weights file in" in err and "save_pretrained" in err, err
    assert not (tmp_path / "runs").exists()  # nothing made
    models = f"models:\n  - {{name: ok, path: {tiny_bert}}}\n  - {{name: untokenized, path: {untokenized}}}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2}\n", models)
    assert main(["run", str(path)]) == 2  # what only loading tells: checked for every candidate before the first trial
    err = capsys.readouterr().err
    assert "1 candidate(s) cannot be loaded, so no trial was started" in err, err
    assert "  - untokenized: cannot load the tokenizer" in err, err
    assert "remove it from models" in err and "--new-study" not in err
    assert _trials(path) == []


def test_test_split_is_scored_once_on_the_refit_model(tmp_path: Path, tiny_bert: Path) -> None:
    from toydata import classification_rows, write_csv

    write_csv(tmp_path / "test.csv", classification_rows(40, seed=9))
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n")
    path.write_text(path.read_text().replace("  train: cls.csv\n", "  train: cls.csv\n  test: test.csv\n"))
    events: list[dict] = []
    assert run_study(path, say=lambda message, **fields: events.append(fields)) == 0
    spec = load_spec(path)
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert report["final_policy"] == "refit"
    refit = [e["epoch"] for e in events if e.get("event") == "refit_epoch"]  # the refit says how it goes, epoch by epoch
    assert refit == list(range(1, report["selected"]["best_epochs"] + 1)), events
    kinds = [e.get("event") for e in events]  # then the test scoring is said too (minutes on a large test split)
    assert kinds.count("test_scoring") == 1 and kinds.index("test_scoring") > max(i for i, k in enumerate(kinds) if k == "refit_epoch")
    assert next(e for e in events if e.get("event") == "test_scoring")["rows"] == 40
    assert set(report["test_scores"]) >= {"accuracy", "macro_f1", "loss"}
    assert 0.0 <= report["test_scores"]["macro_f1"] <= 1.0
    assert "- test data: `test.csv`, 40 rows" in (spec.export_dir / "README.md").read_text()


def test_a_share_held_out_of_the_training_data_is_the_test_split(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}}\n")
    path.write_text(path.read_text().replace("  train: cls.csv\n", "  train: cls.csv\n  holdout: 0.2\n").replace("tracking: {enabled: false}\n", ""))
    said: list[tuple[str, dict]] = []
    assert run_study(path, say=lambda message, **fields: said.append((message, fields))) == 0
    spec = load_spec(path)
    report = json.loads((spec.out_dir / "selection.json").read_text())
    assert 0.0 <= report["test_scores"]["macro_f1"] <= 1.0 and "test" in report["baseline"]
    assert any("72 train and 18 test rows" in message for message, _ in said), [m for m, _ in said][:8]  # of the 90
    assert "(the final model on the 18 held-out rows, evaluated once)" in capsys.readouterr().out  # the summary
    assert main(["report", str(path)]) == 0
    assert "on the 18 held-out rows" in (spec.out_dir / "report" / "report.html").read_text()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{spec.out_dir / 'mlflow.db'}")
    (study_run,) = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
                    if r.data.tags.get("hpsearch.role") == "study"]
    assert study_run.data.metrics["test_rows"] == 18 and "test_macro_f1" in study_run.data.metrics
    assert "- test data: 18 rows held out of the training data (`data.holdout: 0.2`)" in (spec.export_dir / "README.md").read_text()


def test_the_heap_stays_frozen_through_the_end_of_the_study_then_is_released(tmp_path: Path, tiny_bert: Path, monkeypatch) -> None:
    """The fits at the study's end (latency, final model) free their models without a walk over every object
    the libraries hold; once run_study returns, nothing stays frozen."""
    import gc

    import hpsearch.runner as runner

    frozen_at_finish = []
    finish = runner.finish_study
    monkeypatch.setattr(runner, "finish_study", lambda session, **kw: frozen_at_finish.append(gc.get_freeze_count()) or finish(session, **kw))
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n")
    assert run_study(path, say=_quiet) == 0
    assert frozen_at_finish and frozen_at_finish[0] > 0
    assert gc.get_freeze_count() == 0


def test_a_candidate_no_trial_drew_is_said_never_tried_and_warned_of(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The answer to "which model?" names a candidate the search never looked at, and how to look at it."""
    models = f"models:\n  - {{name: tiny, path: {tiny_bert}}}\n  - {{name: other, path: {tiny_bert}}}\n"
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}, enqueue: [{model: tiny}]}\n", models=models)
    assert main(["run", str(path), "--no-export"]) == 0
    out, err = capsys.readouterr()
    start = "warning: the enqueued trials take all 1 random trial(s), so other is never drawn at random"
    assert err.index(start) < err.index("trial 0: tiny"), err  # said as the trials start, as validate says it
    saved = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert {r["model"]: r["verdict"] for r in saved["per_model"]}["other"] == "never tried (no trial drew it)"
    warning = ("other was never tried: no trial drew it, so the winner was chosen without it; to try it, raise search.n_trials "
               "and add a trial of it to search.enqueue (enqueued trials run first), then run the same command")
    assert warning in saved["warnings"]
    assert f"WARNING: {warning}" in out and "  other: never tried (no trial drew it) (0 complete/0 pruned/0 failed" in out, out
    said: list[str] = []  # a new study says validate's warning as its trials start; a resumed one does not again
    path.write_text(path.read_text().replace("n_trials: 1", "n_trials: 2"))
    assert run_study(path, export=False, say=lambda m, **f: said.append(m)) == 0
    assert [m for m in said if m.startswith("trial ")] and not any("untried" in m for m in said), said


HOLES = """
import psutil
from hpsearch.session import trim_heap
# 160 MB freed in 16 KB pieces between pieces still held: holes in the C heap that free() keeps.
held, freed = [], []
for _ in range(10_000):
    freed.append(b"x" * 16_384)
    held.append(b"y" * 16_384)
del freed
process = psutil.Process()
before = process.memory_info().rss
called = trim_heap()
print(called, (before - process.memory_info().rss) // 2**20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_the_worker_gives_freed_heap_back_to_the_system_after_each_trial(tmp_path: Path, tiny_bert: Path, monkeypatch) -> None:
    """What a fit freed leaves the process between trials (glibc keeps freed heap memory otherwise)."""
    import subprocess
    import sys

    import hpsearch.session as session

    result = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, timeout=120, check=True)
    called, released_mib = result.stdout.split()
    assert called == "True" and int(released_mib) >= 80, result.stdout
    trims = []
    trim = session.trim_heap
    monkeypatch.setattr(session, "trim_heap", lambda: trims.append(1) or trim())
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n")
    assert run_study(path, export=False, say=_quiet) == 0
    assert len(trims) == 2  # once after each trial


def test_epoch_count_maximising_the_fold_mean() -> None:
    curves = [[0.5, 0.7, 0.6], [0.6, 0.65, 0.8], [0.5, 0.75]]  # the last fold stopped after 2 epochs
    assert best_epoch_aggregate(curves, "maximize") == (2, [0.7, 0.65, 0.75])
    assert best_epoch_aggregate([[1.0, 0.4], [0.9, 0.5]], "minimize") == (2, [0.4, 0.5])


def test_two_objectives_give_a_pareto_front(tmp_path: Path, tiny_bert: Path, tiny_bert_4layers: Path) -> None:
    models = f"models:\n  - {{name: two, path: {tiny_bert}}}\n  - {{name: four, path: {tiny_bert_4layers}}}\n"
    search = "search: {n_trials: 3, sampler: {name: nsga2}, second_objective: params, enqueue: [{model: two}, {model: four}]}\n"
    path = _study(tmp_path, tiny_bert, search, models, space=FAST.replace("epochs: 3", "epochs: 1"))
    assert run_study(path, export=False, say=_quiet) == 0
    trials = [t for t in _trials(path) if t.state.name == "COMPLETE"]
    assert all(len(t.values) == 2 and t.values[1] == t.user_attrs["total_parameters"] for t in trials)
    assert {t.user_attrs["model"] for t in trials} >= {"two", "four"}
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    front = set(report["pareto_front"])
    assert front and front <= {t.number for t in trials}
    smallest = min(trials, key=lambda t: t.values[1])
    assert smallest.number in front or any(t.values[0] > smallest.values[0] and t.values[1] == smallest.values[1] for t in trials)


def test_latency_is_measured_once_per_candidate_and_shared_by_its_trials(tmp_path: Path, tiny_bert: Path, tiny_bert_4layers: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # The compute of a candidate as served does not depend on its trained weights or settings: a figure
    # measured per trial would differ by timing noise alone, and one-standard-error with cost latency would
    # then pick among one model's trials by that noise instead of by epochs and score.
    models = f"models:\n  - {{name: two, path: {tiny_bert}}}\n  - {{name: four, path: {tiny_bert_4layers}}}\n"
    search = ("search: {n_trials: 5, sampler: {name: nsga2}, second_objective: latency, pruner: {name: none},"
              " enqueue: [{model: two}, {model: four}]}\n"
              "selection: {rule: one-standard-error, cost: latency}\n")
    path = _study(tmp_path, tiny_bert, search, models, space=FAST.replace("epochs: 3", "epochs: 1"), rows=60)
    events: list[dict] = []
    assert run_study(path, export=False, say=lambda message, **fields: events.append({"message": message, **fields})) == 0
    measuring = [e for e in events if e.get("event") == "latency"]  # said while it runs (minutes for a large model on a CPU)
    assert sorted(e["model"] for e in measuring) == ["four", "two"], measuring
    assert measuring[0]["message"].endswith("measuring its inference latency as served (60 rows in fp32; once per study)")
    trials = [t for t in _trials(path) if t.state.name == "COMPLETE"]
    by_model: dict[str, set[float]] = {}
    for t in trials:
        assert t.values[1] == t.user_attrs["objective_latency"] > 0
        by_model.setdefault(t.user_attrs["model"], set()).add(t.values[1])
    assert sorted(by_model) == ["four", "two"] and all(len(values) == 1 for values in by_model.values()), by_model
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    latency = {m: v.pop() for m, v in by_model.items()}
    assert {row["model"]: row["latency_ms"] for row in report["per_model"]} == latency
    assert report["bias_corrected"]["rule"] == "one-standard-error"  # each bootstrap sample picks as the study does
    with (load_spec(path).out_dir / "cv_results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(trials) and all(float(row["latency_ms"]) == latency[row["model"]] for row in table)
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    trials_table = page[page.index("All completed trials"):]
    assert "ms / example" in trials_table and f"<td>{amount_figure(latency['two'])}</td>" in trials_table
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0  # status shows the second objective too
    rows = {r["trial"]: r for r in json.loads(capsys.readouterr().out)["trials"]}
    assert all(rows[t.number]["latency_ms"] == latency[t.user_attrs["model"]] for t in trials)


def test_an_entity_study_scored_by_word_accuracy_gets_its_corrected_estimate(tmp_path: Path, tiny_bert: Path) -> None:
    # Word accuracy shares its name with the class metric, but an entity study has tag lists, not a label column:
    # the estimate comes from each sentence's counts (it once ended the study with a KeyError before selection.json).
    space = FAST.replace("epochs: 3", "epochs: 1")
    path = toy_study(tmp_path, tiny_bert, task="token-classification", rows=60,
                     extra=space + "search: {metric: accuracy, n_trials: 2, pruner: {name: none}}\n")
    assert run_study(path, export=False, say=_quiet) == 0
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    corrected = report["bias_corrected"]
    assert corrected["configurations"] == 2 and corrected["folds"] == 3 and 0 < corrected["estimate"] <= 1


def test_a_winner_no_better_than_the_baseline_is_flagged(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stuck = FAST.replace("learning_rate: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}", "learning_rate: 1e-9")
    assert "1e-9" in stuck
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}}\n", space=stuck)
    assert run_study(path, export=False, say=_quiet) == 0
    out = capsys.readouterr().out
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    baseline = report["baseline"]
    assert baseline["clearly_beaten"] is False and baseline["predicts"].startswith("the majority class")
    assert report["warnings"] and "not clearly better than predicting the majority class" in report["warnings"][0]
    assert "NOT clearly beaten" in out and "WARNING: the winner is not clearly better" in out
    assert report["per_model"][0]["verdict"] == "winner"


def test_a_learning_winner_beats_the_baseline_and_says_which_model(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Settings the tiny model learns with on every fold (a fold left unlearnt by numeric noise would widen
    # the interval over 3 folds beyond the baseline's score).
    learns = FAST.replace("learning_rate: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}", "learning_rate: 3.0e-3") \
                 .replace("epochs: 3", "epochs: 5").replace("warmup_ratio: 0.0", "warmup_ratio: 0.1\n  weight_decay: 0.0")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}}\n", space=learns, rows=120)
    assert run_study(path, export=False, say=_quiet) == 0
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert report["baseline"]["clearly_beaten"] is True and report["warnings"] == [], report["selected"]
    row = report["per_model"][0]
    assert row["verdict"] == "winner" and row["latency_ms"] > 0 and row["train_samples"] > 0 and row["device_seconds"] > 0
    out = capsys.readouterr().out
    assert "which model" in out and f"{amount_figure(row['latency_ms'])} ms/example" in out
    assert f"{amount_figure(row['device_seconds'])} device-s" in out and " 0 device-s" not in out and "0.0 ms/example" not in out
    assert row["flops"] > 0 and row["peak_memory_mb"] > 0
    assert f"device-s, ~{row['flops']:.2g} FLOPs, peak {row['peak_memory_mb']:,.0f} MiB" in out


def test_every_completed_trial_keeps_its_out_of_fold_predictions_for_the_corrected_estimate(tmp_path: Path, tiny_bert: Path) -> None:
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 3, pruner: {name: none}, sampler: {name: random}}\n", rows=60)
    assert run_study(path, export=False, say=_quiet) == 0
    trials = _trials(path)
    spec = load_spec(path)
    for t in trials:
        oof = t.user_attrs["oof"]
        assert oof["split"] == "train" and oof["epoch"] == t.user_attrs["best_epochs"]
        assert len(oof["predictions"]) == 60 and all(p in (0, 1) for p in oof["predictions"])
    report = json.loads((spec.out_dir / "selection.json").read_text())
    corrected = report["bias_corrected"]
    assert corrected["configurations"] == 3 and corrected["rows"] == 60 and corrected["rule"] == "best"
    assert corrected["low"] <= corrected["estimate"] <= corrected["high"]
    # The pooled out-of-fold macro-F1 of the winner sits close to its mean fold score (same predictions, pooled).
    import numpy as np

    from hpsearch import estimate
    from hpsearch.data import prepare_data

    winner = next(t for t in trials if t.number == report["selected"]["trial"])
    gold = np.array(prepare_data(spec).train.columns["label"])
    pooled = estimate.scores(np.array([winner.user_attrs["oof"]["predictions"]]), gold, "macro_f1", 2)[0]
    assert abs(pooled - winner.user_attrs["cv_mean"]) < 0.1


def test_one_off_preparation_is_announced_once(tmp_path: Path, tiny_bert: Path) -> None:
    """Tokenizing and the frozen layers' outputs can take minutes on large data: each is announced when it starts, and
    not again once cached (a second study on the same data and model reads both from the cache)."""
    space = FAST.replace("epochs: 3", "epochs: 1").replace("  warmup_ratio: 0.0\n", "  warmup_ratio: 0.0\n  scope: freeze-1\n")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}}\n", space=space)
    said: list[dict] = []
    assert run_study(path, export=False, say=lambda message, **fields: said.append({"message": message, **fields})) == 0
    prepared = [e for e in said if e.get("event") == "prepare"]
    assert [e["step"] for e in prepared] == ["tokenize", "frozen_layers"], prepared
    assert prepared[0]["rows"] == {"train": 90} and prepared[0]["message"].startswith("tiny: tokenizing 90 train rows")
    assert prepared[1]["layers"] == 1 and prepared[1]["rows"] == 90
    said.clear()
    assert run_study(path, export=False, say=lambda message, **fields: said.append({"message": message, **fields}), new_study=True) == 0
    assert not [e for e in said if e.get("event") == "prepare"]


def test_a_candidate_added_with_keep_trials_keeps_the_trials_the_new_space_holds(tmp_path: Path, tiny_bert: Path, tiny_bert_4layers: Path,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    from hpsearch.selection import CARRIED_ATTR

    space = FAST.replace("epochs: 3", "epochs: 1")
    enqueue = "search: {n_trials: 3, pruner: {name: none}, enqueue: [{learning_rate: 0.001}, {learning_rate: 0.002}, {learning_rate: 0.004}]}\n"
    path = _study(tmp_path, tiny_bert, enqueue + "export: {policy: best-fold}\n", space=space, rows=60)
    assert run_study(path, export=False, say=_quiet) == 0
    before = {t.number: t for t in _trials(path)}
    # A second candidate and a narrower range: the study refuses to resume, and names the way that keeps the trials.
    models = f"models:\n  - {{name: tiny, path: {tiny_bert}}}\n  - {{name: four, path: {tiny_bert_4layers}}}\n"
    # (epochs, fixed at 1 then, is searched now: the carried trials' reports to the pruner take the new step numbers)
    text = path.read_text().replace("high: 5.0e-3", "high: 3.0e-3").replace("epochs: 1", "epochs: {type: int, low: 1, high: 2}")
    text = text.replace(enqueue, "search: {n_trials: 4, pruner: {name: none}, enqueue: [{model: four, epochs: 1}]}\n")
    start, end = text.index("models:"), text.index("\n", text.index("- {name: tiny")) + 1
    path.write_text(text[:start] + models + text[end:])
    assert main(["run", str(path), "--no-export", "--keep-trials"]) == 2 and "goes with --new-study" in capsys.readouterr().err
    with pytest.raises(HpsearchError, match="--new-study --keep-trials starts it with the old trials"):
        run_study(path, export=False, say=_quiet)
    assert main(["run", str(path), "--keep-trials", "--new-study"]) == 0
    said = capsys.readouterr().err
    assert "carried over 2 trial(s)" in said and "left out trial(s) 2: their candidate or settings are outside the new space" in said
    trials = _trials(path)
    carried = [t for t in trials if CARRIED_ATTR in t.user_attrs]
    assert [t.number for t in carried] == [0, 1] and len([t for t in trials if t.state.name == "COMPLETE"]) == 4  # 2 carried, 2 new
    assert trials[2].user_attrs["model"] == "four"  # the new candidate, enqueued, runs after the carried trials
    for t in carried:
        old = before[t.user_attrs[CARRIED_ATTR]["trial"]]
        assert t.user_attrs[CARRIED_ATTR]["study"].startswith("toy.replaced-")
        assert t.params == {"model": "tiny", "epochs": 1, **old.params} and t.values == old.values and t.duration == old.duration
        assert sorted(old.intermediate_values) == [0, 1, 2, 3, 4]  # fold k: its epoch at 2k, its end at 2k + 1 (not the last fold's)
        assert t.intermediate_values == {3 * (s // 2) + (2 if s % 2 else 0): v for s, v in old.intermediate_values.items()}
        assert t.user_attrs["oof"] == old.user_attrs["oof"] and t.user_attrs["fold_scores"] == old.user_attrs["fold_scores"]
        assert isinstance(t.distributions["model"], optuna.distributions.CategoricalDistribution)
        assert (load_spec(path).out_dir / "checkpoints" / f"trial-{t.number}" / "config.json").is_file()
    report = json.loads((load_spec(path).out_dir / "selection.json").read_text())
    assert report["considered_trials"] == [0, 1, 2, 3] and report["bias_corrected"]["configurations"] == 4
    assert main(["status", str(path), "--json"]) == 0
    notes = [t["note"] for t in json.loads(capsys.readouterr().out)["trials"]]
    assert notes[0].startswith("carried over (trial 0 of toy.replaced-") and notes[0].endswith(")") and notes[2] == ""
    # Other changes cannot be carried over: refused before anything is set aside.
    path.write_text(path.read_text().replace("folds: 3", "folds: 2"))
    with pytest.raises(HpsearchError, match="--keep-trials: cv.folds changed since the trials were scored"):
        run_study(path, export=False, say=_quiet, new_study=True, keep_trials=True)
    assert len(_trials(path)) == 4 and len(list((load_spec(path).out_dir / "replaced").iterdir())) == 1


def test_a_fixed_validation_split_scores_every_trial_on_it_and_compares_them_on_its_rows(tmp_path: Path, tiny_bert: Path,
                                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from toydata import classification_rows, write_csv

    write_csv(tmp_path / "val.csv", classification_rows(24, seed=5))
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}}\n", space=FAST.replace("epochs: 3", "epochs: 1"), rows=40)
    path.write_text(path.read_text().replace("data:\n", "data:\n  validation: val.csv\n", 1).replace("tracking: {enabled: false}\n", ""))
    assert main(["run", str(path)]) == 0
    out, progress = capsys.readouterr()
    assert "on the validation split (best at" in progress and "±" not in progress  # no spread across folds to show
    spec = load_spec(path)
    report = json.loads((spec.out_dir / "selection.json").read_text())
    ci = report["cv_interval"]
    assert f"validation macro_f1 {ci['mean']:.4f}, 95% interval [{ci['low']:.4f}, {ci['high']:.4f}] (bootstrap over the validation split's rows)" in out
    assert "corrected resampled t" not in out and 0.0 <= ci["low"] <= ci["mean"] <= ci["high"] <= 1.0 and ci["low"] < ci["high"]
    baseline = next(line for line in out.splitlines() if "trivial baseline" in line)
    assert "validation macro_f1" in baseline and baseline.endswith("clearly beaten by the winner")
    comparison = report["baseline"]["comparison"]
    assert len(report["baseline"]["fold_scores"]) == 1 and comparison["low"] <= comparison["difference"] <= comparison["high"]
    assert report["baseline"]["clearly_beaten"] == (comparison["low"] > 0)
    assert comparison["difference"] == pytest.approx(report["selected"]["mean_score"] - report["baseline"]["cv_mean"])
    [other] = report["paired_comparisons"]  # the other trial, on the same rows
    assert other["difference"] == pytest.approx(report["selected"]["mean_score"] - next(
        t.user_attrs["cv_mean"] for t in _trials(path) if t.number == other["other"]))
    assert report["per_model"][0]["low"] == ci["low"] and report["per_model"][0]["verdict"] == "winner"
    # Its one fold trained on every training row: the validated model is the final one, not a refit that may differ.
    assert report["final_policy"] == "best-fold" and (spec.out_dir / "checkpoints" / f"trial-{report['selected']['trial']}").is_dir()
    assert report["bias_corrected"]["rows"] == 24 and report["bias_corrected"]["folds"] == 1
    assert all(t.user_attrs["oof"]["split"] == "validation" and len(t.user_attrs["fold_scores"]) == 1 for t in _trials(path))
    assert all(0 < t.user_attrs["validation_standard_error"] < 0.3 for t in _trials(path))  # what the one-standard-error rule takes
    card = (spec.export_dir / "README.md").read_text()
    assert "bootstrap over the validation split's rows" in card and "## Top trials (the validation split)" in card
    # The report has no data to bootstrap: it shows the run's intervals and comparisons.
    assert main(["report", str(path)]) == 0
    page = (spec.out_dir / "report" / "report.html").read_text()
    assert "Paired comparisons (a paired bootstrap over the validation split&#x27;s rows)" in page
    assert f"[{ci['low']:.4f}, {ci['high']:.4f}] (bootstrap over the validation split&#x27;s rows)" in page
    assert f"{other['difference']:+.4f}" in page
    assert main(["status", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "macro_f1 (validation)" in shown and "±" not in shown and f"macro_f1 {report['selected']['mean_score']:.4f}" in shown
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{spec.out_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (study_run,) = [r for r in runs if r.data.tags.get("hpsearch.role") == "study"]
    assert (study_run.data.metrics["cv_macro_f1_low"], study_run.data.metrics["cv_macro_f1_high"]) == (ci["low"], ci["high"])
    assert all(r.data.metrics["validation_standard_error"] > 0 for r in runs if r.data.tags.get("hpsearch.role") == "trial")


def test_on_a_validation_split_an_explicit_refit_refits_and_trials_without_a_checkpoint_are_refit(tmp_path: Path, tiny_bert: Path,
                                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from toydata import classification_rows, write_csv

    write_csv(tmp_path / "val.csv", classification_rows(20, seed=5))
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 1, pruner: {name: none}}\nexport: {policy: refit}\n",
                  space=FAST.replace("epochs: 3", "epochs: 1"), rows=40)
    path.write_text(path.read_text().replace("data:\n", "data:\n  validation: val.csv\n", 1))
    assert main(["run", str(path)]) == 0
    spec = load_spec(path)
    assert json.loads((spec.out_dir / "selection.json").read_text())["final_policy"] == "refit"
    assert not (spec.out_dir / "checkpoints").exists() or not any((spec.out_dir / "checkpoints").iterdir())
    # The policy left to its default (best-fold here): the trial ran without a checkpoint, so the export refits it, and says so.
    path.write_text(path.read_text().replace("export: {policy: refit}\n", ""))
    capsys.readouterr()
    assert main(["export", str(path), "--force"]) == 0
    said = capsys.readouterr().err
    assert "trial 0 kept no checkpoint (it ran under export.policy refit): refitting it instead" in said
    assert json.loads((spec.export_dir / "hpsearch.json").read_text())["policy"] == "refit"
    assert "final model by `refit`" in (spec.export_dir / "README.md").read_text()


def test_settings_another_process_is_training_are_not_trained_twice_in_a_continuous_space_either(tmp_path: Path, tiny_bert: Path) -> None:
    """Two `run`s of one study started at once: their samplers share the study's seed, so each drew the other's settings,
    learning rates and all, and every configuration was trained twice (repeats were looked for in finite spaces only)."""
    import optuna

    from hpsearch.runner import run_worker

    space = ("space:\n  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n  epochs: 1\n  batch_size: 8\n"
             "  weight_decay: 0.0\n  warmup_ratio: 0.0\ncv: {folds: 2}\ntracking: {enabled: false}\n")
    path = _study(tmp_path, tiny_bert, "search: {n_trials: 2, pruner: {name: none}, sampler: {name: random}}\n", space=space, rows=60)
    spec = load_spec(path)
    _training_elsewhere(spec, {"learning_rate": 2.5e-3})  # as a shared seed draws them
    assert run_worker(path, seed_offset=0, say=_quiet) == 0
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    drawn = trials[1]
    assert drawn.state.name == "FAIL" and drawn.user_attrs["repeat_of"] == 0 and "train_seconds" not in drawn.user_attrs
    trained = [t for t in trials if t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs]
    assert len(trained) == 1 and trained[0].params["learning_rate"] != 2.5e-3  # the sampler's own draw, trained once
    elsewhere_done = optuna.load_study(study_name=spec.name, storage=make_storage(spec))
    elsewhere_done.tell(0, 0.5)  # the other process ends its trial; a later draw of the same settings takes its score
    elsewhere_done.enqueue_trial({"learning_rate": 2.5e-3})
    spec_more = path.read_text().replace("n_trials: 2", "n_trials: 3")
    path.write_text(spec_more)
    assert run_worker(path, seed_offset=0, say=_quiet) == 0
    again = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()[3]
    assert again.state.name == "COMPLETE" and again.user_attrs["repeat_of"] == 0 and "train_seconds" not in again.user_attrs
