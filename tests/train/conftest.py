"""Fixtures of the training-machinery tests: small real data files and run configs on the tiny BERT.

``tiny_data``: an intent CSV (3 labels, 120 rows) and CoNLL NER files (PER/LOC, IOB2) written once per
session. ``make_config(**overrides)``: a validated TrainConfig on the tiny encoder and that data,
writing into the test's tmp_path; nested keys are given as dicts (``optim={"max_steps": 10}``).
"""

from __future__ import annotations

import copy
import csv
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

INTENTS = {
    "greet": ["hello there", "hi friend", "good morning to you", "hey how are you", "nice to meet you"],
    "bye": ["goodbye now", "see you later", "bye bye", "farewell my friend", "talk to you soon"],
    "thanks": ["thanks a lot", "thank you so much", "many thanks", "cheers for that", "I appreciate it"],
}
NAMES = ["Anna", "Bob", "Carla", "Dieter", "Emil"]
PLACES = ["Berlin", "Paris", "Rome", "Oslo", "Lima"]
FILLER = ["the", "cat", "sat", "on", "a", "mat", "today", "we", "met", "went"]


def _ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    tokens: list[str] = []
    tags: list[str] = []
    for _ in range(rng.randint(1, 3)):
        c = rng.random()
        if c < 0.3:
            tokens.append(rng.choice(NAMES))
            tags.append("B-PER")
        elif c < 0.4:
            tokens += ["Mary", "Smith"]
            tags += ["B-PER", "I-PER"]
        elif c < 0.7:
            tokens += ["in", rng.choice(PLACES)]
            tags += ["O", "B-LOC"]
        else:
            tokens += rng.sample(FILLER, 3)
            tags += ["O"] * 3
    return tokens, tags


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(0)
    rows = []
    for label, texts in INTENTS.items():
        for _ in range(40):
            rows.append(
                ((rng.choice(texts) + " " + rng.choice(["", "please", "again", "Anna"])).strip(), label)
            )
    rng.shuffle(rows)
    with open(root / "intent.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    for split, n in (("train", 150), ("valid", 40), ("test", 40)):
        with open(root / f"ner_{split}.txt", "w", encoding="utf-8") as f:
            f.write("-DOCSTART- -X- -X- O\n\n")
            for _ in range(n):
                tokens, tags = _ner_sentence(rng)
                f.writelines(f"{t} X X {g}\n" for t, g in zip(tokens, tags, strict=True))
                f.write("\n")
    return root


def base_config(encoder: Path, data: Path, out: Path) -> dict[str, Any]:
    return {
        "run_id": "tiny",
        "seed": 3,
        "backbone": str(encoder),
        "max_seq_len": 64,
        "data_root": str(data),
        "output_dir": str(out),
        "log_every": 5,
        "tasks": [
            {
                "name": "intent",
                "kind": "sentence_classification",
                "train": "intent.csv",
                "validation_fraction": 0.2,
            },
            {
                "name": "ner",
                "kind": "token_classification",
                "train": "ner_train.txt",
                "validation": "ner_valid.txt",
                "test": "ner_test.txt",
            },
        ],
        "optim": {"batch_size": 16, "max_steps": 20, "encoder_lr": 1e-3, "head_lr": 5e-3, "warmup_steps": 2},
        "eval": {"every_steps": 10},
        "checkpoint": {"every_steps": 5, "keep_last": 2},
    }


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


@pytest.fixture(scope="session")
def tiny_config(tiny_encoder_dir: Path, tiny_data: Path) -> Callable[..., dict[str, Any]]:
    """``tiny_config(out, **overrides)``: the raw config writing into ``out`` (for fixtures wider than a test)."""

    def make(out: Path, **overrides: Any) -> dict[str, Any]:
        return _merge(base_config(tiny_encoder_dir, tiny_data, out), overrides)

    return make


@pytest.fixture
def config_dict(tiny_encoder_dir: Path, tiny_data: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """The raw config mapping with overrides merged in (dicts merge, other values replace)."""

    def make(**overrides: Any) -> dict[str, Any]:
        return _merge(base_config(tiny_encoder_dir, tiny_data, tmp_path / "runs"), overrides)

    return make


@pytest.fixture
def make_config(config_dict: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    from mtst.config import config_from_dict

    def make(**overrides: Any) -> Any:
        return config_from_dict(config_dict(**overrides))

    return make
