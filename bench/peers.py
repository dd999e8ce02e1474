"""Peers, each used the way its own users use it, on the *same weights* as the mtst bundle.

The checkpoint the bundle was exported from gives the torch eager model (the fp32 reference of every
fidelity figure). Its encoder is written as a plain Hugging Face directory, from which Optimum exports
and quantizes (``ORTModelForFeatureExtraction.from_pretrained(..., export=True)``, ``ORTQuantizer``
with the avx2 dynamic int8 configs, per-channel and per-tensor) and sentence-transformers builds its
model (Transformer + Pooling + Normalize; torch and ONNX backends, through ``encode()``). All exports
happen here, before any timing, in a temporary directory, offline.

Everything in this module needs the ``compare`` extra (torch, transformers, optimum,
sentence-transformers); it is imported only when ``--compare`` asks for peers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError
from mtst.runtime.decode import decode_entities, word_starts

from .systems import Batching, Family, HeadLabels, System

__all__ = [
    "PEER_GROUPS",
    "Peer",
    "PeerSetup",
    "TorchReference",
    "build_peers",
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


# names accepted by --compare that stand for several peers
PEER_GROUPS: dict[str, tuple[Peer, ...]] = {
    "optimum": (Peer.OPTIMUM_FP32, Peer.OPTIMUM_INT8, Peer.OPTIMUM_INT8_PER_TENSOR),
    "st": (Peer.ST_TORCH, Peer.ST_ONNX),
    "sentence-transformers": (Peer.ST_TORCH, Peer.ST_ONNX),
    "all": tuple(Peer),
}

PEER_NAMES = {
    Peer.TORCH: "torch eager fp32",
    Peer.OPTIMUM_FP32: "optimum fp32",
    Peer.OPTIMUM_INT8: "optimum int8 per-channel",
    Peer.OPTIMUM_INT8_PER_TENSOR: "optimum int8 per-tensor",
    Peer.ST_TORCH: "st torch",
    Peer.ST_ONNX: "st onnx",
}

# the extra a peer needs, by module
_NEEDS = {
    Peer.TORCH: ("torch", "transformers"),
    Peer.OPTIMUM_FP32: ("torch", "transformers", "optimum.onnxruntime"),
    Peer.OPTIMUM_INT8: ("torch", "transformers", "optimum.onnxruntime"),
    Peer.OPTIMUM_INT8_PER_TENSOR: ("torch", "transformers", "optimum.onnxruntime"),
    Peer.ST_TORCH: ("torch", "transformers", "sentence_transformers"),
    Peer.ST_ONNX: ("torch", "transformers", "sentence_transformers", "optimum.onnxruntime"),
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
    for mod in _NEEDS[peer]:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(mod.split(".")[0])
    return out


# ---------------------------------------------------------------------------------------------- setup
@dataclass(frozen=True, slots=True)
class PeerSetup:
    """Files the peers load, written once before timing (also used by the cold-start scenario)."""

    checkpoint: Path
    hf_dir: Path  # the checkpoint's encoder + tokenizer as a Hugging Face directory
    st_dir: Path | None  # sentence-transformers model (with onnx/ once the ONNX backend exported it)
    optimum: dict[Peer, tuple[Path, str]]  # peer -> (directory, ONNX file name)
    max_seq_len: int
    pooling: str


def _ort_session_options(threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def _quiet_libraries() -> None:
    for name in ("optimum", "sentence_transformers", "transformers", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _st_modules() -> tuple[Any, Any, Any]:
    """Normalize, Pooling, Transformer: moved to ``sentence_transformer.modules`` in sentence-transformers 5."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 5
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]
    return Normalize, Pooling, Transformer


def _export_st(model: Any, hf_dir: Path, st_dir: Path, *, onnx: bool) -> None:
    from sentence_transformers import SentenceTransformer

    normalize, pooling_cls, transformer_cls = _st_modules()
    transformer = transformer_cls(str(hf_dir), max_seq_length=model.max_seq_len)
    pooling = pooling_cls(model.hidden_size, pooling_mode=model.pooling.value)
    SentenceTransformer(modules=[transformer, pooling, normalize()], device="cpu").save(str(st_dir))
    if onnx:
        # the ONNX backend exports on first load; saving keeps onnx/model.onnx for later loads
        st = SentenceTransformer(
            str(st_dir), backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"}
        )
        st.save(str(st_dir))


def _export_optimum(model: Any, hf_dir: Path, workdir: Path, peer: Peer) -> tuple[Path, str]:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32_dir = workdir / Peer.OPTIMUM_FP32.value
    if not (fp32_dir / "model.onnx").is_file():
        ORTModelForFeatureExtraction.from_pretrained(str(hf_dir), export=True).save_pretrained(str(fp32_dir))
        model.tokenizer.save_pretrained(str(fp32_dir))
    if peer is Peer.OPTIMUM_FP32:
        return fp32_dir, "model.onnx"
    out = workdir / peer.value
    qconfig = AutoQuantizationConfig.avx2(is_static=False, per_channel=peer is Peer.OPTIMUM_INT8)
    ORTQuantizer.from_pretrained(str(fp32_dir)).quantize(save_dir=str(out), quantization_config=qconfig)
    model.tokenizer.save_pretrained(str(out))
    return out, "model_quantized.onnx"


def prepare_peer_files(
    model: Any,
    checkpoint: Path,
    peers: Sequence[Peer],
    workdir: Path,
    *,
    failed: dict[Peer, str] | None = None,
) -> PeerSetup:
    """Export what the chosen peers load into ``workdir`` (before any timing).

    A peer whose export raises is left out and its error recorded in ``failed`` (when given; else the
    error propagates).
    """
    _quiet_libraries()

    def attempt(peer_group: Sequence[Peer], step: Any) -> bool:
        try:
            step()
        except Exception as exc:  # a peer library's failure is a result to report, not a reason to stop
            if failed is None:
                raise
            for p in peer_group:
                failed[p] = (
                    f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
            logger.warning("peers %s: export failed: %s", [p.value for p in peer_group], exc)
            return False
        return True

    hf_dir = workdir / "hf-encoder"
    model.encoder.save_pretrained(str(hf_dir))
    model.tokenizer.save_pretrained(str(hf_dir))
    st_dir: Path | None = None
    st_peers = [p for p in (Peer.ST_TORCH, Peer.ST_ONNX) if p in peers]
    if st_peers:
        target = workdir / "sentence-transformers"
        if attempt(st_peers, lambda: _export_st(model, hf_dir, target, onnx=False)):
            st_dir = target
            if Peer.ST_ONNX in st_peers:
                attempt([Peer.ST_ONNX], lambda: _export_st(model, hf_dir, target, onnx=True))
    optimum: dict[Peer, tuple[Path, str]] = {}
    for peer in (Peer.OPTIMUM_FP32, Peer.OPTIMUM_INT8, Peer.OPTIMUM_INT8_PER_TENSOR):
        if peer in peers:
            attempt(
                [peer],
                lambda peer=peer: optimum.__setitem__(peer, _export_optimum(model, hf_dir, workdir, peer)),
            )
    return PeerSetup(
        checkpoint=checkpoint,
        hf_dir=hf_dir,
        st_dir=st_dir,
        optimum=optimum,
        max_seq_len=model.max_seq_len,
        pooling=model.pooling.value,
    )


# ---------------------------------------------------------------------------------------------- torch
class TorchReference:
    """The checkpoint's MultiTaskModel in torch eager fp32: reference embeddings and labels, and a peer."""

    def __init__(self, checkpoint: Path, *, threads: int) -> None:
        from mtst.errors import require

        torch: Any = require("torch", "compare", "the torch peer and the fidelity reference")
        require("transformers", "compare", "the torch peer and the fidelity reference")
        torch.set_num_threads(threads)
        from mtst.model import MultiTaskModel

        self.torch = torch
        self.checkpoint = checkpoint
        self.model = MultiTaskModel.from_pretrained(checkpoint).eval()
        self.tokenizer = self.model.tokenizer
        self.threads = threads

    def _encode(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.model.max_seq_len,
            return_tensors="pt",
            return_offsets_mapping=True,
        )

    def _forward(self, enc: Any) -> Any:
        inputs = {k: v for k, v in enc.items() if k in self.model.input_names}
        with self.torch.inference_mode():
            return self.model(**inputs)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """End to end, like ``Engine.predict``: tokenize, one forward pass, labels and entities per head."""
        texts = list(texts)
        enc = self._encode(texts)
        out = self._forward(enc)
        results: list[dict[str, Any]] = [{} for _ in texts]
        for name, task in self.model.tasks.items():
            probs = self.torch.softmax(out.logits[name].float(), dim=-1)
            best = probs.argmax(-1)
            if task.kind.value == "sentence_classification":
                for i in range(len(texts)):
                    results[i][name] = task.labels[int(best[i])]
            else:
                score = probs.max(-1).values
                for i, text in enumerate(texts):
                    n = int(enc["attention_mask"][i].sum())
                    results[i][name] = decode_entities(
                        text,
                        enc.word_ids(i)[:n],
                        [tuple(o) for o in enc["offset_mapping"][i][:n].tolist()],
                        best[i][:n].tolist(),
                        score[i][:n].tolist(),
                        task.labels,
                    )
        return results

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        chunks = []
        for i in range(0, len(texts), batch_size):
            chunks.append(self._forward(self._encode(texts[i : i + batch_size])).embedding.float().numpy())
        return np.concatenate(chunks).astype(np.float32)

    def labels(self, texts: Sequence[str], *, batch_size: int = 32) -> HeadLabels:
        """Sentence heads: the argmax label; token heads: the tag of each word's first sub-token."""
        out: HeadLabels = {name: [] for name in self.model.tasks}
        for start in range(0, len(texts), batch_size):
            enc = self._encode(texts[start : start + batch_size])
            res = self._forward(enc)
            for name, task in self.model.tasks.items():
                best = res.logits[name].argmax(-1)
                for i in range(best.shape[0]):
                    if task.kind.value == "sentence_classification":
                        out[name].append(task.labels[int(best[i])])
                    else:
                        firsts = word_starts(enc.word_ids(i))
                        out[name].append(tuple(task.labels[int(best[i][j])] for j in firsts))
        return out

    def system(self, batch_size: int) -> System:
        def run_corpus(texts: Sequence[str]) -> None:
            for i in range(0, len(texts), batch_size):
                self.predict(texts[i : i + batch_size])

        return System(
            name=PEER_NAMES[Peer.TORCH],
            family=Family.TORCH,
            precision="fp32",
            run_one=lambda text: self.predict([text]),
            run_corpus=run_corpus,
            embed=self.embed,
            corpus_batching=Batching.IN_ORDER,
            labels=self.labels,
            facts={
                "how": "MultiTaskModel.from_pretrained(checkpoint), tokenizer(padding=True) + forward "
                "(all heads) + softmax/argmax + entity decoding, inference_mode",
                "checkpoint": str(self.checkpoint),
                "threads": self.threads,
                "torch_threads": self.torch.get_num_threads(),
            },
        )


# ---------------------------------------------------------------------------------------------- optimum
def _optimum_system(peer: Peer, setup: PeerSetup, *, threads: int, spinning: bool, batch_size: int) -> System:
    import torch
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    from mtst.pooling import Pooling, pool_and_normalize

    directory, file_name = setup.optimum[peer]
    model = ORTModelForFeatureExtraction.from_pretrained(
        str(directory),
        file_name=file_name,
        provider="CPUExecutionProvider",
        session_options=_ort_session_options(threads, spinning),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    pooling = Pooling(setup.pooling)

    def embed(texts: Sequence[str]) -> np.ndarray:
        enc = tokenizer(
            list(texts), padding=True, truncation=True, max_length=setup.max_seq_len, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
            return pool_and_normalize(hidden, enc["attention_mask"], pooling).numpy()

    def run_corpus(texts: Sequence[str]) -> None:
        for i in range(0, len(texts), batch_size):
            embed(texts[i : i + batch_size])

    return System(
        name=PEER_NAMES[peer],
        family=Family.OPTIMUM,
        precision="fp32" if peer is Peer.OPTIMUM_FP32 else peer.value.removeprefix("optimum-"),
        run_one=lambda text: embed([text]),
        run_corpus=run_corpus,
        embed=embed,
        corpus_batching=Batching.IN_ORDER,
        facts={
            "how": "ORTModelForFeatureExtraction (export=True from the checkpoint's encoder"
            + ("" if peer is Peer.OPTIMUM_FP32 else ", then ORTQuantizer avx2 dynamic int8")
            + f"), tokenizer(padding=True) + {pooling.value} pooling + L2 normalize",
            "quantization": {
                Peer.OPTIMUM_FP32: None,
                Peer.OPTIMUM_INT8: "AutoQuantizationConfig.avx2(is_static=False, per_channel=True)",
                Peer.OPTIMUM_INT8_PER_TENSOR: "AutoQuantizationConfig.avx2(is_static=False, per_channel=False)",
            }[peer],
            "active_providers": list(model.model.get_providers()),
            "threads": threads,
            "spinning": spinning,
        },
    )


# ---------------------------------------------------------------------------------------------- sentence-transformers
def _st_system(peer: Peer, setup: PeerSetup, *, threads: int, spinning: bool, batch_size: int) -> System:
    from sentence_transformers import SentenceTransformer

    if setup.st_dir is None:  # pragma: no cover - prepare_peer_files writes it whenever an ST peer is asked
        raise ConfigError("sentence-transformers peers were not prepared")
    if peer is Peer.ST_ONNX:
        st = SentenceTransformer(
            str(setup.st_dir),
            device="cpu",
            backend="onnx",
            model_kwargs={
                "provider": "CPUExecutionProvider",
                "session_options": _ort_session_options(threads, spinning),
            },
        )
        providers = list(st[0].auto_model.model.get_providers())
    else:
        st = SentenceTransformer(str(setup.st_dir), device="cpu", backend="torch")
        providers = ["torch cpu"]

    def encode(texts: Sequence[str], bs: int) -> np.ndarray:
        return np.asarray(
            st.encode(list(texts), batch_size=bs, normalize_embeddings=True, show_progress_bar=False),
            dtype=np.float32,
        )

    return System(
        name=PEER_NAMES[peer],
        family=Family.SENTENCE_TRANSFORMERS,
        precision="fp32",
        run_one=lambda text: encode([text], 1),
        run_corpus=lambda texts: encode(texts, batch_size),
        embed=lambda texts: encode(texts, 32),
        corpus_batching=Batching.CHAR_SORTED,
        facts={
            "how": f"SentenceTransformer(dir, backend={'onnx' if peer is Peer.ST_ONNX else 'torch'!r})"
            f".encode(texts, batch_size={batch_size}, normalize_embeddings=True) (sorts by length)",
            "active_providers": providers,
            "threads": threads,
            "spinning": spinning if peer is Peer.ST_ONNX else None,
        },
    )


# ---------------------------------------------------------------------------------------------- all peers
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
    skipped: dict[str, str] = {}
    usable: list[Peer] = []
    for peer in peers:
        missing = missing_modules(peer)
        if missing:
            skipped[PEER_NAMES[peer]] = f"not installed: {', '.join(missing)} (pip install 'mtst[compare]')"
        else:
            usable.append(peer)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtst-bench-peers-")))
        failed: dict[Peer, str] = {}
        setup = prepare_peer_files(reference.model, reference.checkpoint, usable, workdir, failed=failed)
        systems: list[System] = []
        for peer in usable:
            if peer in failed:
                skipped[PEER_NAMES[peer]] = failed[peer]
                continue
            try:
                if peer is Peer.TORCH:
                    systems.append(reference.system(batch_size))
                elif peer in setup.optimum:
                    systems.append(
                        _optimum_system(
                            peer, setup, threads=threads, spinning=spinning, batch_size=batch_size
                        )
                    )
                else:
                    systems.append(
                        _st_system(peer, setup, threads=threads, spinning=spinning, batch_size=batch_size)
                    )
            except Exception as exc:  # as above: reported in the run's "skipped", with the error
                skipped[PEER_NAMES[peer]] = f"cannot load: {type(exc).__name__}: {exc}"
                logger.warning("peer %s: cannot load: %s", peer.value, exc)
        yield systems, skipped, setup
