"""Scenario ``realtime``: one sentence at a time, end to end.

- **Closed loop**: every system answers every sentence of the sample, one request at a time, the
  systems interleaved per sentence; p50/p90/p99/max per system and the ratio to the reference mtst
  system.
- **Open loop** (mtst systems): requests arrive at a fixed rate from a scheduler thread whatever the
  server's speed (latency counted from the scheduled arrival, queueing included), at one fixed rate
  and in a short search for the highest rate whose p99 stays under a target.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .systems import System
from .timing import LatencyStats, OpenLoopRun, interleaved, run_open_loop, summarize

__all__ = ["ClosedLoop", "OpenLoop", "RateSearch", "Realtime", "closed_loop", "find_max_rate", "open_loop"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    n_sentences: int
    rounds: int
    warmup: int
    latency: dict[str, LatencyStats]
    samples_ms: dict[str, list[float]]  # every recorded request, for the CDF plot

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_sentences": self.n_sentences,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "systems": {name: {"latency": s.to_dict()} for name, s in self.latency.items()},
            "samples_ms": {k: [round(x, 5) for x in v] for k, v in self.samples_ms.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClosedLoop:
        latency = {name: LatencyStats.from_dict(row["latency"]) for name, row in d["systems"].items()}
        return cls(d["n_sentences"], d["rounds"], d["warmup"], latency, dict(d["samples_ms"]))


def closed_loop(
    systems: Sequence[System],
    sentences: Sequence[str],
    *,
    rounds: int,
    warmup: int,
    on_item: Callable[[], None] | None = None,
) -> ClosedLoop:
    gc.collect()
    times = interleaved(
        {s.name: s.run_one for s in systems}, list(sentences), rounds=rounds, warmup=warmup, on_item=on_item
    )
    return ClosedLoop(
        n_sentences=len(sentences),
        rounds=rounds,
        warmup=warmup,
        latency={name: summarize(t) for name, t in times.items()},
        samples_ms={name: (np.asarray(t, dtype=np.float64) / 1e6).tolist() for name, t in times.items()},
    )


@dataclass(frozen=True, slots=True)
class RateSearch:
    p99_target_ms: float
    max_rate_held: float | None  # None: not even the lowest rate tried was held
    trials: tuple[OpenLoopRun, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "p99_target_ms": self.p99_target_ms,
            "max_rate_held": self.max_rate_held,
            "trials": [t.to_dict() | {"held": _held(t, self.p99_target_ms)} for t in self.trials],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RateSearch:
        trials = tuple(OpenLoopRun.from_dict(t) for t in d["trials"])
        return cls(p99_target_ms=d["p99_target_ms"], max_rate_held=d["max_rate_held"], trials=trials)


@dataclass(frozen=True, slots=True)
class OpenLoop:
    fixed: OpenLoopRun
    search: RateSearch

    def to_dict(self) -> dict[str, Any]:
        return {"fixed": self.fixed.to_dict(), "search": self.search.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpenLoop:
        return cls(fixed=OpenLoopRun.from_dict(d["fixed"]), search=RateSearch.from_dict(d["search"]))


@dataclass(frozen=True, slots=True)
class Realtime:
    """The scenario's result: the closed loop of every system, the open loop of the mtst systems."""

    reference: str  # the system whose p50 the others' are divided by
    closed_loop: ClosedLoop
    open_loop: dict[str, OpenLoop]  # empty when not run

    def ratio_to_reference(self, name: str) -> float:
        latency = self.closed_loop.latency
        return latency[name].p50_ms / latency[self.reference].p50_ms

    def to_dict(self) -> dict[str, Any]:
        closed = self.closed_loop.to_dict()
        for name, row in closed["systems"].items():
            row["ratio_to_reference"] = self.ratio_to_reference(name)
        return {
            "reference": self.reference,
            "closed_loop": closed,
            "open_loop": {name: ol.to_dict() for name, ol in self.open_loop.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Realtime:
        return cls(
            reference=d["reference"],
            closed_loop=ClosedLoop.from_dict(d["closed_loop"]),
            open_loop={name: OpenLoop.from_dict(ol) for name, ol in d["open_loop"].items()},
        )


def _held(run: OpenLoopRun, p99_target_ms: float) -> bool:
    """A rate is held when p99 stays under the target, nothing failed and the server kept up."""
    return run.failed == 0 and run.latency.p99_ms <= p99_target_ms and run.achieved_rate >= 0.95 * run.rate


def _requests_for(rate: float, seconds: float, *, lo: int, hi: int) -> int:
    """About ``seconds`` of requests; at low rates at least ``lo``, as long as that takes <= 3x ``seconds``."""
    n = rate * seconds
    return int(min(max(n, min(lo, 3 * n), 5), hi))


def find_max_rate(
    fn: Callable[[str], Any],
    sentences: Sequence[str],
    *,
    p99_target_ms: float,
    start_rate: float,
    seconds_per_trial: float,
    max_trials: int = 8,
    min_requests: int = 30,
    max_requests: int = 4000,
) -> RateSearch:
    """Double the rate while it is held, then bisect (geometrically) between held and missed rates.

    When even ``start_rate`` is missed the rate is halved, down to 1/8 of ``start_rate`` at most: a
    server that misses its p99 target at a small share of its capacity has a latency problem (or a
    busy machine), not a rate problem.
    """
    trials: list[OpenLoopRun] = []
    held: float | None = None
    missed: float | None = None
    rate = max(start_rate, 1.0)
    floor = rate / 8
    while len(trials) < max_trials:
        run = run_open_loop(
            fn,
            sentences,
            rate=rate,
            n=_requests_for(rate, seconds_per_trial, lo=min_requests, hi=max_requests),
        )
        trials.append(run)
        ok = _held(run, p99_target_ms)
        logger.info(
            "open loop %.1f req/s: p99 %.2f ms (target %.2f) -> %s",
            rate,
            run.latency.p99_ms,
            p99_target_ms,
            "held" if ok else "missed",
        )
        if ok:
            held = rate if held is None else max(held, rate)
        else:
            missed = rate if missed is None else min(missed, rate)
        if missed is None:
            rate *= 2
        elif held is None:
            rate /= 2
            if rate < floor * 0.99 or rate < 0.5:
                break
        else:
            if missed / held < 1.1:  # within 10%: good enough for a short search
                break
            rate = float(np.sqrt(held * missed))
    return RateSearch(p99_target_ms=p99_target_ms, max_rate_held=held, trials=tuple(trials))


def open_loop(
    system: System,
    sentences: Sequence[str],
    *,
    closed: LatencyStats,
    rate: float | None,
    p99_target_ms: float,
    seconds_per_trial: float,
    max_trials: int,
) -> OpenLoop:
    """The fixed-rate run (default: half the closed-loop capacity) and the max-rate search."""
    capacity = 1000.0 / max(closed.mean_ms, 1e-6)  # requests/s one server thread can answer back to back
    fixed_rate = rate if rate is not None else 0.5 * capacity
    gc.collect()
    fixed = run_open_loop(
        system.run_one,
        sentences,
        rate=fixed_rate,
        n=_requests_for(fixed_rate, seconds_per_trial, lo=30, hi=4000),
    )
    search = find_max_rate(
        system.run_one,
        sentences,
        p99_target_ms=p99_target_ms,
        start_rate=0.5 * capacity,
        seconds_per_trial=seconds_per_trial,
        max_trials=max_trials,
    )
    return OpenLoop(fixed=fixed, search=search)
