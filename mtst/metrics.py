"""Task metrics: accuracy and macro-F1 for sentence tasks, entity-level P/R/F1 for token tasks.

Entities are scored with seqeval in its default (conlleval-compatible) mode: an ``I-X`` that does
not continue an ``X`` entity starts one, as in ``runtime/decode.py``. Values are plain floats so
that they go straight into the JSONL metrics file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mtst.errors import DataError, parse_enum, require
from mtst.tasks import TaskKind

__all__ = ["primary_metric", "sentence_metrics", "token_metrics"]

PRIMARY = {TaskKind.SENTENCE: "accuracy", TaskKind.TOKEN: "f1"}


def primary_metric(kind: TaskKind | str) -> str:
    """The metric model selection and early stopping use by default for a task of ``kind``."""
    return PRIMARY[parse_enum(TaskKind, kind, "task kind", sep=" ")]


def sentence_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """``accuracy`` and ``macro_f1``; the macro average runs over every label in gold ∪ pred
    (scikit-learn's default), a label with no true positive scoring F1 0."""
    if len(gold) != len(pred):
        raise DataError(f"sentence metrics: {len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        raise DataError("sentence metrics: no examples to score")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    labels = sorted(set(gold) | set(pred))  # a fixed order: a set's varies with the process's hash seed
    # F1 = 2TP / (2TP + FP + FN): the harmonic mean of precision and recall, 0 when TP is 0
    f1 = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) for c in labels]
    return {
        "accuracy": sum(tp.values()) / len(gold),
        "macro_f1": sum(f1) / len(f1),
    }


def token_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro ``precision``, ``recall``, ``f1``, ``f1_<TYPE>`` per entity type (gold ∪
    predicted types) and ``token_accuracy`` (share of tokens whose tag is right)."""
    require("seqeval", "train", "NER metrics")
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    if len(gold) != len(pred):
        raise DataError(f"token metrics: {len(gold)} gold sequences but {len(pred)} predicted")
    if not gold:
        raise DataError("token metrics: no sequences to score")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise DataError(f"token metrics: sequence {i} has {len(g)} gold tags but {len(p)} predicted")
    y_true = [list(g) for g in gold]
    y_pred = [list(p) for p in pred]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0
    )
    out = {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
    types = sorted({t for t, _, _ in get_entities(y_true)} | {t for t, _, _ in get_entities(y_pred)})
    if types:  # seqeval orders per-type scores by sorted type name
        _, _, per_type, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        out.update({f"f1_{t}": float(v) for t, v in zip(types, per_type, strict=True)})
    n_tokens = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    out["token_accuracy"] = right / n_tokens if n_tokens else 0.0
    return out
