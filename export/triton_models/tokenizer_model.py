"""Triton Python-backend model written by ``mtst-export --format triton``: the tokenizer step of the
``<name>_ensemble`` model (texts -> the int64 inputs of ``<name>_onnx``, plus ``word_ids`` and
``offsets`` for decoding token heads). The logic lives in ``mtst.runtime.triton_io.TokenizeStep``;
``tokenizer.json`` beside this file is checked against the sha256 in config.pbtxt when it loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from mtst.runtime.triton_io import TokenizeStep, requests_from_triton, responses_to_triton


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        self.step = TokenizeStep.load(here / "tokenizer.json", parameters)

    def execute(self, requests: list[Any]) -> list[Any]:
        return responses_to_triton(self.step.answer(requests_from_triton(requests, pb_utils)), pb_utils)
