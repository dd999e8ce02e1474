"""The word-embedding table as int8 with one scale per row, dequantized after the lookup.

ORT's transformer optimizer fuses a BERT-family embedding block into one ``EmbedLayerNormalization``
(com.microsoft) node that holds the fp32 word-embedding table -- on all-MiniLM-L6-v2 30522 x 384 floats,
46.9 MB of a 58.6 MB int8 graph, all of it in memory at run time. ``QEmbedLayerNormalization`` (what
``quantize_dynamic`` makes of it) stores the tables as uint8 with one scale per *tensor*, which costs
fidelity. Here that node is replaced by its plain-op equivalent with the word table stored as int8,
symmetric, one scale per row (``scale = max|row| / 127``), so that only the gathered rows are
dequantized::

    Gather(int8 table, input_ids) -> Cast(float) -> Mul(Gather(row scales (vocab, 1), input_ids))
      + position embeddings (+ token-type embeddings) -> LayerNormalization

The position and token-type tables stay fp32 (small). The node's ``mask_index`` output (the number of
real tokens per row) feeds the fused ``Attention`` / ``QAttention`` nodes: they get the node's own
``mask`` input instead -- the raw 2-D attention mask as int32, which the contrib Attention op accepts
as ``mask_index`` of shape (batch, sequence) -- as they had before ORT's fusion swapped it for the
index. An ``embedding_sum`` output, if any consumer reads it, is the sum before the norm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mtst.errors import ConfigError

__all__ = ["INT8_ROWS", "int8_embedding_rows", "quantize_rows"]

INT8_ROWS = "int8 per row"
_ELN = "EmbedLayerNormalization"


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 table, float32 scales of shape (rows, 1))``: symmetric, ``scale = max|row| / 127``
    (1 for an all-zero row), so each dequantized value is within ``scale / 2`` of the original."""
    if table.ndim != 2 or table.dtype != np.float32:
        raise ConfigError(f"quantize_rows: expected a 2-D float32 table, got {table.dtype} {table.shape}")
    peak = np.abs(table).max(axis=1, keepdims=True)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
    return q, scales


def int8_embedding_rows(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph with each ``EmbedLayerNormalization`` unfused and its word table int8 per row (see the
    module docstring), and a summary for the manifest; the graph unchanged when it has no such node or
    the node cannot be unfused (the summary says why)."""
    nodes = [n for n in model.graph.node if n.op_type == _ELN and n.domain == "com.microsoft"]
    if not nodes:
        return model, {"embedding": "fp32", "embedding_note": f"the graph has no {_ELN}: left as it is"}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    for node in nodes:
        why = _cannot_unfuse(node, inits, readers)
        if why:
            return model, {"embedding": "fp32", "embedding_note": f"{node.name}: {why}; left as it is"}
    opset = max([o.version for o in out.opset_import if o.domain in ("", "ai.onnx")] or [0])
    table_bytes = 0
    replaced: dict[str, list[onnx.NodeProto]] = {}
    renames: dict[str, str] = {}  # mask_index output -> the raw int32 mask the attention nodes read
    for node in nodes:
        new, table_bytes_node = _unfuse(node, graph, inits, opset)
        replaced[node.name] = new
        table_bytes += table_bytes_node
        if len(node.output) > 1 and node.output[1]:
            renames[node.output[1]] = node.input[7]
    ordered = [m for n in graph.node for m in replaced.get(n.name, [n])]
    for n in ordered:
        for k, name in enumerate(n.input):
            if name in renames:
                n.input[k] = renames[name]
    del graph.node[:]
    graph.node.extend(ordered)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    summary = {"embedding": INT8_ROWS, "embedding_int8_bytes": table_bytes, "embedding_nodes": len(nodes)}
    return out, summary


def _cannot_unfuse(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], readers: dict[str, int]) -> str:
    """Why ``node`` cannot be unfused here ('' when it can)."""
    ins = list(node.input) + [""] * (9 - len(node.input))
    ids, _, word, pos, seg_table, gamma, beta, mask, _ = ins
    if not ids or word not in inits or pos not in inits or gamma not in inits:
        return "input ids, word / position tables or gamma are not all present (tables as initializers)"
    if (beta and beta not in inits) or (seg_table and seg_table not in inits):
        return "beta or the segment table is not an initializer"
    if len(inits[word].dims) != 2 or inits[word].data_type != onnx.TensorProto.FLOAT:
        return f"word table {word!r} is not a 2-D float32 tensor"
    if len(node.output) > 1 and node.output[1] and readers.get(node.output[1], 0) and not mask:
        return "its mask_index output is read but the node has no mask input"
    return ""


def _unfuse(
    node: onnx.NodeProto,
    graph: onnx.GraphProto,
    inits: dict[str, onnx.TensorProto],
    opset: int,
) -> tuple[list[onnx.NodeProto], int]:
    """The plain nodes replacing ``node`` (int8 word table added to the graph), and the table's bytes."""
    ins = list(node.input) + [""] * (9 - len(node.input))
    ids, segments, word, pos, seg_table, gamma, beta, _, position_ids = ins
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
    p = node.name
    table, scales = quantize_rows(numpy_helper.to_array(inits[word]))
    q_name, s_name = f"{word}_int8_rows", f"{word}_row_scales"
    graph.initializer.extend(
        [numpy_helper.from_array(table, q_name), numpy_helper.from_array(scales, s_name)]
    )
    nodes = [
        helper.make_node("Gather", [q_name, ids], [f"{p}_word_int8"], name=f"{p}_word_gather"),
        helper.make_node("Cast", [f"{p}_word_int8"], [f"{p}_word_q"], name=f"{p}_word_cast", to=1),
        helper.make_node("Gather", [s_name, ids], [f"{p}_word_scale"], name=f"{p}_scale_gather"),
        helper.make_node("Mul", [f"{p}_word_q", f"{p}_word_scale"], [f"{p}_word"], name=f"{p}_word_dequant"),
    ]
    if position_ids:
        nodes.append(helper.make_node("Gather", [pos, position_ids], [f"{p}_pos"], name=f"{p}_pos_gather"))
    else:  # positions 0 .. sequence-1: the first rows of the table
        nodes += _position_rows(p, ids, pos, graph, opset)
    total = f"{p}_sum" if not segments else f"{p}_word_pos"
    nodes.append(helper.make_node("Add", [f"{p}_word", f"{p}_pos"], [total], name=f"{p}_add_pos"))
    if segments:
        seg = f"{p}_seg"
        nodes.append(helper.make_node("Gather", [seg_table, segments], [seg], name=f"{p}_seg_gather"))
        nodes.append(helper.make_node("Add", [total, seg], [f"{p}_sum"], name=f"{p}_add_seg"))
    if len(node.output) > 2 and node.output[2]:
        nodes.append(helper.make_node("Identity", [f"{p}_sum"], [node.output[2]], name=f"{p}_sum_out"))
    norm_inputs = [f"{p}_sum", gamma] + ([beta] if beta else [])
    nodes.append(
        helper.make_node(
            "LayerNormalization", norm_inputs, [node.output[0]], name=f"{p}_norm", axis=-1, epsilon=eps
        )
    )
    return nodes, int(table.nbytes + scales.nbytes)


def _position_rows(p: str, ids: str, pos: str, graph: onnx.GraphProto, opset: int) -> list[onnx.NodeProto]:
    """Nodes computing ``{p}_pos`` = the position table's first ``sequence`` rows (sequence: ``ids``' axis 1)."""
    zero, one = f"{p}_const_0", f"{p}_const_1"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], dtype=np.int64), zero),
            numpy_helper.from_array(np.array([1], dtype=np.int64), one),
        ]
    )
    if opset >= 15:
        shape = [helper.make_node("Shape", [ids], [f"{p}_seq"], name=f"{p}_seq_len", start=1, end=2)]
    else:
        shape = [
            helper.make_node("Shape", [ids], [f"{p}_shape"], name=f"{p}_shape"),
            helper.make_node("Gather", [f"{p}_shape", one], [f"{p}_seq"], name=f"{p}_seq_len", axis=0),
        ]
    return [
        *shape,
        helper.make_node("Slice", [pos, zero, f"{p}_seq", zero], [f"{p}_pos"], name=f"{p}_pos_rows"),
    ]
