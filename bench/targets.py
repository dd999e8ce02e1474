"""The targets of issues 5 and 15 (15's where they overlap), checked in every report: passed, or
short by how much.

Ratios are against the *fastest peer of each scenario measured in the same run*; a target whose
inputs were not measured (no peers, no split bundle, scenario not run) is reported as not measured,
never as passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["TARGETS", "Direction", "Target", "TargetResult", "check"]


class Direction(str, Enum):
    AT_MOST = "<="
    AT_LEAST = ">="


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    description: str
    direction: Direction
    threshold: float
    unit: str

    @property
    def bound(self) -> str:
        """The target as people read it: ``<= 0.55x``."""
        return f"{self.direction.value} {_fmt(self.threshold)}{self.unit}"


TARGETS: dict[str, Target] = {
    t.key: t
    for t in (
        Target(
            "realtime_p50_vs_fastest_peer",
            "batch-1 p50 latency end to end, relative to the fastest peer",
            Direction.AT_MOST,
            0.55,
            "x",
        ),
        Target(
            "throughput_vs_fastest_peer",
            "corpus throughput, each system as its users run it, relative to the fastest peer",
            Direction.AT_LEAST,
            1.5,
            "x",
        ),
        Target(
            "same_batches_vs_fastest_peer",
            "corpus throughput on the same token-sorted batches, relative to the fastest peer",
            Direction.AT_LEAST,
            1.1,
            "x",
        ),
        Target("cos_min", "minimum embedding cosine vs torch fp32", Direction.AT_LEAST, 0.99, ""),
        Target(
            "label_agreement_min",
            "per-head label agreement vs torch fp32 (worst head)",
            Direction.AT_LEAST,
            0.995,
            "",
        ),
        Target(
            "heads_only_p99_us",
            "heads-only on cached embeddings, p99 per request",
            Direction.AT_MOST,
            50.0,
            "µs",
        ),
        Target(
            "cold_start_s",
            "cold start: new process, import, verify, load, first answer",
            Direction.AT_MOST,
            0.2,
            "s",
        ),
        Target("cold_start_peak_rss_mb", "cold start peak RSS", Direction.AT_MOST, 100.0, "MB"),
    )
}


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    system: str  # the mtst system judged
    value: float | None  # None: not measured
    against: str = ""  # e.g. "fastest peer: optimum int8 per-channel (3.61 ms)"
    note: str = ""  # why not measured

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        if self.target.direction is Direction.AT_MOST:
            return self.value <= self.target.threshold
        return self.value >= self.target.threshold

    @property
    def short_by(self) -> float | None:
        """How far the value misses the threshold, in the target's unit (0.0 when passed)."""
        if self.value is None:
            return None
        gap = (
            self.value - self.target.threshold
            if self.target.direction is Direction.AT_MOST
            else self.target.threshold - self.value
        )
        return max(gap, 0.0)

    @property
    def short_by_relative(self) -> float | None:
        """The miss as a share of the threshold (0.12 = 12% off the target)."""
        short = self.short_by
        if short is None:
            return None
        return short / abs(self.target.threshold) if self.target.threshold else None

    def verdict(self) -> str:
        if self.value is None:
            return f"not measured ({self.note})" if self.note else "not measured"
        if self.passed:
            return "pass"
        unit = self.target.unit
        rel = self.short_by_relative
        return f"short by {_fmt(self.short_by)}{unit}" + (f" ({rel:.0%})" if rel is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.target.key,
            "description": self.target.description,
            "system": self.system,
            "target": self.target.bound,
            "threshold": self.target.threshold,
            "direction": self.target.direction.value,
            "unit": self.target.unit,
            "value": self.value,
            "passed": self.passed,
            "short_by": self.short_by,
            "short_by_relative": self.short_by_relative,
            "verdict": self.verdict(),
            "against": self.against,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TargetResult:
        """The target as the report recorded it (not as :data:`TARGETS` says today)."""
        target = Target(d["key"], d["description"], Direction(d["direction"]), d["threshold"], d["unit"])
        return cls(target, d["system"], d["value"], against=d["against"], note=d["note"])


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def check(key: str, system: str, value: float | None, *, against: str = "", note: str = "") -> TargetResult:
    return TargetResult(TARGETS[key], system, value, against=against, note=note)
