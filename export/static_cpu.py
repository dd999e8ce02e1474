"""``int8-static-cpu``: static int8 in ONNX Runtime's CPU operators -- batch-invariant, as fast as dynamic.

Dynamic int8 (``quantize_dynamic``) quantizes each MatMul's input with one scale taken over the whole
batch tensor at run time (``DynamicQuantizeLinear``, per tensor), so a sentence's answer depends on
what else is in its batch -- and even on the padding of its batch. Here the same fused graph and the
same kernels (``QAttention``, ``QEmbedLayerNormalization``, int8 per-channel weights) get **constant**
activation scales instead:

1. ``quantize_dynamic`` as for ``int8-dynamic`` (QInt8 weights per channel, on the fused graph);
2. every ``DynamicQuantizeLinear`` becomes a ``QuantizeLinear`` whose uint8 scale and zero point come from
   the tensor's range (MinMax, zero included) over the real tokens of calibration batches -- the tasks'
   *training* sentences, never a test split;
3. every ``MatMulInteger -> Cast -> Mul(a_scale * b_scale)`` becomes one ``MatMulIntegerToFloat``
   (com.microsoft): ONNX Runtime fuses the dynamic pattern into ``DynamicQuantizeMatMul`` itself, but
   not the static one.

Measured on the trained three-head checkpoint (all-MiniLM-L6-v2; 500 validation sentences a task; one
core, interleaved with int8-dynamic on a shared machine, so ratios only): batch-1 graph time 0.99x and
sorted batches of 32 1.00x int8-dynamic's; 500 sentences alone vs inside random batches of 32: every
label equal and cosine 1.0 (int8-dynamic: minimum 0.983, 340 token and sentence labels changed).
Fidelity is that of int8-dynamic (min cosine vs fp32 0.975 vs 0.981, in-domain label agreement
99.0-99.4% vs 98.6-99.4%): per-tensor int8 activations are the limit, not the scales' source.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mtst.errors import ConfigError

__all__ = ["activation_ranges", "dynamic_to_static", "fuse_integer_to_float", "quantize_static_cpu"]

Batch = dict[str, np.ndarray]


def activation_ranges(
    model: onnx.ModelProto, names: Sequence[str], batches: Sequence[Batch]
) -> dict[str, np.ndarray]:
    """``[min, max]`` (zero included) of each tensor over the real tokens of ``batches`` (padding left out)."""
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
    ranges = {n: np.zeros(2, dtype=np.float64) for n in names}
    for batch in batches:
        real = batch["attention_mask"].astype(bool)
        for name, x in zip(names, session.run(list(names), {k: batch[k] for k in feeds}), strict=True):
            rows = x[real] if x.ndim == 3 and x.shape[:2] == real.shape else x
            ranges[name] = np.array([min(ranges[name][0], rows.min()), max(ranges[name][1], rows.max())])
    return ranges


def dynamic_to_static(model: onnx.ModelProto, batches: Sequence[Batch]) -> onnx.ModelProto:
    """Each ``DynamicQuantizeLinear(x)`` -> ``QuantizeLinear(x, scale, zero_point)`` with constants that
    keep the outputs' names (its consumers read the same scale and zero point tensors)."""
    dql = [n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not dql:
        raise ConfigError("int8-static-cpu: the dynamically quantized graph has no DynamicQuantizeLinear")
    ranges = activation_ranges(model, [n.input[0] for n in dql], batches)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        lo, hi = ranges[node.input[0]]
        scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
        zero = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
        quantized, scale_name, zero_name = node.output
        out.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
                numpy_helper.from_array(np.array(zero, dtype=np.uint8), zero_name),
            ]
        )
        nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [node.input[0], scale_name, zero_name],
                [quantized],
                name=f"{node.name}_static",
            )
        )
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def fuse_integer_to_float(model: onnx.ModelProto) -> onnx.ModelProto:
    """``MatMulInteger -> Cast -> Mul(Mul(a_scale, b_scale)) [-> Add(bias)]`` -> one ``MatMulIntegerToFloat``
    (the bias folded in when the Add's other input is a constant vector)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[str] = set()
    fused: dict[str, onnx.NodeProto] = {}
    for mm in (n for n in model.graph.node if n.op_type == "MatMulInteger"):
        cast = _only(consumers.get(mm.output[0], []), "Cast")
        mul = _only(consumers.get(cast.output[0], []), "Mul") if cast is not None else None
        scales = producer.get(mul.input[1]) if mul is not None else None
        if cast is None or mul is None or scales is None or scales.op_type != "Mul":
            continue
        a_scale, b_scale = scales.input
        inputs, output = [mm.input[0], mm.input[1], a_scale, b_scale, mm.input[2], mm.input[3]], mul.output[0]
        add = _only(consumers.get(mul.output[0], []), "Add")
        bias = _bias(add, mul.output[0], constants) if add is not None else None
        if add is not None and bias is not None:
            inputs.append(bias)
            output = add.output[0]
            drop.add(add.name)
        fused[mm.name] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [output], name=f"{mm.name}_to_float", domain="com.microsoft"
        )
        drop |= {cast.name, mul.name}
        if len(consumers[scales.output[0]]) == 1:
            drop.add(scales.name)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [fused.get(n.name, n) for n in out.graph.node if n.name not in drop]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _only(nodes: Sequence[onnx.NodeProto], op_type: str) -> onnx.NodeProto | None:
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None


def _bias(add: onnx.NodeProto, value: str, constants: dict[str, onnx.TensorProto]) -> str | None:
    """The Add's other input when it is a constant 1-D float vector (a MatMul bias), else None."""
    other = add.input[1] if add.input[0] == value else add.input[0]
    t = constants.get(other)
    ok = t is not None and len(t.dims) == 1 and t.data_type == onnx.TensorProto.FLOAT
    return other if ok else None


def quantize_static_cpu(
    src: Path, dst: Path, *, nodes: Sequence[str], calibration: Sequence[Batch]
) -> dict[str, Any]:
    """Write the ``int8-static-cpu`` graph of ``src`` (nodes named) to ``dst``; returns its options."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not calibration:
        raise ConfigError("int8-static-cpu needs calibration batches (real sentences)")
    with tempfile.TemporaryDirectory(prefix="mtst-static-cpu-") as work:
        dynamic = Path(work) / "dynamic.onnx"
        quantize_dynamic(
            src,
            dynamic,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=list(nodes),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        static = fuse_integer_to_float(dynamic_to_static(onnx.load(str(dynamic)), calibration))
    onnx.save(static, str(dst))
    return {
        "weight_type": "QInt8",
        "per_channel": True,
        "activations": "uint8 per tensor, constant scales (MinMax over calibration, zero included)",
        "batch_invariant": True,
        "calibration_batches": len(calibration),
        "calibration_sentences": int(sum(len(b["input_ids"]) for b in calibration)),
    }
