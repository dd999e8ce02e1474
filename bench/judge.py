"""A run judged against the targets (:mod:`mtst.bench.targets`): one small check per target.

A target whose inputs were not measured gets the reason, never a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from . import targets as tg
from .coldstart import ColdStart
from .fidelity import Fidelity
from .frozen import FrozenBackbone
from .realtime import Realtime
from .results import Scenarios
from .throughput import Throughput

__all__ = ["judge"]


def judge(
    mtst: Sequence[str], peers: Sequence[str], scenarios: Scenarios, fidelity: Mapping[str, Fidelity]
) -> list[tg.TargetResult]:
    """Every target for every mtst system (by name); ``peers``: the names of the peers that ran."""
    rows: list[tg.TargetResult] = []
    for name in mtst:
        rows.append(_realtime_vs_peers(name, peers, scenarios.realtime))
        rows.append(_throughput_vs_peers(name, peers, scenarios.throughput))
        rows.append(_same_batches_vs_peers(name, peers, scenarios.throughput))
        rows += _fidelity(name, fidelity.get(name))
        rows.append(_heads_only(name, (scenarios.frozen_backbone or {}).get(name)))
        cold = scenarios.cold_start or {}
        rows += _cold_start(name, cold.get(name))
        native = f"{name} (C++ runtime)"  # mtst-bench --cpp-build
        if native in cold:
            rows += _cold_start(native, cold[native])
    return rows


def _vs_fastest_peer(
    key: str,
    name: str,
    peers: Sequence[str],
    values: Mapping[str, float] | None,
    *,
    scenario: str,
    best: Callable[..., str],  # min (lower is better) or max
    against: Callable[[str, float, float], str],
) -> tg.TargetResult:
    """mtst's value over the fastest peer's; ``against(peer, theirs, mine)`` says what it was judged against."""
    if values is None:
        return tg.check(key, name, None, note=f"{scenario} scenario not run")
    if not peers:
        return tg.check(key, name, None, note="no peers (--compare)")
    fastest = best(peers, key=values.__getitem__)
    mine, theirs = values[name], values[fastest]
    return tg.check(key, name, mine / theirs, against=against(fastest, theirs, mine))


def _realtime_vs_peers(name: str, peers: Sequence[str], rt: Realtime | None) -> tg.TargetResult:
    return _vs_fastest_peer(
        "realtime_p50_vs_fastest_peer",
        name,
        peers,
        None if rt is None else {n: lat.p50_ms for n, lat in rt.closed_loop.latency.items()},
        scenario="realtime",
        best=min,
        against=lambda peer, theirs, mine: f"fastest peer {peer}: p50 {theirs:.3f} ms (mtst {mine:.3f} ms)",
    )


def _throughput_vs_peers(name: str, peers: Sequence[str], tp: Throughput | None) -> tg.TargetResult:
    return _vs_fastest_peer(
        "throughput_vs_fastest_peer",
        name,
        peers,
        None if tp is None else {n: row.sentences_per_s for n, row in tp.rows.items()},
        scenario="throughput",
        best=max,
        against=lambda peer, theirs, mine: f"fastest peer {peer}: {theirs:.1f} sentences/s (mtst {mine:.1f})",
    )


def _same_batches_vs_peers(name: str, peers: Sequence[str], tp: Throughput | None) -> tg.TargetResult:
    same = None if tp is None else tp.same_batches
    if tp is not None and same is None:
        return tg.check("same_batches_vs_fastest_peer", name, None, note="same-batches run off")
    return _vs_fastest_peer(
        "same_batches_vs_fastest_peer",
        name,
        [p for p in peers if same is None or p in same],
        None if same is None else {n: row.sentences_per_s for n, row in same.items()},
        scenario="throughput",
        best=max,
        against=lambda peer, theirs, mine: f"fastest peer {peer}: {theirs:.1f} sentences/s (mtst {mine:.1f})",
    )


def _fidelity(name: str, fid: Fidelity | None) -> list[tg.TargetResult]:
    if fid is None:
        return [
            tg.check("cos_min", name, None, note="no torch fp32 reference"),
            tg.check("label_agreement_min", name, None, note="no torch fp32 reference"),
        ]
    agreement = fid.label_agreement
    worst = min(agreement, key=agreement.__getitem__) if agreement else None
    return [
        tg.check("cos_min", name, fid.cos_min, against=f"torch fp32, {fid.n} sentences"),
        tg.check(
            "label_agreement_min",
            name,
            fid.min_label_agreement,
            against=f"worst head: {worst}" if worst else "",
            note="" if worst else "the bundle has no label heads",
        ),
    ]


def _heads_only(name: str, fb: FrozenBackbone | None) -> tg.TargetResult:
    if fb is None:
        return tg.check("heads_only_p99_us", name, None, note="frozen-backbone scenario not run")
    if fb.heads_only is None:
        return tg.check("heads_only_p99_us", name, None, note="; ".join(fb.notes) or "not run")
    return tg.check("heads_only_p99_us", name, float(fb.heads_only.latency.p99_us))


def _cold_start(name: str, cs: ColdStart | None) -> list[tg.TargetResult]:
    if cs is None:
        return [
            tg.check("cold_start_s", name, None, note="cold-start scenario not run"),
            tg.check("cold_start_peak_rss_mb", name, None, note="cold-start scenario not run"),
        ]
    return [
        tg.check("cold_start_s", name, cs.total_s, against="spawn -> first answer, median"),
        tg.check("cold_start_peak_rss_mb", name, cs.peak_rss_mb),
    ]
