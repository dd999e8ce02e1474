"""The sentences step of an export: real sentences for parity, label agreement and calibration.

Parity and the accuracy guard judge graphs on real sentences, never on one repeated sentence
(DESIGN.md, known traps): ``--parity-data``, else the default corpus (:func:`default_sentence_file`),
else (full export) the validation sentences the guard reads. int8-static calibrates on the tasks'
training sentences unless ``--calibration-data`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError
from mtst.runtime.manifest import Precision

from .guard import EvalSet
from .parity import POOL_SIZE, load_sentences

__all__ = [
    "CALIBRATION_SENTENCES",
    "ExportSentences",
    "calibration_from_config",
    "default_sentence_file",
    "export_sentences",
    "parity_sentences",
]

CALIBRATION_SENTENCES = 256


@dataclass(frozen=True, slots=True)
class ExportSentences:
    """The real sentences of an export (the sentences step)."""

    pool: list[str]  # parity cases and the guard's label agreement; kept in parity.json for bench/predict
    source: Path | None  # where the pool came from (None: no pool)
    calibration: list[str] = field(default_factory=list)  # int8-static calibration


def default_sentence_file(meta: Mapping[str, Any] | None = None) -> Path | None:
    """The default sample of real sentences: ``$MTST_BENCH_CORPUS``, else ``bench/corpus-1000.txt``
    beside the data root (the checkpoint's ``data_root`` or ``$MTST_DATA_ROOT``)."""
    env = os.environ.get("MTST_BENCH_CORPUS")
    if env and Path(env).is_file():
        return Path(env)
    for root in ((meta or {}).get("data_root"), os.environ.get("MTST_DATA_ROOT")):
        if root:
            candidate = Path(root).expanduser().resolve().parent / "bench" / "corpus-1000.txt"
            if candidate.is_file():
                return candidate
    return None


def export_sentences(
    meta: Mapping[str, Any],
    tasks: Mapping[str, Any],
    eval_sets: Mapping[str, EvalSet],
    precisions: Sequence[Precision],
    parity_data: str | Path | None,
    calibration: list[str] | None,
    *,
    required: bool,
) -> ExportSentences:
    """The sentences step of a full export: the parity pool (``parity_data``, else the default corpus,
    else the guard's validation sentences) and, for int8-static, calibration sentences
    (``calibration``, else the tasks' training sentences, else the pool's file)."""
    static = bool({Precision.INT8_STATIC, Precision.INT8_STATIC_CPU} & set(precisions))
    source = Path(parity_data) if parity_data is not None else default_sentence_file(meta)
    if source is not None:
        pool = load_sentences(source, limit=POOL_SIZE)
    else:
        texts = [t for es in eval_sets.values() for t in _example_texts(es.examples)]
        pool = _spread(list(dict.fromkeys(texts)), POOL_SIZE)
        source = Path("<validation data>") if pool else None
    if not pool and (required or static):
        raise ConfigError(
            "no real sentences for parity/calibration: pass --parity-data FILE (one sentence a line) "
            "or set MTST_BENCH_CORPUS"
        )
    if calibration is None and static:
        calibration = calibration_from_config(meta, tasks) or (
            load_sentences(source, limit=CALIBRATION_SENTENCES) if source and source.is_file() else pool
        )
    return ExportSentences(pool, source, calibration or [])


def parity_sentences(
    meta: Mapping[str, Any], parity_data: str | Path | None, *, required: bool
) -> ExportSentences:
    """The sentences of a heads-only export: the parity pool from ``parity_data``, else from the default
    corpus (neither: no parity, refused when ``required``)."""
    source = Path(parity_data) if parity_data is not None else default_sentence_file(meta)
    if source is None and required:
        raise ConfigError("no real sentences for parity: pass --parity-data FILE (one sentence a line)")
    return ExportSentences(load_sentences(source, limit=POOL_SIZE) if source is not None else [], source)


def calibration_from_config(meta: Mapping[str, Any], tasks: Mapping[str, Any]) -> list[str]:
    """Up to CALIBRATION_SENTENCES real training sentences of the checkpoint's tasks (none without a config)."""
    if not meta.get("config"):
        return []
    from mtst.config import config_from_dict
    from mtst.data import load_examples

    config = config_from_dict(meta["config"])
    data_root = meta.get("data_root") or config.data_root
    texts: list[str] = []
    per_task = max(1, CALIBRATION_SENTENCES // max(1, len(config.tasks)))
    for cfg in config.tasks:
        if cfg.name in tasks:
            examples = load_examples(cfg.train, cfg.kind, data_root=data_root)
            texts += _spread(_example_texts(examples), per_task)
    return texts


def _example_texts(examples: Iterable[Any]) -> list[str]:
    return [ex.text if hasattr(ex, "text") else " ".join(ex.tokens) for ex in examples]


def _spread(items: list[str], n: int) -> list[str]:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
