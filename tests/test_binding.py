"""A study is bound to the settings that define its objective: a changed one stops a resume, by name."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.study import open_study
from hpsearch.spec import load_spec
from toydata import classification_rows, write_csv

BASE = """\
name: bound
task: text-classification
seed: 0
data:
  train: d.csv
  columns: {text: text, label: label}
  max_length: 32
models:
  - {name: m, path: m}
space:
  learning_rate: {type: float, low: 1e-5, high: 1e-4, log: true}
  epochs: 2
cv: {folds: 2}
search: {n_trials: 4, metric: macro_f1}
tracking: {enabled: false}
"""

# (field named in the error, how the study file changes)
CHANGES = [
    ("task", lambda t: t.replace("task: text-classification", "task: text-pair-classification").replace(
        "{text: text, label: label}", "{text: text, text_pair: other, label: label}")),
    ("seed", lambda t: t.replace("seed: 0", "seed: 1")),
    ("data.columns", lambda t: t.replace("{text: text, label: label}", "{text: other, label: label}")),
    ("data.labels", lambda t: t.replace("  max_length: 32", "  max_length: 32\n  labels: [pos, neg]")),
    ("data.max_length", lambda t: t.replace("max_length: 32", "max_length: 64")),
    ("data.subsample", lambda t: t.replace("  max_length: 32", "  max_length: 32\n  subsample: {train: 30}")),
    ("data.test", lambda t: t.replace("  columns:", "  test: d.csv\n  columns:")),
    ("data.train.delimiter", lambda t: t.replace("train: d.csv", "train: {path: d.csv, delimiter: ','}")),
    ("data.holdout", lambda t: t.replace("  max_length: 32", "  max_length: 32\n  holdout: 0.2")),
    ("cv.folds", lambda t: t.replace("folds: 2", "folds: 3")),
    ("cv.seed", lambda t: t.replace("cv: {folds: 2}", "cv: {folds: 2, seed: 7}")),
    ("cv.group_column", lambda t: t.replace("cv: {folds: 2}", "cv: {folds: 2, group_column: group}")),
    ("cv.shuffle", lambda t: t.replace("cv: {folds: 2}", "cv: {folds: 2, shuffle: false}")),
    ("search.metric", lambda t: t.replace("metric: macro_f1", "metric: accuracy")),
    ("search.direction", lambda t: t.replace("metric: macro_f1", "metric: macro_f1, direction: minimize")),
    ("search.second_objective", lambda t: t.replace("metric: macro_f1", "metric: macro_f1, second_objective: params")),
    ("models.m", lambda t: t.replace("{name: m, path: m}", "{name: m, path: m, num_layers: 1}")),
    ("models.m2", lambda t: t.replace("  - {name: m, path: m}", "  - {name: m, path: m}\n  - {name: m2, path: m}")),
    ("space", lambda t: t.replace("high: 1e-4", "high: 1e-3")),
]


def _write(folder: Path, text: str) -> Path:
    rows = classification_rows(40)
    for row in rows:
        row["other"] = row["text"]
    if not (folder / "d.csv").exists():
        write_csv(folder / "d.csv", rows)
    (folder / "m").mkdir(exist_ok=True)
    (folder / "m" / "config.json").write_text('{"num_hidden_layers": 2}')
    (folder / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def _started(path: Path) -> object:
    """The study of ``path`` with one trial scored under its settings."""
    import optuna

    study = open_study(load_spec(path))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5))
    return study


@pytest.mark.parametrize("field,change", CHANGES, ids=[c[0] for c in CHANGES])
def test_each_objective_setting_changed_alone_is_refused_by_name(tmp_path: Path, field: str, change) -> None:
    _started(_write(tmp_path, BASE))
    changed = load_spec(_write(tmp_path, change(BASE)))
    with pytest.raises(SpecError) as caught:
        open_study(changed)
    problems = caught.value.problems
    follows = {"task": "data.columns", "seed": "cv.seed"}  # a new task needs its columns; the fold seed follows the seed
    named = [p.split(":")[0] for p in problems[:-1]]
    assert any(n == field or n.startswith(field + ".") for n in named), problems
    assert all(n.split(".")[0] in (field.split(".")[0], follows.get(field, field).split(".")[0]) for n in named), problems
    assert len(named) <= 2 if field in follows else len(named) == 1, problems
    assert "--new-study" in problems[-1] and "new 'name'" in problems[-1]


def test_a_changed_parameter_is_one_line_with_its_old_and_new_range(tmp_path: Path) -> None:
    """It was a line for each part of it ('space.epochs.type: was "fixed", now "int"', '.low: was the default', ...), and
    the header counted the explanation as one more problem."""
    _started(_write(tmp_path, BASE))
    changed = BASE.replace("  epochs: 2", "  epochs: {type: int, low: 1, high: 3}\n  batch_size: [8, 16]").replace(
        "{name: m, path: m}", "{name: m, path: m, space: {learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}}}")
    with pytest.raises(SpecError) as caught:
        open_study(load_spec(_write(tmp_path, changed)))
    assert caught.value.problems[:-1] == ["models.m.space.learning_rate: was the default, now float in [1e-05, 0.001, log]",
                                          "space.batch_size: was the default, now one of 8, 16",
                                          "space.epochs: was 2 (fixed), now int in [1, 3]"], caught.value.problems
    assert str(caught.value).startswith("3 settings changed since study 'bound' scored trials under them:\n")
    _write(tmp_path, BASE.replace("high: 1e-4, log: true", "high: 1e-3, log: true"))
    with pytest.raises(SpecError) as caught:
        open_study(load_spec(tmp_path / "study.yaml"))
    assert caught.value.problems[0] == "space.learning_rate: was the default, now float in [1e-05, 0.001, log]"
    overridden = tmp_path / "overridden"  # and the other way: an override taken away is not a candidate removed
    overridden.mkdir()
    _started(_write(overridden, changed))
    with pytest.raises(SpecError) as caught:
        open_study(load_spec(_write(overridden, BASE)))
    assert caught.value.problems[:-1] == ["models.m.space.learning_rate: was float in [1e-05, 0.001, log], now the default",
                                          "space.batch_size: was one of 8, 16, now the default",
                                          "space.epochs: was int in [1, 3], now 2 (fixed)"], caught.value.problems


def test_a_candidate_added_or_removed_is_named_as_such(tmp_path: Path) -> None:
    two = BASE.replace("  - {name: m, path: m}", "  - {name: m, path: m}\n  - {name: m2, path: m}")
    _started(_write(tmp_path, BASE))
    with pytest.raises(SpecError) as caught:
        open_study(load_spec(_write(tmp_path, two)))
    assert caught.value.problems[0] == "models.m2: candidate 'm2' added since the trials were scored"
    other = tmp_path / "other"
    other.mkdir()
    _started(_write(other, two))
    with pytest.raises(SpecError) as caught:
        open_study(load_spec(_write(other, BASE)))
    assert caught.value.problems[0] == "models.m2: candidate 'm2' removed since the trials were scored"


def test_changed_data_content_is_refused(tmp_path: Path) -> None:
    _started(_write(tmp_path, BASE))
    text = (tmp_path / "d.csv").read_text()
    (tmp_path / "d.csv").write_text(text.replace("pos", "neg", 1))
    with pytest.raises(SpecError, match=r"data\.train\.content: was"):
        open_study(load_spec(tmp_path / "study.yaml"))


def test_a_study_where_no_trial_started_takes_changed_settings_and_says_so(tmp_path: Path) -> None:
    """A first run that stopped before its first trial (bad data, say) bound the study; the user fixes the data and
    the study file and runs again: nothing was scored, so the study takes the new settings instead of refusing."""
    first = BASE.replace("metric: macro_f1}", "metric: macro_f1, enqueue: [{learning_rate: 2e-5}]}")
    study = open_study(load_spec(_write(tmp_path, first)))
    assert [t.state.name for t in study.get_trials()] == ["WAITING"]  # enqueued, never run: not started
    (tmp_path / "d.csv").write_text((tmp_path / "d.csv").read_text().replace("pos", "neg", 1))
    said: list[tuple[str, dict]] = []
    second = first.replace("max_length: 32", "max_length: 64").replace("metric: macro_f1,", "metric: accuracy,")
    study = open_study(load_spec(_write(tmp_path, second)), say=lambda m, **f: said.append((m, f)))
    taken = {f["field"] for m, f in said if "no trial had started, so the study takes the new setting" in m}
    assert taken == {"data.train.content", "data.max_length", "search.metric"}, said
    assert study.user_attrs["spec_binding"]["data.max_length"] == 64
    assert study.metric_names == ["accuracy"] and study.user_attrs["metric"] == "accuracy"
    assert len(study.get_trials()) == 1  # the enqueued trial still waits, once
    said.clear()
    open_study(load_spec(tmp_path / "study.yaml"), say=lambda m, **f: said.append((m, f)))
    assert said == []  # taken once; it is now the study's objective


def test_a_study_whose_trials_all_failed_takes_changed_settings_and_stops_counting_them(tmp_path: Path) -> None:
    """Every trial failed (a model that could not be loaded, say) and the user changed the study: nothing was scored,
    so the study takes the change, and the failed trials, kept, no longer count toward n_trials."""
    import optuna

    from hpsearch.accounting import counted_trials

    study = open_study(load_spec(_write(tmp_path, BASE)))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert counted_trials(study) == 2
    said: list[str] = []
    study = open_study(load_spec(_write(tmp_path, BASE.replace("folds: 2", "folds: 3"))), say=lambda m, **f: said.append(m))
    assert said == ["cv.folds changed since the last run: 2 -> 3; no trial was scored (2 failed, and no longer count toward "
                    "n_trials), so the study takes the new setting"]
    assert study.user_attrs["spec_binding"]["cv.folds"] == 3
    assert len(study.get_trials()) == 2 and counted_trials(study) == 0
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.5))
    with pytest.raises(SpecError, match="already has trials scored"):  # from here on, a change is refused as usual
        open_study(load_spec(_write(tmp_path, BASE)))


def test_free_settings_change_and_are_reported(tmp_path: Path) -> None:
    open_study(load_spec(_write(tmp_path, BASE)))
    said: list[str] = []
    text = BASE.replace("n_trials: 4", "n_trials: 9, timeout: 600, pruner: {name: none}") + "execution: {devices: cpu}\n"
    study = open_study(load_spec(_write(tmp_path, text)), say=lambda m, **f: said.append(m))
    assert any(m.startswith("search.n_trials changed since the last run: 4 -> 9") for m in said), said
    assert any(m.startswith('search.pruner.name changed since the last run: "median" -> "none"') for m in said), said
    assert any(m.startswith('execution.devices changed since the last run: "auto" -> "cpu"') for m in said), said
    assert study.user_attrs["spec_settings"]["search.n_trials"] == 9
    said.clear()
    open_study(load_spec(tmp_path / "study.yaml"), say=lambda m, **f: said.append(m))
    assert not said  # reported once, then it is the study's setting


def test_the_study_names_its_metric_for_dashboards(tmp_path: Path) -> None:
    study = open_study(load_spec(_write(tmp_path, BASE)))
    assert study.metric_names == ["macro_f1"]


def test_enqueue_entries_added_on_resume_are_enqueued(tmp_path: Path) -> None:
    first = BASE.replace("metric: macro_f1}", "metric: macro_f1, enqueue: [{learning_rate: 2e-5}]}")
    study = open_study(load_spec(_write(tmp_path, first)))
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == [{"learning_rate": 2e-5}]
    second = BASE.replace("metric: macro_f1}", "metric: macro_f1, enqueue: [{learning_rate: 2e-5}, {learning_rate: 5e-5}]}")
    study = open_study(load_spec(_write(tmp_path, second)))
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == [{"learning_rate": 2e-5}, {"learning_rate": 5e-5}]
    study = open_study(load_spec(tmp_path / "study.yaml"))
    assert len(study.get_trials()) == 2  # nothing enqueued twice


def test_a_changed_spec_stops_before_data_or_models_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpsearch.data
    import hpsearch.finetune
    from hpsearch.session import Session

    _started(_write(tmp_path, BASE))

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("data or a model was loaded before the spec check")

    monkeypatch.setattr(hpsearch.data, "prepare_data", loaded)
    monkeypatch.setattr(hpsearch.finetune, "FineTuner", loaded)
    with pytest.raises(SpecError, match="data.max_length: was 32, now 64"):
        Session(load_spec(_write(tmp_path, BASE.replace("max_length: 32", "max_length: 64"))), lambda m, **f: None)


def test_new_study_sets_the_old_one_aside_and_starts_afresh(tmp_path: Path) -> None:
    import optuna

    from hpsearch.newstudy import set_aside_study
    from hpsearch.storage import make_storage

    spec = load_spec(_write(tmp_path, BASE))
    study = open_study(spec)
    study.enqueue_trial({"learning_rate": 3e-5})
    (spec.out_dir / "selection.json").write_text("{}")
    changed = load_spec(_write(tmp_path, BASE.replace("folds: 2", "folds: 3")))
    aside = set_aside_study(changed, say=lambda m, **f: None)
    assert aside is not None and aside[0].startswith("bound.replaced-") and aside[1] == spec.out_dir / "replaced" / aside[0][len("bound.replaced-"):]
    fresh = open_study(changed)
    assert fresh.get_trials() == [] and fresh.user_attrs["spec_binding"]["cv.folds"] == 3
    kept = list((spec.out_dir / "replaced").glob("*/optuna.journal"))
    assert len(kept) == 1 and (kept[0].parent / "selection.json").is_file()
    old = optuna.load_study(study_name="bound", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(kept[0]))))
    assert len(old.get_trials()) == 1  # nothing lost
    assert set_aside_study(load_spec(tmp_path / "study.yaml"), say=lambda m, **f: None) is not None
    assert make_storage(changed) is not None


@pytest.mark.postgres
def test_new_study_on_postgresql_keeps_the_old_study_in_the_database(tmp_path: Path, postgres_url: str) -> None:
    import optuna

    from hpsearch.newstudy import set_aside_study
    from hpsearch.storage import make_storage

    text = BASE.replace("search: {n_trials: 4,", f"search: {{storage: '{postgres_url}', n_trials: 4,")
    spec = load_spec(_write(tmp_path, text))
    open_study(spec).enqueue_trial({"learning_rate": 3e-5})
    aside = set_aside_study(spec, say=lambda m, **f: None)
    storage = make_storage(spec)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert aside is not None and names == {aside[0]}
    assert len(optuna.load_study(study_name=aside[0], storage=storage).get_trials()) == 1
    assert open_study(spec).get_trials() == []


def test_a_setting_added_by_a_later_version_is_not_a_change(tmp_path: Path) -> None:
    from hpsearch.binding import changed, objective_fields

    spec = load_spec(_write(tmp_path, BASE))
    stored = objective_fields(spec, compact=False)
    del stored["models.m"]["lora_targets"]  # as recorded by a version that had no such setting
    assert changed(stored, spec) == []
    assert changed(objective_fields(spec), spec) == []  # the compact record compares equal too
    stored["models.m"]["num_layers"] = 1
    assert changed(stored, spec) == [("models.m.num_layers", 1, None)]


def test_the_mlflow_study_run_follows_settings_taken_before_any_trial(tmp_path: Path) -> None:
    """The study run logs the settings (parameters, resolved spec): when the study takes new ones before any trial, it
    gets a new run, and the old one is kept under another name; a resume with the same settings keeps its run."""
    from hpsearch.binding import objective_digest
    from hpsearch.tracking import Tracker

    text = BASE.replace("tracking: {enabled: false}\n", "")
    spec = load_spec(_write(tmp_path, text))
    tracker = Tracker.from_spec(spec)
    first = tracker.study_run(spec, objective_digest(open_study(spec)))
    assert tracker.study_run(spec, objective_digest(open_study(spec))) == first
    changed = load_spec(_write(tmp_path, text.replace("folds: 2", "folds: 3")))
    second = tracker.study_run(changed, objective_digest(open_study(changed)))
    runs = {r.info.run_id: r for r in tracker.client.search_runs([tracker.experiment_id])}
    assert second != first and runs[second].data.params["folds"] == "3" and runs[first].data.params["folds"] == "2"
    assert runs[first].data.tags["hpsearch.study"].startswith("bound.superseded-")
    assert tracker.study_run(changed, objective_digest(open_study(changed))) == second
