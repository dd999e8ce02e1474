"""Reduced-precision variants of an exported graph: int8 dynamic, int8 static (QDQ), fp16.

Only the **encoder core** is ever quantized: the nodes that compute the token states (graph tensor
``token_states``, which every intermediate graph exposes for this purpose). Pooling, normalization
and the task heads stay fp32 -- quantizing the small heads buys nothing and costs accuracy (DESIGN.md,
known traps).

The accuracy guard can keep *sensitive node groups* of the core in fp32 as well
(:func:`sensitive_groups`): ``ffn_output`` (the FFN's second MatMul, ``output/dense``), ``attention``
(fused Attention ops and the attention block's MatMuls) and ``last_layer``.

- ``int8-dynamic``: ``quantize_dynamic``, QInt8 weights **per channel** (per-tensor loses too much on
  MiniLM), on the fused graph; ``DefaultTensorType`` fills in the types that ORT's contrib ops hide
  from ONNX shape inference.
- ``int8-static-cpu``: the int8-dynamic graph with constant activation scales calibrated on real
  sentences (:mod:`mtst.export.static_cpu`): the same CPU kernels and speed, batch-invariant answers.
- ``int8-static``: ``quantize_static`` in QDQ format (what TensorRT consumes), symmetric int8
  activations and per-channel weights, MinMax calibration on real sentences, on the *unfused* graph
  (TensorRT fuses itself and does not take ORT's contrib ops).
- ``fp16``: weights and compute in fp16 with fp32 graph inputs/outputs; LayerNormalization (plain,
  skip and embedding variants), pooling and heads stay fp32.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mtst.errors import ConfigError
from mtst.runtime.manifest import Precision, parse_precision

from .static_cpu import quantize_static_cpu

__all__ = [
    "DEFAULT_FP32_GROUPS",
    "FP32_OP_TYPES",
    "GROUP_ORDER",
    "STATES",
    "QuantizeResult",
    "available_groups",
    "cpu_fp32_fallback_ops",
    "encoder_core",
    "quantize_graph",
    "sensitive_groups",
    "strip_outputs",
]

logger = logging.getLogger(__name__)

STATES = "token_states"
# Order in which the guard keeps groups in fp32 (cumulatively): the FFN output MatMuls were the most
# sensitive on MiniLM + a trained Banking77 head, then attention, then the last layer.
GROUP_ORDER = ("ffn_output", "attention", "last_layer")
# Groups kept fp32 from the first attempt on. int8-static: symmetric per-tensor int8 activations (what
# TensorRT takes) cannot hold the post-GELU input of the FFN output MatMul -- on all-MiniLM-L6-v2 the
# embedding cosine to fp32 over 128 real sentences fell to min 0.69 / mean 0.83 with it quantized
# (MinMax; Percentile and Entropy calibration did no better), 0.96 / 0.98 with it kept fp32.
DEFAULT_FP32_GROUPS: dict[Precision, tuple[str, ...]] = {Precision.INT8_STATIC: ("ffn_output",)}
# Kept fp32 in fp16 graphs: layer norms overflow / lose precision in fp16 (DESIGN.md, known traps).
FP32_OP_TYPES = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
)
_LAYER = re.compile(r"(?:layers?|block)[./_](\d+)[./_]|^Attention_(\d+)$")


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    path: Path
    precision: Precision
    excluded_groups: tuple[str, ...]
    excluded_nodes: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- graph facts
def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (the quantizers address nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_mtst_{i}"
        seen.add(node.name)


def encoder_core(model: onnx.ModelProto, states: str = STATES) -> list[str]:
    """Names of the nodes the tensor ``states`` depends on (the encoder), in graph order."""
    producer = {out: node for node in model.graph.node for out in node.output}
    if states not in producer:
        raise ConfigError(f"graph has no tensor {states!r}: cannot tell the encoder from the heads")
    keep: set[str] = set()
    stack = [states]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep:
            continue
        keep.add(node.name)
        stack.extend(i for i in node.input if i)
    return [n.name for n in model.graph.node if n.name in keep]


def sensitive_groups(model: onnx.ModelProto, core: Sequence[str]) -> dict[str, list[str]]:
    """Quantizable core nodes by group (see the module docstring); empty groups are left out."""
    nodes = {n.name: n for n in model.graph.node}
    weighted = [nodes[n] for n in core if nodes[n].op_type in ("MatMul", "Gemm", "Attention")]
    layers = {n.name: _layer_of(n.name) for n in weighted}
    last = max((v for v in layers.values() if v is not None), default=None)
    groups = {
        "ffn_output": [
            n.name
            for n in weighted
            if n.op_type == "MatMul" and "output/dense" in n.name and "attention" not in n.name
        ],
        "attention": [n.name for n in weighted if n.op_type == "Attention" or "attention" in n.name],
        "last_layer": [n.name for n in weighted if last is not None and layers[n.name] == last],
    }
    return {k: v for k, v in groups.items() if v}


def available_groups(path: Path) -> list[str]:
    """Names of the sensitive groups that graph ``path`` has nodes for."""
    model = onnx.load(str(path), load_external_data=False)
    _name_nodes(model)
    return list(sensitive_groups(model, encoder_core(model)))


def _layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def strip_outputs(path: Path, names: Sequence[str]) -> None:
    """Remove graph outputs (tensors stay as intermediates): the exposed ``token_states`` of a work graph."""
    model = onnx.load(str(path))
    keep = [o for o in model.graph.output if o.name not in set(names)]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(path))


# ---------------------------------------------------------------------------------------------- quantizers
def _plan(src: Path, exclude_groups: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(all node names, encoder core minus excluded, excluded node names)."""
    model = onnx.load(str(src), load_external_data=False)
    _name_nodes(model)
    core = encoder_core(model)
    groups = sensitive_groups(model, core)
    unknown = [g for g in exclude_groups if g not in GROUP_ORDER]
    if unknown:
        raise ConfigError(f"exclude groups {unknown}: expected some of {list(GROUP_ORDER)}")
    excluded = sorted({n for g in exclude_groups for n in groups.get(g, [])})
    allowed = [n for n in core if n not in set(excluded)]
    return [n.name for n in model.graph.node], allowed, excluded


def _named_copy(src: Path, dst: Path) -> Path:
    model = onnx.load(str(src))
    _name_nodes(model)
    onnx.save(model, str(dst))
    return dst


class _QuietQuantizer(logging.Filter):
    """Drops ONNX Runtime quantizer chatter that it logs on the root logger (advice to pre-process,
    per-tensor notes); warnings of its own loggers and real errors still pass."""

    _NOISE = (
        "Please consider",
        "Quantization parameters for tensor",
        "get_tensor_type returns DefaultTensorType",
        "Inference failed or unsupported type to quantize",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith(self._NOISE))


class _Calibration:
    """CalibrationDataReader over pre-tokenized batches (dicts of int64 arrays)."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self._batches = list(batches)
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_graph(
    precision: Precision,
    src: Path,
    dst: Path,
    *,
    exclude_groups: Sequence[str] = (),
    calibration: Sequence[dict[str, np.ndarray]] = (),
) -> QuantizeResult:
    """Write the ``precision`` variant of graph ``src`` (which exposes ``token_states``) to ``dst``."""
    precision = parse_precision(precision, "quantize_graph: precision")
    if precision is Precision.FP32:
        raise ConfigError("quantize_graph: fp32 is the unquantized graph, nothing to do")
    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        return _quantize(precision, src, dst, exclude_groups, calibration)
    finally:
        logging.getLogger().removeFilter(quiet)


def _quantize(
    precision: Precision,
    src: Path,
    dst: Path,
    exclude_groups: Sequence[str],
    calibration: Sequence[dict[str, np.ndarray]],
) -> QuantizeResult:
    import tempfile

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="mtst-quant-") as work:
        named = _named_copy(src, Path(work) / "named.onnx")
        all_nodes, allowed, excluded = _plan(named, exclude_groups)
        options: dict[str, Any]
        if precision is Precision.INT8_DYNAMIC:
            options = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
            quantize_dynamic(
                named,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_quantize=allowed,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        elif precision is Precision.INT8_STATIC_CPU:
            options = quantize_static_cpu(named, dst, nodes=allowed, calibration=calibration)
        elif precision is Precision.INT8_STATIC:
            if not calibration:
                raise ConfigError("int8-static needs calibration batches (real sentences)")
            options = {
                "format": "QDQ",
                "weight_type": "QInt8",
                "activation_type": "QInt8",
                "per_channel": True,
                "symmetric": True,
                "calibration": "MinMax",
                "calibration_batches": len(calibration),
                "calibration_sentences": int(sum(len(b["input_ids"]) for b in calibration)),
            }
            quantize_static(
                named,
                dst,
                _Calibration(calibration),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=allowed,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        else:
            options = _convert_fp16(named, dst, keep_fp32=[n for n in all_nodes if n not in set(allowed)])
    logger.info("%s: %s (fp32 groups: %s)", precision.value, dst.name, list(exclude_groups) or "none")
    return QuantizeResult(dst, precision, tuple(exclude_groups), tuple(excluded), options)


def _convert_fp16(src: Path, dst: Path, *, keep_fp32: Sequence[str]) -> dict[str, Any]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    op_block = [*DEFAULT_OP_BLOCK_LIST, *FP32_OP_TYPES]
    model.convert_float_to_float16(
        use_symbolic_shape_infer=True,
        keep_io_types=True,
        op_block_list=op_block,
        node_block_list=list(keep_fp32),
    )
    model.save_model_to_file(str(dst))
    return {"keep_io_types": True, "fp32_op_types": list(FP32_OP_TYPES), "fp32_nodes": len(keep_fp32)}


def cpu_fp32_fallback_ops(path: Path) -> list[str]:
    """Op types of an fp16 graph that ORT's CPU provider runs in fp32 (it has no fp16 kernel for them).

    ORT inserts precision casts around such nodes when it loads the graph; this loads it with the
    CPU provider, saves the optimized graph and lists the op types those casts feed.
    """
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mtst-fp16-") as work:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(Path(work) / "cpu.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(Path(work) / "cpu.onnx"))
    inserted = {
        o for n in optimized.graph.node if n.name.startswith("InsertedPrecisionFreeCast") for o in n.output
    }
    return sorted({n.op_type for n in optimized.graph.node if inserted & set(n.input)})
