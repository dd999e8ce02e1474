"""OpenVINO as a peer, through optimum-intel's ``OVModelForFeatureExtraction`` (OpenVINO IR), in its own
environment.

As optimum-intel documents it: ``OVModelForFeatureExtraction.from_pretrained(hf_dir, export=True)``
writes the IR; ``quantization_config=OVWeightQuantizationConfig(bits=8)`` makes the int8 weight-only
IR; ``OVQuantizer(...).quantize(calibration_dataset, ov_config=OVConfig(quantization_config=
OVQuantizationConfig()))`` the NNCF static int8 IR (SmoothQuant and bias correction included),
calibrated on the tasks' *training* sentences (never a test split). Loaded with ``device="CPU"`` and
``ov_config={"INFERENCE_NUM_THREADS": threads}``; the fp32 IR runs twice, at OpenVINO's default
inference precision (bf16 on CPUs with AVX-512 BF16 or AMX) and with ``INFERENCE_PRECISION_HINT=f32``.

optimum-intel wants another optimum than ``mtst[compare]``'s optimum-onnx, so OpenVINO lives in an
environment of its own (``bash scripts/openvino-env.sh``): every OpenVINO step runs in a process of that
interpreter (:mod:`mtst.bench.peer_worker`), named by ``MTST_BENCH_OPENVINO_PYTHON`` -- or this
interpreter, when it has openvino and optimum-intel itself.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
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

__all__ = ["ENV_PYTHON", "OpenVINOBackend", "OpenVINOPeer", "export_ir", "open_openvino", "openvino_python"]

ENV_PYTHON = "MTST_BENCH_OPENVINO_PYTHON"
_HINT = (
    "make it with `bash scripts/openvino-env.sh` and set MTST_BENCH_OPENVINO_PYTHON=.venv-openvino/bin/python"
)


def openvino_python() -> str:
    """The interpreter whose environment has openvino, nncf and optimum-intel (PeerUnavailable if none)."""
    python = os.environ.get(ENV_PYTHON)
    if not python:
        here = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf", "optimum"))
        if not here or importlib.util.find_spec("optimum.intel") is None:
            raise PeerUnavailable(
                f"not installed: openvino, nncf, optimum-intel (an environment of their own: {_HINT})"
            )
        python = sys.executable
    problem = _probe(python)
    if problem:
        raise PeerUnavailable(f"{ENV_PYTHON}={python}: {problem}; {_HINT}")
    return python


@functools.lru_cache(maxsize=4)
def _probe(python: str) -> str | None:
    """Why ``python`` cannot run the OpenVINO peers (None: it can)."""
    try:
        probe = subprocess.run(
            [python, "-c", "import openvino, nncf, optimum.intel, mtst.bench.peer_worker"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        return f"cannot run it ({exc.strerror})"
    if probe.returncode != 0:
        tail = (probe.stderr or "").strip().splitlines()[-1:] or [f"exit {probe.returncode}"]
        return f"cannot import openvino/optimum-intel/mtst there ({tail[0]})"
    return None


# ---------------------------------------------------------------------------------------------- in the OpenVINO process
def export_ir(hf_dir: str, out: str, mode: str, calibration: Sequence[str] = (), max_len: int = 128) -> str:
    """Write the IR of ``mode`` (``fp32``, ``int8-weights``, ``int8-static``) to ``out``; returns ``out``."""
    from optimum.intel import OVModelForFeatureExtraction
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if mode == "fp32":
        model = OVModelForFeatureExtraction.from_pretrained(hf_dir, export=True, compile=False)
        model.save_pretrained(out)
    elif mode == "int8-weights":
        from optimum.intel import OVWeightQuantizationConfig

        config = OVWeightQuantizationConfig(bits=8)
        model = OVModelForFeatureExtraction.from_pretrained(
            hf_dir, export=True, compile=False, quantization_config=config
        )
        model.save_pretrained(out)
    elif mode == "int8-static":
        import nncf
        from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

        model = OVModelForFeatureExtraction.from_pretrained(hf_dir, export=True, compile=False)
        items = [
            dict(tokenizer(s, truncation=True, max_length=max_len, return_tensors="np")) for s in calibration
        ]
        OVQuantizer.from_pretrained(model).quantize(
            calibration_dataset=nncf.Dataset(items),
            save_directory=out,
            ov_config=OVConfig(quantization_config=OVQuantizationConfig()),
        )
    else:
        raise ValueError(f"export_ir: mode {mode!r}: expected fp32, int8-weights or int8-static")
    tokenizer.save_pretrained(out)
    return out


class OpenVINOBackend:
    """``OVModelForFeatureExtraction`` on CPU + the model's tokenizer + mean pooling."""

    def __init__(self, model_dir: str, threads: int, precision_hint: str | None, max_len: int) -> None:
        import openvino
        from optimum.intel import OVModelForFeatureExtraction
        from transformers import AutoTokenizer

        ov_config = {"INFERENCE_NUM_THREADS": str(threads)}
        if precision_hint:
            ov_config["INFERENCE_PRECISION_HINT"] = precision_hint
        self.model = OVModelForFeatureExtraction.from_pretrained(model_dir, device="CPU", ov_config=ov_config)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_len = max_len
        actual = self.model.request.get_property("INFERENCE_PRECISION_HINT")
        self.facts: dict[str, Any] = {
            "openvino": openvino.__version__,
            "ov_config": ov_config,
            "inference_precision": actual.get_type_name()
            if hasattr(actual, "get_type_name")
            else str(actual),
        }

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="np"
        )
        hidden = self.model(**enc).last_hidden_state
        return mean_pool(np.asarray(hidden, dtype=np.float32), enc["attention_mask"].sum(1).tolist())


def open_openvino(**params: Any) -> OpenVINOBackend:
    return OpenVINOBackend(params["dir"], params["threads"], params["precision_hint"], params["max_len"])


# ---------------------------------------------------------------------------------------------- the peer
@dataclass(frozen=True, slots=True)
class OpenVINOPeer:
    name: str
    ir: str  # fp32, int8-weights, int8-static
    precision_hint: str | None = None  # INFERENCE_PRECISION_HINT; None: OpenVINO's default
    needs: tuple[str, ...] = ("torch", "transformers")  # here; OpenVINO itself is checked in its interpreter

    def prepare(self, ref: TorchReference, hf_dir: Path, workdir: Path) -> PeerFiles:
        from .peer_worker import call_in

        python = openvino_python()
        out = workdir / f"openvino-{self.ir}"
        if not (out / "openvino_model.xml").is_file():
            calibration = _calibration(ref) if self.ir == "int8-static" else []
            params = {"hf_dir": str(hf_dir), "out": str(out), "mode": self.ir, "calibration": calibration}
            call_in(
                python,
                "mtst.bench.peer_openvino:export_ir",
                params | {"max_len": ref.model.max_seq_len},
                name=self.name,
            )
        return PeerFiles(out)

    def load(self, files: PeerFiles, ref: TorchReference, options: PeerOptions) -> System:
        from .peer_worker import PeerProcess

        params = {
            "dir": str(files.dir),
            "threads": options.threads,
            "precision_hint": self.precision_hint,
            "max_len": ref.model.max_seq_len,
            "batch_size": options.batch_size,
        }
        proc = PeerProcess(
            self.name,
            python=openvino_python(),
            opener="mtst.bench.peer_openvino:open_openvino",
            params=params,
        )
        precision = {"fp32": "fp32", "int8-weights": "int8 weight-only", "int8-static": "int8 static"}[
            self.ir
        ]
        if self.ir == "fp32" and self.precision_hint is None:
            precision = f"fp32 IR, {proc.facts.get('inference_precision', 'default')} inference"
        how = (
            f"OVModelForFeatureExtraction({self.ir} IR, device='CPU', ov_config="
            f"{proc.facts.get('ov_config')}) + tokenizer(padding=True) + mean pooling, in its own process"
        )
        return embedding_system(
            self.name,
            family=Family.OPENVINO,
            precision=precision,
            embed=proc.embed,
            batch_size=options.batch_size,
            facts={"how": how, "threads": options.threads, "active_providers": ["CPU"], "python": proc.python}
            | proc.facts,
            run_one=proc.run_one,
            run_corpus=proc.run_corpus,
            run_batches=proc.run_batches,
            embed_all=proc.embed,
        )

    def cold_start(self, files: PeerFiles, sentence: str, options: PeerOptions) -> ColdStartSpec:
        config = "{'INFERENCE_NUM_THREADS': str(args['threads'])}"
        if self.precision_hint:
            config = f"{{'INFERENCE_NUM_THREADS': str(args['threads']), 'INFERENCE_PRECISION_HINT': {self.precision_hint!r}}}"
        return ColdStartSpec(
            self.name,
            imports="from optimum.intel import OVModelForFeatureExtraction\nfrom transformers import AutoTokenizer",
            load=(
                f"model = OVModelForFeatureExtraction.from_pretrained(args['dir'], device='CPU', ov_config={config})\n"
                "tok = AutoTokenizer.from_pretrained(args['dir'])"
            ),
            first=(
                "enc = tok([args['sentence']], padding=True, truncation=True, return_tensors='np')\n"
                "h = model(**enc).last_hidden_state; e = h.mean(1)"
            ),
            params=child_params(sentence, options, dir=str(files.dir)),
            python=openvino_python(),
        )


def _calibration(ref: TorchReference) -> list[str]:
    """The tasks' training sentences that mtst-export calibrates int8-static on (never a test split)."""
    from mtst.checkpoint import read_meta
    from mtst.export.sentences import calibration_from_config

    meta = read_meta(ref.checkpoint)
    sentences = calibration_from_config(meta, dict(ref.model.tasks))
    if not sentences:
        raise PeerUnavailable(
            f"{ref.checkpoint}: no training config in the checkpoint, so no training sentences to calibrate "
            "OpenVINO's static int8 on"
        )
    return sentences
