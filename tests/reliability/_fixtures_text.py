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
def single_bundle(text_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
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
        except BaseException as exc:  # noqa: BLE001 - classified by the caller
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
