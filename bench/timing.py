"""Timers, percentiles, interleaving and an open-loop load generator.

All figures come from ``time.perf_counter_ns`` and are summarized with numpy. Systems compared in one
scenario are *interleaved*: each item (a sentence, a batch, a corpus pass) goes through every system
before the next item, with the order of systems rotated from item to item, so that drifts of the
machine (other jobs, thermal state) hit every system alike.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "LatencyStats",
    "Measured",
    "OpenLoopRun",
    "interleaved",
    "run_open_loop",
    "summarize",
    "time_call",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency distribution in milliseconds (``n`` samples)."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    min_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "min_ms": self.min_ms,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyStats:
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Measured:
    """What a call returns when it timed itself: a peer in its own process (:mod:`mtst.bench.peer_worker`)
    measures the work there, so that the pipe to it is not counted. :func:`interleaved` takes ``ns``
    instead of its own clock for such a call."""

    ns: int


def summarize(samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
    """Percentiles of latencies given in nanoseconds (linear interpolation between ranks)."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        raise ValueError("no latency samples to summarize")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        n=int(a.size),
        mean_ms=float(a.mean()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(a.max()),
        min_ms=float(a.min()),
    )


def time_call(fn: Callable[[], T]) -> tuple[int, T]:
    """(nanoseconds, result) of one call."""
    t0 = time.perf_counter_ns()
    out = fn()
    return time.perf_counter_ns() - t0, out


def interleaved(
    systems: Mapping[str, Callable[[T], Any]],
    items: Sequence[T],
    *,
    rounds: int = 1,
    warmup: int = 0,
    on_item: Callable[[], None] | None = None,
) -> dict[str, list[int]]:
    """Time ``fn(item)`` for every system on every item, round-robin, rotating the system order.

    The first ``warmup`` items of the first round are run on every system but not recorded. Returns
    the nanoseconds of each recorded call per system, in call order (a call that returns
    :class:`Measured` counts the time it measured itself).
    """
    if rounds < 1:
        raise ValueError(f"rounds {rounds!r}: expected >= 1")
    names = list(systems)
    times: dict[str, list[int]] = {n: [] for n in names}
    for i in range(min(warmup, len(items))):
        for n in names:
            systems[n](items[i])
    k = 0
    for _ in range(rounds):
        for item in items:
            shift = k % len(names)
            for n in names[shift:] + names[:shift]:
                fn = systems[n]
                t0 = time.perf_counter_ns()
                out = fn(item)
                elapsed = time.perf_counter_ns() - t0
                times[n].append(out.ns if isinstance(out, Measured) else elapsed)
            k += 1
            if on_item is not None:
                on_item()
    return times


@dataclass(frozen=True, slots=True)
class OpenLoopRun:
    """One open-loop run: requests arrive at ``rate`` per second whatever the server's speed."""

    rate: float  # offered requests per second
    n: int  # requests sent
    latency: LatencyStats  # arrival -> answer (queueing included)
    achieved_rate: float  # answers per second over the run
    failed: int  # requests that raised

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "n": self.n,
            "latency": self.latency.to_dict(),
            "achieved_rate": self.achieved_rate,
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpenLoopRun:
        return cls(d["rate"], d["n"], LatencyStats.from_dict(d["latency"]), d["achieved_rate"], d["failed"])


def run_open_loop(fn: Callable[[T], Any], items: Sequence[T], *, rate: float, n: int) -> OpenLoopRun:
    """Send ``n`` requests (cycling through ``items``) at a fixed arrival rate; one server thread.

    A scheduler thread puts request ``k`` on the queue at ``t0 + k / rate``; the server answers them in
    order. Latency is measured from the *scheduled* arrival time, so a server that falls behind sees
    its queueing delay counted (no coordinated omission).
    """
    if rate <= 0 or n < 1 or not items:
        raise ValueError(f"open loop needs rate > 0, n >= 1 and items; got rate={rate!r}, n={n!r}")
    q: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
    interval_ns = 1e9 / rate
    t0 = time.perf_counter_ns() + 2_000_000  # start 2 ms from now, once both threads are running

    def schedule() -> None:
        for k in range(n):
            due = t0 + int(k * interval_ns)
            while True:
                now = time.perf_counter_ns()
                if now >= due:
                    break
                # sleep most of the wait, then spin briefly (time.sleep alone overshoots by ~0.1 ms);
                # the spin is kept short: the server shares the cores with this thread
                left = due - now
                if left > 100_000:
                    time.sleep((left - 60_000) / 1e9)
            q.put((k, due))
        q.put(None)

    latencies: list[int] = []
    failed = 0
    scheduler = threading.Thread(target=schedule, name="mtst-bench-arrivals", daemon=True)
    scheduler.start()
    last_done = t0
    while True:
        req = q.get()
        if req is None:
            break
        k, due = req
        try:
            fn(items[k % len(items)])
        except Exception:  # counted: a failed request is a result of the benchmark, not a crash
            failed += 1
        last_done = time.perf_counter_ns()
        latencies.append(last_done - due)
    scheduler.join()
    span_s = max(last_done - t0, 1) / 1e9
    return OpenLoopRun(
        rate=float(rate),
        n=n,
        latency=summarize(latencies),
        achieved_rate=n / span_s,
        failed=failed,
    )
