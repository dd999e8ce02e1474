"""Fixtures of the bench tests: bundles exported from the tiny checkpoint, and one short benchmark run."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Short everything: the tests check structure and arithmetic, never speed.
TINY_RUN: dict[str, Any] = {
    "realtime_sentences": 12,
    "rounds": 1,
    "warmup": 2,
    "corpus_sentences": 64,
    "corpus_rounds": 2,
    "open_loop_seconds": 0.15,
    "open_loop_trials": 3,
    "swaps": 4,
    "cold_start_runs": 1,
    "progress": False,
}


@pytest.fixture(scope="session")
def tiny_run() -> dict[str, Any]:
    """Options of a short run (BenchConfig keyword arguments)."""
    return dict(TINY_RUN)


@pytest.fixture(scope="session")
def bench_checkpoint(_tiny_model_base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny two-task model (intent + ner) as a checkpoint."""
    path = tmp_path_factory.mktemp("bench-ck") / "ck"
    _tiny_model_base.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def export_bench_bundle(
    bench_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, bench_corpus: Path
) -> Callable[..., Path]:
    """``export("name", **export_bundle options)``: a bundle of the tiny checkpoint, parity on the corpus."""
    from mtst.export import export_bundle

    def export(name: str, **options: Any) -> Path:
        out = tmp_path_factory.mktemp(name) / "bundle"
        export_bundle(bench_checkpoint, out, parity_data=bench_corpus, accuracy_guard=False, **options)
        return out

    return export


@pytest.fixture(scope="session")
def split_bundle(export_bench_bundle: Callable[..., Path]) -> Path:
    """fp32 and int8 (int8-static-cpu) variants, split layout (encoder.onnx + heads.onnx + token_heads.onnx)."""
    return export_bench_bundle("bench-split", quantize=["none", "int8"], split=True)


@pytest.fixture(scope="session")
def fp16_bundle(export_bench_bundle: Callable[..., Path]) -> Path:
    """fp32 and fp16 variants of the tiny model, one graph each."""
    return export_bench_bundle("bench-fp16", quantize=["none", "fp16"])


@pytest.fixture(scope="session")
def single_bundle(export_bench_bundle: Callable[..., Path]) -> Path:
    """fp32, one graph (model.onnx)."""
    return export_bench_bundle("bench-single")


@pytest.fixture(scope="session")
def other_heads(
    _tiny_model_base, split_bundle: Path, tmp_path_factory: pytest.TempPathFactory, bench_corpus: Path
) -> Path:
    """A heads-only bundle for the same encoder with *different* head weights (so a swap changes answers)."""
    import torch

    from mtst.export import export_heads

    model = copy.deepcopy(_tiny_model_base)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p))
    ck = tmp_path_factory.mktemp("bench-ck2") / "ck"
    model.save_pretrained(ck)
    out = tmp_path_factory.mktemp("bench-heads") / "heads"
    export_heads(ck, out, encoder_from=split_bundle, parity_data=bench_corpus)
    return out


@pytest.fixture(scope="session")
def tiny_report(
    split_bundle: Path, bench_checkpoint: Path, other_heads: Path, bench_corpus: Path, tmp_path_factory
) -> tuple[dict[str, Any], Path]:
    """One short run of every scenario on both variants of the split bundle, written to disk."""
    from mtst.bench import BenchConfig, run_benchmark, write_report

    config = BenchConfig(
        bundles=(split_bundle,),
        precisions=("all",),
        data=bench_corpus,
        checkpoint=bench_checkpoint,
        swap_heads=other_heads,
        **TINY_RUN,
    )
    report = run_benchmark(config)
    out = tmp_path_factory.mktemp("bench-out")
    write_report(report, out)
    return report.to_dict(), out
