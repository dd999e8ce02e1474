"""Calibrating a trained model: a temperature and an abstention threshold per head, from validation data.

After training (``mtst-train``, unless ``calibration.enabled`` is false) or on any checkpoint
(``mtst-calibrate CKPT``), each head is scored on its task's **validation** split:

- a **sentence head**'s temperature minimizes the negative log-likelihood of the gold labels
  (:func:`mtst.calibration.fit_temperature`); its threshold is chosen on the calibrated top
  probabilities for ``calibration.target`` / ``value`` (coverage: the head still answers that share
  of its own validation sentences; risk: at most that share of its answers are wrong);
- a **token head**'s temperature is fitted on its *entity scores* (mean calibrated tag probability
  over the entity's words) against whether each predicted entity is right (exact span and type),
  so that an entity scored 0.8 is right about 80% of the time; its threshold is chosen the same way
  on predicted entities (``token_target`` / ``token_value``).

The test split, when the task has one, only reports ECE (15 bins) and Brier score before and after,
coverage and selective accuracy at the threshold. :func:`write_calibration` puts the temperatures
and thresholds into the checkpoint's ``mtst.json`` (``tasks[i].temperature/threshold``, read by
export into the bundle manifest) with the full report under ``calibration``. Torch-free except
:func:`calibrate_model`, which scores the torch model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtst.alignment import encode_sentence_batch, encode_token_batch
from mtst.calibration import (
    CalibrationReport,
    ThresholdTarget,
    brier,
    choose_threshold,
    ece,
    fit_score_temperature,
    fit_temperature,
    scaled_softmax,
)
from mtst.data import Example, SentenceExample, TaskData, TokenExample
from mtst.errors import CheckpointError, DataError
from mtst.evaluation import LogitsFn
from mtst.runtime.decode import bio_spans
from mtst.runtime.fsutil import atomic_write_json
from mtst.schema_abstain import CalibrationConfig
from mtst.tasks import TaskKind, TaskSpec

if TYPE_CHECKING:
    from mtst.model import MultiTaskModel

__all__ = [
    "EntityScores",
    "SentenceScores",
    "calibrate_checkpoint",
    "calibrate_head",
    "calibrate_model",
    "entity_scores",
    "sentence_scores",
    "write_calibration",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class SentenceScores:
    logits: np.ndarray  # (N, L) raw logits
    gold: np.ndarray  # (N,) label ids

    def confidence(self, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """(top probability, whether the arg-max is right) at ``temperature``."""
        p = scaled_softmax(self.logits, temperature)
        return p.max(axis=1), p.argmax(axis=1) == self.gold


@dataclass(frozen=True)
class EntityScores:
    """The predicted entities of a token head on some examples, with what their scores are made of."""

    word_logits: np.ndarray  # (M, L) logits at the first sub-token of every word inside an entity
    owners: np.ndarray  # (M,) the predicted entity each row belongs to (0..E-1), rows grouped
    correct: np.ndarray  # (E,) the entity's span and type match a gold entity
    gold_entities: int  # entities in the gold tags

    def scores(self, temperature: float) -> np.ndarray:
        """(E,) mean calibrated probability of the predicted tag over each entity's words."""
        if len(self.correct) == 0:
            return np.zeros(0)
        top = scaled_softmax(self.word_logits, temperature).max(axis=1)
        sums = np.bincount(self.owners, weights=top, minlength=len(self.correct))
        return sums / np.bincount(self.owners, minlength=len(self.correct))


def sentence_scores(
    logits_fn: LogitsFn,
    tokenizer: Any,
    task: TaskSpec,
    examples: Sequence[Example],
    *,
    max_seq_len: int,
    batch_size: int = 64,
) -> SentenceScores:
    """Raw logits of a sentence head on ``examples`` (batched by length, returned in input order)."""
    sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
    if len(sentences) != len(examples) or not sentences:
        raise DataError(f"task {task.name!r}: expected sentence examples to calibrate on")
    ids = {label: i for i, label in enumerate(task.labels)}
    order = np.argsort([len(ex.text) for ex in sentences], kind="stable")
    out = np.empty((len(sentences), task.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = encode_sentence_batch(tokenizer, [sentences[i].text for i in idx], max_seq_len=max_seq_len)
        out[idx] = np.asarray(logits_fn(batch))
    return SentenceScores(out, np.array([ids[ex.label] for ex in sentences], dtype=np.int64))


def entity_scores(
    logits_fn: LogitsFn,
    tokenizer: Any,
    task: TaskSpec,
    examples: Sequence[Example],
    *,
    max_seq_len: int,
    batch_size: int = 64,
) -> EntityScores:
    """Predicted entities of a token head on ``examples`` (CoNLL tokens: each token's first sub-token,
    as :func:`mtst.evaluation.evaluate_task` reads them), each with its word logits and correctness."""
    tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
    if len(tokens) != len(examples) or not tokens:
        raise DataError(f"task {task.name!r}: expected token examples to calibrate on")
    label_to_id = {label: i for i, label in enumerate(task.labels)}
    rows: list[np.ndarray] = []
    owners: list[int] = []
    correct: list[bool] = []
    gold_total = 0
    order = np.argsort([len(ex.tokens) for ex in tokens], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch, _, first = encode_token_batch(
            tokenizer, [tokens[i] for i in idx], label_to_id, max_seq_len=max_seq_len
        )
        logits = np.asarray(logits_fn(batch))  # (B, T, L)
        for b, i in enumerate(idx):
            ex = tokens[int(i)]
            kept = [(k, pos) for k, pos in enumerate(first[b]) if pos >= 0]
            tags = ["O"] * len(ex.tokens)
            for k, pos in kept:
                tags[k] = task.labels[int(logits[b, pos].argmax())]
            gold = {(t, a, e) for t, a, e in bio_spans(ex.tags)}
            gold_total += len(gold)
            where = dict(kept)
            for t, a, e in bio_spans(tags):
                for k in range(a, e):
                    rows.append(logits[b, where[k]])
                    owners.append(len(correct))
                correct.append((t, a, e) in gold)
    word_logits = np.stack(rows) if rows else np.zeros((0, task.num_labels), dtype=np.float32)
    return EntityScores(
        word_logits, np.array(owners, dtype=np.int64), np.array(correct, dtype=bool), gold_total
    )


# ---------------------------------------------------------------------------------------------- fitting
def _selective(scores: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, float]:
    answered = scores >= threshold
    n = int(answered.sum())
    return {
        "coverage": float(answered.mean()) if len(scores) else 0.0,
        "selective_accuracy": float(correct[answered].mean()) if n else 0.0,
    }


def _quality(
    conf_before: np.ndarray, conf_after: np.ndarray, correct: np.ndarray, brier_of: Any
) -> dict[str, float]:
    return {
        "ece_before": ece(conf_before, correct),
        "ece_after": ece(conf_after, correct),
        "brier_before": brier_of(1.0),
        "brier_after": brier_of(None),
    }


def calibrate_head(
    task: TaskSpec,
    validation: SentenceScores | EntityScores,
    test: SentenceScores | EntityScores | None,
    cfg: CalibrationConfig,
) -> CalibrationReport:
    """Temperature and threshold of one head from its validation scores; test ECE/Brier before and after."""
    sentence = task.kind is TaskKind.SENTENCE
    target, value = (cfg.target, cfg.value) if sentence else (cfg.token_target, cfg.token_value)
    if isinstance(validation, SentenceScores):
        temperature = fit_temperature(validation.logits, validation.gold)
        conf, right = validation.confidence(temperature)
    elif len(validation.correct) == 0:  # an untrained head: nothing to fit on
        logger.warning("task %s: no entity predicted on the validation data: not calibrated", task.name)
        return CalibrationReport(task.name, 1.0, 0.0, {"skipped": "no entity predicted on validation data"})
    else:
        temperature = fit_score_temperature(validation.scores, validation.correct)
        conf, right = validation.scores(temperature), validation.correct
    threshold = choose_threshold(conf, right, target, value)
    details: dict[str, Any] = {
        "target": ThresholdTarget(target).value,
        "value": value,
        "fitted_on": "validation",
        "validation": {"examples": len(conf), **_selective(conf, right, threshold)},
    }
    if test is not None:
        details["test"] = _test_report(test, temperature, threshold)
    return CalibrationReport(task.name, temperature, threshold, details)


def _test_report(test: SentenceScores | EntityScores, temperature: float, threshold: float) -> dict[str, Any]:
    if isinstance(test, SentenceScores):
        c0, right = test.confidence(1.0)
        c1, _ = test.confidence(temperature)

        def brier_of(t: float | None) -> float:
            return brier(scaled_softmax(test.logits, temperature if t is None else t), test.gold)

        return {"examples": len(c1), **_quality(c0, c1, right, brier_of), **_selective(c1, right, threshold)}
    right = test.correct
    c0, c1 = test.scores(1.0), test.scores(temperature)
    if len(right) == 0:
        return {"entities": 0}
    return {
        "entities": len(right),
        **_quality(c0, c1, right, lambda t: brier(c0 if t == 1.0 else c1, right)),
        **_selective(c1, right, threshold),
    }


def calibrate_model(
    model: MultiTaskModel, data: Mapping[str, TaskData], cfg: CalibrationConfig, *, batch_size: int = 64
) -> dict[str, CalibrationReport]:
    """Every head of the torch ``model`` calibrated on its task's validation data; the model's task
    specs get the temperatures and thresholds (``model.tasks[name]``)."""
    from mtst.evaluation import torch_logits_fn

    model.eval()
    reports: dict[str, CalibrationReport] = {}
    for name, d in data.items():
        spec = model.tasks[name]
        score = sentence_scores if spec.kind is TaskKind.SENTENCE else entity_scores
        kw = {"max_seq_len": model.max_seq_len, "batch_size": batch_size}
        fn = torch_logits_fn(model, name)
        val = score(fn, model.tokenizer, spec, d.validation, **kw)
        test = score(fn, model.tokenizer, spec, d.test, **kw) if d.test else None
        report = calibrate_head(spec, val, test, cfg)
        model.tasks[name] = replace(spec, temperature=report.temperature, threshold=report.threshold)
        reports[name] = report
        logger.info(
            "calibrated %s: temperature %.3f, threshold %.3f%s",
            name,
            report.temperature,
            report.threshold,
            _test_line(report.details),
        )
    return reports


def _test_line(details: Mapping[str, Any]) -> str:
    val, test = details.get("validation"), details.get("test")
    out = (
        f" ({details['target']} {details['value']}: validation coverage {val['coverage']:.3f})" if val else ""
    )
    if test and "ece_before" in test:
        out += f"; test ECE {test['ece_before']:.4f} -> {test['ece_after']:.4f}"
        out += f", Brier {test['brier_before']:.4f} -> {test['brier_after']:.4f}"
    return out


def write_calibration(checkpoint: str | Path, reports: Mapping[str, CalibrationReport]) -> None:
    """Temperatures and thresholds into ``mtst.json``'s tasks, the reports under ``calibration``."""
    path = Path(checkpoint) / "mtst.json"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: not an mtst checkpoint (mtst.json is missing)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    tasks = {t["name"]: t for t in meta.get("tasks", [])}
    unknown = sorted(set(reports) - set(tasks))
    if unknown:
        raise CheckpointError(
            f"{path}: calibrated task(s) {unknown} are not in the checkpoint ({sorted(tasks)})"
        )
    for name, r in reports.items():
        tasks[name]["temperature"], tasks[name]["threshold"] = r.temperature, r.threshold
    meta["calibration"] = {name: r.to_dict() for name, r in reports.items()}
    atomic_write_json(path, meta)


def calibrate_checkpoint(
    checkpoint: str | Path, *, data_root: str | Path | None = None, targets: Mapping[str, Any] | None = None
) -> dict[str, CalibrationReport]:
    """Calibrate a trained checkpoint on the validation data of its training config (``mtst.json``'s
    ``config``, read from ``data_root`` or the root training used) and write the result into it.
    ``targets`` overrides the config's ``calibration`` keys (``target``, ``value``, ``token_target``...)."""
    from mtst.checkpoint import read_meta
    from mtst.config import config_from_dict
    from mtst.data import load_task_data
    from mtst.model import load_model

    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{checkpoint}: mtst.json has no training config: its validation data is unknown"
        )
    raw = dict(meta["config"])
    raw["data_root"] = (
        str(data_root) if data_root is not None else meta.get("data_root", raw.get("data_root"))
    )
    raw["calibration"] = {**raw.get("calibration", {}), **dict(targets or {})}
    cfg = config_from_dict(raw)
    model = load_model(checkpoint)
    reports = calibrate_model(model, load_task_data(cfg), cfg.calibration, batch_size=cfg.eval.batch_size)
    write_calibration(checkpoint, reports)
    return reports
