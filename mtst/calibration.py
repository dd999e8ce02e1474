"""Calibrated scores and abstention: temperature fitting, thresholds, ECE, Brier, OOD detection metrics.

Numpy only (no torch): training fits with it (:mod:`mtst.calibrate`), ``mtst-eval`` scores bundles
with it. The formulas the runtimes apply (docs/architecture.md, Contract 3):

- a **sentence head** with temperature ``T`` answers ``p = softmax(logits / T)``; its score is
  ``max(p)``; it abstains when that score is below the head's threshold;
- a **token head**'s tag probabilities are ``softmax(logits / T)`` per token; an entity's score is
  the mean, over the entity's words, of the probability of the tag predicted at the word's first
  sub-token; entities scored below the threshold are dropped.

A temperature never changes an arg-max, only the scores: accuracy and F1 are the same before and
after calibration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from mtst.errors import ConfigError, DataError

__all__ = [
    "ECE_BINS",
    "CalibrationReport",
    "ThresholdTarget",
    "auroc",
    "brier",
    "choose_threshold",
    "ece",
    "energy",
    "fit_score_temperature",
    "fit_temperature",
    "fpr_at_tpr",
    "scaled_softmax",
]

ECE_BINS = 15
_T_MIN, _T_MAX = 0.02, 50.0  # temperatures outside this range mean a broken head, not a calibration


class ThresholdTarget(str, Enum):
    """What an abstention threshold is chosen for, on the task's own validation data.

    ``coverage``: the head still answers at least ``value`` of them (e.g. 0.98); ``risk``: the share
    of wrong answers among those it answers is at most ``value`` (e.g. 0.05), answering as many as
    that allows; ``none``: no threshold (the head always answers).
    """

    COVERAGE = "coverage"
    RISK = "risk"
    NONE = "none"


def scaled_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)`` per row (higher = more in-domain; Liu et al. 2020)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    top = z.max(axis=-1)
    return float(temperature) * (top + np.log(np.exp(z - top[..., None]).sum(axis=-1)))


def _check_pairs(name: str, a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise DataError(f"{name}: {len(a)} scores but {len(b)} outcomes")
    if len(a) == 0:
        raise DataError(f"{name}: no examples")


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> float:
    """The temperature that minimizes the negative log-likelihood of ``labels`` under
    ``softmax(logits / T)`` (Guo et al. 2017): ``logits`` ``(N, L)``, ``labels`` ``(N,)`` ints.

    The NLL is convex in ``beta = 1/T`` (a log-sum-exp of linear functions), so Newton's method on
    beta finds the minimum; the result is clipped to [0.02, 50].
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(y) != len(z):
        raise DataError(f"fit_temperature: expected logits (N, L) and N labels, got {z.shape} and {y.shape}")
    _check_pairs("fit_temperature", z, y)
    zy = z[np.arange(len(y)), y]
    beta = 1.0
    for _ in range(iterations):
        p = scaled_softmax(z, 1.0 / beta)
        mean = (p * z).sum(axis=1)  # E_p[z]
        grad = float((mean - zy).mean())
        hess = float(((p * z * z).sum(axis=1) - mean * mean).mean())  # Var_p[z] >= 0
        if hess <= 1e-12:
            break
        step = grad / hess
        new = beta - step
        if new <= 0:  # stay in the positive half-line
            new = beta / 2
        if abs(new - beta) < 1e-10 * max(1.0, beta):
            beta = new
            break
        beta = new
    return float(np.clip(1.0 / beta, _T_MIN, _T_MAX))


def fit_score_temperature(
    scores_at: Callable[[float], np.ndarray], correct: np.ndarray, *, grid: int = 121
) -> float:
    """The temperature whose scores (``scores_at(T)``, one per prediction) best predict ``correct``
    (binary log-likelihood): for scores that are not one softmax, e.g. an entity's mean tag probability.

    A log-spaced grid over [0.05, 20], refined once around the best point.
    """
    y = np.asarray(correct, dtype=np.float64)
    if len(y) == 0:
        raise DataError("fit_score_temperature: no predictions to calibrate on")

    def nll(t: float) -> float:
        s = np.clip(np.asarray(scores_at(t), dtype=np.float64), 1e-7, 1 - 1e-7)
        return float(-(y * np.log(s) + (1 - y) * np.log1p(-s)).mean())

    ts = np.geomspace(0.05, 20.0, grid)
    best = min(ts, key=nll)
    ratio = float(ts[1] / ts[0])
    fine = np.geomspace(best / ratio, best * ratio, 41)
    return float(min(fine, key=nll))


def ece(confidence: np.ndarray, correct: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error: equal-width bins over [0, 1] of confidence, the mean of
    |accuracy - mean confidence| per bin weighted by the bin's share (Naeini et al. 2015, Guo et al. 2017)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    _check_pairs("ece", c, y)
    # bin k holds (k/bins, (k+1)/bins]; a confidence of exactly 0 goes to the first bin
    idx = np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for k in range(bins):
        m = idx == k
        if m.any():
            total += m.sum() * abs(y[m].mean() - c[m].mean())
    return float(total / len(c))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: ``probs`` ``(N, L)`` with int ``labels`` -> mean squared distance to the one-hot
    answer (sum over labels, Brier 1950); ``probs`` ``(N,)`` with 0/1 ``labels`` -> binary Brier."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    _check_pairs("brier", p, y)
    if p.ndim == 1:
        return float(((p - y.astype(np.float64)) ** 2).mean())
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def choose_threshold(
    scores: np.ndarray, correct: np.ndarray, target: ThresholdTarget | str, value: float
) -> float:
    """The abstention threshold (answer when score >= threshold) for ``target`` on validation
    ``scores`` (calibrated) and whether each answer was ``correct``; 0.0 means always answer."""
    target = ThresholdTarget(target)
    if target is ThresholdTarget.NONE:
        return 0.0
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    _check_pairs("choose_threshold", s, y)
    if not 0.0 < value <= 1.0 and target is ThresholdTarget.COVERAGE:
        raise ConfigError(f"calibration.value: a coverage must be in (0, 1], got {value!r}")
    if not 0.0 <= value < 1.0 and target is ThresholdTarget.RISK:
        raise ConfigError(f"calibration.value: a risk must be in [0, 1), got {value!r}")
    order = np.argsort(-s, kind="stable")
    s_sorted, wrong = s[order], (~y[order]).astype(np.float64)
    if target is ThresholdTarget.COVERAGE:
        k = max(1, math.ceil(value * len(s) - 1e-9))  # answer the k most confident
        return 0.0 if k >= len(s) else float(s_sorted[k - 1])
    # risk: the largest answered set (a prefix ending where the score changes) within the risk
    risk = np.cumsum(wrong) / np.arange(1, len(s) + 1)
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))  # last index of each score
    ok = ends[risk[ends] <= value + 1e-12]
    if len(ok) == 0:
        return float(np.nextafter(s_sorted[0], np.inf))  # nothing is safe enough: abstain on all
    last = int(ok[-1])
    return 0.0 if last == len(s) - 1 else float(s_sorted[last])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]  # ties share their mean rank


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling in-domain (positive, higher score) from out-of-domain
    texts: the probability that a random in-domain text scores above a random OOD one (ties: half)."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise DataError(f"auroc: needs both in-domain ({len(a)}) and out-of-domain ({len(b)}) scores")
    ranks = _average_ranks(np.concatenate([a, b]))
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2  # Mann-Whitney U of the in-domain scores
    return float(u / (len(a) * len(b)))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD texts still answered at the threshold that keeps ``tpr`` of the in-domain ones."""
    a = np.sort(np.asarray(in_scores, dtype=np.float64))[::-1]
    b = np.asarray(out_scores, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise DataError(f"fpr_at_tpr: needs both in-domain ({len(a)}) and out-of-domain ({len(b)}) scores")
    threshold = a[max(0, math.ceil(tpr * len(a) - 1e-9) - 1)]
    return float((b >= threshold).mean())


@dataclass(frozen=True)
class CalibrationReport:
    """A head's calibration, fitted on validation data: what goes into the checkpoint (``temperature``,
    ``threshold``) and how it was chosen and how well it does (``details``: ECE/Brier, coverage...)."""

    task: str
    temperature: float
    threshold: float
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "temperature": self.temperature,
            "threshold": self.threshold,
            **self.details,
        }
