"""The sentences a benchmark runs on, and their token-length statistics.

Sentences come from ``--data FILE`` (one a line, UTF-8) or, without it, from the real sentences the
exporter kept in the bundle's ``parity.json``. Benchmarks never run on one repeated sentence: real
lengths decide padding, and padding decides throughput.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import DataError
from mtst.runtime.texts import read_sentences

__all__ = ["Dataset", "LengthStats", "length_stats", "load_bundle_sentences", "load_sentences"]


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Token lengths (special tokens included, after truncation at ``max_seq_len``)."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: int
    max: int
    truncated: int  # sentences longer than max_seq_len

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "min": self.min,
            "max": self.max,
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LengthStats:
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Dataset:
    source: str  # file path, or "<bundle>/parity.json"
    sentences: tuple[str, ...]

    def head(self, n: int) -> tuple[str, ...]:
        """The first ``n`` sentences (all of them when ``n`` is 0 or larger than the set)."""
        return self.sentences if n <= 0 else self.sentences[:n]


def load_sentences(path: str | Path) -> Dataset:
    """One sentence a line; blank lines are skipped; at least one sentence."""
    sentences = read_sentences(
        path, not_found="no such file (--data expects a text file with one sentence a line)"
    )
    return Dataset(str(path), tuple(sentences))


def load_bundle_sentences(bundle: str | Path, parity_name: str | None) -> Dataset:
    """The real sentences the exporter kept in the bundle's parity report (deduplicated, in order)."""
    bundle = Path(bundle)
    hint = "pass --data FILE (one sentence a line), e.g. shared/bench/corpus-1000.txt"
    if not parity_name:
        raise DataError(f"{bundle}: the bundle has no parity report to take sentences from; {hint}")
    path = bundle / parity_name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing, so no sentences to benchmark on; {hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc}); {hint}") from None
    found = doc.get("sentences") if isinstance(doc, dict) else None
    if not isinstance(found, list) or not all(isinstance(x, str) for x in found):
        raise DataError(f"{path}: sentences: expected a list of strings, got {type(found).__name__}; {hint}")
    sentences = tuple(dict.fromkeys(x.strip() for x in found if x.strip()))
    if not sentences:
        raise DataError(f"{path}: sentences: empty; {hint}")
    return Dataset(f"{path}", sentences)


def length_stats(lengths: Sequence[int] | np.ndarray, truncated: Sequence[bool] | np.ndarray) -> LengthStats:
    """Statistics of token lengths (after truncation) and the number of truncated sentences."""
    a = np.asarray(lengths, dtype=np.float64)
    if a.size == 0:
        raise DataError("no sentences to measure")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LengthStats(
        n=int(a.size),
        mean=float(a.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        min=int(a.min()),
        max=int(a.max()),
        truncated=int(np.count_nonzero(np.asarray(truncated, dtype=bool))),
    )
