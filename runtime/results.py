"""Typed results of the runtime: one frozen dataclass per kind of answer, plus their decoding from logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtst.runtime.decode import Entity, decode_entities

__all__ = [
    "Entity",
    "Prediction",
    "SentenceLabel",
    "TokenEntities",
    "decode_sentence",
    "decode_tokens",
    "softmax",
]


@dataclass(frozen=True, slots=True)
class SentenceLabel:
    label: str  # the most probable label
    score: float  # its probability
    scores: dict[str, float]  # probability of every label, in the head's label order

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "scores": dict(self.scores)}


@dataclass(frozen=True, slots=True)
class TokenEntities:
    entities: tuple[Entity, ...]  # in text order

    def to_dict(self) -> dict[str, Any]:
        return {
            "entities": [
                {"text": e.text, "label": e.label, "start": e.start, "end": e.end, "score": e.score}
                for e in self.entities
            ]
        }


HeadResult = SentenceLabel | TokenEntities


@dataclass(frozen=True, slots=True)
class Prediction:
    """Everything the engine says about one text.

    ``==`` compares text, heads and the truncated flag; compare ``embedding``/``logits`` with numpy.
    """

    text: str
    heads: Mapping[str, HeadResult]
    embedding: np.ndarray | None = field(default=None, compare=False)  # (dim,) float32, read-only
    truncated: bool = False  # the text was longer than max_seq_len tokens: the tail was not seen
    logits: Mapping[str, np.ndarray] | None = field(default=None, compare=False)  # (L,) or (T, L)

    def to_dict(self, *, embedding: bool = True, logits: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (numbers as floats, arrays as lists)."""
        d: dict[str, Any] = {
            "text": self.text,
            "truncated": self.truncated,
            "heads": {name: r.to_dict() for name, r in self.heads.items()},
        }
        if embedding and self.embedding is not None:
            d["embedding"] = self.embedding.tolist()
        if logits and self.logits is not None:
            d["logits"] = {k: v.tolist() for k, v in self.logits.items()}
        return d


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(x, dtype=np.float32)
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def decode_sentence(logits: np.ndarray, labels: Sequence[str]) -> list[SentenceLabel]:
    """One SentenceLabel per row of ``logits`` ``(B, L)``."""
    probs = softmax(logits)  # (B, L)
    best = probs.argmax(axis=1)
    rows = probs.tolist()
    return [
        SentenceLabel(label=labels[k], score=row[k], scores=dict(zip(labels, row, strict=True)))
        for k, row in zip(best.tolist(), rows, strict=True)
    ]


def decode_tokens(
    text: str,
    logits: np.ndarray,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    labels: Sequence[str],
) -> TokenEntities:
    """Entities of one text from its token logits ``(T, L)`` (T = the text's own token count)."""
    probs = softmax(logits)  # (T, L)
    tag_ids = probs.argmax(axis=1)
    tag_scores = probs[np.arange(len(tag_ids)), tag_ids]
    ents = decode_entities(text, word_ids, offsets, tag_ids.tolist(), tag_scores.tolist(), labels)
    return TokenEntities(tuple(ents))
