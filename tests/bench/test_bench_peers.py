"""Peers in the same run (torch eager, Optimum fp32/int8, sentence-transformers torch/ONNX) — slow: they
import torch, transformers, optimum and sentence-transformers and export ONNX graphs before timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mtst.bench import BenchConfig, Scenario, run_benchmark

pytestmark = pytest.mark.slow

PEERS = (
    "torch eager fp32",
    "optimum fp32",
    "optimum int8 per-channel",
    "optimum int8 per-tensor",
    "st torch",
    "st onnx",
)


def test_all_peers_on_the_tiny_checkpoint(
    split_bundle: Path, bench_checkpoint: Path, bench_corpus: Path, tiny_run: dict[str, Any]
) -> None:
    config = BenchConfig(
        bundles=(split_bundle,),
        precisions=("int8-dynamic",),
        scenarios=(Scenario.REALTIME, Scenario.THROUGHPUT),
        data=bench_corpus,
        checkpoint=bench_checkpoint,
        compare=("all",),
        open_loop=False,
        profile=False,
        **tiny_run,
    )
    report = run_benchmark(config).to_dict()
    assert report["skipped"] == []
    systems = {s["name"]: s for s in report["systems"]}
    assert tuple(systems) == ("mtst int8-dynamic", *PEERS)
    for name in PEERS:
        fid = systems[name]["fidelity"]
        # every peer runs the checkpoint's own encoder weights: fp32 peers match torch fp32 exactly
        if "int8" not in name:
            assert fid["cos_min"] > 0.9999, name
        else:
            assert 0.9 < fid["cos_min"] <= fid["cos_mean"]
        # only mtst and torch eager have heads: label agreement is measured for them only
        assert bool(fid["label_agreement"]) == (name == "torch eager fp32")
    assert systems["torch eager fp32"]["fidelity"]["label_agreement"] == {"intent": 1.0, "ner": 1.0}
    assert systems["optimum int8 per-channel"]["quantization"].startswith("AutoQuantizationConfig.avx2(")
    assert systems["st onnx"]["active_providers"] == ["CPUExecutionProvider"]
    assert systems["st torch"]["corpus_batching"] == "char-length-sorted"

    lat = report["scenarios"]["realtime"]["closed_loop"]["systems"]
    tp = report["scenarios"]["throughput"]["systems"]
    targets = {t["key"]: t for t in report["targets"]}
    fastest = min(PEERS, key=lambda p: lat[p]["latency"]["p50_ms"])
    rt = targets["realtime_p50_vs_fastest_peer"]
    assert rt["value"] == pytest.approx(
        lat["mtst int8-dynamic"]["latency"]["p50_ms"] / lat[fastest]["latency"]["p50_ms"]
    )
    assert rt["against"].startswith(f"fastest peer {fastest}: p50 ")
    assert lat[fastest]["ratio_to_reference"] == pytest.approx(
        lat[fastest]["latency"]["p50_ms"] / lat["mtst int8-dynamic"]["latency"]["p50_ms"]
    )
    best = max(PEERS, key=lambda p: tp[p]["sentences_per_s"])
    thr = targets["throughput_vs_fastest_peer"]
    assert thr["value"] == pytest.approx(
        tp["mtst int8-dynamic"]["sentences_per_s"] / tp[best]["sentences_per_s"]
    )
    assert thr["passed"] == (thr["value"] >= 2.5)
    # Optimum and torch pad consecutive batches, as their users do; the padding waste says so
    assert (
        tp["optimum int8 per-channel"]["padding_waste"]
        == tp["mtst int8-dynamic (plain padded batches)"]["padding_waste"]
    )
    assert tp["optimum int8 per-channel"]["padding_waste"] > tp["mtst int8-dynamic"]["padding_waste"]


def test_real_minilm_bundle_with_peers_and_cold_start(
    minilm_path: Path, bench_corpus: Path, tmp_path: Path, tiny_run: dict[str, Any]
) -> None:
    """The real all-MiniLM-L6-v2 encoder, int8 split bundle: realtime vs two peers and cold start of each."""
    from mtst.export import export_bundle
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

    model = MultiTaskModel.from_pretrained(
        tasks=[
            TaskSpec("intent", "sentence_classification", ["a", "b", "c"]),
            TaskSpec("ner", "token_classification", ["O", "B-PER", "I-PER"]),
        ],
        max_seq_len=128,
    )
    ck = model.save_pretrained(tmp_path / "ck")
    bundle = tmp_path / "bundle"
    export_bundle(ck, bundle, quantize="int8", split=True, parity_data=bench_corpus, accuracy_guard=False)
    config = BenchConfig(
        bundles=(bundle,),
        scenarios=(Scenario.REALTIME, Scenario.COLD_START),
        data=bench_corpus,
        compare=("optimum-int8", "st-onnx"),
        open_loop=False,
        **tiny_run | {"realtime_sentences": 16},
    )
    report = run_benchmark(config).to_dict()
    assert report["reference"]["how"] == "bundle provenance (checkpoint)"
    names = [s["name"] for s in report["systems"]]
    assert names == ["mtst int8-dynamic", "optimum int8 per-channel", "st onnx"]
    fid = {s["name"]: s["fidelity"] for s in report["systems"]}
    assert fid["st onnx"]["cos_min"] > 0.9999  # fp32 ONNX of the same weights
    assert fid["mtst int8-dynamic"]["cos_min"] > 0.95
    cs = report["scenarios"]["cold_start"]
    assert set(cs) == set(names)
    assert cs["mtst int8-dynamic"]["torch_loaded"] is False
    assert cs["optimum int8 per-channel"]["torch_loaded"] is True  # Optimum imports torch
    for c in cs.values():
        assert c["total_s"] > 0 and c["peak_rss_mb"] > 0
    prof = report["scenarios"]["profile"]["mtst int8-dynamic"]["ops"]["by_op_type"]
    assert any(o["op"] in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention") for o in prof)
