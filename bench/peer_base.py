"""What every peer is made of: the :class:`PeerKind` protocol, its files and options, shared helpers.

A peer (:mod:`mtst.bench.peers`) is one small class with a ``name``, the modules it ``needs`` and three
steps: ``prepare`` (export the files it loads, before any timing), ``load`` (a
:class:`~mtst.bench.systems.System` that runs it) and ``cold_start`` (what a fresh process runs to
start it). The libraries a peer uses are imported inside its steps, never with these modules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from mtst.errors import MtstError

from .coldstart import ColdStartSpec
from .reference import TorchReference
from .systems import Batching, Family, System

__all__ = [
    "ORT_OPTIONS_CHILD",
    "EmbeddingBackend",
    "PeerFiles",
    "PeerKind",
    "PeerOptions",
    "PeerUnavailable",
    "child_params",
    "embedding_system",
    "mean_pool",
    "ort_session_options",
    "quiet_libraries",
]


@dataclass(frozen=True, slots=True)
class PeerFiles:
    """What a peer loads, written by its ``prepare`` step."""

    dir: Path
    file: str | None = None  # the graph inside ``dir``, where the peer's loader wants it named


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """The same for every system of a run."""

    threads: int
    spinning: bool  # ONNX Runtime worker spinning (peers on ONNX Runtime)
    batch_size: int


class PeerUnavailable(MtstError):
    """A peer that cannot run here, and why (reported in the run's "skipped" as it is)."""


class EmbeddingBackend(Protocol):
    """What an embedding-only peer runs: L2-normalized embeddings of one batch, and facts about itself."""

    facts: dict[str, Any]

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class PeerKind(Protocol):
    """One peer: how its files are made, how it runs in the benchmark, how a fresh process starts it."""

    @property
    def name(self) -> str: ...  # as reports name it

    @property
    def needs(self) -> tuple[str, ...]: ...  # modules, checked before anything is imported

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles: ...

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System: ...

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec: ...


# ---------------------------------------------------------------------------------------------- helpers
def ort_session_options(threads: int, spinning: bool) -> ort.SessionOptions:
    """Session options for a peer on ONNX Runtime: the run's threads and spinning, like mtst's sessions."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


# the same, in a cold-start child (``args`` holds threads and spinning): defines ``so``
ORT_OPTIONS_CHILD = (
    "import onnxruntime as ort\n"
    "so = ort.SessionOptions(); so.intra_op_num_threads = args['threads']; so.inter_op_num_threads = 1\n"
    "so.add_session_config_entry('session.intra_op.allow_spinning', '1' if args['spinning'] else '0')\n"
)


def child_params(sentence: str, options: PeerOptions, **paths: str) -> dict[str, Any]:
    """A cold-start child's ``args``: the sentence, threads, spinning and the peer's files."""
    return {"sentence": sentence, "threads": options.threads, "spinning": options.spinning, **paths}


def mean_pool(hidden: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Mean over each sentence's first ``lengths[i]`` token states (B, T, H), L2-normalized: (B, H)."""
    mask = (np.arange(hidden.shape[1])[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
    norm = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.asarray(pooled / np.maximum(norm, 1e-12), dtype=np.float32)


def embedding_system(
    name: str,
    *,
    family: Family,
    precision: str,
    embed: Callable[[Sequence[str]], Any],
    batch_size: int,
    facts: dict[str, Any],
    corpus_batching: Batching = Batching.IN_ORDER,
    run_one: Callable[[str], Any] | None = None,
    run_corpus: Callable[[Sequence[str]], Any] | None = None,
    run_batches: Callable[[Sequence[Sequence[str]]], Any] | None = None,
    embed_all: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> System:
    """A peer that only embeds: one request is ``embed([text])``, a corpus consecutive batches of
    ``batch_size`` (unless the peer batches its own way), given batches one ``embed`` each."""

    def corpus(texts: Sequence[str]) -> None:
        for i in range(0, len(texts), batch_size):
            embed(texts[i : i + batch_size])

    def batches(items: Sequence[Sequence[str]]) -> None:
        for b in items:
            embed(b)

    def embed_many(texts: Sequence[str]) -> np.ndarray:
        return np.concatenate([np.asarray(embed(texts[i : i + 32])) for i in range(0, len(texts), 32)])

    return System(
        name=name,
        family=family,
        precision=precision,
        run_one=run_one or (lambda text: embed([text])),
        run_corpus=run_corpus or corpus,
        embed=embed_all or embed_many,
        corpus_batching=corpus_batching,
        facts=facts,
        run_batches=run_batches or batches,
    )


def quiet_libraries() -> None:
    for name in (
        "optimum",
        "sentence_transformers",
        "transformers",
        "onnxruntime",
        "torch.onnx",
        "fastembed",
        "nncf",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
