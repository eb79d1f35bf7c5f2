from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import f1_score as seq_f1
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

TRAIN, EVAL = list(range(120)), list(range(120, 160))
PARAMS = {"learning_rate": 3e-3, "epochs": 2, "batch_size": 8}


def test_classification_metrics_equal_scikit_learn(make_tuner) -> None:
    spec, tuner = make_tuner()
    fitted = tuner.fit(spec.models[0], PARAMS, train_rows=TRAIN, eval_rows=EVAL)
    predicted = [int(np.argmax(x)) for x in tuner.predict(fitted, "train", EVAL)]
    gold = [tuner.data.train.columns["label"][i] for i in EVAL]
    scores = tuner.score(fitted, "train", EVAL)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro"))
    assert scores["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro"))
    assert scores["mcc"] == pytest.approx(matthews_corrcoef(gold, predicted))


def test_regression_metrics_equal_scipy(make_tuner) -> None:
    spec, tuner = make_tuner("regression")
    fitted = tuner.fit(spec.models[0], PARAMS, train_rows=TRAIN, eval_rows=EVAL)
    predicted = np.array([float(x[0]) for x in tuner.predict(fitted, "train", EVAL)])
    gold = np.array([tuner.data.train.columns["label"][i] for i in EVAL])
    scores = tuner.score(fitted, "train", EVAL)
    assert scores["rmse"] == pytest.approx(float(np.sqrt(np.mean((predicted - gold) ** 2))), rel=1e-5)
    assert scores["pearson"] == pytest.approx(pearsonr(predicted, gold).statistic, rel=1e-5)
    assert scores["spearman"] == pytest.approx(spearmanr(predicted, gold).statistic, rel=1e-5)


def test_entity_f1_equals_seqeval_on_words(make_tuner) -> None:
    spec, tuner = make_tuner("token-classification")
    fitted = tuner.fit(spec.models[0], PARAMS, train_rows=TRAIN, eval_rows=EVAL)
    names = tuner.data.label_map.labels
    word_logits = tuner.predict(fitted, "train", EVAL)
    predicted = [[names[int(np.argmax(w))] for w in words] for words in word_logits]
    gold = [[names[t] for t in tuner.data.train.columns["tags"][i]] for i in EVAL]
    assert [len(p) for p in predicted] == [len(g) for g in gold]
    assert tuner.score(fitted, "train", EVAL)["f1"] == pytest.approx(seq_f1(gold, predicted))


def test_tags_without_a_prefix_are_scored_as_entities_as_the_pipeline_groups_them() -> None:
    """IO tagging ('ORG' on every word of a name): seqeval read a tag's first letter as its prefix, so 'ORG' was
    outside any entity and this model's F1 0.0 instead of 1/3."""
    from types import SimpleNamespace

    from hpsearch.data.labels import LabelMap
    from hpsearch.tasks.entities import TokenClassification, pipeline_tags, scored_tags

    assert scored_tags(["O", "PER", "B-LOC", "I-LOC", "U-ORG", "L-ORG", "MISC-X"]) == ["O", "I-PER", "B-LOC", "I-LOC", "S-ORG", "E-ORG", "I-MISC-X"]
    # as an export names them for transformers' pipeline: the same spans, in IOB2 where the tags were IOBES or BILOU
    assert pipeline_tags(["O", "PER", "B-LOC", "E-LOC", "S-LOC", "U-ORG", "L-ORG", "MISC-X"]) == ["O", "PER", "B-LOC", "I-LOC", "B-LOC", "B-ORG", "I-ORG", "MISC-X"]
    task = TokenClassification()
    gold = [["ORG", "ORG", "O", "LOC"], ["O", "LOC", "LOC"]]
    said = [["ORG", "ORG", "O", "O"], ["O", "LOC", "ORG"]]
    io, bio = LabelMap(("LOC", "O", "ORG")), LabelMap(("B-LOC", "B-ORG", "I-LOC", "I-ORG", "O"))
    as_bio = {"ORG": ["B-ORG", "I-ORG"], "LOC": ["B-LOC", "I-LOC"]}

    def bio_of(rows: list[list[str]]) -> list[list[str]]:
        return [[t if t == "O" else as_bio[t][int(i > 0 and row[i - 1] == t)] for i, t in enumerate(row)] for row in rows]

    def scores(label_map: LabelMap, gold_rows: list[list[str]], said_rows: list[list[str]]) -> dict[str, float]:
        ids = label_map.label2id
        split = SimpleNamespace(columns={"tags": [[ids[t] for t in row] for row in gold_rows]})
        return task.measure([[ids[t] for t in row] for row in said_rows], split, [0, 1], label_map)

    found = scores(io, gold, said)
    assert found["f1"] == pytest.approx(seq_f1(bio_of(gold), bio_of(said))) and found["f1"] == pytest.approx(1 / 3)
    assert found == scores(bio, bio_of(gold), bio_of(said))
