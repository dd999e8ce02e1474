"""fastembed as a peer: ``TextEmbedding(model_name, specific_model_path=dir).embed(texts)``, offline.

fastembed runs models from its own list, downloaded from a hub; a model of one's own is registered with
``TextEmbedding.add_custom_model`` (mean pooling, normalization, dimension, ONNX file name) and loaded
from a local folder with ``specific_model_path``, which needs no network. The folder holds the
checkpoint's encoder as fp32 ONNX (Optimum's export, the one the ``optimum-fp32`` peer loads) and its
tokenizer files, with ``model_max_length`` set to the checkpoint's ``max_seq_len``.

fastembed sets ONNX Runtime's intra- and inter-op threads to ``threads`` and leaves spinning at ONNX
Runtime's default (on): the peer runs as its users run it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coldstart import ColdStartSpec
from .peer_base import PeerFiles, PeerOptions, child_params, embedding_system
from .reference import TorchReference
from .systems import Family, System

__all__ = ["FASTEMBED_MODEL", "FastEmbedPeer"]

FASTEMBED_MODEL = "mtst-bench/checkpoint-encoder"  # the name the custom model is registered under
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def _register(dim: int) -> None:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    if any(m["model"] == FASTEMBED_MODEL for m in TextEmbedding.list_supported_models()):
        return
    TextEmbedding.add_custom_model(
        model=FASTEMBED_MODEL,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=FASTEMBED_MODEL),  # never fetched: specific_model_path is given
        dim=dim,
        model_file="model.onnx",
    )


@dataclass(frozen=True, slots=True)
class FastEmbedPeer:
    name: str = "fastembed fp32"
    needs: tuple[str, ...] = ("torch", "transformers", "optimum.onnxruntime", "fastembed")

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        from .peer_optimum import export_optimum_fp32

        onnx_dir = export_optimum_fp32(ref, hf_dir, workdir)
        out = workdir / "fastembed"
        out.mkdir(exist_ok=True)
        shutil.copyfile(onnx_dir / "model.onnx", out / "model.onnx")
        for name in _TOKENIZER_FILES:
            if (onnx_dir / name).is_file():
                shutil.copyfile(onnx_dir / name, out / name)
        config_path = out / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["model_max_length"] = ref.model.max_seq_len
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return PeerFiles(out, "model.onnx")

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        from fastembed import TextEmbedding

        _register(ref.model.hidden_size)
        model = TextEmbedding(
            FASTEMBED_MODEL,
            specific_model_path=str(files.dir),
            threads=options.threads,
            providers=["CPUExecutionProvider"],
        )
        size = options.batch_size

        def embed(texts: Sequence[str]) -> np.ndarray:
            return np.stack(list(model.embed(list(texts), batch_size=size))).astype(np.float32)

        def corpus(texts: Sequence[str]) -> None:
            for _ in model.embed(list(texts), batch_size=size):
                pass

        return embedding_system(
            self.name,
            family=Family.FASTEMBED,
            precision="fp32",
            embed=embed,
            batch_size=size,
            run_corpus=corpus,
            facts={
                "how": f"TextEmbedding.add_custom_model(mean pooling, normalized) + TextEmbedding(model, "
                f"specific_model_path=dir, threads={options.threads}).embed(texts, batch_size={size})",
                "threads": options.threads,
                "spinning": "ONNX Runtime's default (fastembed does not set it)",
                "active_providers": ["CPUExecutionProvider"],
            },
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        return ColdStartSpec(
            self.name,
            imports=(
                "from fastembed import TextEmbedding\n"
                "from fastembed.common.model_description import ModelSource, PoolingType"
            ),
            load=(
                "TextEmbedding.add_custom_model(model=args['model'], pooling=PoolingType.MEAN, normalization=True, "
                "sources=ModelSource(hf=args['model']), dim=args['dim'], model_file='model.onnx')\n"
                "model = TextEmbedding(args['model'], specific_model_path=args['dir'], threads=args['threads'], "
                "providers=['CPUExecutionProvider'])"
            ),
            first="list(model.embed([args['sentence']]))",
            params=child_params(sentence, options, dir=str(files.dir), model=FASTEMBED_MODEL)
            | {"dim": _dim(files)},
        )


def _dim(files: PeerFiles) -> int:
    config = json.loads((files.dir / "config.json").read_text(encoding="utf-8"))
    return int(config["hidden_size"])
