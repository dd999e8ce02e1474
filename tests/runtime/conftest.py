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
