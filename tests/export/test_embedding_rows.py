"""The int8 per-row word-embedding table that replaces EmbedLayerNormalization in int8-static-cpu graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from mtst.errors import ConfigError
from mtst.export.embedding_rows import INT8_ROWS, int8_embedding_rows, quantize_rows
from mtst.export.fusion import encoder_geometry, fuse_graph
from mtst.export.onnx import GraphKind, export_graph


@pytest.fixture
def tiny_fused(tiny_model, tmp_path: Path) -> onnx.ModelProto:
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    export_graph(tiny_model, plain, GraphKind.SINGLE, opset=17, trace_len=19, expose_states=True)
    heads, hidden = encoder_geometry(tiny_model.encoder.config)
    fuse_graph(plain, fused, num_heads=heads, hidden_size=hidden)
    return onnx.load(str(fused))


def _eln(model: onnx.ModelProto) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    return node


def _dequantized_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fused graph with its fp32 word table replaced by the dequantized int8 rows."""
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    word = _eln(ref).input[2]
    for init in ref.graph.initializer:
        if init.name == word:
            q, s = quantize_rows(numpy_helper.to_array(init))
            init.CopyFrom(numpy_helper.from_array(q.astype(np.float32) * s, word))
    return ref


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in inputs}), strict=True))


def _padded_batch(lengths: list[int], seq: int, vocab: int = 30522) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(lengths) * 100 + seq)
    ids = rng.integers(1000, vocab, size=(len(lengths), seq)).astype(np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
        types[row, n // 2 : n] = 1  # a second segment, so a token-type table that is read matters
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_quantize_rows_is_symmetric_per_row_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    table = (rng.normal(size=(50, 16)) * rng.uniform(0.01, 3.0, size=(50, 1))).astype(np.float32)
    table[7] = 0.0
    q, scales = quantize_rows(table)
    assert q.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (50, 1)
    assert np.abs(q).max(axis=1)[np.arange(50) != 7].min() == 127  # every non-zero row spans +-127
    assert scales[7, 0] == 1.0 and not q[7].any()
    np.testing.assert_allclose(scales[:, 0], np.where(np.arange(50) == 7, 1.0, np.abs(table).max(1) / 127))
    assert (np.abs(q.astype(np.float32) * scales - table) <= scales / 2 + 1e-7).all()
    with pytest.raises(ConfigError, match=r"expected a 2-D float32 table, got float64 \(3,\)"):
        quantize_rows(np.zeros(3))


@pytest.mark.parametrize("segments", [True, False], ids=["token-types", "no-token-types"])
def test_unfused_int8_rows_equal_the_fused_node_on_the_dequantized_table(tiny_fused, segments) -> None:
    if not segments:  # an encoder without token types: the fusion leaves both segment inputs empty
        eln = _eln(tiny_fused)
        eln.input[1] = eln.input[4] = ""
    new, summary = int8_embedding_rows(tiny_fused)
    assert summary == {
        "embedding": INT8_ROWS,
        "embedding_int8_bytes": 30522 * 32 + 30522 * 4,
        "embedding_nodes": 1,
    }
    ops = [n.op_type for n in new.graph.node]
    assert "EmbedLayerNormalization" not in ops and ops.count("LayerNormalization") == 5
    assert ops.count("Gather") == (3 if segments else 2)
    # the attention nodes read the raw int32 mask the fusion had replaced by the mask index
    mask = _eln(tiny_fused).input[7]
    assert all(n.input[3] == mask for n in new.graph.node if n.op_type == "Attention")
    ref = _dequantized_reference(tiny_fused)
    for lengths, seq in (([1], 1), ([9, 3, 1, 9], 9), ([40, 17], 64)):
        feeds = _padded_batch(lengths, seq)
        want, got = _run(ref, feeds), _run(new, feeds)
        real = feeds["attention_mask"].astype(bool)
        for name, w in want.items():
            g = got[name]
            if w.ndim == 3:  # token outputs: padding positions are undefined
                w, g = w[real], g[real]
            np.testing.assert_allclose(g, w, atol=2e-5, err_msg=f"{name} at lengths {lengths}")


def test_the_graph_keeps_only_the_int8_table_with_row_scales(tiny_fused) -> None:
    word = _eln(tiny_fused).input[2]
    fp32 = next(numpy_helper.to_array(i) for i in tiny_fused.graph.initializer if i.name == word)
    new, _ = int8_embedding_rows(tiny_fused)
    inits = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    assert not [
        n for n, a in inits.items() if a.dtype == np.float32 and a.shape[:1] == (30522,) and a.size > 30522
    ]
    table, scales = inits[f"{word}_int8_rows"], inits[f"{word}_row_scales"]
    assert table.dtype == np.int8 and table.shape == fp32.shape and scales.shape == (30522, 1)
    assert (np.abs(table.astype(np.float32) * scales - fp32) <= scales / 2 + 1e-7).all()


def test_graphs_without_an_unfusable_lookup_are_left_alone(tiny_fused) -> None:
    plain = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    same, summary = int8_embedding_rows(plain)
    assert same is plain
    assert summary == {
        "embedding": "fp32",
        "embedding_note": "the graph has no EmbedLayerNormalization: left as it is",
    }
    eln = _eln(tiny_fused)
    del eln.input[7:]  # the attention nodes still read the mask index, but there is no mask to give them
    same, summary = int8_embedding_rows(tiny_fused)
    assert same is tiny_fused and summary["embedding"] == "fp32"
    assert summary["embedding_note"] == (
        f"{eln.name}: its mask_index output is read but the node has no mask input; left as it is"
    )
