from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from hpsearch import selection


def _rows() -> list[dict]:
    return [
        {"trial": 0, "model": "big", "params": {"learning_rate": 1e-4}, "fold_scores": [0.80, 0.82, 0.84], "best_epochs": 3, "total_parameters": 1000},
        {"trial": 1, "model": "small", "params": {"learning_rate": 2e-4}, "fold_scores": [0.79, 0.815, 0.83], "best_epochs": 2, "total_parameters": 100},
        {"trial": 2, "model": "small", "params": {"learning_rate": 1e-5}, "fold_scores": [0.60, 0.62, 0.61], "best_epochs": 1, "total_parameters": 100},
    ]


def test_cv_table_is_flat_ranked_and_correct() -> None:
    table = selection.cv_table(_rows(), "maximize")
    assert [r["trial"] for r in table] == [0, 1, 2] and [r["rank"] for r in table] == [1, 2, 3]
    top = table[0]
    assert top["mean_score"] == pytest.approx(0.82)
    assert top["std_score"] == pytest.approx(math.sqrt(((0.02) ** 2 * 2) / 3))
    assert (top["split0_score"], top["split2_score"]) == (0.80, 0.84)
    assert top["param_learning_rate"] == 1e-4


def test_minimised_metrics_rank_low_first() -> None:
    table = selection.cv_table(_rows(), "minimize")
    assert table[0]["trial"] == 2


def test_best_rule_takes_rank_one() -> None:
    table = selection.cv_table(_rows(), "maximize")
    assert selection.select(table, "best", "maximize")["trial"] == 0


def test_one_standard_error_rule_takes_the_cheaper_close_candidate() -> None:
    table = selection.cv_table(_rows(), "maximize")
    # trial 1 is 0.0083 below the best; the best's standard error is 0.02/sqrt(3) = 0.0115.
    assert selection.select(table, "one-standard-error", "maximize")["trial"] == 1


def test_one_standard_error_rule_ignores_far_candidates() -> None:
    rows = _rows()
    rows[1]["fold_scores"] = [0.70, 0.71, 0.72]
    table = selection.cv_table(rows, "maximize")
    assert selection.select(table, "one-standard-error", "maximize")["trial"] == 0


def test_corrected_interval_is_wider_than_the_naive_one() -> None:
    scores = [0.80, 0.82, 0.84, 0.81, 0.83]
    interval = selection.corrected_interval(scores, 0.95)
    naive = stats.t.interval(0.95, 4, loc=0.82, scale=stats.sem(scores))
    assert interval.mean == pytest.approx(0.82)
    assert interval.low < naive[0] and interval.high > naive[1]
    k = 5
    expected_half = stats.t.ppf(0.975, k - 1) * math.sqrt((1 / k + 1 / (k - 1)) * stats.tvar(scores))
    assert interval.high - interval.mean == pytest.approx(expected_half)


def test_paired_comparison_matches_the_corrected_t_test() -> None:
    a, b = [0.80, 0.82, 0.84], [0.79, 0.815, 0.83]
    result = selection.paired_comparison(a, b)
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / 3
    t_stat = mean / math.sqrt((1 / 3 + 1 / 2) * stats.tvar(diffs))
    assert result["difference"] == pytest.approx(mean)
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(abs(t_stat), 2))
    assert result["low"] < mean < result["high"]


def test_a_difference_interval_is_clipped_to_the_differences_the_metric_allows() -> None:
    """Two folds give a t interval with one degree of freedom: for F1 it reached [-7.0, +7.7]."""
    a, b = [1.0, 0.3333], [0.3333, 0.3333]
    wide = selection.paired_comparison(a, b)
    assert wide["low"] < -1 and wide["high"] > 1
    clipped = selection.FoldEvidence(0.95, (0.0, 1.0)).compare(selection.scores_row(a, 1), selection.scores_row(b, 2))
    assert (clipped["low"], clipped["high"]) == (-1.0, 1.0)
    assert clipped["difference"] == wide["difference"] and clipped["p_value"] == wide["p_value"]
    unbounded = selection.FoldEvidence(0.95, (0.0, math.inf)).compare(selection.scores_row(a, 1), selection.scores_row(b, 2))
    assert (unbounded["low"], unbounded["high"]) == (wide["low"], wide["high"])


def test_compare_top_pairs_the_selected_with_the_next_best() -> None:
    table = selection.cv_table(_rows(), "maximize")
    out = selection.compare_top(table, table[0], selection.FoldEvidence(0.95), top=2)
    assert [c["other"] for c in out] == [1, 2]
    assert out[1]["difference"] > 0.15 and out[1]["p_value"] < 0.05


def test_table_is_written_as_csv_and_json(tmp_path: Path) -> None:
    table = selection.cv_table(_rows(), "maximize")
    csv_path, json_path = selection.write_table(table, tmp_path)
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert {"rank", "mean_score", "std_score", "split0_score", "split1_score", "split2_score", "param_learning_rate"} <= set(rows[0])
    assert json.loads(json_path.read_text())[0]["params"] == {"learning_rate": 1e-4}


def test_empty_table_cannot_select() -> None:
    with pytest.raises(ValueError, match="no completed trial"):
        selection.select([], "best", "maximize")


def test_ties_go_to_the_earlier_trial_everywhere() -> None:
    assert selection.better((0.7, 1), (0.7, 3), "maximize") and not selection.better((0.7, 3), (0.7, 1), "maximize")
    assert selection.better((0.2, 5), (0.3, 1), "minimize") and selection.better(0.8, 0.7, "maximize")
    tied = [{**row, "fold_scores": [0.8, 0.8, 0.8]} for row in _rows()[:2]]
    assert [r["trial"] for r in selection.cv_table(list(reversed(tied)), "maximize")] == [0, 1]


@pytest.mark.parametrize("scores", [[0.99, 0.80, 1.0], [0.0, 0.3, 0.01], [0.93, 0.99, 0.89]])
def test_intervals_stay_inside_the_metrics_range(scores: list[float]) -> None:
    from hpsearch.tasks import metric_bounds

    raw = selection.corrected_interval(scores, 0.95)
    clipped = selection.corrected_interval(scores, 0.95, bounds=metric_bounds("macro_f1"))
    assert 0.0 <= clipped.low <= clipped.mean <= clipped.high <= 1.0
    assert clipped.low == max(raw.low, 0.0) and clipped.high == min(raw.high, 1.0)
    assert raw.low < 0.0 or raw.high > 1.0 or scores == [0.93, 0.99, 0.89]  # the first two would leave [0, 1] unclipped
    assert metric_bounds("mcc") == (-1.0, 1.0) and metric_bounds("rmse")[0] == 0.0


def _costs(table: list[dict]) -> list[dict]:
    return [{"trial": r["trial"], "model": r["model"], "state": "COMPLETE", "train_samples": 100, "device_seconds": 2.0,
             "trainable_parameters": 10, "total_parameters": r["total_parameters"]} for r in table]


def test_per_model_table_gives_each_model_its_best_trial_and_a_verdict() -> None:
    rows = _rows() + [
        {"trial": 3, "model": "tiny", "params": {}, "fold_scores": [0.50, 0.52, 0.51], "best_epochs": 1, "total_parameters": 10},
        {"trial": 4, "model": "close", "params": {}, "fold_scores": [0.83, 0.80, 0.82], "best_epochs": 1, "total_parameters": 50},
    ]
    table = selection.cv_table(rows, "maximize")
    winner = selection.select(table, "best", "maximize")
    costs = _costs(table) + [{"trial": 5, "model": "tiny", "state": "PRUNED", "train_samples": 30, "device_seconds": 0.5, "peak_memory_mb": 900.0},
                             {"trial": 6, "model": "tiny", "state": "INTERRUPTED", "train_samples": 0, "device_seconds": 0.0},
                             {"trial": 7, "model": "pruned", "state": "PRUNED", "train_samples": 30, "device_seconds": 0.5}]
    out = selection.per_model(table, costs, ["big", "small", "tiny", "close", "pruned", "unused"], winner,
                              selection.FoldEvidence(0.95, (0.0, 1.0)), "maximize")
    by = {r["model"]: r for r in out}
    assert [r["model"] for r in out] == ["big", "close", "small", "tiny", "pruned", "unused"]  # best first, no trial last
    assert by["pruned"]["verdict"] == "no completed trial" and by["pruned"]["best_trial"] is None
    assert by["big"]["verdict"] == "winner" and by["big"]["comparison"] is None
    assert by["small"]["best_trial"] == 1  # its best trial, not trial 2
    assert by["small"]["verdict"] == "not distinguishable from the winner"  # 0.82 vs 0.8117, paired, 3 folds
    assert by["tiny"]["verdict"] == "worse" and by["tiny"]["comparison"]["low"] > 0
    assert by["tiny"]["trials"] == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0, "INTERRUPTED": 1, "REPEAT": 0} and by["tiny"]["train_samples"] == 130
    assert by["unused"]["verdict"] == selection.NEVER_TRIED and by["unused"]["best_trial"] is None  # no trial drew it
    # a model's peak memory is its largest trial's, where its trials recorded one
    assert by["tiny"]["peak_memory_mb"] == 900.0 and by["big"]["peak_memory_mb"] is None and by["unused"]["peak_memory_mb"] is None
    expected = selection.paired_comparison([0.80, 0.82, 0.84], [0.50, 0.52, 0.51], 0.95)
    assert by["tiny"]["comparison"] == pytest.approx(expected)
    assert 0.0 <= by["close"]["low"] <= by["close"]["high"] <= 1.0


def test_the_winners_model_is_named_so_where_the_rule_chose_a_cheaper_trial_than_its_best() -> None:
    """One-standard-error took the model's 1-epoch trial over its best: the model's row compared its best with the
    winner, its own cheaper trial, and called the winner's own model 'not distinguishable from the winner'."""
    rows = [{"trial": 0, "model": "a", "params": {}, "fold_scores": [0.80, 0.82, 0.84], "best_epochs": 3, "total_parameters": 10},
            {"trial": 1, "model": "a", "params": {}, "fold_scores": [0.79, 0.81, 0.83], "best_epochs": 1, "total_parameters": 10},
            {"trial": 2, "model": "b", "params": {}, "fold_scores": [0.50, 0.52, 0.51], "best_epochs": 1, "total_parameters": 5}]
    table = selection.cv_table(rows, "maximize")
    winner = selection.select(table, "one-standard-error", "maximize", "parameters")
    assert winner["trial"] == 1
    by = {r["model"]: r for r in selection.per_model(table, _costs(table), ["a", "b"], winner, selection.FoldEvidence(0.95), "maximize")}
    assert by["a"]["best_trial"] == 0 and by["a"]["verdict"] == "the winner's model (the selection rule chose its trial 1)"
    assert by["a"]["comparison"]["difference"] == pytest.approx(-0.01)  # winner minus its best, still shown
    assert by["b"]["verdict"] == "worse"


def test_minimised_metrics_get_the_same_verdicts() -> None:
    rows = [{"trial": 0, "model": "a", "params": {}, "fold_scores": [0.2, 0.21, 0.19], "best_epochs": 1, "total_parameters": 1},
            {"trial": 1, "model": "b", "params": {}, "fold_scores": [0.9, 0.95, 0.92], "best_epochs": 1, "total_parameters": 1}]
    table = selection.cv_table(rows, "minimize")
    winner = selection.select(table, "best", "minimize")
    out = selection.per_model(table, _costs(table), ["a", "b"], winner, selection.FoldEvidence(0.95), "minimize")
    assert [(r["model"], r["verdict"]) for r in out] == [("a", "winner"), ("b", "worse")]


def test_a_winner_equal_to_the_baseline_is_not_clearly_better() -> None:
    assert selection.clearly_beats([0.8, 0.82, 0.81], [0.5, 0.5, 0.5], 0.95, "maximize")[0]
    assert not selection.clearly_beats([0.36, 0.33, 0.35], [0.35, 0.33, 0.36], 0.95, "maximize")[0]
    assert not selection.clearly_beats([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 0.95, "maximize")[0]
    assert selection.clearly_beats([0.3, 0.31, 0.29], [0.9, 0.91, 0.92], 0.95, "minimize")[0]
    assert selection.clearly_beats([0.7], [0.5], 0.95, "maximize")[0]  # one validation split: the plain difference


@pytest.mark.parametrize("cost,expected", [("parameters", 1), ("train_time", 0), ("latency", 0)])
def test_one_standard_error_takes_the_cheapest_by_the_chosen_cost(cost: str, expected: int) -> None:
    rows = _rows()
    costs = {0: (50.0, 2.0), 1: (90.0, 9.0), 2: (10.0, 1.0)}  # trial: (train seconds, latency ms)
    for row in rows:
        row["train_seconds"], row["latency_ms"] = costs[row["trial"]]
    table = selection.cv_table(rows, "maximize")
    chosen = selection.select(table, "one-standard-error", "maximize", cost)
    assert chosen["trial"] == expected
    traded = selection.gives_up(table, chosen, cost)
    if expected == 0:
        assert traded is None
    else:
        assert traded["best_trial"] == 0 and traded["score_given_up"] == pytest.approx(0.82 - 0.8117, abs=1e-3)
        assert (traded["best_cost"], traded["chosen_cost"]) == (1000, 100)


@pytest.mark.parametrize("cost, said", [("latency", "for latency 0.5 ms per example instead of 2 ms per example"),
                                        ("train_time", "for train_time 12 s instead of 30 s"),
                                        ("parameters", "for parameters 1,000 instead of 5,000"),
                                        ("same-parameters", "for 1 epoch(s) of training instead of 3 (the same parameters 25,250)")])
def test_what_a_cheaper_choice_gave_up_is_said_with_the_costs_unit(tmp_path: Path, tiny_bert: Path, cost: str, said: str) -> None:
    """Where the cost was the same (one candidate model, by parameters), the rule chose by fewer epochs: the sentence
    said 'for parameters 2.525e+04 instead of 2.525e+04'."""
    from hpsearch.finish import findings
    from hpsearch.spec import load_spec
    from toydata import toy_study

    spec = load_spec(toy_study(tmp_path, tiny_bert))
    costs = {"latency": (0.5, 2.0), "train_time": (12.0, 30.0), "parameters": (1000, 5000), "same-parameters": (25250, 25250)}[cost]
    report = {"rule": "one-standard-error", "gives_up": {"best_trial": 3, "best_mean": 0.8, "score_given_up": 0.01, "cost": cost.split("-")[-1],
                                                         "chosen_cost": costs[0], "best_cost": costs[1], "chosen_epochs": 1, "best_epochs": 3}}
    sentence = dict(findings(spec, report))["gives-up"]
    assert sentence.endswith(f"it scores 0.0100 lower in macro_f1, {said}"), sentence


def test_one_splits_trials_get_intervals_verdicts_and_the_baseline_comparison_from_its_rows() -> None:
    import numpy as np

    rows = [{"trial": t, "model": m, "params": {}, "fold_scores": [s], "best_epochs": 1, "total_parameters": 1}
            for t, m, s in ((0, "a", 0.80), (1, "b", 0.78), (2, "c", 0.60))]
    table = selection.cv_table(rows, "maximize")
    winner = selection.select(table, "best", "maximize")
    rng = np.random.default_rng(0)
    resampled = np.vstack([0.80 + rng.normal(0, 0.02, 400), 0.78 + rng.normal(0, 0.02, 400), 0.60 + rng.normal(0, 0.02, 400),
                           np.full(400, 0.5)])
    resampled[1] = resampled[0] - 0.02 + rng.normal(0, 0.03, 400)  # close to a, noisily: not told apart
    keys = {0: 0, 1: 1, 2: 2, selection.BASELINE: 3}
    evidence = selection.RowEvidence(lambda key: ([0.80, 0.78, 0.60, 0.5][keys[key]], resampled[keys[key]]) if key in keys else None, 0.95)
    assert selection.FoldEvidence(0.95).interval(winner) is None and selection.FoldEvidence(0.95).compare(winner, table[1]) is None
    out = {r["model"]: r for r in selection.per_model(table, _costs(table), ["a", "b", "c"], winner, evidence, "maximize")}
    assert [out[m]["verdict"] for m in "abc"] == ["winner", "not distinguishable from the winner", "worse"]
    assert out["c"]["comparison"]["difference"] == pytest.approx(0.2) and out["a"]["low"] < 0.80 < out["a"]["high"]
    assert [c["other"] for c in selection.compare_top(table, winner, evidence)] == [1, 2]
    on_rows = evidence.compare(winner, selection.scores_row([0.5]))
    assert selection.clearly_beats([0.8], [0.5], 0.95, "maximize", on_rows) == (True, on_rows) and on_rows["low"] > 0.2
    without = selection.per_model(table, _costs(table), ["a", "b"], winner, selection.FoldEvidence(0.95), "maximize")
    assert without[1]["verdict"].startswith("not compared here (one validation split") and "low" not in without[0]


def test_on_one_split_the_one_standard_error_rule_takes_the_standard_error_over_its_rows() -> None:
    rows = [{"trial": 0, "model": "big", "params": {}, "fold_scores": [0.80], "best_epochs": 3, "total_parameters": 100,
             selection.SPLIT_SE_ATTR: 0.03},
            {"trial": 1, "model": "small", "params": {}, "fold_scores": [0.78], "best_epochs": 3, "total_parameters": 10,
             selection.SPLIT_SE_ATTR: 0.03}]
    table = selection.cv_table(rows, "maximize")
    assert selection.select(table, "one-standard-error", "maximize")["trial"] == 1  # 0.02 behind, within 0.03
    assert selection.select(table, "best", "maximize")["trial"] == 0
    narrow = selection.cv_table([{**row, selection.SPLIT_SE_ATTR: 0.01} for row in rows], "maximize")
    assert selection.select(narrow, "one-standard-error", "maximize")["trial"] == 0
    pick = selection.picker(table, "one-standard-error", "maximize")
    assert pick([[0.80], [0.78]]) == 1 and pick([[0.80], [0.70]]) == 0  # the bias-corrected estimate's picks follow it


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_model_clearly_ahead_of_the_chosen_winner_is_called_better(direction: str) -> None:
    import numpy as np

    ahead, chosen = (0.80, 0.70) if direction == "maximize" else (0.20, 0.30)
    rows = [{"trial": 0, "model": "big", "params": {}, "fold_scores": [ahead], "best_epochs": 1, "total_parameters": 100},
            {"trial": 1, "model": "small", "params": {}, "fold_scores": [chosen], "best_epochs": 1, "total_parameters": 10}]
    table = selection.cv_table(rows, direction)
    winner = next(r for r in table if r["trial"] == 1)  # as a cheaper pick would be
    noise = np.random.default_rng(1).normal(0, 0.01, 300)
    evidence = selection.RowEvidence(lambda key: [(ahead, ahead + noise), (chosen, chosen + noise)][key], 0.95)
    out = {r["model"]: r["verdict"] for r in selection.per_model(table, _costs(table), ["big", "small"], winner, evidence, direction)}
    assert out == {"big": "better (not chosen by the selection rule)", "small": "winner"}


def test_a_saved_selection_stands_only_for_the_same_trials_and_the_same_winner(tmp_path: Path) -> None:
    """What the report copies from the last run, and what lets a run keep the last export."""
    from types import SimpleNamespace

    from hpsearch.report import _final_figures

    report = {"considered_trials": [0, 1], "selected": {"trial": 1, "params": {"learning_rate": 3e-5}, "mean_score": 0.8125}}
    saved = {**json.loads(json.dumps(report)), "test_scores": {"accuracy": 0.75}}
    assert selection.same_selection(saved, report)
    assert not selection.same_selection({**saved, "considered_trials": [0, 1, 2]}, report)
    assert not selection.same_selection({**saved, "selected": {**saved["selected"], "mean_score": 0.5}}, report)  # a study run again
    spec = SimpleNamespace(out_dir=tmp_path, one_split=False)
    (tmp_path / "selection.json").write_text(json.dumps(saved))
    assert _final_figures(spec, report) == {"test_scores": {"accuracy": 0.75}}
    (tmp_path / "selection.json").write_text(json.dumps({**saved, "selected": {**saved["selected"], "trial": 0}}))
    assert "stale_note" in _final_figures(spec, report)


def test_what_a_cheaper_choice_gave_up_reads_as_worse_in_a_metric_that_is_minimised(tmp_path: Path, tiny_bert: Path) -> None:
    """RMSE: the cheaper choice's score is higher; the sentence said 'gives up -0.0500 rmse', a negative loss."""
    from hpsearch.finish import findings
    from hpsearch.spec import load_spec
    from toydata import toy_study

    spec = load_spec(toy_study(tmp_path, tiny_bert, task="regression"))
    report = {"rule": "one-standard-error", "gives_up": {"best_trial": 3, "best_mean": 0.40, "score_given_up": -0.05, "cost": "parameters",
                                                         "chosen_cost": 1000, "best_cost": 5000, "chosen_epochs": 1, "best_epochs": 3}}
    sentence = dict(findings(spec, report))["gives-up"]
    assert sentence.endswith(f"it scores 0.0500 higher in {spec.metric}, for parameters 1,000 instead of 5,000"), sentence
