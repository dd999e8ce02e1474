"""mtst-bench through click's CliRunner, and the layering rule (no torch unless peers are asked for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mtst.bench.cli import main

SHORT = [
    "--sentences", "8", "--rounds", "1", "--warmup", "1", "--corpus-sentences", "48", "--corpus-rounds", "1",
    "--open-loop-seconds", "0.1", "--swaps", "2", "--cold-start-runs", "1", "--no-progress",
]  # fmt: skip


def _bench(bundle: Path, data: Path, out: Path, *args: str) -> tuple[Result, dict[str, Any]]:
    """``mtst-bench BUNDLE --data DATA -o OUT ARGS...``, which must succeed; its output and report.json."""
    result = CliRunner().invoke(main, [str(bundle), "--data", str(data), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "report.json").read_text())


def test_cli_writes_reports(split_bundle: Path, bench_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result, report = _bench(
        split_bundle,
        bench_corpus,
        out,
        "--precision",
        "int8-static-cpu",
        "--scenario",
        "realtime,throughput",
        "--no-open-loop",
        *SHORT,
    )
    assert set(report["scenarios"]) == {"realtime", "throughput", "profile"}
    assert [s["name"] for s in report["systems"]] == ["mtst int8-static-cpu"]
    assert report["scenarios"]["realtime"]["open_loop"] == {}
    assert "--precision int8-static-cpu" in report["command"]
    assert report["settings"]["realtime_sentences"] == 8
    for name in ("report.md", "latency_cdf.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "cold_start.png").exists()
    # the targets are printed, each with its verdict
    assert (
        "mtst int8-static-cpu  batch-1 p50 latency end to end, relative to the fastest peer <= 0.55x: not measured"
        in result.output
    )
    assert f"wrote {out / 'latency_cdf.png'}" in result.output


def test_cli_quick_all_scenarios_without_plots(
    split_bundle: Path, bench_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    _, report = _bench(split_bundle, bench_corpus, out, "--quick", "--no-plots", "--no-progress")
    assert set(report["scenarios"]) == {"realtime", "throughput", "frozen_backbone", "cold_start", "profile"}
    assert report["settings"]["realtime_sentences"] == 32  # --quick's settings
    assert "plots" not in report
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "torch,magic"], "Error: --compare: unknown peer 'magic'"),
        (["--scenario", "speedy"], "Error: --scenario: 'speedy' is not one of"),
        (["--precision", "fp16"], "has none of these variants"),
        (["--threads", "0"], "Error: threads: expected an integer >= 1, got 0"),
        (["--data", "/nonexistent/sentences.txt"], "Error: /nonexistent/sentences.txt: no such file"),
    ],
)
def test_cli_bad_arguments(split_bundle: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [str(split_bundle), "-o", str(tmp_path / "x"), "--no-progress", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not (tmp_path / "x" / "report.json").exists()


def test_cli_not_a_bundle(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [str(tmp_path), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "manifest.json: missing (not an mtst bundle, or an unfinished export)" in result.output


def test_cli_needs_a_bundle() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2 and "Missing argument 'BUNDLES...'" in result.output


def test_bench_imports_no_torch() -> None:
    code = (
        "import sys, mtst.bench.cli, mtst.bench.runner, mtst.bench.report, mtst.bench.peers\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'optimum', 'sentence_transformers') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_peer_library_is_skipped_with_install_hint(
    bench_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtst.bench import peers

    real = peers.missing_modules
    monkeypatch.setattr(
        peers, "missing_modules", lambda p: ["optimum"] if p.value.startswith("optimum") else real(p)
    )
    ref = peers.TorchReference(bench_checkpoint, threads=1)
    with peers.build_peers(
        ref, peers.parse_compare("torch,optimum-int8"), threads=1, spinning=False, batch_size=8
    ) as (systems, skipped, _):
        assert [s.name for s in systems] == ["torch eager fp32"]
        assert skipped == {"optimum int8 per-channel": "not installed: optimum (pip install 'mtst[compare]')"}


def test_peer_export_failure_is_skipped_with_the_error(
    bench_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtst.bench import peer_optimum, peers

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no ONNX config for this architecture")

    monkeypatch.setattr(peer_optimum, "_export_optimum", broken)
    ref = peers.TorchReference(bench_checkpoint, threads=1)
    with peers.build_peers(
        ref, peers.parse_compare("torch,optimum-fp32"), threads=1, spinning=False, batch_size=8
    ) as (systems, skipped, setup):
        assert [s.name for s in systems] == ["torch eager fp32"]
        assert skipped == {
            "optimum fp32": "export failed: RuntimeError: no ONNX config for this architecture"
        }
        assert setup.optimum == {}
