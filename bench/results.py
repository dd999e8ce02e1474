"""The report of one benchmark run, typed: what ``run_benchmark`` returns and ``report.json`` holds.

Each section is a frozen dataclass with ``to_dict`` (the JSON shape of ``report.json``, key for key)
and ``from_dict`` (its inverse), so a report read back from disk renders the same Markdown:

::

    report = BenchReport.from_dict(json.loads(Path("bench-out/report.json").read_text()))
    report.scenarios.realtime.closed_loop.latency["mtst int8-dynamic"].p50_ms

Settings (the run's :class:`~mtst.bench.config.BenchConfig`), bundle facts (a digest of each
manifest, see :func:`~mtst.bench.engines.bundle_facts`) and a system's facts (how it is used, on
which providers) stay plain JSON objects: they record other parts' formats as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mtst.errors import DataError

from .breakdown import RequestProfile
from .coldstart import ColdStart
from .data import LengthStats
from .fidelity import Fidelity
from .frozen import FrozenBackbone
from .realtime import Realtime
from .system import SystemInfo
from .systems import Batching, Family, System
from .targets import TargetResult
from .throughput import Throughput

__all__ = ["BenchReport", "DataFacts", "ReferenceInfo", "Scenarios", "Skipped", "SystemResult"]


@dataclass(frozen=True, slots=True)
class DataFacts:
    """The sentences of the run: all of them, the realtime sample (the first N) and the corpus."""

    source: str
    n_sentences: int
    tokens: LengthStats
    sample_n: int  # realtime, fidelity and frozen backbone
    sample_tokens: LengthStats
    corpus_n: int  # throughput

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_sentences": self.n_sentences,
            "tokens": self.tokens.to_dict(),
            "realtime_sample": {"n": self.sample_n, "tokens": self.sample_tokens.to_dict()},
            "corpus": {"n": self.corpus_n},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataFacts:
        sample = d["realtime_sample"]
        return cls(
            source=d["source"],
            n_sentences=d["n_sentences"],
            tokens=LengthStats.from_dict(d["tokens"]),
            sample_n=sample["n"],
            sample_tokens=LengthStats.from_dict(sample["tokens"]),
            corpus_n=d["corpus"]["n"],
        )


@dataclass(frozen=True, slots=True)
class ReferenceInfo:
    """The torch fp32 checkpoint that fidelity is measured against (``None``: not found)."""

    checkpoint: str | None
    how: str | None  # "--checkpoint", "bundle provenance (checkpoint)", ...

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "how": self.how}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceInfo:
        return cls(d["checkpoint"], d["how"])


@dataclass(frozen=True, slots=True)
class SystemResult:
    """One contender as the report describes it, with its fidelity vs torch fp32 (when measured)."""

    name: str
    family: Family
    precision: str
    corpus_batching: Batching
    has_heads: bool
    facts: dict[str, Any]  # how it is used, what it runs on (see System.facts)
    fidelity: Fidelity | None

    @classmethod
    def of(cls, system: System, fidelity: Fidelity | None) -> SystemResult:
        return cls(
            name=system.name,
            family=system.family,
            precision=system.precision,
            corpus_batching=system.corpus_batching,
            has_heads=system.labels is not None,
            facts=dict(system.facts),
            fidelity=fidelity,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family.value,
            "precision": self.precision,
            "corpus_batching": self.corpus_batching.value,
            "has_heads": self.has_heads,
            **self.facts,
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SystemResult:
        typed = ("name", "family", "precision", "corpus_batching", "has_heads", "fidelity")
        fid = d["fidelity"]
        return cls(
            name=d["name"],
            family=Family(d["family"]),
            precision=d["precision"],
            corpus_batching=Batching(d["corpus_batching"]),
            has_heads=d["has_heads"],
            facts={k: v for k, v in d.items() if k not in typed},
            fidelity=None if fid is None else Fidelity.from_dict(fid),
        )


@dataclass(frozen=True, slots=True)
class Skipped:
    """A system asked for that did not run, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Scenarios:
    """The scenarios that ran (``None``: not run); per-system results keyed by system name."""

    realtime: Realtime | None = None
    throughput: Throughput | None = None
    frozen_backbone: dict[str, FrozenBackbone] | None = None
    cold_start: dict[str, ColdStart] | None = None
    profile: dict[str, RequestProfile] | None = None  # where the time of an mtst request goes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.realtime is not None:
            out["realtime"] = self.realtime.to_dict()
        if self.throughput is not None:
            out["throughput"] = self.throughput.to_dict()
        if self.frozen_backbone is not None:
            out["frozen_backbone"] = {k: v.to_dict() for k, v in self.frozen_backbone.items()}
        if self.cold_start is not None:
            out["cold_start"] = {k: v.to_dict() for k, v in self.cold_start.items()}
        if self.profile is not None:
            out["profile"] = {k: v.to_dict() for k, v in self.profile.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scenarios:
        rt, tp = d.get("realtime"), d.get("throughput")
        fb, cs, prof = d.get("frozen_backbone"), d.get("cold_start"), d.get("profile")
        return cls(
            realtime=None if rt is None else Realtime.from_dict(rt),
            throughput=None if tp is None else Throughput.from_dict(tp),
            frozen_backbone=None
            if fb is None
            else {k: FrozenBackbone.from_dict(k, v) for k, v in fb.items()},
            cold_start=None if cs is None else {k: ColdStart.from_dict(v) for k, v in cs.items()},
            profile=None if prof is None else {k: RequestProfile.from_dict(v) for k, v in prof.items()},
        )


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Everything one run measured, with the settings, machine, bundles and data it measured them on."""

    FORMAT: ClassVar[str] = "mtst-bench-report"
    FORMAT_VERSION: ClassVar[int] = 1

    created: str  # ISO 8601, UTC
    command: str
    duration_s: float
    machine: SystemInfo
    load_average_end: tuple[float, ...]  # empty where the platform has none
    settings: dict[str, Any]
    bundles: tuple[dict[str, Any], ...]
    data: DataFacts
    reference: ReferenceInfo
    systems: tuple[SystemResult, ...]
    skipped: tuple[Skipped, ...]
    scenarios: Scenarios
    targets: tuple[TargetResult, ...]
    notes: tuple[str, ...]
    plots: tuple[str, ...] | None = None  # PNG names beside report.json, once written

    def fidelity(self, system: str) -> Fidelity | None:
        return next((s.fidelity for s in self.systems if s.name == system), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.FORMAT,
            "format_version": self.FORMAT_VERSION,
            "created": self.created,
            "command": self.command,
            "duration_s": self.duration_s,
            "machine": self.machine.to_dict(),
            "load_average_end": list(self.load_average_end),
            "settings": dict(self.settings),
            "bundles": [dict(b) for b in self.bundles],
            "data": self.data.to_dict(),
            "reference": self.reference.to_dict(),
            "systems": [s.to_dict() for s in self.systems],
            "skipped": [s.to_dict() for s in self.skipped],
            "scenarios": self.scenarios.to_dict(),
            "targets": [t.to_dict() for t in self.targets],
            "notes": list(self.notes),
        }
        if self.plots is not None:
            out["plots"] = list(self.plots)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchReport:
        """The inverse of :meth:`to_dict`; DataError for anything but a report of this format version."""
        found = (d.get("format"), d.get("format_version"))
        if found != (cls.FORMAT, cls.FORMAT_VERSION):
            raise DataError(
                f"format, format_version: expected {cls.FORMAT!r}, {cls.FORMAT_VERSION}; got {found[0]!r}, {found[1]!r}"
            )
        plots = d.get("plots")
        return cls(
            created=d["created"],
            command=d["command"],
            duration_s=d["duration_s"],
            machine=SystemInfo.from_dict(d["machine"]),
            load_average_end=tuple(d["load_average_end"]),
            settings=dict(d["settings"]),
            bundles=tuple(dict(b) for b in d["bundles"]),
            data=DataFacts.from_dict(d["data"]),
            reference=ReferenceInfo.from_dict(d["reference"]),
            systems=tuple(SystemResult.from_dict(s) for s in d["systems"]),
            skipped=tuple(Skipped(**s) for s in d["skipped"]),
            scenarios=Scenarios.from_dict(d["scenarios"]),
            targets=tuple(TargetResult.from_dict(t) for t in d["targets"]),
            notes=tuple(d["notes"]),
            plots=None if plots is None else tuple(plots),
        )
