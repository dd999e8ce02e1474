"""Peers, each used the way its own users use it, on the *same weights* as the mtst bundle.

The checkpoint the bundle was exported from gives the torch eager model (the fp32 reference of every
fidelity figure, :mod:`mtst.bench.reference`). Its encoder is written as a plain Hugging Face
directory, from which each peer makes what it loads: Optimum exports and quantizes
(:mod:`~mtst.bench.peer_optimum`), sentence-transformers builds its model (:mod:`~mtst.bench.peer_st`),
CTranslate2 converts (:mod:`~mtst.bench.peer_ct2`), OpenVINO writes its IR in an environment of its own
(:mod:`~mtst.bench.peer_openvino`), fastembed loads the ONNX export offline
(:mod:`~mtst.bench.peer_fastembed`). All exports happen here, before any timing, in a temporary
directory, offline.

Each peer is one small class (:class:`~mtst.bench.peer_base.PeerKind`: a name, the modules it needs,
``prepare`` / ``load`` / ``cold_start``) registered in :data:`PEERS` under its :class:`Peer` value;
``--compare`` names them (or a group of :data:`PEER_GROUPS`). A peer that cannot share this process
(another environment, a CPU instruction set forced before its library loads) runs in a process of its
own (:mod:`~mtst.bench.peer_worker`). Everything a peer runs needs the ``compare`` extra, imported only
when ``--compare`` asks for peers; OpenVINO its own environment (``scripts/openvino-env.sh``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mtst.errors import ConfigError

from .coldstart import ColdStartSpec
from .peer_base import (
    PeerFiles,
    PeerKind,
    PeerOptions,
    PeerUnavailable,
    child_params,
    quiet_libraries,
)
from .peer_ct2 import CTranslate2Peer
from .peer_fastembed import FastEmbedPeer
from .peer_openvino import OpenVINOPeer
from .peer_optimum import OptimumPeer
from .peer_st import SentenceTransformersPeer
from .reference import TorchReference
from .systems import Batching, Family, System

__all__ = [
    "PEERS",
    "PEER_GROUPS",
    "Peer",
    "PeerFiles",
    "PeerKind",
    "PeerOptions",
    "PeerSetup",
    "TorchReference",
    "build_peers",
    "cold_start_specs",
    "missing_modules",
    "parse_compare",
    "prepare_peer_files",
]

logger = logging.getLogger(__name__)


class Peer(str, Enum):
    TORCH = "torch"  # torch eager fp32, the checkpoint's MultiTaskModel (all heads)
    OPTIMUM_FP32 = "optimum-fp32"
    OPTIMUM_INT8 = "optimum-int8"  # avx2 dynamic, per-channel
    OPTIMUM_INT8_PER_TENSOR = "optimum-int8-per-tensor"
    ST_TORCH = "st-torch"
    ST_ONNX = "st-onnx"
    CT2_INT8 = "ctranslate2-int8"  # the ISA CTranslate2 picks
    CT2_INT8_BEST_ISA = "ctranslate2-int8-best-isa"  # CT2_FORCE_CPU_ISA = the CPU's widest, own process
    CT2_FP32 = "ctranslate2-fp32"
    OPENVINO_FP32 = "openvino-fp32"  # INFERENCE_PRECISION_HINT=f32
    OPENVINO_DEFAULT = (
        "openvino-default"  # fp32 IR at OpenVINO's default precision (bf16 where the CPU has it)
    )
    OPENVINO_INT8_WEIGHTS = "openvino-int8-weights"
    OPENVINO_INT8_STATIC = "openvino-int8-static"  # NNCF, calibrated on training sentences
    FASTEMBED = "fastembed"


@dataclass(frozen=True, slots=True)
class TorchPeer:
    """torch eager fp32: the reference model itself, every head decoded (``TorchReference.predict``)."""

    name: str = "torch eager fp32"
    needs: tuple[str, ...] = ("torch", "transformers")

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        return PeerFiles(ref.checkpoint)

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        size = options.batch_size

        def run_corpus(texts: Sequence[str]) -> None:
            for i in range(0, len(texts), size):
                ref.predict(texts[i : i + size])

        return System(
            name=self.name,
            family=Family.TORCH,
            precision="fp32",
            run_one=lambda text: ref.predict([text]),
            run_corpus=run_corpus,
            embed=ref.embed,
            corpus_batching=Batching.IN_ORDER,
            labels=ref.labels,
            facts={
                "how": "MultiTaskModel.from_pretrained(checkpoint), tokenizer(padding=True) + forward "
                "(all heads) + softmax/argmax + entity decoding, inference_mode",
                "checkpoint": str(ref.checkpoint),
                "threads": ref.threads,
                "torch_threads": ref.torch.get_num_threads(),
            },
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        return ColdStartSpec(
            self.name,
            imports="import torch\nfrom mtst.model import MultiTaskModel\ntorch.set_num_threads(args['threads'])",
            load="model = MultiTaskModel.from_pretrained(args['checkpoint']).eval()",
            first="with torch.inference_mode():\n    model(**model.tokenize([args['sentence']]))",
            params=child_params(sentence, options, checkpoint=str(files.dir)),
        )


# ---------------------------------------------------------------------------------------------- sentence-transformers
# ---------------------------------------------------------------------------------------------- the table
PEERS: dict[Peer, PeerKind] = {
    Peer.TORCH: TorchPeer(),
    Peer.OPTIMUM_FP32: OptimumPeer(Peer.OPTIMUM_FP32.value, "optimum fp32", per_channel=None),
    Peer.OPTIMUM_INT8: OptimumPeer(Peer.OPTIMUM_INT8.value, "optimum int8 per-channel", per_channel=True),
    Peer.OPTIMUM_INT8_PER_TENSOR: OptimumPeer(
        Peer.OPTIMUM_INT8_PER_TENSOR.value, "optimum int8 per-tensor", per_channel=False
    ),
    Peer.ST_TORCH: SentenceTransformersPeer("st torch", backend="torch"),
    Peer.ST_ONNX: SentenceTransformersPeer("st onnx", backend="onnx"),
    Peer.CT2_INT8: CTranslate2Peer("ctranslate2 int8", "int8"),
    Peer.CT2_INT8_BEST_ISA: CTranslate2Peer("ctranslate2 int8 (best ISA forced)", "int8", force_isa=True),
    Peer.CT2_FP32: CTranslate2Peer("ctranslate2 fp32", "float32"),
    Peer.OPENVINO_FP32: OpenVINOPeer("openvino fp32", "fp32", precision_hint="f32"),
    Peer.OPENVINO_DEFAULT: OpenVINOPeer("openvino default precision", "fp32"),
    Peer.OPENVINO_INT8_WEIGHTS: OpenVINOPeer("openvino int8 weight-only", "int8-weights"),
    Peer.OPENVINO_INT8_STATIC: OpenVINOPeer("openvino int8 static", "int8-static"),
    Peer.FASTEMBED: FastEmbedPeer(),
}

# names accepted by --compare that stand for several peers
PEER_GROUPS: dict[str, tuple[Peer, ...]] = {
    "optimum": (Peer.OPTIMUM_FP32, Peer.OPTIMUM_INT8, Peer.OPTIMUM_INT8_PER_TENSOR),
    "st": (Peer.ST_TORCH, Peer.ST_ONNX),
    "sentence-transformers": (Peer.ST_TORCH, Peer.ST_ONNX),
    "ctranslate2": (Peer.CT2_INT8, Peer.CT2_INT8_BEST_ISA, Peer.CT2_FP32),
    "openvino": (
        Peer.OPENVINO_FP32,
        Peer.OPENVINO_DEFAULT,
        Peer.OPENVINO_INT8_WEIGHTS,
        Peer.OPENVINO_INT8_STATIC,
    ),
    "all": tuple(Peer),
}


def parse_compare(value: str | Sequence[str] | None) -> tuple[Peer, ...]:
    """``"torch,optimum,st-onnx"`` -> peers in a fixed order, duplicates removed."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    chosen: set[Peer] = set()
    for raw in items:
        name = raw.strip().lower()
        if not name or name == "none":
            continue
        if name in PEER_GROUPS:
            chosen.update(PEER_GROUPS[name])
            continue
        try:
            chosen.add(Peer(name))
        except ValueError:
            known = sorted([p.value for p in Peer] + list(PEER_GROUPS))
            raise ConfigError(f"--compare: unknown peer {raw.strip()!r}; expected some of {known}") from None
    return tuple(p for p in Peer if p in chosen)


def missing_modules(peer: Peer) -> list[str]:
    """Modules a peer needs that are not installed (checked without importing them)."""
    import importlib.util

    out = []
    for mod in PEERS[peer].needs:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(mod.split(".")[0])
    return out


# ---------------------------------------------------------------------------------------------- all peers
@dataclass(frozen=True, slots=True)
class PeerSetup:
    """Files the peers load, written once before timing (also used by the cold-start scenario)."""

    checkpoint: Path
    hf_dir: Path  # the checkpoint's encoder + tokenizer as a Hugging Face directory
    files: dict[Peer, PeerFiles]  # the peers whose prepare step succeeded

    @property
    def optimum(self) -> dict[Peer, PeerFiles]:
        """The Optimum peers' files (directory, ONNX file name)."""
        return {p: f for p, f in self.files.items() if isinstance(PEERS[p], OptimumPeer)}


def prepare_peer_files(
    reference: TorchReference,
    peers: Sequence[Peer],
    workdir: Path,
    *,
    failed: dict[Peer, str] | None = None,
) -> PeerSetup:
    """Export what the chosen peers load into ``workdir`` (before any timing).

    A peer whose export raises is left out and its error recorded in ``failed`` (when given; else the
    error propagates).
    """
    quiet_libraries()
    hf_dir = workdir / "hf-encoder"
    reference.model.encoder.save_pretrained(str(hf_dir))
    reference.model.tokenizer.save_pretrained(str(hf_dir))
    files: dict[Peer, PeerFiles] = {}
    for peer in peers:
        try:
            files[peer] = PEERS[peer].prepare(reference, hf_dir, workdir)
        except PeerUnavailable as exc:
            if failed is None:
                raise
            failed[peer] = str(exc)
            logger.warning("peer %s: %s", peer.value, exc)
        except Exception as exc:  # a peer library's failure is a result to report, not a reason to stop
            if failed is None:
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            failed[peer] = f"export failed: {type(exc).__name__}: {first_line}"
            logger.warning("peer %s: export failed: %s", peer.value, exc)
    return PeerSetup(checkpoint=reference.checkpoint, hf_dir=hf_dir, files=files)


@contextlib.contextmanager
def build_peers(
    reference: TorchReference,
    peers: Sequence[Peer],
    *,
    threads: int,
    spinning: bool,
    batch_size: int,
    workdir: Path | None = None,
) -> Iterator[tuple[list[System], dict[str, str], PeerSetup]]:
    """Prepare and load the chosen peers; yields (systems, skipped peer -> reason, setup).

    A peer whose library is missing is skipped with the reason (the ``compare`` extra); a peer that
    fails to export or load is skipped with the error, never silently.
    """
    options = PeerOptions(threads=threads, spinning=spinning, batch_size=batch_size)
    skipped: dict[str, str] = {}
    usable: list[Peer] = []
    for peer in peers:
        missing = missing_modules(peer)
        if missing:
            skipped[PEERS[peer].name] = f"not installed: {', '.join(missing)} (pip install 'mtst[compare]')"
        else:
            usable.append(peer)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtst-bench-peers-")))
        failed: dict[Peer, str] = {}
        setup = prepare_peer_files(reference, usable, workdir, failed=failed)
        systems: list[System] = []
        for peer in usable:
            kind = PEERS[peer]
            if peer in failed:
                skipped[kind.name] = failed[peer]
                continue
            try:
                systems.append(kind.load(setup.files[peer], reference, options))
            except Exception as exc:  # as above: reported in the run's "skipped", with the error
                skipped[kind.name] = f"cannot load: {type(exc).__name__}: {exc}"
                logger.warning("peer %s: cannot load: %s", peer.value, exc)
        yield systems, skipped, setup


def cold_start_specs(
    setup: PeerSetup, systems: Sequence[System], sentence: str, options: PeerOptions
) -> list[ColdStartSpec]:
    """The cold-start child of every peer among ``systems`` (in their order), on the prepared files."""
    by_name = {PEERS[p].name: p for p in setup.files}
    out: list[ColdStartSpec] = []
    for s in systems:
        peer = by_name.get(s.name)
        if peer is not None:
            out.append(PEERS[peer].cold_start(setup.files[peer], sentence, options))
    return out
