"""Fidelity beside every speed figure: embedding cosine and per-head label agreement vs torch fp32.

A high mean cosine hides label damage (DESIGN.md's traps), so systems with heads are also judged by
the share of labels equal to the torch fp32 model's: per sentence for sentence heads, per word (first
sub-token's tag) for token heads. Embedding-only peers get the cosine only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .systems import HeadLabels, System

__all__ = ["Fidelity", "Reference", "label_agreement", "measure_fidelity"]


@dataclass(frozen=True, slots=True)
class Reference:
    """torch fp32 outputs on the fidelity sentences."""

    name: str
    embeddings: np.ndarray  # (N, D) L2-normalized
    labels: HeadLabels


@dataclass(frozen=True, slots=True)
class Fidelity:
    n: int  # sentences compared
    cos_min: float
    cos_mean: float
    label_agreement: dict[str, float] = field(default_factory=dict)  # head -> share of equal labels
    label_counts: dict[str, int] = field(default_factory=dict)  # head -> labels compared (sentences or words)

    @property
    def min_label_agreement(self) -> float | None:
        return min(self.label_agreement.values()) if self.label_agreement else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "cos_min": self.cos_min,
            "cos_mean": self.cos_mean,
            "label_agreement": dict(self.label_agreement),
            "label_counts": dict(self.label_counts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fidelity:
        return cls(**d)


def label_agreement(ours: Sequence[Any], ref: Sequence[Any]) -> tuple[float, int]:
    """(share equal, labels compared). Items are labels, or tuples of word tags for token heads."""
    if len(ours) != len(ref):
        raise ValueError(f"label lists differ in length: {len(ours)} vs {len(ref)} sentences")
    equal = total = 0
    for a, b in zip(ours, ref, strict=True):
        if isinstance(b, tuple):
            a = tuple(a)
            total += max(len(a), len(b))
            equal += sum(1 for x, y in zip(a, b, strict=False) if x == y)
        else:
            total += 1
            equal += int(a == b)
    return (equal / total if total else 1.0), total


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays (normalized here, whatever the inputs)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(1) / np.maximum(na * nb, 1e-12))


def measure_fidelity(system: System, sentences: Sequence[str], reference: Reference) -> Fidelity:
    cos = cosine_rows(system.embed(list(sentences)), reference.embeddings)
    agreement: dict[str, float] = {}
    counts: dict[str, int] = {}
    if system.labels is not None:
        ours = system.labels(list(sentences))
        for head, ref_labels in reference.labels.items():
            if head in ours:
                agreement[head], counts[head] = label_agreement(ours[head], ref_labels)
    return Fidelity(
        n=len(sentences),
        cos_min=float(cos.min()),
        cos_mean=float(cos.mean()),
        label_agreement=agreement,
        label_counts=counts,
    )
