"""Typed results of the runtime: one frozen dataclass per kind of answer, plus their decoding from logits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

from mtst.runtime.decode import Entity, bio_spans, entities_from_words, word_chars, word_starts

__all__ = [
    "DeviceArrays",
    "Entity",
    "Prediction",
    "SentenceLabel",
    "TokenEntities",
    "decode_sentence",
    "decode_tokens",
    "softmax",
]


@dataclass(frozen=True, slots=True)
class DeviceArrays:
    """Rows left on the device that computed them (``Engine.embed_device``): one ONNX Runtime
    ``OrtValue`` ``(B, width)`` per batch, with the input indices of its rows (batches are length-sorted,
    so rows are not in input order). ``numpy()`` gathers them on the host, in input order."""

    parts: tuple[tuple[np.ndarray, ort.OrtValue], ...]
    n: int
    width: int
    device: str  # "cpu" or "cuda"

    def numpy(self) -> np.ndarray:
        out = np.empty((self.n, self.width), dtype=np.float32)
        for idx, value in self.parts:
            out[idx] = value.numpy()
        return out


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

    def above(self, min_score: float) -> TokenEntities:
        """The entities whose score (mean tag probability over their words) is at least ``min_score``."""
        if min_score <= 0.0:
            return self
        return TokenEntities(tuple(e for e in self.entities if e.score >= min_score))

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


def _top_probability(row: list[float]) -> float:
    """Softmax probability of the row's largest value: 1 / sum(exp(x - max))."""
    top = max(row)
    return 1.0 / math.fsum([math.exp(v - top) for v in row])


def decode_sentence(logits: np.ndarray, labels: Sequence[str]) -> list[SentenceLabel]:
    """One SentenceLabel per row of ``logits`` ``(B, L)``."""
    x = np.asarray(logits, dtype=np.float32)
    if len(x) == 1:  # batch 1: the softmax of the row itself, the same float32 arithmetic with fewer
        r = x[0]  # temporaries (2 us of 9-13 per head; bit-identical, tested)
        z = r - r.max()
        np.exp(z, out=z)
        z /= z.sum()
        row = z.tolist()
        k = int(z.argmax())
        return [SentenceLabel(label=labels[k], score=row[k], scores=dict(zip(labels, row, strict=True)))]
    probs = softmax(x)  # (B, L)
    best = probs.argmax(axis=1)
    rows = probs.tolist()
    return [
        SentenceLabel(label=labels[k], score=row[k], scores=dict(zip(labels, row, strict=True)))
        for k, row in zip(best.tolist(), rows, strict=True)
    ]


@lru_cache(maxsize=64)
def _entity_tags(labels: tuple[str, ...]) -> tuple[bool, ...]:
    """Which tag ids can start or continue an entity (``B-*``/``I-*``); the rest read as outside."""
    return tuple(lab.startswith(("B-", "I-")) for lab in labels)


_NO_ENTITIES = TokenEntities(())


def decode_tokens(
    text: str,
    logits: np.ndarray,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    labels: Sequence[str],
    *,
    min_score: float = 0.0,
) -> TokenEntities:
    """Entities of one text from its token logits ``(T, L)`` (T = the text's own token count).

    A word's tag is the arg-max at its first sub-token; a text whose words all read as outside
    returns before any probability is computed. Entities scored below ``min_score`` (the mean
    probability of their words' tags) are left out.
    """
    logits = np.asarray(logits)
    tag_ids = logits.argmax(axis=1).tolist()  # (T,) the same arg-max as the softmax's
    firsts = word_starts(word_ids)
    word_tag_ids = [tag_ids[i] for i in firsts]
    entity = _entity_tags(tuple(labels))
    if not any(entity[t] for t in word_tag_ids):
        return _NO_ENTITIES
    tags = [labels[k] for k in word_tag_ids]
    spans = bio_spans(tags)
    # probabilities only for the words inside entities (the rest are never reported)
    scores = [0.0] * len(tags)
    for _, a, b in spans:
        for k in range(a, b):
            scores[k] = _top_probability(logits[firsts[k]].tolist())
    found = entities_from_words(
        text, word_chars(word_ids, offsets), tags, scores, spans=spans, min_score=min_score
    )
    return TokenEntities(tuple(found)) if found else _NO_ENTITIES
