"""report.json read back into the typed report: the same JSON byte for byte, the same Markdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mtst.bench.report import read_report, render_markdown
from mtst.bench.results import BenchReport
from mtst.errors import DataError

# reports of real runs, committed with the docs (written before the report was typed)
COMMITTED = sorted((Path(__file__).resolve().parents[2] / "docs" / "benchmarks").glob("*/report.json"))


def _json_text(report: BenchReport) -> str:
    """As write_report writes it."""
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


def test_tiny_report_round_trips(tiny_report: tuple[dict[str, Any], Path]) -> None:
    written, out = tiny_report
    report = read_report(out / "report.json")
    assert _json_text(report) == (out / "report.json").read_text(encoding="utf-8")
    assert render_markdown(report) == (out / "report.md").read_text(encoding="utf-8")
    # typed all the way down: the same figures as the JSON
    rt = report.scenarios.realtime
    assert rt is not None and rt.reference == written["scenarios"]["realtime"]["reference"]
    p50 = written["scenarios"]["realtime"]["closed_loop"]["systems"]["mtst fp32"]["latency"]["p50_ms"]
    assert rt.closed_loop.latency["mtst fp32"].p50_ms == p50
    assert [t.verdict() for t in report.targets] == [t["verdict"] for t in written["targets"]]
    assert report.plots == ("latency_cdf.png", "throughput.png", "cold_start.png")


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_reports_read_back_byte_for_byte(path: Path) -> None:
    """The report's JSON shape and its Markdown tables are those of the reports already published."""
    report = read_report(path)
    assert _json_text(report) == path.read_text(encoding="utf-8")
    assert render_markdown(report) == (path.parent / "report.md").read_text(encoding="utf-8")
    names = {s.name for s in report.systems}
    if report.scenarios.realtime is not None:  # a full run: mtst beside torch and sentence-transformers
        assert names >= {"mtst int8-dynamic", "torch eager fp32", "st onnx"}
    else:  # a cold-start-only run (cpu-round3-single): mtst and the peers that start without torch
        assert any(n.startswith("mtst ") for n in names) and len(names) >= 2


def test_read_report_errors(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"missing\.json: no such file \(expected an mtst-bench report\.json\)"
    ):
        read_report(tmp_path / "missing.json")
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"report\.json: invalid JSON"):
        read_report(bad)
    bad.write_text(json.dumps({"format": "mtst-experiment-report", "format_version": 1}))
    with pytest.raises(
        DataError,
        match=r"report\.json: format, format_version: expected 'mtst-bench-report', 1; "
        r"got 'mtst-experiment-report', 1",
    ):
        read_report(bad)
    bad.write_text(json.dumps({"format": "mtst-bench-report", "format_version": 1, "created": "today"}))
    with pytest.raises(DataError, match=r"report\.json: not an mtst-bench report \(KeyError: 'command'\)"):
        read_report(bad)
