"""`hpsearch plan`: the estimate's arithmetic on hand-made timings, and a calibration on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsearch.plan import Calibration, estimate, render
from hpsearch.spec import load_spec_text

BASE = """\
name: p
task: text-classification
data: {train: d.csv}
models: [{name: a, path: m}, {name: b, path: m, space: {epochs: 4}}]
space: {epochs: {type: int, low: 1, high: 3}, scope: [full, freeze-1]}
cv: {folds: 3}
"""


def _spec(tmp_path: Path, search: str):  # noqa: ANN202
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")  # what validate looks for; never read here
    return load_spec_text(BASE + search, tmp_path)


def _calibrations() -> list[Calibration]:
    # seconds per training / validation example, setup per fit, one-off, peak MiB
    return [Calibration("a", "full", 0.01, 0.002, 1.0, 10.0, 500.0), Calibration("b", "freeze-1", 0.004, 0.001, 2.0, 5.0, 400.0)]


def test_epochs_folds_and_trials_add_up(tmp_path: Path) -> None:
    plan = estimate(_spec(tmp_path, "search: {n_trials: 10, pruner: {name: none}}\n"), _calibrations(), train_rows=200, eval_rows=100, folds=3,
                    test_rows=50)
    a, b = plan["rows"]
    assert a["epochs"] == 2.0 and b["epochs"] == 4.0  # the mean of 1..3; b's own fixed 4
    assert a["epoch_seconds"] == pytest.approx(200 * 0.01 + 100 * 0.002)  # 2.2 s
    assert a["fold_seconds"] == pytest.approx(1.0 + 2 * 2.2) and a["trial_seconds"] == pytest.approx(3 * 5.4)
    assert b["trial_seconds"] == pytest.approx(3 * (2.0 + 4 * (0.8 + 0.1)))
    mean_trial = (a["trial_seconds"] + b["trial_seconds"]) / 2
    final = ((1.0 + 2 * 300 * 0.01 + 50 * 0.002) + (2.0 + 4 * 300 * 0.004 + 50 * 0.001)) / 2  # refit on 300 rows, test on 50
    assert plan["final_model_seconds"] == pytest.approx(final)
    assert plan["seconds_without_pruning"] == pytest.approx(15.0 + 10 * mean_trial + final)
    assert plan["seconds_with_pruning"] == plan["seconds_without_pruning"]  # pruner none
    assert plan["pruning_assumption"] == "no trial is pruned"
    kept = estimate(_spec(tmp_path, "search: {n_trials: 10, pruner: {name: none}}\nexport: {policy: best-fold}\n"), _calibrations(),
                    train_rows=200, eval_rows=100, folds=3, test_rows=50)
    assert kept["final_model_seconds"] == pytest.approx((50 * 0.002 + 50 * 0.001) / 2)  # no refit: the kept model's test pass
    unused = estimate(_spec(tmp_path, "search: {n_trials: 10, pruner: {name: none}}\nexport: {enabled: false}\n"), _calibrations(),
                      train_rows=200, eval_rows=100, folds=3)
    assert unused["final_model_seconds"] == 0.0  # no test split, no export: run trains no final model
    assert unused["seconds_without_pruning"] == pytest.approx(15.0 + 10 * mean_trial)
    said = next(line for line in render(unused).splitlines() if line.startswith("estimated study time"))
    assert said.endswith("kept for the run) and no final model (no test split scores one and no export trains one)")


def test_a_finite_space_plans_no_more_trials_than_it_holds(tmp_path: Path) -> None:
    # a: 3 epoch counts x 2 batch sizes x 2 scopes; b: its fixed 4 epochs x 2 x 2; the rest fixed: 16 configurations.
    _spec(tmp_path, "")
    text = BASE.replace("scope: [full, freeze-1]}", "scope: [full, freeze-1], learning_rate: 3.0e-5, weight_decay: 0.0, warmup_ratio: 0.0}")
    spec = load_spec_text(text + "search: {n_trials: 20, pruner: {name: none}}\n", tmp_path)
    assert estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3)["n_trials"] == 16


def test_pruning_and_timeout_warnings(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "search: {n_trials: 10, timeout: 60, pruner: {name: median, options: {n_startup_trials: 2}}}\n")
    plan = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3)
    mean_trial = (plan["rows"][0]["trial_seconds"] + plan["rows"][1]["trial_seconds"]) / 2
    pruned = 0.5 * 8  # the median pruner stops about half, each within its first of 3 folds
    assert plan["seconds_with_pruning"] == pytest.approx(15.0 + (10 - pruned) * mean_trial + pruned * mean_trial / 3 + plan["final_model_seconds"])
    assert "50% of the 8 trials after the pruner's start-up of 2" in plan["pruning_assumption"]
    assert plan["warnings"][0].startswith("search.timeout 60s is shorter than the estimate")
    assert f"after about {int((60 - 15) / mean_trial)} of 10 trials" in plan["warnings"][0]
    assert "may run up to about" in plan["warnings"][1]


def test_a_time_budget_is_turned_into_trials_with_and_without_successive_halving(tmp_path: Path) -> None:
    from hpsearch.rungs import expected_work

    spec = _spec(tmp_path, "search: {n_trials: null, timeout: 600, pruner: {name: successive-halving}}\n")
    plan = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3)
    mean_trial = (plan["rows"][0]["trial_seconds"] + plan["rows"][1]["trial_seconds"]) / 2
    work = expected_work(3, 3.0, 3)  # the candidates' typical epochs: 2 and 4
    assert plan["n_trials_without_pruning"] == pytest.approx((600 - 15) / mean_trial)
    assert plan["n_trials"] == pytest.approx(3 + (600 - 15 - 3 * mean_trial) / (work * mean_trial))  # the first three run whole
    assert plan["n_trials"] > 3 * plan["n_trials_without_pruning"]
    assert plan["seconds_with_pruning"] == pytest.approx(600 + plan["final_model_seconds"])
    assert "successive halving keeps 1/3" in plan["pruning_assumption"] and "after the first 3, which run in full" in plan["pruning_assumption"]
    assert not any("shorter than the estimate" in w for w in plan["warnings"])
    low, high = round(plan["n_trials_without_pruning"]), round(plan["n_trials"])
    shown = render(plan)
    assert shown.startswith(f"plan: {low} to {high} trials in the timeout x 3 fold(s)")
    assert f"trials in the timeout: {low} if every trial runs in full, {high} if each rung keeps only its share" in shown
    from hpsearch.status import duration  # its times as run writes the estimate beside its own ('10.1 min' and '15s' before)

    assert f"estimated study time: {duration(plan['seconds_with_pruning'])} with pruning (" in shown
    assert f"one-off costs ({duration(plan['one_off_seconds'])}: " in shown and duration(plan["seconds_with_pruning"]).startswith("10m")


def test_plan_calibrates_every_candidate_and_scope_and_run_reports_it(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpsearch.cli import main
    from hpsearch.runner import run_study
    from hpsearch.spec import load_spec
    from hpsearch.status import duration
    from toydata import toy_study

    extra = ("space: {learning_rate: 5.0e-3, epochs: 2, batch_size: 8, scope: [full, freeze-1]}\ncv: {folds: 2}\n"
             "search: {n_trials: 2, pruner: {name: none}}\ntracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=48, extra=extra)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "estimated study time" in out and "other hpsearch worker" not in out
    assert "the mean over the batch sizes drawn" not in out  # one batch size: timed at it alone
    spec = load_spec(path)
    plan = json.loads((spec.out_dir / "plan.json").read_text())
    assert [(r["model"], r["scope"]) for r in plan["rows"]] == [("tiny", "full"), ("tiny", "freeze-1")]
    assert all(r["train_seconds_per_example"] > 0 and r["peak_memory_mb"] > 0 for r in plan["rows"])
    said: list[str] = []
    events: dict[str, dict] = {}
    assert run_study(path, export=False, say=lambda m, **f: (said.append(m), events.setdefault(f.get("event", ""), f))) == 0
    assert any(m.startswith("time: ") and "'hpsearch plan' estimated" in m for m in said)
    start = next(m for m in said if m.startswith("study 'toy'"))  # the estimate is said as the run starts, too
    assert start.endswith(f"to run on cpu; 'hpsearch plan' estimated {duration(plan['seconds_with_pruning'])} with pruning, "
                          f"{duration(plan['seconds_without_pruning'])} without"), start
    assert events["study_start"]["estimate"] == plan["seconds_with_pruning"]
    capsys.readouterr()
    assert main(["plan", str(path)]) == 0  # on the finished study: nothing left but the end
    out = capsys.readouterr().out
    assert out.startswith("plan: 0 trials left of 2 (2 finished) x 2 fold(s)"), out
    assert json.loads((spec.out_dir / "plan.json").read_text())["finished"] == 2


def test_the_time_per_example_is_the_mean_over_the_batch_sizes_drawn() -> None:
    from hpsearch.calibration import drawn_mean
    from hpsearch.spec import CategoricalParam, IntParam

    at = {16: 0.012, 32: 0.010}  # t(b) = 0.008 + 0.064 / b
    assert drawn_mean(CategoricalParam(type="categorical", choices=[32, 16]), at) == pytest.approx(0.011)
    assert drawn_mean(CategoricalParam(type="categorical", choices=[16, 24, 32]), at) == pytest.approx(0.008 + 0.064 * (1 / 16 + 1 / 24 + 1 / 32) / 3)
    assert drawn_mean(IntParam(type="int", low=16, high=32, step=8), at) == pytest.approx(0.008 + 0.064 * (1 / 16 + 1 / 24 + 1 / 32) / 3)


def test_a_searched_batch_size_is_timed_at_its_smallest_and_its_largest(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import hpsearch.calibration as calibration
    from hpsearch.cli import main
    from hpsearch.spec import load_spec
    from toydata import toy_study

    seen: list[dict[int, float]] = []
    real = calibration.drawn_mean
    monkeypatch.setattr(calibration, "drawn_mean", lambda param, at: (seen.append(dict(at)), real(param, at))[1])
    extra = ("space: {learning_rate: 5.0e-3, epochs: 1, batch_size: [4, 8]}\ncv: {folds: 2}\nsearch: {n_trials: 1}\n"
             "tracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=48, extra=extra)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr()
    out = out.out + out.err
    [at] = seen
    assert sorted(at) == [4, 8] and all(t > 0 for t in at.values())
    [row] = json.loads((load_spec(path).out_dir / "plan.json").read_text())["rows"]
    assert row["train_seconds_per_example"] == pytest.approx((at[4] + at[8]) / 2)  # two choices drawn alike: the mean of the two
    assert "ms per training example (the mean over the batch sizes drawn; " in out and " at batch 4, " in out and " at batch 8)" in out


def test_a_calibration_beside_other_workers_takes_its_share_and_says_its_times_are_too_long(
        tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, torch_threads: None,
        other_workers) -> None:  # noqa: ANN001
    """A plan made while a study trained on the same machine ran threads for every core beside the study's (both slowed
    down, far more than by half), timed its steps on what was left, and gave the estimate as if for the study alone,
    without a word. It takes its share of the cores now, as a worker does, and says why its times are long."""
    from hpsearch import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    from hpsearch.cli import main
    from hpsearch.spec import load_spec
    from toydata import toy_study

    extra = ("space: {learning_rate: 5.0e-3, epochs: 1, batch_size: 8}\ncv: {folds: 2}\nsearch: {n_trials: 2}\n"
             "tracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=32, extra=extra)
    other = other_workers.start()  # a worker of some study, training on this machine
    assert main(["plan", str(path)]) == 0
    other_workers.stop()
    out, err = capsys.readouterr()
    assert "using 1 CPU thread(s) (2 cores shared by 2 hpsearch worker(s) on this machine)" in err
    warning = f"1 other hpsearch worker(s) ran on this machine during the calibration (process id(s) {other})"
    assert warning in out, out
    assert any(w.startswith(warning) for w in json.loads((load_spec(path).out_dir / "plan.json").read_text())["warnings"])


def test_run_sets_its_time_beside_the_plan_made_for_this_study_only(tmp_path: Path) -> None:
    from hpsearch.export import spec_hash
    from hpsearch.runner import say_time

    spec = _spec(tmp_path, "search: {n_trials: 10}\n")

    def said(before: int = 0) -> tuple[str, dict]:
        lines: list[tuple[str, dict]] = []
        say_time(spec, 86.4, before, lambda m, **f: lines.append((m, f)))
        assert len(lines) == 1
        return lines[0]

    assert said() == ("time: 1m26s", {"event": "time", "seconds": 86.4})  # no plan: the time alone
    spec.out_dir.mkdir(parents=True)
    plan = {"seconds_with_pruning": 74.0, "seconds_without_pruning": 90.0}
    (spec.out_dir / "plan.json").write_text(json.dumps({**plan, "spec_hash": spec_hash(spec)}))
    text, fields = said()
    assert text == "time: 1m26s; 'hpsearch plan' estimated 1m14s with pruning, 1m30s without"
    assert fields["estimate"] == 74.0 and fields["estimate_without_pruning"] == 90.0
    text, fields = said(before=3)  # a resumed study: this run did only part of what the plan estimated
    assert text == "time: 1m26s (this run only: 3 trial(s) had finished before it)" and "estimate" not in fields
    (spec.out_dir / "plan.json").write_text(json.dumps({**plan, "spec_hash": spec_hash(spec), "finished": 3}))  # made then: for the rest
    text, fields = said(before=3)
    assert text.endswith("had finished before it); 'hpsearch plan' estimated 1m14s with pruning, 1m30s without") and fields["estimate"] == 74.0
    assert "estimate" not in said()[1]  # a new study since: the plan was for what was left of the old one
    (spec.out_dir / "plan.json").write_text(json.dumps({**plan, "spec_hash": "0" * 16}))  # the study file changed since
    text, fields = said()
    assert "made for an earlier version of this study file: run 'hpsearch plan' again" in text and "estimate" not in fields
    (spec.out_dir / "plan.json").write_text(json.dumps(plan))  # a plan saved before plans recorded their study
    assert "'hpsearch plan' estimated 1m14s" in said()[0]


def test_trials_on_several_gpus_run_side_by_side_and_workers_sharing_a_device_share_its_speed(tmp_path: Path) -> None:
    """The plan counted every study as one trial at a time: on 4 GPUs it said four times the time, and its timeout
    warning and budget were as far off."""
    from hpsearch.plan import Layout

    spec = _spec(tmp_path, "search: {n_trials: 10, pruner: {name: none}}\n")
    alone = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, test_rows=50)
    mean_trial = (alone["rows"][0]["trial_seconds"] + alone["rows"][1]["trial_seconds"]) / 2
    final = alone["final_model_seconds"]
    four = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, test_rows=50, layout=Layout(devices=4, kind="gpu"))
    assert four["seconds_without_pruning"] == pytest.approx(15.0 + 10 * mean_trial / 4 + final)  # one-off and final once
    assert "trials run on 4 GPU(s) side by side" in render(four)
    # on the CPU the calibration's resident peak is a floor for the trials' (see plan.CPU_PEAK_NOTE); a GPU's peak is its allocator's
    assert "peak MiB on the CPU: the process's resident peak over the short calibration" in render(alone)
    assert "peak MiB on the CPU" not in render(four)
    few = estimate(_spec(tmp_path, "search: {n_trials: 2, pruner: {name: none}}\n"), _calibrations(), train_rows=200, eval_rows=100,
                   folds=3, test_rows=50, layout=Layout(devices=4, kind="gpu"))
    assert few["seconds_without_pruning"] == pytest.approx(15.0 + mean_trial + final)  # 2 trials keep 2 of the 4 GPUs busy
    shared = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, test_rows=50, layout=Layout(per_device=2))
    assert shared["seconds_without_pruning"] == alone["seconds_without_pruning"]  # the cores are split, not added
    assert "workers: 2 workers share this machine's cores" in render(shared) and "workers:" not in render(alone)
    crowded = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, layout=Layout(per_device=4, cores=2))
    assert "workers: 4 workers share this machine's 2 core(s): more workers than cores, so they take turns" in render(crowded)
    timed = _spec(tmp_path, "search: {n_trials: 40, timeout: 100, pruner: {name: none}}\n")
    on_two = estimate(timed, _calibrations(), train_rows=200, eval_rows=100, folds=3, layout=Layout(devices=2, per_device=2, kind="gpu"))
    assert f"after about {int((100 - 15) * 2 / mean_trial)} of 40 trials" in on_two["warnings"][0]
    longest = on_two["longest_trial_seconds"]
    assert f"may run up to about {longest * 2:.0f}s past it" in on_two["warnings"][1]  # a trial on a shared GPU takes twice as long
    budget = _spec(tmp_path, "search: {n_trials: null, timeout: 600, pruner: {name: none}}\n")
    assert estimate(budget, _calibrations(), train_rows=200, eval_rows=100, folds=3, layout=Layout(devices=2, kind="gpu"))[
        "n_trials_without_pruning"] == pytest.approx(2 * (600 - 15) / mean_trial)


def test_the_plan_warns_when_the_calibrated_peak_comes_near_the_devices_memory(tmp_path: Path) -> None:
    from hpsearch.plan import Layout

    spec = _spec(tmp_path, "search: {n_trials: 10}\n")

    def warned(layout: Layout) -> list[str]:
        plan = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, layout=layout)
        return [w for w in plan["warnings"] if "peaked at" in w]

    assert warned(Layout(memory_mb=None)) == [] and warned(Layout(memory_mb=2000.0)) == [] and warned(Layout(per_device=3, memory_mb=2000.0)) == []
    two = warned(Layout(per_device=2, memory_mb=1000.0))  # 2 x 500 MiB (a full's peak) > 90 % of 1000
    assert two == ["a full peaked at 500 MiB in the calibration (the process's resident memory) of the 1,000 MiB of this machine: 2 workers "
                   "sharing this machine need about 1,000 MiB; lower execution.workers_per_device to 1, or batch_size or data.max_length"]
    alone = warned(Layout(kind="gpu", memory_mb=540.0))
    assert len(alone) == 1 and "not counting the CUDA context) of the 540 MiB of a GPU: a batch of longer inputs" in alone[0]
    assert alone[0].endswith("execution.memory_retries); lower batch_size or data.max_length for room")
    on_cpu = warned(Layout(memory_mb=540.0))
    assert len(on_cpu) == 1 and "(the system then stops the worker, and its trial is run again, as large)" in on_cpu[0]


def test_the_layout_is_the_one_run_gives_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from hpsearch.plan import Layout, study_layout

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # devices: auto on a machine without a GPU

    spec = _spec(tmp_path, "execution: {devices: cpu, workers_per_device: 2}\n")
    layout = study_layout(spec, "cpu")
    assert (layout.devices, layout.per_device, layout.kind) == (1, 2, "cpu") and layout.memory_mb and layout.memory_mb > 100
    gpus = study_layout(_spec(tmp_path, "execution: {devices: [0, 2, 3]}\n"), "cpu")
    assert (gpus.devices, gpus.per_device, gpus.kind) == (3, 1, "gpu")
    assert study_layout(_spec(tmp_path, ""), "cpu") == Layout(memory_mb=layout.memory_mb, cores=layout.cores)


def test_a_scope_that_runs_out_of_memory_is_calibrated_as_run_retries_it_or_left_out(tmp_path: Path, tiny_bert: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Out of memory in the calibration stopped the plan with run's message, naming neither the candidate nor the scope,
    and planned no other candidate; run itself retries such a fold with half the batch."""
    from hpsearch.cli import main
    from hpsearch.errors import OutOfMemory
    from hpsearch.finetune import FineTuner
    from hpsearch.spec import load_spec
    from toydata import toy_study

    fit = FineTuner.fit
    seen: list[tuple[str, int, int]] = []

    def fit_in_small_memory(self, candidate, params, **kwargs):  # noqa: ANN001, ANN202
        seen.append((params["scope"], params["batch_size"], params.get("grad_accumulation", 1)))
        if params["scope"] == "full" and params["batch_size"] > LIMIT:
            raise OutOfMemory(f"out of memory with batch_size={params['batch_size']}: lower batch_size or max_length")
        return fit(self, candidate, params, **kwargs)

    monkeypatch.setattr(FineTuner, "fit", fit_in_small_memory)
    extra = ("space: {learning_rate: 5.0e-3, epochs: 2, batch_size: [4, 8], scope: [full, freeze-1]}\ncv: {folds: 2}\n"
             "search: {n_trials: 2, pruner: {name: none}}\ntracking: {enabled: false}\nexport: {enabled: false}\n")
    path = toy_study(tmp_path, tiny_bert, rows=48, extra=extra)
    LIMIT = 4
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("warning: tiny full runs out of memory on cpu at batch_size 8: run retries each such fold with batch_size 4 and "
            "grad_accumulation 2 (the same effective batch), as the estimate assumes") in out
    assert ("full", 4, 2) in seen and ("freeze-1", 8, 1) in seen
    plan = json.loads((load_spec(path).out_dir / "plan.json").read_text())
    assert [(r["model"], r["scope"]) for r in plan["rows"]] == [("tiny", "full"), ("tiny", "freeze-1")]
    LIMIT = 2  # not even at 4: left out, said
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: tiny full at batch_size 8 or 4 does not fit in the memory of cpu: each of its trials will fail" in out
    assert [r["scope"] for r in json.loads((load_spec(path).out_dir / "plan.json").read_text())["rows"]] == ["freeze-1"]
    path.write_text(path.read_text().replace("scope: [full, freeze-1]", "scope: full"))
    assert main(["plan", str(path)]) == 2
    assert "hpsearch plan: no candidate fits in the memory of cpu (tiny full at batch_size 8 or 4): lower" in capsys.readouterr().err


def test_a_study_that_has_run_is_planned_for_what_is_left(tmp_path: Path) -> None:
    """The plan estimated the whole study whatever of it had run: on a study 8 of 10 trials into it, five times the time
    left."""
    spec = _spec(tmp_path, "search: {n_trials: 10, timeout: 60, pruner: {name: median, options: {n_startup_trials: 2}}}\n")
    whole = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3)
    mean_trial = (whole["rows"][0]["trial_seconds"] + whole["rows"][1]["trial_seconds"]) / 2
    rest = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, finished=4)
    assert rest["n_trials"] == 6 and rest["finished"] == 4
    # the pruner's start-up of 2 is behind it: half of the 6 are pruned within their first of 3 folds
    assert rest["seconds_with_pruning"] == pytest.approx(15.0 + 3 * mean_trial + 3 * mean_trial / 3 + rest["final_model_seconds"])
    assert "50% of the 6 trials after the pruner's start-up of 2" in rest["pruning_assumption"]
    assert render(rest).startswith("plan: 6 trials left of 10 (4 finished) x 3 fold(s)")
    assert f"after about {4 + int((60 - 15) / mean_trial)} of 10 trials" in rest["warnings"][0]
    one = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, finished=1)  # one start-up trial left
    assert one["seconds_with_pruning"] == pytest.approx(15.0 + (1 + 4) * mean_trial + 4 * mean_trial / 3 + one["final_model_seconds"])
    done = estimate(spec, _calibrations(), train_rows=200, eval_rows=100, folds=3, finished=10)
    assert done["seconds_with_pruning"] == pytest.approx(15.0 + done["final_model_seconds"]) and done["n_trials"] == 0
    budget = _spec(tmp_path, "search: {n_trials: null, timeout: 600}\n")  # a time budget is each run's own, whole
    assert estimate(budget, _calibrations(), train_rows=200, eval_rows=100, folds=3, finished=4)["finished"] == 0


def test_the_finished_trials_come_from_the_study_and_an_unreachable_storage_is_said(tmp_path: Path) -> None:
    from hpsearch.plan import finished_trials

    said: list[str] = []
    assert finished_trials(_spec(tmp_path, "search: {n_trials: 10}\n"), said.append) == 0 and said == []  # never run
    down = _spec(tmp_path, "search: {n_trials: 10, storage: 'postgresql+psycopg://postgres@127.0.0.1:1/none'}\n")
    assert finished_trials(down, said.append) == 0
    assert len(said) == 1 and said[0].startswith("warning: cannot reach the study storage") and said[0].endswith(
        "; the plan is for the whole study, as if none of it had run")
