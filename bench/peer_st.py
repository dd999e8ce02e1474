"""sentence-transformers as a peer: ``SentenceTransformer(dir, backend="torch" | "onnx").encode(texts)``.

The model is built from the checkpoint's encoder (Transformer + Pooling + Normalize) and saved once for
both backends; the ONNX backend exports its graph on first load (kept in the model's ``onnx/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .coldstart import ColdStartSpec
from .peer_base import ORT_OPTIONS_CHILD, PeerFiles, PeerOptions, child_params, ort_session_options
from .reference import TorchReference
from .systems import Batching, Family, System

__all__ = ["SentenceTransformersPeer"]


@dataclass(frozen=True, slots=True)
class SentenceTransformersPeer:
    """``SentenceTransformer(dir, backend=...).encode(texts)`` (which sorts a corpus by length)."""

    name: str
    backend: Literal["torch", "onnx"]

    @property
    def needs(self) -> tuple[str, ...]:
        onnx = ("optimum.onnxruntime",) if self.backend == "onnx" else ()
        return ("torch", "transformers", "sentence_transformers", *onnx)

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        st_dir = workdir / "sentence-transformers"  # one model for both backends
        if not (st_dir / "modules.json").is_file():
            _export_st(ref, hf_dir, st_dir, onnx=False)
        if self.backend == "onnx" and not (st_dir / "onnx").is_dir():
            _export_st(ref, hf_dir, st_dir, onnx=True)
        return PeerFiles(st_dir)

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        from sentence_transformers import SentenceTransformer

        if self.backend == "onnx":
            session_options = ort_session_options(options.threads, options.spinning)
            model_kwargs = {"provider": "CPUExecutionProvider", "session_options": session_options}
            st = SentenceTransformer(str(files.dir), device="cpu", backend="onnx", model_kwargs=model_kwargs)
            providers = list(st[0].auto_model.model.get_providers())
        else:
            st = SentenceTransformer(str(files.dir), device="cpu", backend="torch")
            providers = ["torch cpu"]

        def encode(texts: Sequence[str], bs: int) -> np.ndarray:
            out = st.encode(list(texts), batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
            return np.asarray(out, dtype=np.float32)

        return System(
            name=self.name,
            family=Family.SENTENCE_TRANSFORMERS,
            precision="fp32",
            run_one=lambda text: encode([text], 1),
            run_corpus=lambda texts: encode(texts, options.batch_size),
            embed=lambda texts: encode(texts, 32),
            corpus_batching=Batching.CHAR_SORTED,
            facts={
                "how": f"SentenceTransformer(dir, backend={self.backend!r})"
                f".encode(texts, batch_size={options.batch_size}, normalize_embeddings=True) (sorts by length)",
                "active_providers": providers,
                "threads": options.threads,
                "spinning": options.spinning if self.backend == "onnx" else None,
            },
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        load = (
            ORT_OPTIONS_CHILD + "st = SentenceTransformer(args['dir'], device='cpu', backend='onnx', "
            "model_kwargs={'provider': 'CPUExecutionProvider', 'session_options': so})"
            if self.backend == "onnx"
            else "st = SentenceTransformer(args['dir'], device='cpu', backend='torch')"
        )
        return ColdStartSpec(
            self.name,
            imports=(
                "import torch\nfrom sentence_transformers import SentenceTransformer\n"
                "torch.set_num_threads(args['threads'])"
            ),
            load=load,
            first="st.encode([args['sentence']], normalize_embeddings=True, show_progress_bar=False)",
            params=child_params(sentence, options, dir=str(files.dir)),
        )


def _st_modules() -> tuple[Any, Any, Any]:
    """Normalize, Pooling, Transformer: moved to ``sentence_transformer.modules`` in sentence-transformers 5."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 5
        from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]
    return Normalize, Pooling, Transformer


def _export_st(ref: TorchReference, hf_dir: Path, st_dir: Path, *, onnx: bool) -> None:
    from sentence_transformers import SentenceTransformer

    normalize, pooling_cls, transformer_cls = _st_modules()
    model = ref.model
    transformer = transformer_cls(str(hf_dir), max_seq_length=model.max_seq_len)
    pooling = pooling_cls(model.hidden_size, pooling_mode=model.pooling.value)
    SentenceTransformer(modules=[transformer, pooling, normalize()], device="cpu").save(str(st_dir))
    if onnx:
        # the ONNX backend exports on first load; saving keeps onnx/model.onnx for later loads
        st = SentenceTransformer(
            str(st_dir), backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"}
        )
        st.save(str(st_dir))
