"""Fixtures and helpers of the text-side reliability tests (adversarial text, threads, soak).

Import the fixtures a test module uses explicitly (``from _fixtures_text import text_bundle``): this
folder's conftest.py belongs to the bundle-side suite.

- ``text_bundle``: the tiny two-task model (intent + ner, heads widened so that labels have margins)
  exported by the real exporter as one split bundle with fp32, int8 (= int8-static-cpu) and
  int8-dynamic variants;
- ``single_bundle``: the same model as one fp32 ``model.onnx``;
- ``other_heads``: a heads-only bundle for the same encoder with other head weights (``swap_heads``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture(scope="session")
def text_checkpoint(_tiny_model_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    model = copy.deepcopy(_tiny_model_base)
    with torch.no_grad():  # untrained heads have tiny margins: widen them like training does
        for p in model.heads.parameters():
            p.mul_(8.0)
    path = tmp_path_factory.mktemp("rel-text-ckpt") / "ckpt"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def text_bundle(text_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mtst.export import export_bundle

    out = tmp_path_factory.mktemp("rel-text-split") / "bundle"
    export_bundle(
        text_checkpoint,
        out,
        quantize=["none", "int8", "int8-dynamic"],
        split=True,
        parity_data=bench_corpus,
        accuracy_guard=False,
    )
    return out


@pytest.fixture(scope="session")
def single_bundle(
    text_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from mtst.export import export_bundle

    out = tmp_path_factory.mktemp("rel-text-single") / "bundle"
    export_bundle(text_checkpoint, out, quantize="none", parity_data=bench_corpus, accuracy_guard=False)
    return out


@pytest.fixture(scope="session")
def other_heads(
    _tiny_model_base, text_bundle: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Heads-only bundle for ``text_bundle``'s encoder with new head weights (labels differ from its own)."""
    import torch

    from mtst.export import export_heads

    model = copy.deepcopy(_tiny_model_base)  # the same encoder weights as text_bundle's
    torch.manual_seed(11)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_(0, 3.0)
    tmp = tmp_path_factory.mktemp("rel-text-heads")
    ckpt = model.save_pretrained(tmp / "ckpt")
    export_heads(ckpt, tmp / "heads", encoder_from=text_bundle, parity_data=bench_corpus)
    return tmp / "heads"


@pytest.fixture(scope="session")
def bench_corpus_lines(bench_corpus: Path) -> list[str]:
    return [s for s in (line.strip() for line in bench_corpus.read_text("utf-8").splitlines()) if s]


class Hang(AssertionError):
    """A call that did not return within its bound."""


def bounded(fn: Callable[[], T], seconds: float) -> tuple[T | None, BaseException | None, float]:
    """Run ``fn()`` on a daemon thread: (result, exception, seconds), Hang when it outlives ``seconds``.

    A daemon thread, not a pool: a call that never returns must not keep the test process alive.
    Every exception is caught, BaseException too (a tokenizers PanicException is one).
    """
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t0 = time.perf_counter()
    worker = threading.Thread(target=call, daemon=True, name="bounded-call")
    worker.start()
    worker.join(seconds)
    took = time.perf_counter() - t0
    if worker.is_alive():
        raise Hang(f"call still running after {seconds:.0f} s")
    return box.get("result"), box.get("error"), took


def answers_match(got: Any, want: Any, *, tol: float = 1e-4) -> str | None:
    """None when two Predictions say the same: same text, heads, labels and entity spans, scores within
    ``tol``, embeddings (when both have one) at cosine >= 0.99999; else what differs."""
    from mtst.runtime.results import SentenceLabel

    if got.text != want.text:
        return f"text {got.text[:30]!r} != {want.text[:30]!r}"
    if list(got.heads) != list(want.heads):
        return f"heads {list(got.heads)} != {list(want.heads)}"
    for name, a in got.heads.items():
        b = want.heads[name]
        if isinstance(a, SentenceLabel):
            if a.label != b.label or any(abs(a.scores[k] - b.scores[k]) > tol for k in b.scores):
                return f"{name}: {a.label} {a.scores} != {b.label} {b.scores}"
        else:
            spans_a = [(e.start, e.end, e.label) for e in a.entities]
            spans_b = [(e.start, e.end, e.label) for e in b.entities]
            if spans_a != spans_b or any(
                abs(x.score - y.score) > tol for x, y in zip(a.entities, b.entities, strict=True)
            ):
                return f"{name}: {a.entities} != {b.entities}"
    if got.embedding is not None and want.embedding is not None:
        import numpy as np

        cos = float(np.dot(got.embedding, want.embedding))
        if cos < 0.99999:
            return f"embedding cosine {cos:.7f}"
    return None


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An intent CSV (3 labels, 90 rows) and CoNLL NER files (PER/LOC), written once per session."""
    import csv
    import random

    root = tmp_path_factory.mktemp("rel-text-data")
    rng = random.Random(0)
    intents = {
        "greet": ["hello there", "hi friend", "good morning", "hey how are you"],
        "bye": ["goodbye now", "see you later", "bye bye", "talk to you soon"],
        "thanks": ["thanks a lot", "thank you so much", "many thanks", "I appreciate it"],
    }
    rows = [
        (rng.choice(texts) + rng.choice(["", " please", " Anna"]), label)
        for label, texts in intents.items()
        for _ in range(30)
    ]
    rng.shuffle(rows)
    with open(root / "intent.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    names, places = ["Anna", "Bob", "Carla"], ["Berlin", "Paris", "Rome"]
    for split, n in (("train", 90), ("valid", 30), ("test", 30)):
        with open(root / f"ner_{split}.txt", "w", encoding="utf-8") as f:
            f.write("-DOCSTART- -X- -X- O\n\n")
            for _ in range(n):
                words = [
                    (rng.choice(names), "B-PER"),
                    ("went", "O"),
                    ("to", "O"),
                    (rng.choice(places), "B-LOC"),
                ]
                f.writelines(f"{w} X X {t}\n" for w, t in words[: rng.randint(2, 4)])
                f.write("\n")
    return root


def train_config(encoder: Path, data: Path, *, max_steps: int) -> dict[str, Any]:
    """A tiny two-task run: a log line every step, a checkpoint every 2 steps, dropout and augmentation
    on (their random state must come back on resume)."""
    return {
        "run_id": "kill",
        "seed": 5,
        "backbone": str(encoder),
        "max_seq_len": 32,
        "data_root": str(data),
        "log_every": 1,
        "tasks": [
            {
                "name": "intent",
                "kind": "sentence_classification",
                "train": "intent.csv",
                "validation_fraction": 0.2,
                "augment": [{"name": "word_swap", "prob": 0.5}],
            },
            {
                "name": "ner",
                "kind": "token_classification",
                "train": "ner_train.txt",
                "validation": "ner_valid.txt",
                "test": "ner_test.txt",
            },
        ],
        "optim": {
            "batch_size": 8,
            "max_steps": max_steps,
            "encoder_lr": 1e-3,
            "head_lr": 5e-3,
            "warmup_steps": 2,
        },
        "eval": {"every_steps": 10},
        "checkpoint": {"every_steps": 2, "keep_last": 2},
    }
