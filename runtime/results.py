"""Typed results of the runtime: one frozen dataclass per kind of answer, plus their decoding from logits."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Encoding

from mtst.errors import ConfigError
from mtst.runtime.decode import Entity, bio_spans, entities_from_words, word_chars, word_starts
from mtst.runtime.manifest import HeadInfo, HeadKind

if TYPE_CHECKING:
    import onnxruntime as ort

    from mtst.runtime.batching import TokenSink

__all__ = [
    "DeviceArrays",
    "Entity",
    "HeadDecoding",
    "Prediction",
    "SentenceLabel",
    "TokenEntities",
    "call_decodings",
    "decode_sentence",
    "decode_tokens",
    "head_decodings",
    "softmax",
    "token_sink",
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
    """A sentence head's answer. ``abstained``: the (calibrated) score is under the head's threshold,
    i.e. the sentence is probably not this head's to answer; ``label`` is then only the best guess."""

    label: str  # the most probable label
    score: float  # its (calibrated) probability
    scores: dict[str, float]  # probability of every label, in the head's label order
    abstained: bool = False

    @property
    def answer(self) -> str | None:
        """``label``, or None when the head abstains."""
        return None if self.abstained else self.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "abstained": self.abstained,
            "scores": dict(self.scores),
        }


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


def _top_probability(row: list[float], temperature: float = 1.0) -> float:
    """Softmax probability of the row's largest value at ``temperature``: 1 / sum(exp((x - max) / T))."""
    top = max(row)
    if temperature == 1.0:
        return 1.0 / math.fsum([math.exp(v - top) for v in row])
    return 1.0 / math.fsum([math.exp((v - top) / temperature) for v in row])


@dataclass(frozen=True, slots=True)
class HeadDecoding:
    """How one head's logits become an answer in one call (docs/architecture.md, Contract 3)."""

    temperature: float = 1.0  # probabilities = softmax(logits / temperature)
    threshold: float = 0.0  # sentence: abstain when the top probability is below; token: drop entities below


_PLAIN = HeadDecoding()


def _unit_number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: expected a number in [0, 1], got {value!r}")
    return float(value)


def head_decodings(
    heads: Iterable[HeadInfo],
    *,
    thresholds: Mapping[str, float] | None = None,
    abstain: bool = True,
    min_entity_score: float = 0.0,
) -> dict[str, HeadDecoding]:
    """Each head's decoding for one call: the manifest's temperature, and its threshold unless
    ``thresholds`` overrides it (by head name) or ``abstain`` is False (no threshold: every sentence
    answered, every entity kept); token heads also drop entities under ``min_entity_score``."""
    floor = _unit_number("min_entity_score", min_entity_score)
    given = {k: _unit_number(f"thresholds[{k!r}]", v) for k, v in (thresholds or {}).items()}
    heads = list(heads)
    unknown = sorted(set(given) - {h.name for h in heads})
    if unknown:
        raise ConfigError(f"thresholds: unknown head(s) {unknown}; the heads are {[h.name for h in heads]}")
    out: dict[str, HeadDecoding] = {}
    for h in heads:
        threshold = given.get(h.name, h.threshold) if abstain else 0.0
        if h.kind is HeadKind.TOKEN:
            threshold = max(threshold, floor)
        out[h.name] = (
            _PLAIN if (h.temperature, threshold) == (1.0, 0.0) else HeadDecoding(h.temperature, threshold)
        )
    return out


def call_decodings(
    heads: Iterable[HeadInfo],
    prebuilt: dict[str, HeadDecoding],
    thresholds: Mapping[str, float] | None,
    abstain: bool,
    min_entity_score: float,
) -> dict[str, HeadDecoding]:
    """One call's decodings: ``prebuilt`` (the manifest's, built once) when the call overrides nothing."""
    plain_floor = type(min_entity_score) is not bool and min_entity_score == 0
    if thresholds is None and abstain is True and plain_floor:
        return prebuilt
    return head_decodings(
        heads, thresholds=thresholds, abstain=bool(abstain), min_entity_score=min_entity_score
    )


def decode_sentence(
    logits: np.ndarray, labels: Sequence[str], decoding: HeadDecoding = _PLAIN
) -> list[SentenceLabel]:
    """One SentenceLabel per row of ``logits`` ``(B, L)``, at ``decoding``'s temperature and threshold."""
    t, floor = decoding.temperature, decoding.threshold
    x = np.asarray(logits, dtype=np.float32)
    if t != 1.0:
        x = x / np.float32(t)
    if len(x) == 1:  # batch 1: the softmax of the row itself, the same float32 arithmetic with fewer
        r = x[0]  # temporaries (2 us of 9-13 per head; bit-identical, tested)
        z = r - r.max()
        np.exp(z, out=z)
        z /= z.sum()
        row = z.tolist()
        k = int(z.argmax())
        scores = dict(zip(labels, row, strict=True))
        return [SentenceLabel(label=labels[k], score=row[k], scores=scores, abstained=row[k] < floor)]
    probs = softmax(x)  # (B, L)
    best = probs.argmax(axis=1)
    rows = probs.tolist()
    return [
        SentenceLabel(
            label=labels[k],
            score=row[k],
            scores=dict(zip(labels, row, strict=True)),
            abstained=row[k] < floor,
        )
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
    decoding: HeadDecoding = _PLAIN,
) -> TokenEntities:
    """Entities of one text from its token logits ``(T, L)`` (T = the text's own token count).

    A word's tag is the arg-max at its first sub-token; a text whose words all read as outside
    returns before any probability is computed. An entity's score is the mean over its words of the
    tag's probability at ``decoding.temperature``; entities scored below ``decoding.threshold`` are dropped.
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
    t = decoding.temperature
    for _, a, b in spans:
        for k in range(a, b):
            scores[k] = _top_probability(logits[firsts[k]].tolist(), t)
    found = entities_from_words(
        text, word_chars(word_ids, offsets), tags, scores, spans=spans, min_score=decoding.threshold
    )
    return TokenEntities(tuple(found)) if found else _NO_ENTITIES


def token_sink(
    texts: list[str],
    token: list[HeadInfo],
    per_item: list[dict[str, Any]],
    logits_out: list[dict[str, np.ndarray]] | None,
    dec: Mapping[str, HeadDecoding],
) -> TokenSink | None:
    """The engine's batch sink (:mod:`mtst.runtime.batching`): decodes the token heads' logits of each batch
    into ``per_item`` (and ``logits_out``) with each head's decoding of this call."""
    if not token:
        return None

    def sink(idx: np.ndarray, batch: Sequence[Encoding], token_logits: Sequence[np.ndarray]) -> None:
        for h, lg in zip(token, token_logits, strict=True):  # lg: (B, T, L)
            for j, i in enumerate(idx.tolist()):
                e = batch[j]
                row = lg[j, : len(e)]
                per_item[i][h.name] = decode_tokens(
                    texts[i], row, e.word_ids, e.offsets, h.labels, dec[h.name]
                )
                if logits_out is not None:
                    logits_out[i][h.name] = np.array(row, copy=True)

    return sink
