"""Reports: ``report.json`` (everything), ``report.md`` (tables) and PNG plots.

Plots: ``latency_cdf.png`` (realtime closed loop, one curve per system), ``throughput.png``
(sentences per second per system, bars), ``cold_start.png`` (phases per system, stacked bars).
matplotlib runs on its Agg backend (no display needed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import MissingExtraError
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = ["render_markdown", "write_plots", "write_report"]

logger = logging.getLogger(__name__)


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


def _fidelity_cells(fid: dict[str, Any] | None) -> tuple[str, str, str]:
    if not fid:
        return "–", "–", "–"
    agree = fid.get("label_agreement") or {}
    labels = ", ".join(f"{h} {_pct(v, 2)}" for h, v in agree.items()) if agree else "– (no heads)"
    return _f(fid.get("cos_min"), 4), _f(fid.get("cos_mean"), 4), labels


# ---------------------------------------------------------------------------------------------- markdown
def render_markdown(report: dict[str, Any]) -> str:
    out: list[str] = ["# mtst-bench report", ""]
    machine = report["machine"]
    settings = report["settings"]
    out += [
        f"- command: `{report['command']}`",
        f"- date: {report['created']} (took {_f(report.get('duration_s'), 0)} s)",
        f"- CPU: {machine['cpu_model']} ({machine['usable_cpus']} usable of {machine['logical_cpus']} logical); "
        f"flags: {' '.join(machine['cpu_flags']) or '–'}",
        f"- memory: {_f(machine.get('memory_total_mb'), 0)} MB; load average at start "
        f"{machine.get('load_average')}, at end {report.get('load_average_end')}",
        f"- threads: {settings['threads']} per system; ORT spinning: {'on' if settings['spinning'] else 'off'}; "
        f"provider asked: {settings['provider']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
    ]
    for b in report["bundles"]:
        variants = ", ".join(v["key"] for v in b["variants"])
        out.append(
            f"- bundle `{b['path']}`: variants {variants}; manifest sha256 `{b['manifest_sha256'][:16]}…`; "
            f"max_seq_len {b['max_seq_len']}; heads "
            + ", ".join(f"{h['name']} ({h['kind']})" for h in b["heads"])
        )
    data = report["data"]
    tok = data["tokens"]
    out.append(
        f"- data: {data['source']}: {data['n_sentences']:,} sentences; tokens mean {_f(tok['mean'], 1)}, "
        f"p50 {_f(tok['p50'], 0)}, p90 {_f(tok['p90'], 0)}, max {tok['max']}, truncated {tok['truncated']}"
    )
    out.append("")

    out += ["## Systems", ""]
    out += _table(
        ["system", "precision", "providers active", "how it is used"],
        (
            [s["name"], s["precision"], ", ".join(s.get("active_providers") or []) or "–", s.get("how", "")]
            for s in report["systems"]
        ),
    )
    if report.get("skipped"):
        out += ["Skipped:", ""] + [f"- {s['name']}: {s['reason']}" for s in report["skipped"]] + [""]

    targets = report.get("targets") or []
    if targets:
        out += ["## Targets", ""]
        out += _table(
            ["target", "system", "value", "verdict", "against"],
            (
                [
                    f"{t['description']} {t['target']}",
                    t["system"],
                    _f(t["value"], 3) + (t["unit"] if t["value"] is not None else ""),
                    t["verdict"],
                    t.get("against", ""),
                ]
                for t in targets
            ),
        )

    fid = {s["name"]: s.get("fidelity") for s in report["systems"]}
    sc = report["scenarios"]
    if "realtime" in sc:
        rt = sc["realtime"]
        cl = rt["closed_loop"]
        ref = rt.get("reference")
        out += [
            "## Realtime: one sentence at a time, end to end",
            "",
            f"Closed loop, {cl['n_sentences']} sentences × {cl['rounds']} rounds (warm-up {cl['warmup']} excluded), "
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
                    _f(row["latency"]["p50_ms"]),
                    _f(row["latency"]["p90_ms"]),
                    _f(row["latency"]["p99_ms"]),
                    _f(row["latency"]["max_ms"]),
                    _f(row.get("ratio_to_reference")),
                    *_fidelity_cells(fid.get(name)),
                ]
                for name, row in cl["systems"].items()
            ),
        )
        if rt.get("open_loop"):
            out += [
                "Open loop: requests arrive at a fixed rate (scheduler thread); latency counted from the "
                "scheduled arrival, queueing included.",
                "",
            ]
            out += _table(
                [
                    "system",
                    "rate req/s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "answered/s",
                    "max rate with p99 ≤ target",
                ],
                (
                    [
                        name,
                        _f(ol["fixed"]["rate"], 1),
                        _f(ol["fixed"]["latency"]["p50_ms"]),
                        _f(ol["fixed"]["latency"]["p99_ms"]),
                        _f(ol["fixed"]["latency"]["max_ms"]),
                        _f(ol["fixed"]["achieved_rate"], 1),
                        f"{_f(ol['search']['max_rate_held'], 0)} req/s (p99 ≤ {_f(ol['search']['p99_target_ms'])} ms, "
                        f"{len(ol['search']['trials'])} trials)",
                    ]
                    for name, ol in rt["open_loop"].items()
                ),
            )
    if "throughput" in sc:
        tp = sc["throughput"]
        ref = tp.get("reference")
        out += [
            "## Throughput: the whole corpus",
            "",
            f"{tp['n_sentences']:,} sentences, batch size {tp['batch_size']}, median of {tp['rounds']} interleaved "
            f"rounds. Padding waste = padded share of the token positions run.",
            "",
        ]
        out += _table(
            ["system", "batching", "sentences/s", "padding waste", f"× {ref}", "cos min", "label agreement"],
            (
                [
                    name,
                    row["batching"],
                    _f(row["sentences_per_s"], 1),
                    _pct(row["padding_waste"]),
                    _f(row.get("ratio_to_reference")),
                    _fidelity_cells(fid.get(name.split(" (plain")[0]))[0],
                    _fidelity_cells(fid.get(name.split(" (plain")[0]))[2],
                ]
                for name, row in tp["systems"].items()
            ),
        )
        for name, gain in tp.get("bucketing_gain", {}).items():
            out.append(f"- {name}: length buckets run {_f(gain)}× the sentences/s of plain padded batches")
        out.append("")
    if "frozen_backbone" in sc:
        out += ["## Frozen backbone", ""]
        for name, fb in sc["frozen_backbone"].items():
            out.append(f"### {name} ({fb['layout']} layout)")
            out.append("")
            ho = fb.get("heads_only")
            if ho:
                lat = ho["latency"]
                out.append(
                    f"- heads only on cached embeddings ({', '.join(ho['sentence_heads'])}), per request with decoding: "
                    f"p50 {_f(lat['p50_us'], 1)} µs, p99 {_f(lat['p99_us'], 1)} µs, max {_f(lat['max_us'], 1)} µs "
                    f"({lat['n']} requests)"
                )
            svs = fb["shared_vs_separate"]
            out.append(
                f"- one encoder pass with {svs['n_heads']} heads: p50 {_f(svs['shared']['p50_ms'])} ms; "
                f"{svs['n_heads']} single-task runs: p50 {_f(svs['separate']['p50_ms'])} ms "
                f"(× {_f(svs['separate_over_shared_p50'])})"
            )
            sw = fb.get("swap")
            if sw:
                out.append(
                    f"- head swap while serving ({sw['serving_threads']} threads): {sw['swaps']} swaps, "
                    f"p50 {_f(sw['swap_ms']['p50_ms'])} ms, max {_f(sw['swap_ms']['max_ms'])} ms; "
                    f"{sw['requests']:,} requests answered, {sw['failed']} failed, {sw['wrong']} wrong"
                )
            out += [f"- note: {n}" for n in fb.get("notes", [])]
            out.append("")
    if "cold_start" in sc:
        cs = sc["cold_start"]
        out += [
            "## Cold start: a new process imports, loads, answers one sentence",
            "",
            "Medians over fresh processes (after one warm-up run each: the file cache is warm). "
            "Total = spawn → first answer.",
            "",
        ]
        out += _table(
            [
                "system",
                "total s",
                "python s",
                "import s",
                "load s",
                "first answer s",
                "peak RSS MB",
                "torch loaded",
            ],
            (
                [
                    name,
                    _f(c["total_s"], 3),
                    _f(c["interpreter_s"], 3),
                    _f(c["import_s"], 3),
                    _f(c["load_s"], 3),
                    _f(c["first_answer_s"], 3),
                    _f(c["peak_rss_mb"], 0),
                    _f(c["torch_loaded"]),
                ]
                for name, c in cs.items()
            ),
        )
    if "profile" in sc:
        out += ["## Where the time goes (mtst, batch 1)", ""]
        for name, prof in sc["profile"].items():
            p = prof["p50_ms"]
            out.append(
                f"- {name}: end to end p50 {_f(p['end_to_end'], 3)} ms = tokenize {_f(p['tokenize'], 3)} "
                f"({_pct(prof['share']['tokenize'], 0)}) + graph {_f(p['graph'], 3)} ({_pct(prof['share']['graph'], 0)}) "
                f"+ decode and overhead {_f(p['decode_and_overhead'], 3)} ({_pct(prof['share']['decode_and_overhead'], 0)})"
            )
            ops = prof.get("ops", {}).get("by_op_type", [])
            if ops:
                out.append(
                    "  - graph time by op type: "
                    + ", ".join(f"{o['op']} {_pct(o['share'], 0)}" for o in ops[:8])
                )
        out.append("")
    if report.get("plots"):
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is in the bench extra
        raise MissingExtraError("plots need matplotlib: pip install 'mtst[bench]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ticks(fn: Any) -> Any:
    """A matplotlib tick formatter from a function (imported here: matplotlib is optional)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(fn)


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """PNG files for the scenarios in ``report``; returns their names (relative to ``out``)."""
    plt = _pyplot()
    written: list[str] = []
    sc = report["scenarios"]
    if "realtime" in sc:
        samples = sc["realtime"]["closed_loop"]["samples_ms"]
        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        for name, ms in samples.items():
            x = np.sort(np.asarray(ms))
            y = np.arange(1, len(x) + 1) / len(x)
            ax.plot(x, y, label=name, lw=1.6 if name.startswith("mtst") else 1.1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_ticks(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(_ticks(lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("latency per request, ms (log scale)")
        ax.set_ylabel("share of requests")
        ax.set_title("Realtime closed loop, batch 1, end to end")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png")
        plt.close(fig)
        written.append("latency_cdf.png")
    if "throughput" in sc:
        rows = sc["throughput"]["systems"]
        names = list(rows)
        vals = [rows[n]["sentences_per_s"] for n in names]
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), dpi=110)
        colors = ["tab:blue" if n.startswith("mtst") else "tab:gray" for n in names]
        ax.barh(names, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
        ax.set_xlim(0, max(vals) * 1.12)
        ax.invert_yaxis()
        ax.set_xlabel("sentences per second")
        ax.set_title(
            f"Corpus throughput ({sc['throughput']['n_sentences']} sentences, batch {sc['throughput']['batch_size']})"
        )
        fig.tight_layout()
        fig.savefig(out / "throughput.png")
        plt.close(fig)
        written.append("throughput.png")
    if "cold_start" in sc:
        cs = sc["cold_start"]
        names = list(cs)
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), dpi=110)
        left = np.zeros(len(names))
        for key, label in (
            ("interpreter_s", "python start"),
            ("import_s", "import"),
            ("load_s", "load (+verify)"),
            ("first_answer_s", "first answer"),
        ):
            part = np.array([cs[n][key] for n in names])
            ax.barh(names, part, left=left, label=label)
            left += part
        ax.invert_yaxis()
        ax.set_xlabel("seconds from spawn")
        ax.set_title("Cold start")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "cold_start.png")
        plt.close(fig)
        written.append("cold_start.png")
    return written


def write_report(report: dict[str, Any], out: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and the plots into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if plots:
        report["plots"] = write_plots(report, out)
        files.update({name: out / name for name in report["plots"]})
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    files["report.json"] = out / "report.json"
    files["report.md"] = out / "report.md"
    return files
