"""The real all-MiniLM-L6-v2 backbone with a trained intent head and a trained NER head (slow)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mtst.export import export_bundle
from mtst.runtime import verify_bundle
from mtst.runtime.manifest import Precision

pytestmark = pytest.mark.slow

MINILM_FUSIONS = {"EmbedLayerNormalization": 1, "Attention": 6, "BiasGelu": 6, "LayerNormalization": 12}


def _ancestors(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """Names of the nodes ``tensor`` depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            stack.extend(node.input)
    return seen


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_fp32_and_int8_fused_pass_parity_and_the_accuracy_guard(
    trained_minilm_checkpoint: Path, tmp_path: Path, bench_corpus: Path
) -> None:
    out = tmp_path / "bundle"
    report = export_bundle(
        trained_minilm_checkpoint,
        out,
        quantize=["none", "int8-dynamic"],
        parity_data=bench_corpus,
        eval_limit=200,
        max_metric_drop=0.02,  # 200 examples a task: one intent label is 0.005
    )
    m = verify_bundle(out)
    fp32, int8 = m.variant("fp32"), m.variant("int8-dynamic")
    assert fp32.details["fusions"] == MINILM_FUSIONS and int8.details["fusions"] == MINILM_FUSIONS
    assert fp32.details["trace_shape"] == [2, 19]

    # the int8 graph quantizes the fused encoder, per channel, and keeps the heads in fp32
    ops = _ops(out / "model.int8.onnx")
    assert ops["QAttention"] + ops["Attention"] == 6 and ops["MatMulInteger"] >= 6
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    encoder = _ancestors(graph, "embedding")
    for head in ("intent", "ner"):
        head_nodes = [n for n in graph.node if n.name in _ancestors(graph, head) - encoder]
        ops_here = {n.op_type for n in head_nodes}
        assert ops_here & {"MatMul", "Gemm"}, (head, ops_here)
        assert not ops_here & {"MatMulInteger", "DynamicQuantizeLinear", "QAttention", "DequantizeLinear"}
    assert int8.details["quantization"]["per_channel"] is True
    assert (out / "model.int8.onnx").stat().st_size < 0.3 * (out / "model.onnx").stat().st_size

    # parity at batch 1/7/32 x length 1/short/long/max, none the tracing shape, within the bounds
    doc = json.loads((out / "parity.json").read_text())
    assert doc["violations"] == [] and doc["lengths"] == {"1": 1, "short": 16, "long": 64, "max": 128}
    for key in ("fp32/single", "int8-dynamic/single"):
        res = doc["variants"][key]
        assert {tuple(c["shape"]) for c in res["cases"]} == {
            (b, t) for b in (1, 7, 32) for t in (1, 16, 64, 128)
        }
    f, q = doc["variants"]["fp32/single"], doc["variants"]["int8-dynamic/single"]
    assert f["embedding"]["cos_min"] > 0.9999 and f["heads"]["intent"]["label_agreement"] == 1.0
    assert f["heads"]["ner"]["relative_max_abs_diff"] < 1e-3
    assert q["embedding"]["cos_min"] > 0.96 and q["embedding"]["cos_mean"] > 0.985
    assert q["heads"]["intent"]["label_agreement"] >= 0.8 and q["heads"]["ner"]["label_agreement"] >= 0.9

    # the guard scored both tasks on validation data, for every precision
    assert report.guard == "metrics (validation data)"
    by_precision = {v.precision: v for v in report.variants}
    for precision in (Precision.FP32, Precision.INT8_DYNAMIC):
        metrics = by_precision[precision].metrics
        assert set(metrics) == {"intent", "ner"}
        assert metrics["intent"]["metric"] == "accuracy" and metrics["ner"]["metric"] == "f1"
        for task in ("intent", "ner"):
            assert metrics[task]["torch_fp32"] - metrics[task]["value"] <= 0.02
    assert by_precision[Precision.FP32].metrics["intent"]["label_agreement"] == 1.0
    assert by_precision[Precision.FP32].metrics["intent"]["torch_fp32"] > 0.7  # a trained head
    guard = int8.details["guard"]
    assert (
        guard["attempts"][-1]["passed"]
        and guard["excluded_groups"] == guard["attempts"][-1]["excluded_groups"]
    )


def test_fp16_and_int8_static_are_valid_graphs_that_run_on_cpu(
    trained_minilm_checkpoint: Path, tmp_path: Path, bench_corpus: Path
) -> None:
    out = tmp_path / "bundle"
    export_bundle(
        trained_minilm_checkpoint,
        out,
        quantize=["fp16", "int8-static"],
        split=True,
        parity_data=bench_corpus,
        accuracy_guard=False,
    )
    m = verify_bundle(out)
    fp16, static = m.variant("fp16", "split"), m.variant("int8-static", "split")
    assert fp16.graphs == {
        "encoder": "encoder.fp16.onnx",
        "heads": "heads.onnx",
        "token_heads": "token_heads.onnx",
    }
    assert static.graphs["encoder"] == "encoder.int8-static.onnx" and static.graphs["heads"] == "heads.onnx"

    model16 = onnx.load(str(out / "encoder.fp16.onnx"))
    f16 = onnx.TensorProto.FLOAT16
    assert {i.name: i.type.tensor_type.elem_type for i in model16.graph.output} == {
        "embedding": onnx.TensorProto.FLOAT,
        "token_states": onnx.TensorProto.FLOAT,
    }
    assert sum(t.data_type == f16 for t in model16.graph.initializer) >= 18  # the encoder's weight matrices
    inits = {t.name: t.data_type for t in model16.graph.initializer}
    for node in model16.graph.node:  # layer norms (and their gamma/beta) stay fp32
        if node.op_type in ("SkipLayerNormalization", "EmbedLayerNormalization", "LayerNormalization"):
            assert all(inits.get(i, onnx.TensorProto.FLOAT) != f16 for i in node.input[1:] if i), node.name
    assert isinstance(fp16.details["cpu_fp32_fallback_ops"], list)

    static_ops = _ops(out / "encoder.int8-static.onnx")
    assert static_ops["QuantizeLinear"] > 0 and static_ops["DequantizeLinear"] > 0
    assert (
        static.details["fp32_groups"] == ["ffn_output"] and static.details["quantization"]["format"] == "QDQ"
    )

    doc = json.loads((out / "parity.json").read_text())
    assert doc["violations"] == []
    assert doc["variants"]["fp16/split"]["embedding"]["cos_min"] > 0.999
    assert doc["variants"]["int8-static/split"]["embedding"]["cos_min"] > 0.93
    for name in ("encoder.fp16.onnx", "encoder.int8-static.onnx"):
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
        emb = sess.run(
            ["embedding"],
            {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)},
        )[0]
        assert emb.dtype == np.float32 and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-2
