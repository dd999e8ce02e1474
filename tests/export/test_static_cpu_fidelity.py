"""int8-static-cpu fidelity tools: activation range clipping and SmoothQuant-style smoothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from mtst.errors import ConfigError
from mtst.export.quantize import _name_nodes, encoder_core
from mtst.export.smooth import smooth_graph, smoothing_factors
from mtst.export.static_cpu import clip_range


def _hist(x: np.ndarray, bins: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    return np.histogram(x, bins=np.linspace(lo, hi, bins + 1))


def _qdq_mse(x: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return float(np.mean(((q - zero) * scale - x) ** 2))


def test_percentile_clipping_drops_a_single_outlier_that_minmax_keeps() -> None:
    x = np.random.default_rng(0).normal(size=200_000)
    x[7] = 400.0  # one value far outside the bulk
    counts, edges = _hist(x)
    lo, hi = clip_range(counts, edges, "minmax")
    assert hi == pytest.approx(400.0) and lo == pytest.approx(x.min())
    lo, hi = clip_range(counts, edges, "percentile99.99")
    assert -10.0 < lo < -3.0 and 3.0 < hi < 10.0
    # least squared error keeps a lone outlier: clipping it costs more than coarser steps for all
    assert clip_range(counts, edges, "mse")[1] > 300.0


def test_mse_clipping_cuts_a_heavy_tail_and_lowers_the_quantization_error() -> None:
    x = np.random.default_rng(3).standard_t(df=3, size=200_000)  # heavy tails, finite variance
    counts, edges = _hist(x)
    full = clip_range(counts, edges, "minmax")
    lo, hi = clip_range(counts, edges, "mse")
    assert 0.85 * full[0] < lo < 0.0 < hi < 0.85 * full[1]
    assert _qdq_mse(x, lo, hi) < 0.8 * _qdq_mse(x, *full)


def test_clip_range_keeps_zero_inside_and_leaves_a_bulk_without_outliers_alone() -> None:
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=50_000)  # all positive: zero still in range
    lo, hi = clip_range(*_hist(x), "mse")
    assert lo == 0.0 and hi > 1.9


@pytest.mark.parametrize("method", ["entropy", "percentile", "percentile40", "percentileX"])
def test_clip_range_rejects_unknown_methods(method: str) -> None:
    with pytest.raises(ConfigError, match=method):
        clip_range(np.ones(4), np.linspace(-1, 1, 5), method)


def test_smoothing_factors_balance_activation_and_weight_ranges() -> None:
    act = np.array([8.0, 1.0, 0.0])
    w = np.array([[0.5, -0.5], [-2.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    s = smoothing_factors(act, w, 0.5)
    np.testing.assert_allclose(
        s, [4.0, np.sqrt(0.5), 1.0], rtol=1e-6
    )  # sqrt(8/0.5), sqrt(1/2); idle channel: 1
    assert smoothing_factors(act, w, 1.0)[0] == pytest.approx(8.0)
    with pytest.raises(ConfigError, match="alpha"):
        smoothing_factors(act, w, 1.5)
    with pytest.raises(ConfigError, match="input channels"):
        smoothing_factors(act[:2], w, 0.5)


def _matmul_graph(weight: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "t", weight.shape[0]])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    mask = helper.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, ["b", "t"])
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="mm"),
        helper.make_node("Shape", ["attention_mask"], ["unused"], name="shape"),
    ]
    graph = helper.make_graph(nodes, "g", [x, mask], [y], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_smoothing_flattens_an_outlier_channel_and_keeps_the_product() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    x = np.abs(rng.normal(size=(3, 5, 6))).astype(np.float32)
    x[..., 2] *= 50.0  # an outlier channel, as after MiniLM's layer norms
    batch = {"x": x, "attention_mask": np.ones((3, 5), dtype=np.int64)}
    model = _matmul_graph(w)
    smoothed, info = smooth_graph(model, [batch], ["mm"], 0.5)
    assert info == {"alpha": 0.5, "nodes": 1, "folded": 0, "mul_nodes": 1}
    assert [n.op_type for n in smoothed.graph.node] == ["Relu", "Mul", "MatMul", "Shape"]

    def run(m: onnx.ModelProto, outputs: list[str]) -> list[np.ndarray]:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(outputs, batch)

    (before,) = run(model, ["y"])
    smoothed.graph.output.append(helper.make_tensor_value_info("h_smooth_mm", onnx.TensorProto.FLOAT, None))
    after, h = run(smoothed, ["y", "h_smooth_mm"])
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-4)
    peaks = np.abs(h).reshape(-1, 6).max(axis=0)
    raw = np.abs(x).reshape(-1, 6).max(axis=0)
    assert peaks.max() / peaks.min() < raw.max() / raw.min() / 5  # the channels far closer in range


def test_smoothing_the_tiny_fused_graph_keeps_its_fp32_outputs(tiny_bundle: Path, bench_corpus: Path) -> None:
    from mtst.export.parity import sentence_batches
    from mtst.runtime.tokenize import TextTokenizer

    model = onnx.load(str(tiny_bundle / "model.onnx"))
    _name_nodes(model)
    core = encoder_core(model)
    inputs = [i.name for i in model.graph.input]
    tokenizer = TextTokenizer.from_file(
        tiny_bundle / "tokenizer.json", max_seq_len=64, pad_token_id=0, input_names=tuple(inputs)
    )
    sentences = bench_corpus.read_text().splitlines()[:48]
    batches = [b for b, _ in sentence_batches(tokenizer, sentences, batch_size=16)]
    smoothed, info = smooth_graph(model, batches[:2], core, 0.85)
    assert info["nodes"] >= 4 and info["folded"] + info["mul_nodes"] == info["nodes"]
    if any(n.op_type == "Attention" for n in model.graph.node):
        assert info["folded"] >= 1  # the attention output projection takes it in the value weights
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in before.get_outputs()]
    changed = False
    for batch in batches:
        feeds = {k: batch[k] for k in inputs}
        for name, a, b in zip(names, before.run(names, feeds), after.run(names, feeds), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for init in smoothed.graph.initializer:
        if init.name in weights and not np.array_equal(weights[init.name], numpy_helper.to_array(init)):
            changed = True
    assert changed  # the weights really moved
