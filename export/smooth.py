"""SmoothQuant-style scale migration on an fp32 graph, before its activations get per-tensor int8 scales.

A few channels of a transformer's activations are far larger than the rest, so one per-tensor scale
spends most of its 256 levels on them. For each weighted node ``y = x @ W`` (``MatMul`` with a constant
weight, or ORT's fused ``Attention``) a per-input-channel factor ``s`` moves that range into the
weights: ``y = (x / s) @ (s * W)``, with ``s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha)`` over the
real tokens of calibration batches (Xiao et al., SmoothQuant, 2023). The weights stay per-channel int8
on their output channels, which absorbs the larger rows.

The division ``x / s`` is folded where the graph allows it at no cost -- into the value columns (and
bias) of the ``Attention`` node whose output feeds the node, since attention is linear in the values --
and is otherwise a ``Mul`` by the constant ``1 / s`` in front of the node (the inputs after a
LayerNormalization also feed the residual path, so the norm's gamma cannot take it). The graph's fp32
outputs stay those of the original up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mtst.errors import ConfigError

__all__ = ["activation_rows", "smooth_graph", "smoothing_factors"]

Batch = dict[str, np.ndarray]
_WEIGHTED = ("MatMul", "Attention")


def activation_rows(
    model: onnx.ModelProto, names: Sequence[str], batches: Sequence[Batch]
) -> Iterator[dict[str, np.ndarray]]:
    """Per calibration batch: each tensor of ``names`` over the batch's real tokens (padding left out)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in have
    )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]
    for batch in batches:
        real = batch["attention_mask"].astype(bool)
        values = session.run(list(names), {k: batch[k] for k in feeds})
        yield {
            n: (x[real] if x.ndim == 3 and x.shape[:2] == real.shape else x)
            for n, x in zip(names, values, strict=True)
        }


def smoothing_factors(act_absmax: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha)`` per input channel ``j`` (row of ``weight``);
    1 where a channel or a weight row is all zeros."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"smoothing alpha {alpha!r}: expected a value in [0, 1]")
    if weight.ndim != 2 or weight.shape[0] != act_absmax.shape[0]:
        raise ConfigError(
            f"smoothing: weight of shape {weight.shape} does not match {act_absmax.shape[0]} input channels"
        )
    w = np.abs(weight).max(axis=1).astype(np.float64)
    a = act_absmax.astype(np.float64)
    ok = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    return s.astype(np.float32)


def smooth_graph(
    model: onnx.ModelProto, batches: Sequence[Batch], nodes: Sequence[str], alpha: float
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph with the named weighted nodes smoothed (see the module docstring), and a summary."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    wanted = set(nodes)
    targets = [
        n
        for n in graph.node
        if n.name in wanted and n.op_type in _WEIGHTED and len(n.input) > 1 and n.input[1] in inits
    ]
    if not targets:
        return out, {"alpha": alpha, "nodes": 0, "folded": 0, "mul_nodes": 0}
    absmax = _channel_absmax(model, [n.input[0] for n in targets], batches)
    producer = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    folded = 0
    muls: dict[str, onnx.NodeProto] = {}  # target name -> Mul to insert before it
    for node in targets:
        x = node.input[0]
        w_name = node.input[1]
        weight = numpy_helper.to_array(inits[w_name])
        s = smoothing_factors(absmax[x], weight, alpha)
        new_w = f"{w_name}_smooth_{node.name}" if uses[w_name] > 1 else w_name
        _set(graph, inits, new_w, weight * s[:, None])
        node.input[1] = new_w
        src = producer.get(x)
        if (
            src is not None
            and src.op_type == "Attention"
            and uses[x] == 1
            and _fold_values(graph, inits, src, s)
        ):
            folded += 1
            continue
        inv = f"{x}_smooth_inv_{node.name}"
        _set(graph, inits, inv, (1.0 / s).astype(np.float32))
        smoothed = f"{x}_smooth_{node.name}"
        muls[node.name] = helper.make_node("Mul", [x, inv], [smoothed], name=f"{node.name}_smooth")
        node.input[0] = smoothed
    ordered = [m for n in graph.node for m in ([muls[n.name]] if n.name in muls else []) + [n]]
    del graph.node[:]
    graph.node.extend(ordered)
    return out, {"alpha": alpha, "nodes": len(targets), "folded": folded, "mul_nodes": len(muls)}


def _channel_absmax(
    model: onnx.ModelProto, names: Sequence[str], batches: Sequence[Batch]
) -> dict[str, np.ndarray]:
    unique = list(dict.fromkeys(names))
    peak: dict[str, np.ndarray] = {}
    for rows in activation_rows(model, unique, batches):
        for name, x in rows.items():
            m = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            peak[name] = np.maximum(peak[name], m) if name in peak else m
    if not peak:
        raise ConfigError("smoothing needs calibration batches (real sentences)")
    return peak


def _fold_values(
    graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], attention: onnx.NodeProto, s: np.ndarray
) -> bool:
    """Divide the value columns (and bias) of an ``Attention`` node by ``s``; False if it cannot."""
    if len(attention.input) < 3 or attention.input[1] not in inits or attention.input[2] not in inits:
        return False
    qkv = numpy_helper.to_array(inits[attention.input[1]])
    bias = numpy_helper.to_array(inits[attention.input[2]])
    hidden = s.shape[0]
    if qkv.ndim != 2 or qkv.shape[1] != 3 * hidden or bias.shape != (3 * hidden,):
        return False  # unequal q/k/v sizes (qkv_hidden_sizes) or another layout: leave it alone
    qkv = qkv.copy()
    bias = bias.copy()
    qkv[:, 2 * hidden :] /= s[None, :]
    bias[2 * hidden :] /= s
    for name, value in ((attention.input[1], qkv), (attention.input[2], bias)):
        shared = sum(name in n.input for n in graph.node) > 1
        new = f"{name}_smooth_{attention.name}" if shared else name
        _set(graph, inits, new, value)
        attention.input[list(attention.input).index(name)] = new
    return True


def _set(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto], name: str, value: np.ndarray) -> None:
    """Create or replace the initializer ``name``."""
    tensor = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
    if name in inits:
        inits[name].CopyFrom(tensor)
    else:
        graph.initializer.append(tensor)
        inits[name] = graph.initializer[-1]
