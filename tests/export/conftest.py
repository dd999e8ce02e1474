"""Fixtures of the export tests: a tiny checkpoint on disk (fast), real sentences."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(_tiny_model_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-task model (intent + ner, hidden 32, 4 attention heads, 2 layers) as a checkpoint."""
    path = tmp_path_factory.mktemp("tiny-ck") / "ck"
    _tiny_model_base.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, bench_corpus: Path) -> Path:
    """A fp32 single-layout bundle of the tiny checkpoint (read-only for tests: copy before changing)."""
    from mtst.export import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    export_bundle(tiny_checkpoint, out, parity_data=bench_corpus, accuracy_guard=False)
    return out
