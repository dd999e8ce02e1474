"""Predictions as Arrow columns: per-head columns that round-trip through Parquet (Ray Data, ``--ray``).

The columns a batch of predictions adds to its input, in this order:

- ``truncated`` (bool): the text was longer than ``max_seq_len`` tokens (the tail was not seen);
- per sentence head ``NAME``: ``NAME`` (the label, string) and ``NAME_score`` (its probability, float64);
- per token head ``NAME``: ``NAME``, a list of ``struct<text, label, start, end, score>`` (character
  offsets into the text, end exclusive; the score as in :class:`~mtst.runtime.decode.Entity`);
- with embeddings: ``embedding``, a ``fixed_size_list<float32>[dim]`` (pooled, L2-normalized).

Needs pyarrow (``pip install 'mtst[ray]'``); ``import mtst.runtime`` does not import this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtst.errors import ConfigError, MissingExtraError
from mtst.runtime.manifest import HeadInfo, HeadKind
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities

try:
    import pyarrow as pa
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("prediction columns need pyarrow: pip install 'mtst[ray]'") from exc

__all__ = ["ENTITY_TYPE", "column_names", "prediction_schema", "predictions_table"]

ENTITY_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("label", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("score", pa.float64()),
    ]
)


def column_names(heads: Sequence[HeadInfo], *, embedding: bool) -> list[str]:
    """The names of the columns :func:`predictions_table` writes, in order."""
    names = ["truncated"]
    for h in heads:
        names += [h.name, f"{h.name}_score"] if h.kind is HeadKind.SENTENCE else [h.name]
    return [*names, "embedding"] if embedding else names


def prediction_schema(heads: Sequence[HeadInfo], *, embedding_dim: int | None = None) -> pa.Schema:
    """The schema of the prediction columns (``embedding_dim=None``: no embedding column)."""
    fields = [pa.field("truncated", pa.bool_(), nullable=False)]
    for h in heads:
        if h.kind is HeadKind.SENTENCE:
            fields += [pa.field(h.name, pa.string()), pa.field(f"{h.name}_score", pa.float64())]
        elif h.kind is HeadKind.TOKEN:
            fields.append(pa.field(h.name, pa.list_(ENTITY_TYPE)))
        else:
            raise ConfigError(f"heads: {h.name!r} is an embedding head; ask for the embedding column instead")
    if embedding_dim is not None:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), embedding_dim)))
    return pa.schema(fields)


def predictions_table(
    preds: Sequence[Prediction], heads: Sequence[HeadInfo], *, embedding_dim: int | None = None
) -> pa.Table:
    """One row per prediction (in order) with the columns of :func:`prediction_schema`.

    ``embedding_dim`` set: every prediction must carry its embedding (``predict(return_embedding=True)``).
    """
    schema = prediction_schema(heads, embedding_dim=embedding_dim)
    cols: list[pa.Array] = [pa.array([p.truncated for p in preds], type=pa.bool_())]
    for h in heads:
        results = [p.heads[h.name] for p in preds]
        if h.kind is HeadKind.SENTENCE:
            labels = [r for r in results if isinstance(r, SentenceLabel)]
            if len(labels) != len(results):
                raise ConfigError(f"heads: {h.name!r} is a sentence head but a prediction holds entities")
            cols.append(pa.array([r.label for r in labels], type=pa.string()))
            cols.append(pa.array([r.score for r in labels], type=pa.float64()))
        else:
            ents = [r for r in results if isinstance(r, TokenEntities)]
            if len(ents) != len(results):
                raise ConfigError(f"heads: {h.name!r} is a token head but a prediction holds a label")
            rows = [
                [
                    {"text": e.text, "label": e.label, "start": e.start, "end": e.end, "score": e.score}
                    for e in r.entities
                ]
                for r in ents
            ]
            cols.append(pa.array(rows, type=pa.list_(ENTITY_TYPE)))
    if embedding_dim is not None:
        missing = [i for i, p in enumerate(preds) if p.embedding is None]
        if missing:
            raise ConfigError(f"predictions[{missing[0]}]: no embedding; predict with return_embedding=True")
        flat = (
            np.concatenate([np.asarray(p.embedding, dtype=np.float32) for p in preds])
            if preds
            else np.empty(0, dtype=np.float32)
        )
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), embedding_dim))
    return pa.Table.from_arrays(cols, schema=schema)
