"""Optimum as a peer: ``ORTModelForFeatureExtraction`` (fp32, or ``ORTQuantizer`` avx2 dynamic int8).

The fp32 export (``from_pretrained(hf_dir, export=True)``) is made once per run and shared: the int8
peers quantize it, fastembed loads it (:mod:`mtst.bench.peer_fastembed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coldstart import ColdStartSpec
from .peer_base import ORT_OPTIONS_CHILD, PeerFiles, PeerOptions, child_params, ort_session_options
from .reference import TorchReference
from .systems import Batching, Family, System

__all__ = ["FP32_KEY", "OptimumPeer", "export_optimum_fp32"]

FP32_KEY = "optimum-fp32"


@dataclass(frozen=True, slots=True)
class OptimumPeer:
    """Optimum's ``ORTModelForFeatureExtraction`` (fp32, or ``ORTQuantizer`` avx2 dynamic int8) + pooling."""

    key: str  # its --compare name, also the folder of its export
    name: str
    per_channel: bool | None  # None: fp32, not quantized
    needs: tuple[str, ...] = ("torch", "transformers", "optimum.onnxruntime")

    @property
    def quantization(self) -> str | None:
        if self.per_channel is None:
            return None
        return f"AutoQuantizationConfig.avx2(is_static=False, per_channel={self.per_channel})"

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        directory, file_name = _export_optimum(ref, hf_dir, workdir, self)
        return PeerFiles(directory, file_name)

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        import torch
        from optimum.onnxruntime import ORTModelForFeatureExtraction
        from transformers import AutoTokenizer

        from mtst.pooling import pool_and_normalize

        model = ORTModelForFeatureExtraction.from_pretrained(
            str(files.dir),
            file_name=files.file,
            provider="CPUExecutionProvider",
            session_options=ort_session_options(options.threads, options.spinning),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(files.dir))
        pooling, max_len, size = ref.model.pooling, ref.model.max_seq_len, options.batch_size

        def embed(texts: Sequence[str]) -> np.ndarray:
            enc = tokenizer(
                list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
                return pool_and_normalize(hidden, enc["attention_mask"], pooling).numpy()

        def run_corpus(texts: Sequence[str]) -> None:
            for i in range(0, len(texts), size):
                embed(texts[i : i + size])

        quantized = "" if self.per_channel is None else ", then ORTQuantizer avx2 dynamic int8"
        return System(
            name=self.name,
            family=Family.OPTIMUM,
            precision="fp32" if self.per_channel is None else self.key.removeprefix("optimum-"),
            run_one=lambda text: embed([text]),
            run_corpus=run_corpus,
            embed=embed,
            corpus_batching=Batching.IN_ORDER,
            facts={
                "how": f"ORTModelForFeatureExtraction (export=True from the checkpoint's encoder{quantized}), "
                f"tokenizer(padding=True) + {pooling.value} pooling + L2 normalize",
                "quantization": self.quantization,
                "active_providers": list(model.model.get_providers()),
                "threads": options.threads,
                "spinning": options.spinning,
            },
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        return ColdStartSpec(
            self.name,
            imports=(
                "import torch\nfrom optimum.onnxruntime import ORTModelForFeatureExtraction\n"
                "from transformers import AutoTokenizer\ntorch.set_num_threads(args['threads'])"
            ),
            load=ORT_OPTIONS_CHILD
            + (
                "model = ORTModelForFeatureExtraction.from_pretrained(args['dir'], file_name=args['file'], "
                "provider='CPUExecutionProvider', session_options=so)\n"
                "tok = AutoTokenizer.from_pretrained(args['dir'])"
            ),
            first=(
                "enc = tok([args['sentence']], padding=True, truncation=True, return_tensors='pt')\n"
                "with torch.inference_mode():\n"
                "    h = model(**enc).last_hidden_state\n"
                "    m = enc['attention_mask'].unsqueeze(-1).to(h.dtype)\n"
                "    torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)"
            ),
            params=child_params(sentence, options, dir=str(files.dir), file=files.file or ""),
        )


def export_optimum_fp32(ref: TorchReference, hf_dir: Path, workdir: Path) -> Path:
    """The folder of the fp32 Optimum export (``model.onnx`` + tokenizer), made once per run."""
    return _export_optimum(ref, hf_dir, workdir, OptimumPeer(FP32_KEY, "optimum fp32", per_channel=None))[0]


def _export_optimum(ref: TorchReference, hf_dir: Path, workdir: Path, kind: OptimumPeer) -> tuple[Path, str]:
    """The fp32 export (shared by the int8 peers, made once), then the peer's quantized copy."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32_dir = workdir / FP32_KEY
    if not (fp32_dir / "model.onnx").is_file():
        ORTModelForFeatureExtraction.from_pretrained(str(hf_dir), export=True).save_pretrained(str(fp32_dir))
        ref.tokenizer.save_pretrained(str(fp32_dir))
    if kind.per_channel is None:
        return fp32_dir, "model.onnx"
    out = workdir / kind.key
    if (out / "model_quantized.onnx").is_file():
        return out, "model_quantized.onnx"
    qconfig = AutoQuantizationConfig.avx2(is_static=False, per_channel=kind.per_channel)
    ORTQuantizer.from_pretrained(str(fp32_dir)).quantize(save_dir=str(out), quantization_config=qconfig)
    ref.tokenizer.save_pretrained(str(out))
    return out, "model_quantized.onnx"
