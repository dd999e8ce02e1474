"""Threads: 16 threads x 1,000 mixed requests (predict with head subsets / embed / predict_from_embeddings)
on one engine while another thread swaps its heads back and forth, without and with the embedding cache:
every answer equals a serial answer under the old or the new heads (the whole request under one of
them). Batch invariance: a text alone vs inside a batch, fp32 and int8-static-cpu. The embedding cache
of int8-dynamic (whose answers depend on the batch) hands back each text's own embedding.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fixtures_text import (  # noqa: F401
    answers_match,
    bench_corpus_lines,
    other_heads,
    text_bundle,
    text_checkpoint,
)

from mtst.runtime.engine import Engine

THREADS = 16
PER_THREAD = 1000
ENGINE = {"providers": "cpu", "batch_size": 8, "intra_op_threads": 1}
HEAD_CHOICES: list[Any] = [None, "intent", "ner", ["ner", "intent"], []]

Request = tuple[str, Any, dict[str, Any]]


def _requests(sentences: list[str], n: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    pool = rng.sample(sentences, 300)  # repeats: the cache gets hits
    out: list[Request] = []
    for _ in range(n):
        kind = rng.choices(["predict", "embed", "pfe"], weights=[6, 2, 2])[0]
        if kind == "pfe":
            x = np.random.default_rng(rng.randrange(2**32)).normal(size=(rng.randint(1, 5), 32))
            out.append(("pfe", (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), {}))
            continue
        texts = rng.choices(pool, k=rng.randint(1, 6))
        opts = (
            {"heads": rng.choice(HEAD_CHOICES), "return_embedding": rng.random() < 0.5}
            if kind == "predict"
            else {}
        )
        out.append((kind, texts, opts))
    return out


def _call(engine: Engine, req: Request) -> Any:
    kind, payload, opts = req
    if kind == "predict":
        return engine.predict(payload, **opts)
    if kind == "embed":
        return engine.embed(payload)
    return engine.predict_from_embeddings(payload)


def _same(got: Any, want: Any, kind: str) -> str | None:
    if kind == "embed":
        cos = (got * want).sum(axis=1)
        return None if got.shape == want.shape and cos.min() >= 0.99999 else f"embed cosine {cos.min()}"
    if len(got) != len(want):
        return f"{len(got)} answers, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        if kind == "pfe":
            if list(g) != list(w) or any(
                g[k].label != w[k].label or abs(g[k].score - w[k].score) > 1e-5 for k in w
            ):
                return f"{g} != {w}"
        elif (d := answers_match(g, w, tol=1e-5)) is not None:
            return d
    return None


def _hammer(engine: Engine, requests: list[Request], swap: Callable[[], None]) -> tuple[list[list[Any]], int]:
    """Every thread runs every request (its own order); one more thread swaps heads until they finish."""
    results: list[list[Any]] = [[None] * len(requests) for _ in range(THREADS)]
    errors: list[BaseException] = []
    done = threading.Event()
    swaps = 0

    def worker(k: int) -> None:
        order = list(range(len(requests)))
        random.Random(k).shuffle(order)
        try:
            for i in order:
                results[k][i] = _call(engine, requests[i])
        except BaseException as exc:
            errors.append(exc)

    def swapper() -> None:
        nonlocal swaps
        while not done.wait(0.005):
            swap()
            swaps += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    s = threading.Thread(target=swapper)
    s.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    done.set()
    s.join(60)
    assert not any(t.is_alive() for t in threads), "a worker thread hangs"
    assert not errors, repr(errors[:3])
    return results, swaps


@pytest.mark.parametrize("cache", [0, 64], ids=["no-cache", "cache"])
def test_threads_with_head_swaps_equal_serial(
    text_bundle: Path, other_heads: Path, bench_corpus_lines: list[str], cache: int
) -> None:
    requests = _requests(bench_corpus_lines, PER_THREAD, seed=cache)
    # serial answers under the bundle's own heads (A) and under the other heads (B)
    ref = Engine.load(text_bundle, **ENGINE)
    serial_a = [_call(ref, r) for r in requests]
    ref.swap_heads(other_heads)
    serial_b = [_call(ref, r) for r in requests]

    engine = Engine.load(text_bundle, embedding_cache=cache, **ENGINE)
    heads = [other_heads, text_bundle]
    results, swaps = _hammer(
        engine, requests, lambda: engine.swap_heads(heads[engine.heads_source == other_heads])
    )
    outcome: Counter[str] = Counter()
    wrong = []
    for per_thread in results:
        for req, got, a, b in zip(requests, per_thread, serial_a, serial_b, strict=True):
            kind = req[0]
            if _same(got, a, kind) is None:
                outcome["= serial (own heads)" if kind != "embed" else "= serial"] += 1
            elif _same(got, b, kind) is None:
                outcome["= serial (swapped heads)"] += 1
            else:
                wrong.append((kind, _same(got, a, kind), _same(got, b, kind)))
    print(
        f"\nconcurrency (cache {cache}): {THREADS} threads x {len(requests)} requests, {swaps} head swaps: "
        f"{dict(outcome)}, {len(wrong)} differ from serial"
    )
    assert swaps >= 10 and outcome["= serial (swapped heads)"] > 0 and outcome["= serial (own heads)"] > 0
    assert not wrong, wrong[:5]
    if cache:
        assert engine.cache is not None and engine.cache.hits > 0


def _alone_vs_batched(engine: Engine, texts: list[str]) -> tuple[float, int, int]:
    """(min cosine alone vs in shuffled batches of 16, labels that changed, embeddings not bit-equal)."""
    alone = [engine.predict([t], return_embedding=True, return_logits=True)[0] for t in texts]
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    cos, changed, inexact = 1.0, 0, 0
    for s in range(0, len(order), 16):
        idx = order[s : s + 16]
        for i, p in zip(
            idx,
            engine.predict([texts[i] for i in idx], return_embedding=True, return_logits=True),
            strict=True,
        ):
            a = alone[i]
            cos = min(cos, float(np.dot(p.embedding, a.embedding)))
            inexact += int(not np.array_equal(p.embedding, a.embedding))
            for head in a.logits:
                changed += int(np.count_nonzero(p.logits[head].argmax(-1) != a.logits[head].argmax(-1)))
    return cos, changed, inexact


def test_batch_invariance(text_bundle: Path, bench_corpus_lines: list[str]) -> None:
    texts = bench_corpus_lines[:300]
    whole = {"providers": "cpu", "batch_size": 16, "max_batch_tokens": None, "intra_op_threads": 1}
    figures = {}
    for precision in ("fp32", "int8-static-cpu", "int8-dynamic"):
        engine = Engine.load(text_bundle, precision=precision, **whole)
        figures[precision] = _alone_vs_batched(engine, texts)
    print(
        f"\nbatch invariance over {len(texts)} sentences (min cosine, labels changed, not bit-equal): {figures}"
    )
    for precision in ("fp32", "int8-static-cpu"):
        cos, changed, _ = figures[precision]
        assert changed == 0 and cos >= 0.99999, (precision, figures[precision])


def test_int8_dynamic_cache_hands_back_each_texts_own_embedding(
    text_bundle: Path, bench_corpus_lines: list[str]
) -> None:
    """int8-dynamic answers depend on the batch: its cache computes each miss alone, so an embedding
    first computed for a batch request equals the text's embedding alone (bit for bit)."""
    texts = bench_corpus_lines[300:364]
    plain = Engine.load(text_bundle, precision="int8-dynamic", **ENGINE)
    cached = Engine.load(text_bundle, precision="int8-dynamic", embedding_cache=1000, **ENGINE)
    alone = np.concatenate([plain.embed([t]) for t in texts])
    in_batch = plain.embed(texts)
    assert not np.array_equal(in_batch, alone)  # int8-dynamic on this bundle does depend on the batch
    assert np.array_equal(cached.embed(texts), alone)  # misses, computed one by one
    shuffled = texts[::-1]
    assert np.array_equal(cached.embed(shuffled), alone[::-1])  # hits
    assert cached.cache is not None and cached.cache.hits == len(texts)
