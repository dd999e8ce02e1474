"""A *system* is one contender of a benchmark: an mtst engine or a peer, described as data.

Every system exposes the same few calls, so that scenarios time them alike and interleave them:

- ``run_one(text)``: one request, end to end, the way its users make one (mtst: ``predict`` with
  tokenization, graph and decoding; peers: their own encode path);
- ``run_corpus(texts)``: a whole corpus, the way its users push one through (their batching);
- ``run_batches(batches)``: given batches, each run as one batch (the throughput scenario gives every
  system the same token-sorted batches); ``None``: ``run_corpus`` on each batch;
- ``embed(texts)``: L2-normalized embeddings, for fidelity against torch fp32;
- ``labels(texts)``: per head, the predicted label of each sentence (sentence heads) or the tag of each
  word (token heads); ``None`` for embedding-only peers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["Batching", "Family", "HeadLabels", "System"]

# head name -> one entry per sentence: a label (sentence head) or a tuple of word tags (token head)
HeadLabels = dict[str, list[Any]]


class Family(str, Enum):
    MTST = "mtst"
    TORCH = "torch"
    OPTIMUM = "optimum"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    CTRANSLATE2 = "ctranslate2"
    OPENVINO = "openvino"
    FASTEMBED = "fastembed"


class Batching(str, Enum):
    """How a system groups a corpus into batches (decides padding waste)."""

    IN_ORDER = "in-order"  # consecutive chunks of the corpus, each padded to its longest sentence
    LENGTH_SORTED = "length-sorted"  # sorted by token length, then chunked (mtst's length buckets)
    CHAR_SORTED = "char-length-sorted"  # sorted by character count, longest first (sentence-transformers)


@dataclass(frozen=True, slots=True)
class System:
    name: str
    family: Family
    precision: str  # fp32, int8-dynamic, int8 per-channel, ...
    run_one: Callable[[str], Any]
    run_corpus: Callable[[Sequence[str]], Any]
    embed: Callable[[Sequence[str]], np.ndarray]
    corpus_batching: Batching
    labels: Callable[[Sequence[str]], HeadLabels] | None = None
    run_batches: Callable[[Sequence[Sequence[str]]], Any] | None = None
    # how the system is used and what it runs on: backend, files, providers actually active, threads
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def is_mtst(self) -> bool:
        return self.family is Family.MTST

    def given_batches(self, batches: Sequence[Sequence[str]]) -> Any:
        """Run each of ``batches`` as one batch (see ``run_batches``)."""
        if self.run_batches is not None:
            return self.run_batches(batches)
        for b in batches:
            self.run_corpus(b)
        return None
