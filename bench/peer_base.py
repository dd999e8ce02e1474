"""What every peer is made of: the :class:`PeerKind` protocol, its files and options, shared helpers.

A peer (:mod:`mtst.bench.peers`) is one small class with a ``name``, the modules it ``needs`` and three
steps: ``prepare`` (export the files it loads, before any timing), ``load`` (a
:class:`~mtst.bench.systems.System` that runs it) and ``cold_start`` (what a fresh process runs to
start it). The libraries a peer uses are imported inside its steps, never with these modules.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import onnxruntime as ort

from .coldstart import ColdStartSpec
from .reference import TorchReference
from .systems import System

__all__ = [
    "ORT_OPTIONS_CHILD",
    "PeerFiles",
    "PeerKind",
    "PeerOptions",
    "child_params",
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


def quiet_libraries() -> None:
    for name in ("optimum", "sentence_transformers", "transformers", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
