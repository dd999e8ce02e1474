"""PNG plots of a report, one per scenario that has a picture.

``latency_cdf.png`` (realtime closed loop, one curve per system), ``throughput.png`` (sentences per
second per system, bars), ``cold_start.png`` (phases per system, stacked bars). matplotlib runs on its
Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import MissingExtraError

from .coldstart import ColdStart
from .realtime import Realtime
from .results import BenchReport
from .throughput import Throughput

__all__ = ["write_plots"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is in the bench extra
        raise MissingExtraError("plots need matplotlib: pip install 'mtst[bench]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ticks(fn: Callable[[float, Any], str]) -> Any:
    """A matplotlib tick formatter from a function (imported here: matplotlib is optional)."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(fn)


def _save(plt: Any, fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _latency_cdf(plt: Any, rt: Realtime, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, ms in rt.closed_loop.samples_ms.items():
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
    return _save(plt, fig, out, "latency_cdf.png")


def _throughput_bars(plt: Any, tp: Throughput, out: Path) -> str:
    names = list(tp.rows)
    vals = [tp.rows[n].sentences_per_s for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), dpi=110)
    colors = ["tab:blue" if n.startswith("mtst") else "tab:gray" for n in names]
    ax.barh(names, vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    ax.set_xlim(0, max(vals) * 1.12)
    ax.invert_yaxis()
    ax.set_xlabel("sentences per second")
    ax.set_title(f"Corpus throughput ({tp.n_sentences} sentences, batch {tp.batch_size})")
    return _save(plt, fig, out, "throughput.png")


def _cold_start_bars(plt: Any, cold: Mapping[str, ColdStart], out: Path) -> str:
    names = list(cold)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5), dpi=110)
    left = np.zeros(len(names))
    phases: tuple[tuple[Callable[[ColdStart], float], str], ...] = (
        (lambda c: c.interpreter_s, "python start"),
        (lambda c: c.import_s, "import"),
        (lambda c: c.load_s, "load (+verify)"),
        (lambda c: c.first_answer_s, "first answer"),
    )
    for phase, label in phases:
        part = np.array([phase(cold[n]) for n in names])
        ax.barh(names, part, left=left, label=label)
        left += part
    ax.invert_yaxis()
    ax.set_xlabel("seconds from spawn")
    ax.set_title("Cold start")
    ax.legend(fontsize=8)
    return _save(plt, fig, out, "cold_start.png")


def write_plots(report: BenchReport, out: Path) -> list[str]:
    """PNG files for the scenarios in ``report``; returns their names (relative to ``out``)."""
    plt = _pyplot()
    sc = report.scenarios
    written: list[str] = []
    if sc.realtime is not None:
        written.append(_latency_cdf(plt, sc.realtime, out))
    if sc.throughput is not None:
        written.append(_throughput_bars(plt, sc.throughput, out))
    if sc.cold_start is not None:
        written.append(_cold_start_bars(plt, sc.cold_start, out))
    return written
