"""mtst.metrics: accuracy/macro-F1 (checked against scikit-learn) and seqeval entity scores."""

from __future__ import annotations

import random

import pytest

from mtst.errors import ConfigError, DataError
from mtst.metrics import primary_metric, sentence_metrics, token_metrics
from mtst.tasks import TaskKind


def test_sentence_metrics_by_hand():
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "c"]
    m = sentence_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(0.5)
    # F1 = 2TP / (2TP + FP + FN): a = 2/3 (tp 1, fn 1), b = 1/2 (tp 1, fp 1, fn 1), c = 0 (only predicted)
    f1_a = 2 * 1 / (2 * 1 + 0 + 1)
    f1_b = 2 * 1 / (2 * 1 + 1 + 1)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + 0.0) / 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns on labels that are never predicted
@pytest.mark.parametrize("seed", range(5))
def test_sentence_metrics_match_sklearn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    gold = [rng.choice("abcde") for _ in range(200)]
    pred = [g if rng.random() < 0.6 else rng.choice("abcdefg") for g in gold]  # f, g: predicted only
    m = sentence_metrics(gold, pred)
    assert m["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
    assert m["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(gold, pred, average="macro", zero_division=0)
    )


def test_sentence_metrics_errors():
    with pytest.raises(DataError, match=r"^sentence metrics: 2 gold labels but 1 predictions$"):
        sentence_metrics(["a", "b"], ["a"])
    with pytest.raises(DataError, match=r"^sentence metrics: no examples to score$"):
        sentence_metrics([], [])


def test_token_metrics_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    m = token_metrics(gold, pred)
    # entities: gold PER, LOC, ORG; predicted PER, ORG(wrong place), ORG -> 2 of 3 right both ways
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["f1_PER"] == pytest.approx(1.0)
    assert m["f1_LOC"] == pytest.approx(0.0)
    assert m["f1_ORG"] == pytest.approx(2 / 3)  # tp 1, fp 1, fn 0
    assert m["token_accuracy"] == pytest.approx(5 / 6)


def test_token_metrics_are_conlleval_lenient():
    # an I- tag that starts an entity counts as its start (default seqeval mode, like conlleval)
    m = token_metrics([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    assert m["f1"] == pytest.approx(1.0)
    # a boundary error is a miss, not half a hit
    m = token_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert m["f1"] == pytest.approx(0.0) and m["token_accuracy"] == pytest.approx(2 / 3)


def test_token_metrics_match_seqeval_report():
    from seqeval.metrics import classification_report

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.8 else rng.choice(tags) for t in g] for g in gold]
    m = token_metrics(gold, pred)
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    assert m["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert m["precision"] == pytest.approx(report["micro avg"]["precision"])
    assert m["recall"] == pytest.approx(report["micro avg"]["recall"])
    for etype in ("PER", "LOC", "MISC"):
        assert m[f"f1_{etype}"] == pytest.approx(report[etype]["f1-score"])


@pytest.mark.filterwarnings("error")
def test_token_metrics_without_entities_are_zero_and_quiet():
    m = token_metrics([["O", "O"]], [["O", "O"]])
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "token_accuracy": 1.0}


def test_token_metrics_errors():
    with pytest.raises(DataError, match=r"^token metrics: sequence 1 has 2 gold tags but 1 predicted$"):
        token_metrics([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(DataError, match=r"^token metrics: 1 gold sequences but 0 predicted$"):
        token_metrics([["O"]], [])


def test_primary_metric():
    assert primary_metric(TaskKind.SENTENCE) == "accuracy"
    assert primary_metric("token_classification") == "f1"
    with pytest.raises(ConfigError, match=r"task kind 'regression' is not one of"):
        primary_metric("regression")
