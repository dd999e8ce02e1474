"""Scenario ``throughput``: a corpus of real sentences, sentences per second and padding waste.

Every system pushes the whole corpus through the way its users do (mtst: one ``predict`` call, which
batches by length; Optimum and torch: consecutive batches padded to their longest sentence;
sentence-transformers: ``encode()``, which sorts by character count). mtst also runs the *same*
corpus in plain consecutive batches of the same size, which isolates what length bucketing buys.
Then every system runs the *same* batches -- the corpus sorted by token length and cut into batches of
the batch size, each run as one batch -- which isolates the engine from the batching.
Rounds are interleaved (each round: every system once, in a rotated order); the median round counts.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtst.runtime.batching import padding_waste, plan_batches

from .systems import Batching, System
from .timing import interleaved

__all__ = ["Throughput", "ThroughputRow", "corpus_batches", "measure_throughput"]


def corpus_batches(
    policy: Batching,
    lengths: Sequence[int] | np.ndarray,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """The batches (arrays of corpus indices) a batching policy forms over the corpus."""
    n = len(texts)
    if policy is Batching.IN_ORDER:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if policy is Batching.LENGTH_SORTED:
        return list(plan_batches(lengths, max_batch=batch_size, max_tokens=max_tokens).batches)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # sentence-transformers' encode()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    name: str
    batching: Batching
    sentences_per_s: float  # median over rounds
    rounds_s: tuple[float, ...]  # seconds per corpus pass, every round
    padding_waste: float  # padded share of the token positions run
    n_batches: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "batching": self.batching.value,
            "sentences_per_s": self.sentences_per_s,
            "rounds_s": list(self.rounds_s),
            "padding_waste": self.padding_waste,
            "n_batches": self.n_batches,
        }

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ThroughputRow:
        return cls(
            name=name,
            batching=Batching(d["batching"]),
            sentences_per_s=d["sentences_per_s"],
            rounds_s=tuple(d["rounds_s"]),
            padding_waste=d["padding_waste"],
            n_batches=d["n_batches"],
        )


@dataclass(frozen=True, slots=True)
class Throughput:
    """The scenario's result: one row per system (and per mtst system's plain padded run)."""

    n_sentences: int
    batch_size: int
    rounds: int
    rows: dict[str, ThroughputRow]
    bucketing_gain: dict[str, float]  # mtst system -> bucketed / plain padded sentences per second
    reference: str  # the system whose sentences/s the others' are divided by
    # every system on the same token-sorted batches (None: not measured, as in reports before it existed)
    same_batches: dict[str, ThroughputRow] | None = None

    def ratio_to_reference(self, name: str) -> float:
        return self.rows[name].sentences_per_s / self.rows[self.reference].sentences_per_s

    def to_dict(self) -> dict[str, Any]:
        out = {
            "n_sentences": self.n_sentences,
            "batch_size": self.batch_size,
            "rounds": self.rounds,
            "systems": {
                name: row.to_dict() | {"ratio_to_reference": self.ratio_to_reference(name)}
                for name, row in self.rows.items()
            },
            "bucketing_gain": dict(self.bucketing_gain),
            "reference": self.reference,
        }
        if self.same_batches is not None:
            out["same_sorted_batches"] = {name: row.to_dict() for name, row in self.same_batches.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Throughput:
        rows = {name: ThroughputRow.from_dict(name, row) for name, row in d["systems"].items()}
        gain = dict(d["bucketing_gain"])
        same = d.get("same_sorted_batches")
        same_rows = None if same is None else {n: ThroughputRow.from_dict(n, r) for n, r in same.items()}
        return cls(d["n_sentences"], d["batch_size"], d["rounds"], rows, gain, d["reference"], same_rows)


PADDED_SUFFIX = " (plain padded batches)"


def measure_throughput(
    systems: Sequence[System],
    corpus: Sequence[str],
    lengths: Sequence[int] | np.ndarray,
    *,
    batch_size: int,
    rounds: int,
    reference: str,
    warmup: bool = True,
    max_tokens: dict[str, int | None] | None = None,
    padded_runs: dict[str, Callable[[Sequence[str]], Any]] | None = None,
    given_runs: Mapping[str, Callable[[Sequence[Sequence[str]]], Any]] | None = None,
    same_batches: bool = True,
    on_round: Callable[[], None] | None = None,
) -> Throughput:
    """``padded_runs``: for each mtst system, its corpus pass in plain consecutive padded batches;
    ``given_runs``: how a system runs given batches when not ``System.given_batches`` (mtst: one
    ``predict`` call per batch, as many at a time as it runs batches), and extra rows of the same
    batches (mtst's plain padded engine: each batch one graph run); ``same_batches``: also run every system on the same
    token-sorted batches; ``reference``: the system the ratios are taken against."""
    corpus = list(corpus)
    runners: dict[str, Callable[[Sequence[str]], Any]] = {s.name: s.run_corpus for s in systems}
    policies: dict[str, Batching] = {s.name: s.corpus_batching for s in systems}
    for name, fn in (padded_runs or {}).items():
        runners[name + PADDED_SUFFIX] = fn
        policies[name + PADDED_SUFFIX] = Batching.IN_ORDER
    gc.collect()
    # one item per round: the whole corpus
    times = interleaved(runners, [corpus] * rounds, rounds=1, warmup=1 if warmup else 0, on_item=on_round)
    rows: dict[str, ThroughputRow] = {}
    for name, ns in times.items():
        base = name.removesuffix(PADDED_SUFFIX)
        batches = corpus_batches(
            policies[name],
            lengths,
            corpus,
            batch_size=batch_size,
            max_tokens=(max_tokens or {}).get(base) if policies[name] is Batching.LENGTH_SORTED else None,
        )
        secs = tuple(t / 1e9 for t in ns)
        rows[name] = ThroughputRow(
            name=name,
            batching=policies[name],
            sentences_per_s=float(len(corpus) / np.median(secs)),
            rounds_s=secs,
            padding_waste=padding_waste(lengths, batches),
            n_batches=len(batches),
        )
    gain = {
        name: rows[name].sentences_per_s / rows[name + PADDED_SUFFIX].sentences_per_s
        for name in (padded_runs or {})
    }
    same = None
    if same_batches:
        same = _same_batches(systems, corpus, lengths, batch_size, rounds, warmup, given_runs or {}, on_round)
    return Throughput(
        n_sentences=len(corpus),
        batch_size=batch_size,
        rounds=rounds,
        rows=rows,
        bucketing_gain=gain,
        reference=reference,
        same_batches=same,
    )


def _same_batches(
    systems: Sequence[System],
    corpus: list[str],
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    rounds: int,
    warmup: bool,
    given_runs: Mapping[str, Callable[[Sequence[Sequence[str]]], Any]],
    on_round: Callable[[], None] | None,
) -> dict[str, ThroughputRow]:
    """Every system on the corpus sorted by token length, in batches of ``batch_size``, each run whole."""
    index = corpus_batches(Batching.LENGTH_SORTED, lengths, corpus, batch_size=batch_size)
    batches = [[corpus[i] for i in idx.tolist()] for idx in index]
    runners = {s.name: given_runs.get(s.name, s.given_batches) for s in systems}
    runners |= {
        name: fn for name, fn in given_runs.items() if name not in runners
    }  # e.g. mtst, each batch one run
    gc.collect()
    times = interleaved(runners, [batches] * rounds, rounds=1, warmup=1 if warmup else 0, on_item=on_round)
    waste = padding_waste(lengths, index)
    out: dict[str, ThroughputRow] = {}
    for name, ns in times.items():
        secs = tuple(t / 1e9 for t in ns)
        out[name] = ThroughputRow(
            name=name,
            batching=Batching.LENGTH_SORTED,
            sentences_per_s=float(len(corpus) / np.median(secs)),
            rounds_s=secs,
            padding_waste=waste,
            n_batches=len(batches),
        )
    return out
