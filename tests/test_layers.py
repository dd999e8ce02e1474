"""Layering rules of DESIGN.md §1: the base package and the runtime never import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["mtst", "mtst.runtime", "mtst.runtime.manifest", "mtst.runtime.decode", "mtst.runtime.triton_io"],
)
def test_import_does_not_pull_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'onnx', 'safetensors') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} pulled in {out.stdout.strip()}"
