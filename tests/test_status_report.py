"""`hpsearch status` and `hpsearch report` on a finished tiny study."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.numbers import amount_figure
from hpsearch.runner import run_study
from hpsearch.spec import load_spec
from toydata import QUICK, toy_study

EXTRA = QUICK + "export: {enabled: false}\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, broken_bert: Path) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    models = (f"models:\n  - {{name: tiny, path: {tiny_bert}}}\n  - {{name: broken, path: {broken_bert}}}\n")
    search = "search:\n  n_trials: 4\n  pruner: {name: none}\n  sampler: {name: random}\n  enqueue: [{model: tiny}, {model: tiny, learning_rate: 6.0e-3}, {model: broken}]\n"
    path = toy_study(folder, tiny_bert, rows=60, extra=EXTRA + search)
    text = path.read_text()
    start, end = text.index("models:"), text.index("\n", text.index("- {name: tiny")) + 1
    path.write_text(text[:start] + models + text[end:])
    assert run_study(path, say=lambda m, **f: None) == 0
    return path


def test_status_lists_every_trial_and_the_best(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    from hpsearch.storage import make_storage

    spec = load_spec(finished)
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    assert main(["status", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "study toy: 4 of 4 trials finished" in out
    rows = [line for line in out.splitlines() if line.startswith("│ ")]
    numbers = [line.split("│")[1].strip() for line in rows if line.split("│")[1].strip()]
    assert numbers == [str(t.number) for t in trials]
    assert out.count("COMPLETE") == sum(t.state.name == "COMPLETE" for t in trials) and "FAIL" in out
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number))
    assert f"best so far: trial {best.number} (tiny), macro_f1 {best.value:.4f}" in out
    assert "running: nothing" in out



def test_status_fits_the_width_of_the_terminal(finished: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what the terminal's width reads as when the output is not a terminal
    assert main(["status", str(finished)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80 and "left out to fit 80 columns: " in out
    assert out.count("COMPLETE") == 3 and "FAIL" in out

def test_status_as_json_for_scripts(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(finished), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["study"] == "toy" and status["finished"] == status["n_trials"] == 4 and status["running"] == []
    assert [t["trial"] for t in status["trials"]] == [0, 1, 2, 3]
    complete = [t for t in status["trials"] if t["state"] == "COMPLETE"]
    assert status["best"]["trial"] == max(complete, key=lambda t: (t["cv_mean"], -t["trial"]))["trial"]
    assert any(t["state"] == "FAIL" and t["note"] for t in status["trials"])
    assert all(t["train_samples"] > 0 and t["device_seconds"] > 0 and t["flops"] > 0 and t["peak_memory_mb"] > 0 for t in complete)


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_study_file_changed_under_its_scored_trials_is_refused_as_run_refuses_it(finished: Path, capsys: pytest.CaptureFixture[str],
                                                                                  command: str) -> None:
    """With search.metric changed to accuracy, status and report showed the trials' macro-F1 as 'accuracy (CV)'."""
    changed = finished.with_name("changed.yaml")  # the same study (its folder is the study file's), another metric
    changed.write_text(finished.read_text().replace("search:\n", "search:\n  metric: accuracy\n"))
    assert main([command, str(changed)]) == 2
    said = capsys.readouterr().err
    assert 'search.metric: was "macro_f1", now "accuracy"' in said and "undo the change" in said, said
    changed.write_text(finished.read_text().replace("export: {enabled: false}", "export: {enabled: true}"))  # not what scored
    assert main([command, str(changed)]) == 0


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_a_study_that_never_ran(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    path = toy_study(tmp_path, tiny_bert, rows=20, extra=EXTRA)
    assert main([command, str(path)]) == 2
    assert "has not run yet" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no empty study, no tokenized data left behind


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_storage_without_the_study_names_the_studies_it_holds(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str],
                                                               command: str) -> None:
    import optuna

    path = toy_study(tmp_path, tiny_bert, rows=20, extra=EXTRA)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for name in ("toy-v2", "reviews"):
        optuna.create_study(study_name=name, storage=url)
    assert main([command, str(path), "--storage", url]) == 2
    assert capsys.readouterr().err.strip() == (f"hpsearch {command}: no study named 'toy' in the storage (it holds 'reviews', 'toy-v2'); "
                                               "start it with 'hpsearch run', or check the study's name and search.storage (or --storage)")


def test_a_report_of_one_trial_shows_its_searched_settings_and_no_empty_comparisons(tmp_path: Path, tiny_bert: Path) -> None:
    """With one completed trial no setting varied, and the column showed every setting (batch_size=8, lora_r=8 on a full
    fine-tuning, ...); the comparisons were an empty table."""
    import re

    path = toy_study(tmp_path, tiny_bert, rows=40, extra=EXTRA.replace("epochs: 2", "epochs: 1") + "search: {n_trials: 1}\n")
    assert run_study(path, say=lambda m, **f: None) == 0
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    row = re.search(r"<table id=\"selection-table\">.*?</tr><tr>(.*?)</tr>", page, re.S).group(1)
    assert re.search(r"<td>learning_rate=[0-9.e-]+</td>$", row), row
    assert '<p id="paired" class="note">none: no other completed trial to compare the winner with</p>' in page
    assert "(BBC-CV over 1 configuration, 1000 bootstrap samples)" in page and "no choice among trials to correct for" in page


def test_report_writes_html_and_valid_pngs(finished: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "report"
    results = load_spec(finished).out_dir / "cv_results.csv"
    before = results.stat().st_mtime_ns
    assert main(["report", str(finished), "--out", str(out)]) == 0
    assert results.stat().st_mtime_ns == before  # reporting reads the study; it does not rewrite results
    page = (out / "report.html").read_text()
    for name in ("optimization_history", "param_importances", "fold_scores", "learning_curves"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 1000, name
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG"
        assert f"alt='{name}'" in page and "data:image/png;base64," in page
    assert "id=\"selection-table\"" in page and "id=\"paired\"" in page
    assert 'id="progress"' not in page  # a finished study: nothing to warn of
    assert "<p id='bbc'>Bias-corrected macro_f1 (BBC-CV over 3 configurations" in page
    assert "<p id='baseline'>Trivial baseline (predicting the majority class" in page
    assert "<table id='per-model'>" in page and "<td>winner</td>" in page and "<td>no completed trial</td>" in page
    spec = load_spec(finished)
    import json

    selection = json.loads((spec.out_dir / "selection.json").read_text())
    per_model = page.split("<table id='per-model'>")[1].split("</table>")[0]
    assert "<th>FLOPs (est.)</th><th>peak MiB</th>" in per_model
    tiny = next(r for r in selection["per_model"] if r["model"] == "tiny")
    assert f"<td>{tiny['flops']:.3g}</td><td>{tiny['peak_memory_mb']:,.0f}</td>" in per_model
    assert f"Winner (best): trial {selection['selected']['trial']}" in page
    complete = selection["trials"]["COMPLETE"]
    assert f"<h2>Parameter importances (from {complete} completed trials; with fewer than 10, a rough guide only)</h2>" in page
    assert page.count("<tr><td>") >= 3  # the three completed trials are rows of the selection table
    # each completed trial's cost, as the CV table records it, in its row of the selection table
    table = page.split('id="selection-table"')[1].split("</table>")[0]
    assert "<th>training samples</th><th>device-seconds</th><th>FLOPs (est.)</th><th>peak MiB</th>" in table
    import csv

    for row in csv.DictReader(results.open()):
        cells = f"<td>{int(row['train_samples']):,}</td><td>{amount_figure(float(row['device_seconds']))}</td><td>{float(row['flops']):.3g}</td>"
        assert cells in table, row["trial"]


def test_durations_are_rounded_as_the_compute_beside_them() -> None:
    from hpsearch.status import duration

    assert [duration(s) for s in (2.88, 2.4, 9.96, 59.6, 89.5, 125.2, None)] == ["2.9s", "2.4s", "10s", "1m00s", "1m30s", "2m05s", ""]


def test_the_compute_column_shows_the_latency_where_it_is_the_second_objective(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.status import _compute_text, render

    spec = load_spec(toy_study(tmp_path, tiny_bert, extra="search: {second_objective: latency}\n"))
    row = {"trial": 0, "state": "COMPLETE", "model": "tiny", "params": {}, "cv_mean": 0.5, "cv_std": 0.1, "epochs": 1, "seconds": 2.0,
           "device": "cpu", "host": "h", "note": "", "device_seconds": 1.5, "flops": 1.0e9, "latency_ms": 0.25}
    assert "1.5 dev-s, 1e+09 FLOPs, 0.25 ms/example" in render(spec, [row], 1)
    assert "1.5 dev-s, 1e+09 FLOPs │" in render(spec, [{**row, "latency_ms": None}], 1)  # without: as before
    # the samples and the peak memory too, where the trial recorded them (trials of older versions did not)
    costs = {**row, "train_samples": 3600, "peak_memory_mb": 1168.2}
    assert _compute_text(costs) == "3,600 samples, 1.5 dev-s, 1e+09 FLOPs, peak 1,168 MiB, 0.25 ms/example"
    cell = [line.split("│")[8].strip() for line in render(spec, [costs], 1).splitlines() if line.startswith("│")]
    assert " ".join(cell) == _compute_text(costs)  # wrapped between words over the row's lines



def test_the_table_fits_the_terminal_leaving_out_columns_rather_than_cutting_words(tmp_path: Path, tiny_bert: Path) -> None:
    from hpsearch.status import render

    spec = load_spec(toy_study(tmp_path, tiny_bert))
    row = {"trial": 0, "state": "COMPLETE", "model": "minilm-l6", "params": {"learning_rate": 0.000401, "scope": "freeze-1"},
           "cv_mean": 0.7103, "cv_std": 0.0268, "epochs": 2, "seconds": 17.0, "device": "cpu", "host": "h",
           "note": "", "device_seconds": 14.0, "flops": 8e12}
    pruned = {**row, "trial": 1, "state": "PRUNED", "cv_mean": None, "epochs": None, "note": "pruned at fold 1, epoch 1: macro_f1=0.6305"}

    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]

    wide = render(spec, [row, pruned], 2, width=160)
    assert all(header in table(wide)[1] for header in ("trial", "best epoch", "duration", "compute", "device", "note")) and "left out" not in wide
    for width, left_out in ((140, None), (120, "note"), (100, "note, device, compute"), (80, "note, device, compute, best epoch, duration")):
        shown = render(spec, [row, pruned], 2, width=width)
        assert max(len(line) for line in table(shown)) <= width, shown
        # no cell cut inside a word: each one whole on one of its lines
        for cell in ("COMPLETE", "minilm-l6", "learning_rate=0.000401,", "scope=freeze-1", "0.7103 ± 0.0268"):
            assert any(cell in line for line in table(shown)), (width, cell, shown)
        assert (f"left out to fit {width} columns: {left_out} (--json shows every field)" in shown) if left_out else "left out" not in shown, shown
    assert "macro_f1=0.6305" in render(spec, [row, pruned], 2, width=140)  # the note wraps between words before it goes
    # a column empty in every row is left out unmentioned, at any width: nothing in it is lost, and its width goes to
    # the columns that wrap
    for width in (160, 120):
        assert "left out" not in render(spec, [row], 1, width=width) and "note" not in table(render(spec, [row], 1, width=width))[1]
    running = {**row, "state": "RUNNING", "cv_mean": None, "epochs": None}
    assert "best epoch" not in table(render(spec, [running], 0, width=160))[1]


def test_a_waiting_trial_shows_the_model_and_settings_it_was_enqueued_with(tmp_path: Path, tiny_bert: Path) -> None:
    import optuna

    from hpsearch.status import trial_table
    from hpsearch.storage import make_storage

    models = f"models:\n  - {{name: tiny, path: {tiny_bert}}}\n  - {{name: other, path: {tiny_bert}}}\n"
    path = toy_study(tmp_path, tiny_bert, extra="search: {n_trials: 2}\n")
    text = path.read_text()
    path.write_text(text[:text.index("models:")] + models + text[text.index("\n", text.index("- {name: tiny")) + 1:])
    spec = load_spec(path)
    study = optuna.create_study(study_name=spec.name, storage=make_storage(spec))
    study.enqueue_trial({"model": "other", "other:learning_rate": 1e-3})
    study.enqueue_trial({})  # nothing fixed: the model is drawn when it starts
    rows = trial_table(spec, study)
    assert [(r["state"], r["model"], r["params"]) for r in rows] == [("WAITING", "other", {"learning_rate": 1e-3}), ("WAITING", "?", {})]
    path.write_text(text)  # one candidate: a waiting trial can only be of it
    assert trial_table(load_spec(path), study)[1]["model"] == "tiny"


def test_the_line_count_that_sizes_the_columns_is_the_one_wrapping_gives() -> None:
    import random
    import textwrap

    from hpsearch.status import _wrapped_lines

    draw = random.Random(0)
    for _ in range(500):
        text = " ".join("x" * draw.randint(1, 9) for _ in range(draw.randint(0, 8)))
        width = draw.randint(9, 40)
        assert _wrapped_lines(tuple(len(word) for word in text.split()), width) == max(len(textwrap.wrap(text, width)), 1), (text, width)


def test_a_running_trial_shows_how_far_it_has_got(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy_study(tmp_path, tiny_bert, rows=60, extra=EXTRA + "search: {n_trials: 1, pruner: {name: none}}\n")
    seen: dict[str, str] = {}
    spec = load_spec(path)

    def look(message: str, **fields: object) -> None:  # what `hpsearch status` prints while the trial runs
        if fields.get("event") == "epoch":
            capsys.readouterr()
            assert main(["status", str(path), "--json"]) == 0
            row = json.loads(capsys.readouterr().out)["trials"][0]
            assert main(["status", str(path)]) == 0
            seen[message.split(":")[0]] = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("running:"))
            assert row["state"] == "RUNNING" and row["progress"]["fold"] == fields["fold"] and row["progress"]["epoch"] == fields["epoch"]
            assert row["progress"]["score"] == fields["metrics"][spec.metric]  # type: ignore[index]

    assert run_study(path, say=look) == 0
    epochs = 2  # QUICK's
    assert len(seen) == 2 * epochs  # every epoch of both folds
    line = seen[f"trial 0 fold 2/2 epoch {epochs}"]
    assert line.startswith("running: trial 0 (tiny) on cpu@") and f", fold 2/2 epoch {epochs}/{epochs} done ({spec.metric} " in line
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"][0]["progress"] is None  # finished: nothing to show


def test_a_report_of_a_study_not_finished_says_its_winner_is_the_one_so_far(tmp_path: Path, tiny_bert: Path) -> None:
    path = toy_study(tmp_path, tiny_bert, rows=40, extra=EXTRA + "search: {n_trials: 3, pruner: {name: none}}\n")
    pages: list[str] = []

    def report(message: str, **fields: object) -> None:
        if fields.get("event") == "epoch" and fields.get("trial") == 1:
            if pages:
                raise KeyboardInterrupt  # Ctrl-C in trial 1, after the report made while it ran
            assert main(["report", str(path), "--out", str(tmp_path / "running")]) == 0
            pages.append((tmp_path / "running" / "report.html").read_text())

    assert run_study(path, say=report) == 130
    assert main(["report", str(path), "--out", str(tmp_path / "stopped")]) == 0
    pages.append((tmp_path / "stopped" / "report.html").read_text())
    running, stopped = pages
    assert ('<p id="progress"><strong>The study is still running: 1 of 3 trials finished, 1 running. The winner and the figures below '
            'are those so far; make the report again when it has finished.</strong></p>') in running
    assert ('<p id="progress"><strong>The study has not finished: 1 of 3 trials finished, none running. The winner and the figures '
            "below are those so far; &#x27;hpsearch run&#x27; on the study file resumes it.</strong></p>") in stopped
    assert all("Winner so far (best): trial 0" in page for page in pages)
