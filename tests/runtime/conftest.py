"""Fixtures of the runtime tests: toy bundles (see toybundle.py) and a set of awkward sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from toybundle import SENTENCES, Toy


@pytest.fixture(scope="session")
def minilm_tokenizer_json(minilm_path: Path) -> Path:
    return minilm_path / "tokenizer.json"


@pytest.fixture(scope="session")
def toy(minilm_tokenizer_json: Path) -> Toy:
    return Toy(minilm_tokenizer_json)


@pytest.fixture(scope="session")
def toy_single(toy: Toy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy.bundle(tmp_path_factory.mktemp("toy-single"), layout="single")


@pytest.fixture(scope="session")
def toy_split(toy: Toy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy.bundle(tmp_path_factory.mktemp("toy-split"), layout="split")


@pytest.fixture
def fresh_single(toy: Toy, tmp_path: Path) -> Path:
    """A single-graph toy bundle of this test's own (free to tamper with)."""
    return toy.bundle(tmp_path / "bundle", layout="single")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


# ---------------------------------------------------------------------------- bundles from the real exporter


@pytest.fixture(scope="session")
def tiny_checkpoint(_tiny_model_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-task model (intent + ner) saved as an mtst checkpoint."""
    path = tmp_path_factory.mktemp("tiny-ckpt") / "ckpt"
    _tiny_model_base.save_pretrained(path)
    return path


def _export(checkpoint: Path, out: Path, corpus: Path, **kwargs) -> Path:
    from mtst.export import export_bundle

    export_bundle(checkpoint, out, parity_data=corpus, accuracy_guard=False, **kwargs)
    return out


@pytest.fixture(scope="session")
def exported_single(
    tiny_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _export(tiny_checkpoint, tmp_path_factory.mktemp("exp") / "single", bench_corpus, quantize="none")


@pytest.fixture(scope="session")
def exported_split(
    tiny_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _export(
        tiny_checkpoint, tmp_path_factory.mktemp("exp") / "split", bench_corpus, quantize="none", split=True
    )
