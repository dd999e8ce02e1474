"""Triton Python-backend model written by ``mtst-export --format triton``: raw strings in, per-head
answers out, through ``mtst.runtime`` (the logic lives in ``mtst.runtime.triton_io.TextModel``).

The bundle sits beside this file (``bundle/``) and is verified (every sha256) when the model loads:
a changed or truncated file fails the load, so the model never reports ready. The server's Python
needs the base install of mtst (``pip install mtst``: numpy, onnxruntime, tokenizers; no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from mtst.runtime.triton_io import TextModel, requests_from_triton, responses_to_triton


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.model = TextModel.load(
            Path(args["model_repository"]) / args["model_version"] / "bundle",
            parameters,
            kind=args.get("model_instance_kind", "CPU"),
            device_id=args.get("model_instance_device_id", "0"),
        )
        pb_utils.Logger.log_info(f"{args['model_name']}: serving {self.model.engine!r}")

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = requests_from_triton(requests, pb_utils)
        try:
            answers = self.model.answer(batch)
        except Exception as exc:  # a failing batch answers with errors; the model stays up
            answers = [f"{type(exc).__name__}: {exc}"] * len(batch)
        return responses_to_triton(answers, pb_utils)
