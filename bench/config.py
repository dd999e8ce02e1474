"""What one benchmark run measures: the scenarios and the options of ``mtst-bench`` as one frozen config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, parse_enum
from mtst.runtime.providers import Provider

__all__ = ["BenchConfig", "Scenario", "parse_scenarios"]


class Scenario(str, Enum):
    REALTIME = "realtime"
    THROUGHPUT = "throughput"
    FROZEN_BACKBONE = "frozen-backbone"
    COLD_START = "cold-start"


def parse_scenarios(values: str | Sequence[str]) -> tuple[Scenario, ...]:
    items = values.split(",") if isinstance(values, str) else [v for x in values for v in x.split(",")]
    chosen: set[Scenario] = set()
    for raw in items:
        name = raw.strip().lower()
        if name == "all":
            chosen.update(Scenario)
            continue
        chosen.add(parse_enum(Scenario, name, "--scenario", hint=" (or 'all')"))
    if not chosen:
        raise ConfigError("--scenario: name at least one scenario (or 'all')")
    return tuple(s for s in Scenario if s in chosen)


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs; the defaults are those of the documented benchmark."""

    bundles: tuple[Path, ...]
    provider: Provider = Provider.CPU
    precisions: tuple[str, ...] = ()  # empty: the variant each bundle would pick for the provider
    scenarios: tuple[Scenario, ...] = tuple(Scenario)
    data: Path | None = None  # None: the sentences kept in the bundle's parity.json
    compare: tuple[str, ...] = ()  # peers (see mtst.bench.peers.parse_compare)
    checkpoint: Path | None = None  # torch fp32 reference; None: the bundle's provenance path if it exists
    threads: int = 2
    spinning: bool = False
    batch_size: int = 32
    realtime_sentences: int = 256  # the first N sentences: closed/open loop, fidelity, frozen backbone
    rounds: int = 2
    warmup: int = 10
    corpus_sentences: int = 0  # 0: the whole data set
    corpus_rounds: int = 3
    open_loop: bool = True
    open_loop_rate: float | None = None  # None: half the closed-loop capacity
    p99_target_ms: float = 10.0
    open_loop_seconds: float = 2.0
    open_loop_trials: int = 8
    swap_heads: Path | None = None
    swaps: int = 20
    cold_start_runs: int = 3
    cpp_build: Path | None = None  # the C++ runtime's build folder: its CLI joins the cold-start scenario
    profile: bool = True
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("bundles: give at least one bundle folder")
        object.__setattr__(self, "bundles", tuple(Path(b) for b in self.bundles))
        object.__setattr__(self, "provider", parse_enum(Provider, self.provider, "--provider"))
        counts = {
            1: ("threads", "batch_size", "rounds", "corpus_rounds", "cold_start_runs", "open_loop_trials"),
            0: ("realtime_sentences", "corpus_sentences", "warmup", "swaps"),
        }
        for least, names in counts.items():
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < least:
                    raise ConfigError(
                        f"{name.replace('_', '-')}: expected an integer >= {least}, got {value!r}"
                    )
        for name in ("p99_target_ms", "open_loop_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"{name.replace('_', '-')}: expected a number > 0, got {getattr(self, name)!r}"
                )
        if self.open_loop_rate is not None and not self.open_loop_rate > 0:
            raise ConfigError(
                f"rate: expected a number > 0 (requests per second), got {self.open_loop_rate!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bundles"] = [str(b) for b in self.bundles]
        d["provider"] = self.provider.value
        d["scenarios"] = [s.value for s in self.scenarios]
        for k in ("data", "checkpoint", "swap_heads", "cpp_build"):
            d[k] = None if d[k] is None else str(d[k])
        d.pop("command")
        d.pop("progress")
        return d
