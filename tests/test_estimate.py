"""The bias-corrected estimate: its metrics match the study's, and it removes the optimism of picking the best."""
from __future__ import annotations

import numpy as np
import pytest

from hpsearch import estimate
from hpsearch.finetune import metrics


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "micro_f1", "mcc"])
def test_class_metrics_on_counts_match_the_study_metrics(metric: str) -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 200)
    predicted = np.vstack([rng.integers(0, 3, 200), gold, np.where(rng.random(200) < 0.7, gold, 0), np.zeros(200, dtype=int)])
    fast = estimate.scores(predicted, gold, metric, classes=3)
    slow = [metrics.classification_metrics(list(p), list(gold))[metric] for p in predicted]
    assert fast == pytest.approx(slow)


@pytest.mark.parametrize("metric", ["rmse", "pearson", "spearman"])
def test_value_metrics_match_the_study_metrics(metric: str) -> None:
    rng = np.random.default_rng(2)
    gold = rng.normal(size=80)
    predicted = np.vstack([gold + rng.normal(scale=0.5, size=80), rng.normal(size=80), np.full(80, 0.3)])
    fast = estimate.scores(predicted, gold, metric)
    slow = [metrics.regression_metrics(list(p), list(gold))[metric] for p in predicted]
    assert fast == pytest.approx(slow, abs=1e-9)


def _sample_of(metric: str, rows: int, configurations: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, int]:
    if metric == "ratio":
        return rng.integers(0, 4, (configurations, rows, 2)).astype(float), None, 0
    if metric in ("rmse", "pearson", "spearman"):
        gold = rng.normal(50, 10, rows)
        return gold[None, :] + rng.normal(0, 8, (configurations, rows)), gold, 0
    gold = rng.integers(0, 4, rows)
    return np.where(rng.random((configurations, rows)) < 0.6, gold[None, :], rng.integers(0, 4, (configurations, rows))), gold, 4


def _gathered(predicted: np.ndarray, gold: np.ndarray | None, metric: str, classes: int, members: list[np.ndarray], samples: int):
    """Each sample's rows gathered, duplicates and all, and scored as they are (the plain way), with the draws
    ``bbc_cv`` makes: each fold's bag from that fold, fold after fold; samples that leave no row out skipped."""
    rng = np.random.default_rng(0)

    def score(configurations: slice, rows: np.ndarray) -> np.ndarray:
        if gold is None:
            return estimate.ratio_scores(predicted[configurations, rows])
        return estimate.scores(predicted[configurations, rows], gold[rows], metric, classes)

    for _ in range(samples):
        bags = [rows[rng.integers(0, len(rows), len(rows))] for rows in members]
        outs = [out for rows, bag in zip(members, bags) if len(out := np.setdiff1d(rows, bag))]
        if outs:
            yield (np.column_stack([score(slice(None), bag) for bag in bags]),
                   [np.mean([score(slice(c, c + 1), out)[0] for out in outs]) for c in range(len(predicted))])


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "mcc", "rmse", "pearson", "spearman", "ratio"])
def test_a_sample_scored_from_how_often_it_drew_each_row_scores_as_its_rows_gathered(metric: str) -> None:
    """Counting each row's draws (many samples at once) scores a sample as gathering its rows does, folds of 2 to 6
    rows included, where a bag may draw one row only (Pearson's r is then 0 both ways), and Spearman's ranks with
    ties among values as well as among repeated rows."""
    rng = np.random.default_rng(8)
    compared = 0
    for rows, folds in ((300, 3), (9, 3), (5, 2)):
        predicted, gold, classes = _sample_of(metric, rows, 3, rng)
        if metric == "spearman":
            predicted, gold = np.round(predicted, -1), np.round(gold, -1)  # values tied across rows too
        members = [np.flatnonzero(np.arange(rows) % folds == fold) for fold in range(folds)]
        counted = [estimate._counting_scorer(predicted[:, m], None if gold is None else gold[m], metric, classes) for m in members]
        by_counts = list(estimate._counted_samples(counted, estimate._scorer(predicted, gold, metric, classes), members,
                                                   np.random.default_rng(0), 60, chunk=7))
        gathered = list(_gathered(predicted, gold, metric, classes, members, 60))
        assert len(gathered) == len(by_counts) > 40
        for (bag, left_out), (counted_bag, counted_left_out) in zip(gathered, by_counts):
            assert counted_bag == pytest.approx(bag, abs=1e-9)
            assert [counted_left_out(c) for c in range(3)] == pytest.approx(left_out, abs=1e-9)
            compared += 1
    assert compared > 120


def test_spearman_ranks_each_sample_and_is_estimated_fold_by_fold() -> None:
    rng = np.random.default_rng(9)
    predicted, gold, _ = _sample_of("spearman", 300, 4, rng)
    result = estimate.bbc_cv(predicted, gold, "spearman", "maximize", folds=np.arange(300) % 3, samples=200)
    raw = estimate.scores(predicted, gold, "spearman")
    assert result["folds"] == 3 and result["samples"] == 200
    assert raw.min() - 0.05 < result["estimate"] < raw.max() + 0.01


def test_many_equal_random_configurations_the_raw_best_overstates_and_bbc_does_not() -> None:
    rng = np.random.default_rng(0)
    rows, configurations = 300, 60
    gold = rng.integers(0, 2, rows)
    predicted = rng.integers(0, 2, (configurations, rows))  # every configuration guesses: true accuracy 0.5
    raw_best = estimate.scores(predicted, gold, "accuracy", classes=2).max()
    result = estimate.bbc_cv(predicted, gold, "accuracy", "maximize", classes=2, samples=500)
    assert raw_best > 0.55  # the maximum of 60 guessers looks good
    assert abs(result["estimate"] - 0.5) < 0.02 and result["low"] < 0.5 < result["high"]
    assert result["configurations"] == configurations and result["samples"] > 450


def test_a_truly_better_configuration_keeps_its_score() -> None:
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.85, gold, 1 - gold)  # true accuracy 0.85
    predicted = np.vstack([good, rng.integers(0, 2, (10, 400))])
    result = estimate.bbc_cv(predicted, gold, "accuracy", "maximize", classes=2, samples=300)
    assert result["estimate"] == pytest.approx(estimate.scores(good[None, :], gold, "accuracy", classes=2)[0], abs=0.02)


def test_minimised_metrics_pick_the_smallest() -> None:
    rng = np.random.default_rng(4)
    gold = rng.normal(size=100)
    predicted = np.vstack([gold + rng.normal(scale=0.1, size=100), gold + rng.normal(scale=2.0, size=100)])
    result = estimate.bbc_cv(predicted, gold, "rmse", "minimize", samples=200)
    assert result["estimate"] < 0.2


def test_scored_fold_by_fold_as_the_cv_score_is() -> None:
    # Each configuration's fold models predict one class each, a different one per fold: every fold scores a
    # macro-F1 near 1/3, while the pooled rows hold both classes and would score about 0.5.
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 300)
    folds = np.repeat([0, 1, 2], 100)
    one_class_per_fold = np.vstack([np.where(folds == 1, 1, 0), np.where(folds == 0, 1, 0), np.where(folds == 2, 1, 0)])
    fold_means = [np.mean([estimate.scores(p[None, folds == f], gold[folds == f], "macro_f1", 2)[0] for f in range(3)])
                  for p in one_class_per_fold]
    pooled = estimate.scores(one_class_per_fold, gold, "macro_f1", 2)
    assert max(fold_means) < 0.36 and min(pooled) > 0.45
    result = estimate.bbc_cv(one_class_per_fold, gold, "macro_f1", "maximize", folds=folds, classes=2, samples=300)
    assert result["estimate"] <= max(fold_means) + 0.01 and result["folds"] == 3
    assert estimate.bbc_cv(one_class_per_fold, gold, "macro_f1", "maximize", classes=2, samples=300)["estimate"] > 0.45  # one fold: pooled


def test_the_one_standard_error_rule_is_what_each_sample_repeats() -> None:
    # The top configuration (large) scores 0.95 on one fold and 0.65 on the other; a small one scores 0.72 on both,
    # within one standard error of the top mean: 'one-standard-error' takes the small one, and the estimate must
    # describe that pick, not the top one's.
    from hpsearch.selection import cv_table, picker

    rng = np.random.default_rng(6)
    gold = rng.integers(0, 2, 400)
    folds = np.repeat([0, 1], 200)

    def right_with(chance: np.ndarray) -> np.ndarray:
        return np.where(rng.random(400) < chance, gold, 1 - gold)

    predicted = np.vstack([right_with(np.where(folds == 0, 0.95, 0.65)), right_with(np.full(400, 0.72))])
    rows = cv_table([{"trial": n, "model": name, "params": {}, "best_epochs": 1, "total_parameters": size,
                      "fold_scores": [estimate.scores(p[None, folds == f], gold[folds == f], "accuracy", 2)[0] for f in (0, 1)]}
                     for n, (name, size, p) in enumerate([("large", 100, predicted[0]), ("small", 10, predicted[1])])], "maximize")
    small = next(r for r in rows if r["model"] == "small")
    best = estimate.bbc_cv(predicted, gold, "accuracy", "maximize", folds=folds, classes=2, samples=300)
    one_se = estimate.bbc_cv(predicted, gold, "accuracy", "maximize", folds=folds, classes=2, samples=300,
                             pick=picker(sorted(rows, key=lambda r: r["trial"]), "one-standard-error", "maximize"))
    assert best["estimate"] == pytest.approx(0.80, abs=0.03)
    assert one_se["estimate"] == pytest.approx(small["mean_score"], abs=0.02)
    assert picker(rows, "best", "maximize") is None


@pytest.mark.parametrize("metric", ["f1", "precision", "recall", "accuracy"])
def test_entity_metrics_from_each_sentences_parts_match_the_study_metrics(metric: str) -> None:
    from types import SimpleNamespace

    from hpsearch.tasks.entities import TokenClassification

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rng = np.random.default_rng(7)
    gold = [list(rng.choice(5, int(rng.integers(1, 12)), p=[0.5, 0.15, 0.1, 0.15, 0.1])) for _ in range(60)]
    said = [[g if rng.random() < 0.8 else int(rng.integers(0, 5)) for g in sentence] for sentence in gold]
    split, labels = SimpleNamespace(columns={"tags": gold}), SimpleNamespace(labels=names)
    parts = TokenClassification().ratio_parts(said, split, list(range(60)), labels, metric)
    expected = metrics.entity_metrics([[names[i] for i in s] for s in said], [[names[i] for i in s] for s in gold])[metric]
    assert estimate.ratio_scores(np.asarray([parts]))[0] == pytest.approx(expected)
    half = list(range(30))  # any sample of sentences: the study's metric on those sentences alone
    expected = metrics.entity_metrics([[names[i] for i in said[r]] for r in half], [[names[i] for i in gold[r]] for r in half])[metric]
    assert estimate.ratio_scores(np.asarray([parts[:30]]))[0] == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["f1", "exact_match"])
def test_question_scores_from_each_questions_parts_match_the_study_metrics(metric: str) -> None:
    from types import SimpleNamespace

    from hpsearch.tasks.qa import QuestionAnswering, squad_scores

    answers = [["the red fox"], ["Paris", "paris, france"], [], ["42"]]
    predicted = ["red fox", "Paris France", "", "forty-two"]
    parts = QuestionAnswering().ratio_parts(predicted, SimpleNamespace(columns={"answer_text": answers}), [0, 1, 2, 3], None, metric)
    assert estimate.ratio_scores(np.asarray([parts]))[0] == pytest.approx(squad_scores(predicted, answers)[metric])


def test_a_paired_bootstrap_over_one_splits_rows_tells_close_configurations_apart() -> None:
    from hpsearch.selection import RowEvidence

    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.85, gold, 1 - gold)
    near = good.copy()
    right = np.flatnonzero(good == gold)[:10]
    near[right] = 1 - gold[right]  # wrong on 10 rows more than good, right wherever good is: 0.033 behind on every sample
    guess = rng.integers(0, 2, 300)
    observed, resampled = estimate.paired_bootstrap([good, near, guess, good], gold, "accuracy", classes=2, samples=500, seed=1)
    assert observed == pytest.approx(estimate.scores(np.vstack([good, near, guess, good]), gold, "accuracy", classes=2))
    assert resampled.shape == (4, 500)
    alone = estimate.paired_bootstrap([near], gold, "accuracy", classes=2, samples=500, seed=1)[1]
    assert (alone[0] == resampled[1]).all()  # the samples depend on the seed and the rows only: scored alone, still paired
    evidence = RowEvidence(lambda key: (observed[key], resampled[key]) if key in range(4) else None, 0.95)
    interval = evidence.interval({"trial": 0})
    assert interval.mean == observed[0] and interval.low < interval.mean < interval.high and 0.05 < interval.high - interval.low < 0.12
    close = evidence.compare({"trial": 0}, {"trial": 1})
    assert close["difference"] == pytest.approx(10 / 300) and close["low"] > 0 and close["p_value"] < 0.01  # paired: the rows differ only there
    unpaired = evidence.interval({"trial": 1})
    assert unpaired.high > interval.low  # the two intervals overlap: compared one by one, they could not be told apart
    far = evidence.compare({"trial": 2}, {"trial": 0})
    assert far["high"] < -0.2 and far["p_value"] == pytest.approx(2 / 501)  # no sample on the other side: (0 + 1) / (500 + 1), twice
    assert evidence.compare({"trial": 0}, {"trial": 3}) == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    assert evidence.compare({"trial": 0}, {"trial": 9}) is None and evidence.interval({"trial": 9}) is None


def test_a_paired_bootstrap_takes_ratio_parts() -> None:
    parts = np.array([[[1.0, 1.0], [0.0, 1.0], [2.0, 3.0]], [[0.0, 1.0], [0.0, 1.0], [1.0, 3.0]]])
    observed, resampled = estimate.paired_bootstrap(parts, None, "f1", samples=50)
    assert observed == pytest.approx([3 / 5, 1 / 5]) and resampled.shape == (2, 50) and (resampled[0] >= resampled[1]).all()
