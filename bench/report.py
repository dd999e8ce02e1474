"""Reports: ``report.json`` (everything), ``report.md`` (tables, one renderer per section) and PNG plots.

::

    write_report(run_benchmark(config), Path("bench-out/"))
    print(render_markdown(read_report(Path("bench-out/report.json"))))  # the same report.md again
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtst.errors import DataError
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

from .breakdown import RequestProfile
from .coldstart import ColdStart
from .fidelity import Fidelity
from .frozen import FrozenBackbone
from .plots import write_plots
from .realtime import Realtime
from .results import BenchReport
from .targets import TargetResult
from .throughput import PADDED_SUFFIX, Throughput

__all__ = ["read_report", "render_markdown", "write_plots", "write_report"]


# ---------------------------------------------------------------------------------------------- formatting
def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:  # NaN
            return "–"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _listed(title: str, items: Sequence[str]) -> list[str]:
    return [title, "", *(f"- {x}" for x in items), ""] if items else []


def _fidelity_cells(fid: Fidelity | None) -> tuple[str, str, str]:
    """cos min, cos mean, label agreement per head."""
    if fid is None:
        return "–", "–", "–"
    agree = fid.label_agreement
    labels = ", ".join(f"{h} {_pct(v, 2)}" for h, v in agree.items()) if agree else "– (no heads)"
    return _f(fid.cos_min, 4), _f(fid.cos_mean, 4), labels


# ---------------------------------------------------------------------------------------------- sections
def _header(report: BenchReport) -> list[str]:
    """The run: command, machine, settings, bundles, data."""
    m, settings, data = report.machine, report.settings, report.data
    load_start = None if m.load_average is None else list(m.load_average)
    out = [
        f"- command: `{report.command}`",
        f"- date: {report.created} (took {_f(report.duration_s, 0)} s)",
        f"- CPU: {m.cpu_model} ({m.usable_cpus} usable of {m.logical_cpus} logical); "
        f"flags: {' '.join(m.cpu_flags) or '–'}",
        f"- memory: {_f(m.memory_total_mb, 0)} MB; load average at start "
        f"{load_start}, at end {list(report.load_average_end)}",
        f"- threads: {settings['threads']} per system; ORT spinning: {'on' if settings['spinning'] else 'off'}; "
        f"provider asked: {settings['provider']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()),
    ]
    for b in report.bundles:
        variants = ", ".join(v["key"] for v in b["variants"])
        out.append(
            f"- bundle `{b['path']}`: variants {variants}; manifest sha256 `{b['manifest_sha256'][:16]}…`; "
            f"max_seq_len {b['max_seq_len']}; heads "
            + ", ".join(f"{h['name']} ({h['kind']})" for h in b["heads"])
        )
    tok = data.tokens
    out.append(
        f"- data: {data.source}: {data.n_sentences:,} sentences; tokens mean {_f(tok.mean, 1)}, "
        f"p50 {_f(tok.p50, 0)}, p90 {_f(tok.p90, 0)}, max {tok.max}, truncated {tok.truncated}"
    )
    return [*out, ""]


def _systems(report: BenchReport) -> list[str]:
    out = ["## Systems", ""]
    out += _table(
        ["system", "precision", "providers active", "how it is used"],
        (
            [
                s.name,
                s.precision,
                ", ".join(s.facts.get("active_providers") or []) or "–",
                s.facts.get("how", ""),
            ]
            for s in report.systems
        ),
    )
    return out + _listed("Skipped:", [f"{s.name}: {s.reason}" for s in report.skipped])


def _targets(targets: Sequence[TargetResult]) -> list[str]:
    if not targets:
        return []

    def row(t: TargetResult) -> list[str]:
        value = _f(t.value, 3) + (t.target.unit if t.value is not None else "")
        return [f"{t.target.description} {t.target.bound}", t.system, value, t.verdict(), t.against]

    return ["## Targets", "", *_table(["target", "system", "value", "verdict", "against"], map(row, targets))]


def _realtime(rt: Realtime, fidelity: Mapping[str, Fidelity | None]) -> list[str]:
    cl, ref = rt.closed_loop, rt.reference
    out = [
        "## Realtime: one sentence at a time, end to end",
        "",
        f"Closed loop, {cl.n_sentences} sentences × {cl.rounds} rounds (warm-up {cl.warmup} excluded), "
        f"systems interleaved per sentence. `× {ref}` = the system's p50 divided by {ref}'s.",
        "",
    ]
    out += _table(
        [
            "system",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            f"× {ref}",
            "cos min",
            "cos mean",
            "label agreement",
        ],
        (
            [
                name,
                _f(lat.p50_ms),
                _f(lat.p90_ms),
                _f(lat.p99_ms),
                _f(lat.max_ms),
                _f(rt.ratio_to_reference(name)),
                *_fidelity_cells(fidelity.get(name)),
            ]
            for name, lat in cl.latency.items()
        ),
    )
    return out + _open_loop(rt)


def _open_loop(rt: Realtime) -> list[str]:
    if not rt.open_loop:
        return []
    out = [
        "Open loop: requests arrive at a fixed rate (scheduler thread); latency counted from the "
        "scheduled arrival, queueing included.",
        "",
    ]
    return out + _table(
        ["system", "rate req/s", "p50 ms", "p99 ms", "max ms", "answered/s", "max rate with p99 ≤ target"],
        (
            [
                name,
                _f(ol.fixed.rate, 1),
                _f(ol.fixed.latency.p50_ms),
                _f(ol.fixed.latency.p99_ms),
                _f(ol.fixed.latency.max_ms),
                _f(ol.fixed.achieved_rate, 1),
                f"{_f(ol.search.max_rate_held, 0)} req/s (p99 ≤ {_f(ol.search.p99_target_ms)} ms, "
                f"{len(ol.search.trials)} trials)",
            ]
            for name, ol in rt.open_loop.items()
        ),
    )


def _throughput(tp: Throughput, fidelity: Mapping[str, Fidelity | None]) -> list[str]:
    ref = tp.reference
    out = [
        "## Throughput: the whole corpus",
        "",
        f"{tp.n_sentences:,} sentences, batch size {tp.batch_size}, median of {tp.rounds} interleaved "
        f"rounds. Padding waste = padded share of the token positions run.",
        "",
    ]

    same = tp.same_batches

    def row(name: str) -> list[str]:
        cos_min, _, labels = _fidelity_cells(fidelity.get(name.removesuffix(PADDED_SUFFIX)))
        r = tp.rows[name]
        ratio = _f(tp.ratio_to_reference(name))
        cells = [name, r.batching.value, _f(r.sentences_per_s, 1), _pct(r.padding_waste), ratio]
        if same is not None:
            s = same.get(name)
            cells.append("–" if s is None else _f(s.sentences_per_s, 1))
            cells.append(
                "–" if s is None or ref not in same else _f(s.sentences_per_s / same[ref].sentences_per_s)
            )
        return [*cells, cos_min, labels]

    header = ["system", "batching", "sentences/s", "padding waste", f"× {ref}"]
    if same is not None:
        header += ["same sorted batches, sentences/s", f"× {ref} (same batches)"]
        first = next(iter(same.values()), None)
        if first is not None:
            text = (
                f"Same sorted batches: every system runs the same {first.n_batches} batches (the corpus sorted "
                f"by token length, {tp.batch_size} a batch, padding waste {_pct(first.padding_waste)}), each "
                "as one batch: the engines compared without their batching."
            )
            if any(name.endswith(PADDED_SUFFIX) for name in same):
                text += (
                    " mtst answers each batch with one `predict` call, which runs it in pieces of at most "
                    "the engine's `max_batch_tokens` padded tokens (256 on CPU: a piece's activations stay "
                    "in the core's cache); its `(plain padded batches)` row runs each batch in one piece."
                )
            out += [text, ""]
    out += _table([*header, "cos min", "label agreement"], (row(name) for name in tp.rows))
    for name, gain in tp.bucketing_gain.items():
        out.append(f"- {name}: length buckets run {_f(gain)}× the sentences/s of plain padded batches")
    return [*out, ""]


def _frozen_backbone(frozen: Mapping[str, FrozenBackbone]) -> list[str]:
    out = ["## Frozen backbone", ""]
    for name, fb in frozen.items():
        out += [f"### {name} ({fb.layout} layout)", ""]
        if fb.heads_only is not None:
            lat = fb.heads_only.latency
            out.append(
                f"- heads only on cached embeddings ({', '.join(fb.heads_only.sentence_heads)}), per request with "
                f"decoding: p50 {_f(lat.p50_us, 1)} µs, p99 {_f(lat.p99_us, 1)} µs, max {_f(lat.max_us, 1)} µs "
                f"({lat.n} requests)"
            )
        svs = fb.shared_vs_separate
        out.append(
            f"- one encoder pass with {len(svs.heads)} heads: p50 {_f(svs.shared.p50_ms)} ms; "
            f"{len(svs.heads)} single-task runs: p50 {_f(svs.separate.p50_ms)} ms (× {_f(svs.ratio)})"
        )
        sw = fb.swap
        if sw is not None:
            out.append(
                f"- head swap while serving ({sw.serving_threads} threads): {sw.swaps} swaps, "
                f"p50 {_f(sw.swap_ms.p50_ms)} ms, max {_f(sw.swap_ms.max_ms)} ms; "
                f"{sw.requests:,} requests answered, {sw.failed} failed, {sw.wrong} wrong"
            )
        out += [f"- note: {n}" for n in fb.notes]
        out.append("")
    return out


def _cold_start(cold: Mapping[str, ColdStart]) -> list[str]:
    native = any("program" in c.extra for c in cold.values())  # mtst-bench --cpp-build
    out = [
        "## Cold start: a new process imports, loads, answers one sentence",
        "",
        "Medians over fresh processes (after one warm-up run each: the file cache is warm). "
        "Total = spawn → first answer"
        + (
            "; start = the interpreter's start-up (a native program: exec and dynamic linking)."
            if native
            else "."
        ),
        "",
    ]
    start = "start s" if native else "python s"
    header = ["system", "total s", start, "import s", "load s", "first answer s", "peak RSS MB"]
    return out + _table(
        [*header, "torch loaded"],
        (
            [
                name,
                *(_f(x, 3) for x in (c.total_s, c.interpreter_s, c.import_s, c.load_s, c.first_answer_s)),
                _f(c.peak_rss_mb, 0),
                _f(c.torch_loaded),
            ]
            for name, c in cold.items()
        ),
    )


def _profile(profiles: Mapping[str, RequestProfile]) -> list[str]:
    out = ["## Where the time goes (mtst, batch 1)", ""]
    for name, prof in profiles.items():
        p, share = prof.p50_ms, prof.share
        out.append(
            f"- {name}: end to end p50 {_f(p['end_to_end'], 3)} ms = tokenize {_f(p['tokenize'], 3)} "
            f"({_pct(share['tokenize'], 0)}) + graph {_f(p['graph'], 3)} ({_pct(share['graph'], 0)}) "
            f"+ decode and overhead {_f(p['decode_and_overhead'], 3)} ({_pct(share['decode_and_overhead'], 0)})"
        )
        ops = prof.ops.by_op_type
        if ops:
            out.append(
                "  - graph time by op type: " + ", ".join(f"{o.op} {_pct(o.share, 0)}" for o in ops[:8])
            )
    return [*out, ""]


# ---------------------------------------------------------------------------------------------- markdown
def render_markdown(report: BenchReport) -> str:
    fidelity = {s.name: s.fidelity for s in report.systems}
    sc = report.scenarios
    out = ["# mtst-bench report", "", *_header(report), *_systems(report), *_targets(report.targets)]
    if sc.realtime is not None:
        out += _realtime(sc.realtime, fidelity)
    if sc.throughput is not None:
        out += _throughput(sc.throughput, fidelity)
    if sc.frozen_backbone is not None:
        out += _frozen_backbone(sc.frozen_backbone)
    if sc.cold_start is not None:
        out += _cold_start(sc.cold_start)
    if sc.profile is not None:
        out += _profile(sc.profile)
    if report.plots:
        out += ["## Plots", "", *(f"![{p}]({p})" for p in report.plots), ""]
    out += _listed("## Notes", report.notes)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- files
def write_report(report: BenchReport, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the plots into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if plots:
        report = dataclasses.replace(report, plots=tuple(write_plots(report, out)))
        files.update({name: out / name for name in report.plots or ()})
    atomic_write_json(out / "report.json", report.to_dict())
    atomic_write_text(out / "report.md", render_markdown(report))
    files["report.json"] = out / "report.json"
    files["report.md"] = out / "report.md"
    return files


def read_report(path: Path) -> BenchReport:
    """A ``report.json`` written by :func:`write_report`, typed again."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected an mtst-bench report.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    try:
        return BenchReport.from_dict(doc)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not an mtst-bench report ({type(exc).__name__}: {exc})") from None
