"""Soak: 20,000 mixed requests on one engine (embedding cache on, bounded, evicting), resident memory
sampled every 500 requests: growth after warm-up stays under 10 MB. The same measurement over a
planted leak (each request keeps 8 KB) must exceed the bound: the check can fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from _fixtures_text import bench_corpus_lines, text_bundle, text_checkpoint  # noqa: F401

from mtst.runtime.engine import Engine

REQUESTS = 20_000
WARM_UP = 4_000
EVERY = 500
BOUND_MB = 10.0


def rss_growth_mb(request: Callable[[int], object], n: int) -> tuple[float, list[float]]:
    """(largest RSS after warm-up minus RSS at the end of warm-up, in MB; all samples in MB)."""
    proc = psutil.Process()
    samples: list[float] = []
    for i in range(n):
        request(i)
        if (i + 1) % EVERY == 0:
            samples.append(proc.memory_info().rss / 2**20)
    base = samples[WARM_UP // EVERY - 1]
    return max(samples[WARM_UP // EVERY :]) - base, samples


def test_soak_rss_stays_flat_and_a_planted_leak_is_caught(
    text_bundle: Path, bench_corpus_lines: list[str]
) -> None:
    engine = Engine.load(
        text_bundle, providers="cpu", precision="fp32", embedding_cache=256, intra_op_threads=1
    )
    sentences = bench_corpus_lines
    rows = np.eye(32, dtype=np.float32)

    def request(i: int) -> object:
        text = f"{sentences[i % len(sentences)]} #{i % 3000}"  # 3,000 distinct texts: the cache evicts
        kind = i % 4
        if kind == 0:
            return engine.predict([text], heads="ner")
        if kind == 1:
            return engine.predict([text, sentences[(i * 7) % len(sentences)]], return_embedding=True)
        if kind == 2:
            return engine.embed([text])
        return engine.predict_from_embeddings(rows[i % 32])

    growth, samples = rss_growth_mb(request, REQUESTS)
    leaked: list[bytes] = []

    def leaky(i: int) -> object:
        leaked.append(bytes(8192) + i.to_bytes(4, "little"))  # the planted leak
        return engine.predict_from_embeddings(rows[i % 32])

    leak_growth, _ = rss_growth_mb(leaky, REQUESTS)
    print(
        f"\nsoak: {REQUESTS} requests, RSS {samples[0]:.1f} -> {samples[-1]:.1f} MB, growth after "
        f"{WARM_UP} warm-up requests {growth:+.1f} MB (bound {BOUND_MB}); planted 8 KB/request leak: "
        f"{leak_growth:+.1f} MB"
    )
    assert growth <= BOUND_MB, samples
    assert leak_growth > BOUND_MB  # the same check trips on a leak
    assert engine.cache is not None and len(engine.cache) == 256
