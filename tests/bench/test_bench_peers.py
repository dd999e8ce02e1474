"""Peers in the same run (torch eager, Optimum fp32/int8, sentence-transformers torch/ONNX, CTranslate2,
fastembed; OpenVINO where its environment exists) — slow: they import torch, transformers, optimum,
sentence-transformers, ctranslate2 and fastembed and export graphs before timing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtst.bench import BenchConfig, Scenario, run_benchmark
from mtst.bench.peer_openvino import ENV_PYTHON

pytestmark = pytest.mark.slow

PEERS = (
    "torch eager fp32",
    "optimum fp32",
    "optimum int8 per-channel",
    "optimum int8 per-tensor",
    "st torch",
    "st onnx",
    "ctranslate2 int8",
    "ctranslate2 int8 (best ISA forced)",
    "ctranslate2 fp32",
    "fastembed fp32",
)
# what CI installs (mtst[dev]); OpenVINO has an environment of its own (scripts/openvino-env.sh)
INSTALLED = ("torch", "optimum", "st", "ctranslate2", "fastembed")


def test_all_peers_on_the_tiny_checkpoint(
    split_bundle: Path, bench_checkpoint: Path, bench_corpus: Path, tiny_run: dict[str, Any]
) -> None:
    config = BenchConfig(
        bundles=(split_bundle,),
        precisions=("int8-static-cpu",),
        scenarios=(Scenario.REALTIME, Scenario.THROUGHPUT),
        data=bench_corpus,
        checkpoint=bench_checkpoint,
        compare=INSTALLED,
        open_loop=False,
        profile=False,
        **tiny_run,
    )
    report = run_benchmark(config).to_dict()
    assert report["skipped"] == []
    systems = {s["name"]: s for s in report["systems"]}
    assert tuple(systems) == ("mtst int8-static-cpu", *PEERS)
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
    forced = systems["ctranslate2 int8 (best ISA forced)"]
    assert forced["process"] == "own" and forced["cpu_isa"].startswith("CT2_FORCE_CPU_ISA=AVX")
    assert forced["compute_type"] == "int8"
    # the same weights through CTranslate2's int8 whichever ISA runs it: close to each other, not to fp32 only
    assert forced["fidelity"]["cos_min"] == pytest.approx(
        systems["ctranslate2 int8"]["fidelity"]["cos_min"], abs=0.02
    )

    lat = report["scenarios"]["realtime"]["closed_loop"]["systems"]
    tp = report["scenarios"]["throughput"]["systems"]
    targets = {t["key"]: t for t in report["targets"]}
    fastest = min(PEERS, key=lambda p: lat[p]["latency"]["p50_ms"])
    rt = targets["realtime_p50_vs_fastest_peer"]
    assert rt["value"] == pytest.approx(
        lat["mtst int8-static-cpu"]["latency"]["p50_ms"] / lat[fastest]["latency"]["p50_ms"]
    )
    assert rt["against"].startswith(f"fastest peer {fastest}: p50 ")
    assert lat[fastest]["ratio_to_reference"] == pytest.approx(
        lat[fastest]["latency"]["p50_ms"] / lat["mtst int8-static-cpu"]["latency"]["p50_ms"]
    )
    best = max(PEERS, key=lambda p: tp[p]["sentences_per_s"])
    thr = targets["throughput_vs_fastest_peer"]
    assert thr["value"] == pytest.approx(
        tp["mtst int8-static-cpu"]["sentences_per_s"] / tp[best]["sentences_per_s"]
    )
    assert thr["passed"] == (thr["value"] >= 1.5)
    # Optimum and torch pad consecutive batches, as their users do; the padding waste says so
    assert (
        tp["optimum int8 per-channel"]["padding_waste"]
        == tp["mtst int8-static-cpu (plain padded batches)"]["padding_waste"]
    )
    assert tp["optimum int8 per-channel"]["padding_waste"] > tp["mtst int8-static-cpu"]["padding_waste"]
    # every system, mtst included, also ran the same token-sorted batches (one row each, same padding)
    same = report["scenarios"]["throughput"]["same_sorted_batches"]
    # mtst twice: one predict call per batch (the engine's runs of max_batch_tokens), each batch one run
    assert set(same) == {"mtst int8-static-cpu", "mtst int8-static-cpu (plain padded batches)", *PEERS}
    assert len({row["padding_waste"] for row in same.values()}) == 1
    assert len({row["n_batches"] for row in same.values()}) == 1
    for row in same.values():
        assert row["sentences_per_s"] == pytest.approx(64 / np.median(row["rounds_s"]))
    top = max(PEERS, key=lambda p: same[p]["sentences_per_s"])
    sb = targets["same_batches_vs_fastest_peer"]
    assert sb["value"] == pytest.approx(
        same["mtst int8-static-cpu"]["sentences_per_s"] / same[top]["sentences_per_s"]
    )
    assert sb["passed"] == (sb["value"] >= 1.1) and sb["against"].startswith(f"fastest peer {top}: ")


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
    assert names == ["mtst int8-static-cpu", "optimum int8 per-channel", "st onnx"]
    fid = {s["name"]: s["fidelity"] for s in report["systems"]}
    assert fid["st onnx"]["cos_min"] > 0.9999  # fp32 ONNX of the same weights
    assert fid["mtst int8-static-cpu"]["cos_min"] > 0.95
    cs = report["scenarios"]["cold_start"]
    assert set(cs) == set(names)
    assert cs["mtst int8-static-cpu"]["torch_loaded"] is False
    assert cs["optimum int8 per-channel"]["torch_loaded"] is True  # Optimum imports torch
    for c in cs.values():
        assert c["total_s"] > 0 and c["peak_rss_mb"] > 0
    ops = {o["op"] for o in report["scenarios"]["profile"]["mtst int8-static-cpu"]["ops"]["by_op_type"]}
    # int8 with constant activation scales: no dynamic quantization left in the graph
    assert {"QAttention", "MatMulIntegerToFloat", "QuantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


def test_openvino_peers_skipped_with_the_reason(
    split_bundle: Path, bench_checkpoint: Path, bench_corpus: Path, tiny_run: dict[str, Any], monkeypatch
) -> None:
    """OpenVINO cannot share mtst[compare]'s environment: without one, its peers are skipped, saying how."""
    monkeypatch.setenv(ENV_PYTHON, "/nonexistent/venv-openvino/bin/python")
    config = BenchConfig(
        bundles=(split_bundle,),
        precisions=("int8-static-cpu",),
        scenarios=(Scenario.REALTIME,),
        data=bench_corpus,
        checkpoint=bench_checkpoint,
        compare=("openvino",),
        open_loop=False,
        profile=False,
        **tiny_run,
    )
    report = run_benchmark(config).to_dict()
    assert [s["name"] for s in report["systems"]] == ["mtst int8-static-cpu"]
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert list(skipped) == [
        "openvino fp32",
        "openvino default precision",
        "openvino int8 weight-only",
        "openvino int8 static",
    ]
    for reason in skipped.values():
        assert reason.startswith(f"{ENV_PYTHON}=/nonexistent/venv-openvino/bin/python: cannot run it")
        assert "bash scripts/openvino-env.sh" in reason


@pytest.mark.skipif(
    not os.environ.get(ENV_PYTHON) or not shutil.which(os.environ.get(ENV_PYTHON, "")),
    reason=f"no OpenVINO environment ({ENV_PYTHON} unset): make one with scripts/openvino-env.sh",
)
def test_openvino_peers_in_their_own_environment(
    split_bundle: Path, bench_checkpoint: Path, bench_corpus: Path, tiny_run: dict[str, Any]
) -> None:
    config = BenchConfig(
        bundles=(split_bundle,),
        precisions=("int8-static-cpu",),
        scenarios=(Scenario.REALTIME, Scenario.THROUGHPUT),
        data=bench_corpus,
        checkpoint=bench_checkpoint,
        compare=("openvino-fp32", "openvino-default", "openvino-int8-weights", "openvino-int8-static"),
        open_loop=False,
        profile=False,
        **tiny_run,
    )
    report = run_benchmark(config).to_dict()
    systems = {s["name"]: s for s in report["systems"]}
    assert list(systems) == [
        "mtst int8-static-cpu",
        "openvino fp32",
        "openvino default precision",
        "openvino int8 weight-only",
    ]
    # the tiny checkpoint has no training config: nothing to calibrate the static int8 on
    assert [s["name"] for s in report["skipped"]] == ["openvino int8 static"]
    assert "no training sentences to calibrate" in report["skipped"][0]["reason"]
    assert systems["openvino fp32"]["inference_precision"] == "f32"
    assert systems["openvino fp32"]["fidelity"]["cos_min"] > 0.9999
    assert systems["openvino int8 weight-only"]["fidelity"]["cos_min"] > 0.9
    for name in list(systems)[1:]:
        assert systems[name]["python"] == os.environ[ENV_PYTHON]
        assert report["scenarios"]["realtime"]["closed_loop"]["systems"][name]["latency"]["n"] == 12
