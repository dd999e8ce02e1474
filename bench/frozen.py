"""Scenario ``frozen-backbone`` (DESIGN.md §4): a frozen, shared encoder and heads that change often.

(a) **heads only**: sentence heads on cached embeddings (``predict_from_embeddings``), one request at
    a time, decoding included, in microseconds;
(b) **one pass, N heads vs N single-task runs**: ``predict([text])`` with every head against one
    ``predict([text], heads=[h])`` per head -- each of those is a full encoder pass, i.e. what N
    single-task models on the same encoder cost;
(c) **head swap while serving**: threads answer requests while the heads are swapped back and forth;
    every swap is timed, and every answer must equal the serial answer of the old or the new heads
    (a request that raises or answers anything else counts as failed).

(a) and (c) need a split bundle (``heads.onnx``); with a single-graph bundle they are reported as not
run, with the reason.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mtst.runtime import Engine
from mtst.runtime.manifest import HeadKind, Layout

from .timing import LatencyStats, interleaved, summarize

__all__ = [
    "FrozenBackbone",
    "HeadSwap",
    "HeadsOnly",
    "MicroLatency",
    "SharedVsSeparate",
    "heads_only",
    "shared_vs_separate",
    "swap_while_serving",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MicroLatency:
    """Latency in microseconds (heads-only requests are that short)."""

    n: int
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float

    @classmethod
    def of(cls, stats: LatencyStats) -> MicroLatency:
        ms = (stats.mean_ms, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms)
        return cls(stats.n, *(x * 1e3 for x in ms))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HeadsOnly:
    sentence_heads: tuple[str, ...]
    latency: MicroLatency

    def to_dict(self) -> dict[str, Any]:
        return {"sentence_heads": list(self.sentence_heads), "latency": self.latency.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadsOnly:
        return cls(tuple(d["sentence_heads"]), MicroLatency(**d["latency"]))


def heads_only(engine: Engine, sentences: Sequence[str], *, rounds: int, warmup: int) -> HeadsOnly:
    """(a): p50/p99 of ``predict_from_embeddings`` on one cached embedding per request, in µs."""
    emb = engine.embed(list(sentences))  # the cache: computed once, outside the timing
    rows = [emb[i] for i in range(len(emb))]
    gc.collect()
    times = interleaved({"heads": engine.predict_from_embeddings}, rows, rounds=rounds, warmup=warmup)
    heads = tuple(h for h, info in engine.heads.items() if info.kind is HeadKind.SENTENCE)
    return HeadsOnly(heads, MicroLatency.of(summarize(times["heads"])))


@dataclass(frozen=True, slots=True)
class SharedVsSeparate:
    heads: tuple[str, ...]
    shared: LatencyStats  # one encoder pass, every head
    separate: LatencyStats  # one predict per head, summed per request
    ratio: float  # separate p50 / shared p50

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": list(self.heads),
            "n_heads": len(self.heads),
            "shared": self.shared.to_dict(),
            "separate": self.separate.to_dict(),
            "separate_over_shared_p50": self.ratio,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SharedVsSeparate:
        return cls(
            heads=tuple(d["heads"]),
            shared=LatencyStats.from_dict(d["shared"]),
            separate=LatencyStats.from_dict(d["separate"]),
            ratio=d["separate_over_shared_p50"],
        )


def shared_vs_separate(
    engine: Engine, sentences: Sequence[str], *, rounds: int, warmup: int
) -> SharedVsSeparate:
    """(b): batch 1, interleaved per sentence."""
    heads = tuple(engine.heads)

    def separate(text: str) -> None:
        for h in heads:
            engine.predict([text], heads=[h])

    gc.collect()
    times = interleaved(
        {"shared": lambda text: engine.predict([text]), "separate": separate},
        list(sentences),
        rounds=rounds,
        warmup=warmup,
    )
    shared, sep = summarize(times["shared"]), summarize(times["separate"])
    return SharedVsSeparate(heads=heads, shared=shared, separate=sep, ratio=sep.p50_ms / shared.p50_ms)


def _signature(pred: Any) -> tuple[Any, ...]:
    """Labels of one prediction (entity spans for token heads): what must not change under a swap."""
    sig: list[Any] = []
    for name, r in pred.heads.items():
        if hasattr(r, "entities"):
            sig.append((name, tuple((e.label, e.start, e.end) for e in r.entities)))
        else:
            sig.append((name, r.label))
    return tuple(sig)


@dataclass(frozen=True, slots=True)
class HeadSwap:
    swaps: int
    swap_ms: LatencyStats
    requests: int  # answered while swapping
    failed: int  # raised
    wrong: int  # answered something that is neither the old heads' nor the new heads' serial answer
    serving_threads: int
    swap_source: str
    errors: tuple[str, ...]  # first few failures, for the report

    def to_dict(self) -> dict[str, Any]:
        return {
            "swaps": self.swaps,
            "swap_ms": self.swap_ms.to_dict(),
            "requests": self.requests,
            "failed": self.failed,
            "wrong": self.wrong,
            "serving_threads": self.serving_threads,
            "swap_source": self.swap_source,
            "errors": list(self.errors),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadSwap:
        return cls(**{**d, "swap_ms": LatencyStats.from_dict(d["swap_ms"]), "errors": tuple(d["errors"])})


def swap_while_serving(
    engine: Engine,
    sentences: Sequence[str],
    *,
    swap_to: Path,
    swaps: int,
    serving_threads: int = 2,
    pause_s: float = 0.02,
) -> HeadSwap:
    """(c): swap between the engine's own heads and ``swap_to``'s while threads serve batch-1 requests."""
    original = engine.heads_source
    texts = list(sentences)
    expected_a = [_signature(engine.predict([t])[0]) for t in texts]
    engine.swap_heads(swap_to)
    expected_b = [_signature(engine.predict([t])[0]) for t in texts]
    engine.swap_heads(original)

    stop = threading.Event()
    counts = [0] * serving_threads
    failures: list[str] = []
    wrong = [0] * serving_threads
    lock = threading.Lock()

    def serve(k: int) -> None:
        i = k
        while not stop.is_set():
            j = i % len(texts)
            try:
                sig = _signature(engine.predict([texts[j]])[0])
            except Exception as exc:  # a failed request is the result being measured
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
            else:
                if sig != expected_a[j] and sig != expected_b[j]:
                    wrong[k] += 1
            counts[k] += 1
            i += serving_threads

    workers = [
        threading.Thread(target=serve, args=(k,), name=f"mtst-bench-serve-{k}")
        for k in range(serving_threads)
    ]
    for w in workers:
        w.start()
    swap_ns: list[int] = []
    try:
        for k in range(swaps):
            time.sleep(pause_s)
            target = swap_to if k % 2 == 0 else original
            t0 = time.perf_counter_ns()
            engine.swap_heads(target)
            swap_ns.append(time.perf_counter_ns() - t0)
        time.sleep(pause_s)
    finally:
        stop.set()
        for w in workers:
            w.join()
        if engine.heads_source != Path(original):
            engine.swap_heads(original)
    return HeadSwap(
        swaps=swaps,
        swap_ms=summarize(swap_ns),
        requests=sum(counts),
        failed=len(failures),
        wrong=sum(wrong),
        serving_threads=serving_threads,
        swap_source=str(swap_to),
        errors=tuple(failures[:5]),
    )


@dataclass(frozen=True, slots=True)
class FrozenBackbone:
    system: str
    layout: str
    heads_only: HeadsOnly | None
    shared_vs_separate: SharedVsSeparate
    swap: HeadSwap | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "heads_only": None if self.heads_only is None else self.heads_only.to_dict(),
            "shared_vs_separate": self.shared_vs_separate.to_dict(),
            "swap": None if self.swap is None else self.swap.to_dict(),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, system: str, d: Mapping[str, Any]) -> FrozenBackbone:
        return cls(
            system=system,
            layout=d["layout"],
            heads_only=None if d["heads_only"] is None else HeadsOnly.from_dict(d["heads_only"]),
            shared_vs_separate=SharedVsSeparate.from_dict(d["shared_vs_separate"]),
            swap=None if d["swap"] is None else HeadSwap.from_dict(d["swap"]),
            notes=tuple(d["notes"]),
        )


def run_frozen_backbone(
    name: str,
    engine: Engine,
    sentences: Sequence[str],
    *,
    rounds: int,
    warmup: int,
    swap_to: Path | None,
    swaps: int,
) -> FrozenBackbone:
    notes: list[str] = []
    split = engine.variant.layout is Layout.SPLIT
    has_sentence_head = any(h.kind is HeadKind.SENTENCE for h in engine.heads.values())
    ho: HeadsOnly | None = None
    if not split:
        notes.append(
            f"heads-only and head swap need a split bundle (mtst-export --split); {engine.variant.key} is one graph"
        )
    elif not has_sentence_head:
        notes.append("heads-only needs a sentence head; this bundle has token heads only")
    else:
        # heads-only requests are cheap: more of them for a stable p99
        ho = heads_only(engine, sentences, rounds=max(rounds, 1) * 4, warmup=warmup)
    svs = shared_vs_separate(engine, sentences, rounds=rounds, warmup=warmup)
    if len(svs.heads) < 2:
        notes.append(f"the bundle has {len(svs.heads)} head(s): one pass vs separate runs compares nothing")
    swap: HeadSwap | None = None
    if split:
        source = swap_to or engine.heads_source
        if swap_to is None:
            notes.append("head swap: no --swap-heads given, swapping the bundle's own heads in and out")
        swap = swap_while_serving(engine, sentences, swap_to=source, swaps=swaps)
    return FrozenBackbone(
        system=name,
        layout=engine.variant.layout.value,
        heads_only=ho,
        shared_vs_separate=svs,
        swap=swap,
        notes=tuple(notes),
    )
