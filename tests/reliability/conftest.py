"""Fixtures of the bundle-loader reliability tests: one real bundle from the exporter, and clones of it.

``rel_bundle`` is the tiny two-task model (tests/conftest.py: a random 2-layer BERT with the real
MiniLM tokenizer) exported by ``mtst.export.export_bundle`` (fp32, single graph): a real bundle with
every file a real export writes. Tests never write to it; they work on :func:`clone` copies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bundle_fixtures import OpenRecorder, clone


@pytest.fixture(scope="session")
def rel_bundle(_tiny_model_base, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mtst.export import export_bundle

    root = tmp_path_factory.mktemp("rel-bundle")
    ckpt = root / "ckpt"
    _tiny_model_base.save_pretrained(ckpt)
    out = root / "bundle"
    export_bundle(ckpt, out, parity_data=bench_corpus, accuracy_guard=False, quantize="none")
    return out


@pytest.fixture
def bundle_copy(rel_bundle: Path, tmp_path: Path) -> Path:
    """A clone of the real bundle (hard links; replace files with _bundle_fixtures.put) for one test."""
    return clone(rel_bundle, tmp_path / "bundle")


@pytest.fixture(scope="session")
def open_recorder() -> OpenRecorder:
    return OpenRecorder.get()
