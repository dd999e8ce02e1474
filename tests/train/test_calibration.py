"""Calibration (mtst.calibration, mtst.calibrate): temperature fits, ECE/Brier, thresholds, AUROC, and
training that writes each head's temperature and threshold into the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtst.calibration import (
    auroc,
    brier,
    choose_threshold,
    ece,
    fit_score_temperature,
    fit_temperature,
    fpr_at_tpr,
    scaled_softmax,
)
from mtst.errors import ConfigError, DataError


def _sample(n: int, labels: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the fit must find ``temperature``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, labels))
    p = scaled_softmax(logits, temperature)
    gold = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, gold


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(temperature: float) -> None:
    logits, gold = _sample(20_000, 6, temperature, seed=1)
    fitted = fit_temperature(logits, gold)
    assert fitted == pytest.approx(temperature, rel=0.05)
    # the fitted temperature calibrates: ECE at it is small, at 1.0 it is not (unless T is 1)
    conf, right = scaled_softmax(logits, fitted).max(axis=1), scaled_softmax(logits, 1).argmax(axis=1) == gold
    assert ece(conf, right) < 0.02
    if temperature != 1.0:
        assert ece(scaled_softmax(logits, 1.0).max(axis=1), right) > 0.05


def test_fit_score_temperature_recovers_a_known_temperature() -> None:
    """Scores that are not one softmax (an entity's mean tag probability): a binary likelihood fit."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, size=(20_000, 4))

    def scores_at(t: float) -> np.ndarray:
        return scaled_softmax(logits, t).max(axis=1)

    correct = rng.random(len(logits)) < scores_at(1.8)
    assert fit_score_temperature(scores_at, correct) == pytest.approx(1.8, rel=0.07)


def test_ece_and_brier_by_hand() -> None:
    # bins of width 1/15: 0.95 and 0.97 share the last bin (mean 0.96, accuracy 0.5); 0.1 is alone (acc 0)
    conf = np.array([0.95, 0.97, 0.1])
    right = np.array([True, False, False])
    assert ece(conf, right) == pytest.approx((2 * abs(0.5 - 0.96) + abs(0.0 - 0.1)) / 3)
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert brier(probs, np.array([0, 0])) == pytest.approx(((0.3**2 + 0.3**2) + (0.8**2 + 0.8**2)) / 2)
    assert brier(np.array([0.9, 0.2]), np.array([1, 0])) == pytest.approx((0.01 + 0.04) / 2)
    with pytest.raises(DataError, match="ece: 3 scores but 2 outcomes"):
        ece(conf, right[:2])


def test_thresholds_for_coverage_and_risk() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(1000)
    correct = rng.random(1000) < scores  # higher scores are right more often
    thr = choose_threshold(scores, correct, "coverage", 0.9)
    assert 0.9 <= float((scores >= thr).mean()) <= 0.905
    thr = choose_threshold(scores, correct, "risk", 0.2)
    answered = scores >= thr
    assert 1.0 - correct[answered].mean() <= 0.2
    assert choose_threshold(scores, correct, "none", 0.0) == 0.0
    with pytest.raises(ConfigError, match=r"calibration.value: a coverage must be in \(0, 1\], got 1.5"):
        choose_threshold(scores, correct, "coverage", 1.5)


def test_auroc_and_fpr_at_tpr() -> None:
    inside, outside = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.1, 0.2, 0.65])
    # pairs (in > out): 4 * 3 = 12, all but 0.6 < 0.65 -> 11/12
    assert auroc(inside, outside) == pytest.approx(11 / 12)
    assert auroc(inside, inside) == pytest.approx(0.5)
    # 95% TPR needs the threshold at 0.6: 1 of the 3 outside scores is above it
    assert fpr_at_tpr(inside, outside, 0.95) == pytest.approx(1 / 3)


def test_training_writes_temperatures_and_thresholds(make_config, tmp_path: Path) -> None:
    """A tiny two-task run with cross-task training: the best checkpoint holds each head's temperature
    and threshold, the model loaded from it applies them, and results.json reports the calibration."""
    from mtst.model import load_model
    from mtst.train import train

    cfg = make_config(cross_task={"enabled": True}, calibration={"value": 0.9, "token_value": 0.9})
    result = train(cfg)
    meta = json.loads((result.best_checkpoint / "mtst.json").read_text())
    tasks = {t["name"]: t for t in meta["tasks"]}
    assert set(meta["calibration"]) == {"intent", "ner"}
    for name in ("intent", "ner"):
        report = meta["calibration"][name]
        if "skipped" in report:  # a tiny NER head may predict no entity at all
            continue
        assert tasks[name]["temperature"] == pytest.approx(report["temperature"])
        assert 0.0 < report["temperature"] <= 50.0
        assert report["validation"]["coverage"] >= 0.9
    model = load_model(result.best_checkpoint)
    assert model.tasks["intent"].temperature == pytest.approx(meta["calibration"]["intent"]["temperature"])
    assert model.tasks["intent"].threshold == pytest.approx(meta["calibration"]["intent"]["threshold"])
    assert result.calibration["intent"]["threshold"] == pytest.approx(model.tasks["intent"].threshold)
