"""CTranslate2 as a peer: the encoder converted with ``TransformersConverter``, run by ``ctranslate2.Encoder``.

As its documentation shows for BERT-style encoders: ``TransformersConverter(hf_dir).convert(out,
quantization="int8" | "float32")``, then ``Encoder(out, device="cpu", compute_type=...,
intra_threads=N).forward_batch(token ids)``; the sentence embedding is the mean of the last hidden
states over each sentence's tokens, L2-normalized (what the checkpoint's pooling does).

CTranslate2 picks its CPU instruction set by itself when it loads (on AMD CPUs it stays on AVX2 even
where AVX-512 exists); ``CT2_FORCE_CPU_ISA`` forces one, but only before the library loads, so the
forced variant runs in a process of its own (:mod:`mtst.bench.peer_worker`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .coldstart import ColdStartSpec
from .peer_base import PeerFiles, PeerOptions, PeerUnavailable, child_params, embedding_system, mean_pool
from .reference import TorchReference
from .systems import Family, System

__all__ = ["CTranslate2Backend", "CTranslate2Peer", "best_cpu_isa", "open_ctranslate2"]


def best_cpu_isa(flags: Sequence[str]) -> str | None:
    """The widest instruction set CTranslate2 can be forced to on this CPU (``CT2_FORCE_CPU_ISA``)."""
    if {"avx512f", "avx512bw", "avx512vl"} <= set(flags):
        return "AVX512"
    if "avx2" in flags:
        return "AVX2"
    return None


class CTranslate2Backend:
    """``ctranslate2.Encoder`` + the model's tokenizer + mean pooling."""

    def __init__(
        self, model_dir: str, tokenizer_dir: str, compute_type: str, threads: int, max_len: int
    ) -> None:
        import ctranslate2
        from tokenizers import Tokenizer

        self.encoder = ctranslate2.Encoder(
            model_dir, device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
        )
        self.tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_len)
        self.facts: dict[str, Any] = {
            "compute_type": compute_type,
            "ctranslate2": ctranslate2.__version__,
            "threads": threads,
        }

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        out = self.encoder.forward_batch(ids)
        return mean_pool(np.asarray(out.last_hidden_state), [len(x) for x in ids])


def open_ctranslate2(**params: Any) -> CTranslate2Backend:
    """The backend of a worker process (its parameters are JSON)."""
    return CTranslate2Backend(
        params["dir"], params["tokenizer_dir"], params["compute_type"], params["threads"], params["max_len"]
    )


@dataclass(frozen=True, slots=True)
class CTranslate2Peer:
    name: str
    quantization: str  # "int8" or "float32" (TransformersConverter and Encoder compute type)
    force_isa: bool = False  # run with CT2_FORCE_CPU_ISA = the best ISA of this CPU, in its own process
    needs: tuple[str, ...] = ("torch", "transformers", "ctranslate2")

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        from ctranslate2.converters import TransformersConverter

        out = workdir / f"ctranslate2-{self.quantization}"
        if not (out / "model.bin").is_file():
            TransformersConverter(str(hf_dir)).convert(str(out), quantization=self.quantization, force=True)
        return PeerFiles(out)

    def _params(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> dict[str, Any]:
        return {
            "dir": str(files.dir),
            "tokenizer_dir": str(files.dir.parent / "hf-encoder"),
            "compute_type": self.quantization,
            "threads": options.threads,
            "max_len": ref.model.max_seq_len,
            "batch_size": options.batch_size,
        }

    def _isa_env(self) -> dict[str, str]:
        from .system import cpu_info

        isa = best_cpu_isa(cpu_info()[1])
        if isa is None:
            raise PeerUnavailable("no AVX2 or AVX-512 on this CPU to force")
        return {"CT2_FORCE_CPU_ISA": isa}

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        params = self._params(files, ref, options)
        how = (
            f"TransformersConverter(quantization={self.quantization!r}) + Encoder(compute_type="
            f"{self.quantization!r}, intra_threads={options.threads}).forward_batch(ids) + mean pooling"
        )
        facts: dict[str, Any] = {"how": how, "threads": options.threads, "active_providers": ["cpu"]}
        precision = "int8" if self.quantization == "int8" else "fp32"
        if not self.force_isa:
            backend = CTranslate2Backend(
                params["dir"], params["tokenizer_dir"], self.quantization, options.threads, params["max_len"]
            )
            return embedding_system(
                self.name,
                family=Family.CTRANSLATE2,
                precision=precision,
                embed=backend.embed,
                batch_size=options.batch_size,
                facts=facts | backend.facts | {"cpu_isa": "as the library picks it"},
            )
        from .peer_worker import PeerProcess

        env = self._isa_env()
        proc = PeerProcess(
            self.name,
            python=sys.executable,
            opener="mtst.bench.peer_ct2:open_ctranslate2",
            params=params,
            env=env,
        )
        return embedding_system(
            self.name,
            family=Family.CTRANSLATE2,
            precision=precision,
            embed=proc.embed,
            batch_size=options.batch_size,
            facts=facts
            | proc.facts
            | {"cpu_isa": f"CT2_FORCE_CPU_ISA={env['CT2_FORCE_CPU_ISA']}", "process": "own"},
            run_one=proc.run_one,
            run_corpus=proc.run_corpus,
            run_batches=proc.run_batches,
            embed_all=proc.embed,
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        params = child_params(sentence, options, dir=str(files.dir), tok=str(files.dir.parent / "hf-encoder"))
        return ColdStartSpec(
            self.name,
            imports="import ctranslate2, numpy as np\nfrom tokenizers import Tokenizer",
            load=(
                "enc = ctranslate2.Encoder(args['dir'], device='cpu', compute_type=args['ct'], "
                "intra_threads=args['threads'], inter_threads=1)\n"
                "tok = Tokenizer.from_file(args['tok'] + '/tokenizer.json'); tok.no_padding()"
            ),
            first=(
                "ids = [tok.encode(args['sentence']).ids]\n"
                "h = np.asarray(enc.forward_batch(ids).last_hidden_state)\n"
                "e = h.mean(1); e / np.linalg.norm(e, axis=1, keepdims=True)"
            ),
            params=params | {"ct": self.quantization},
            env=self._isa_env() if self.force_isa else {},
        )
