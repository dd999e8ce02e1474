"""The graph steps of an export: torch -> ONNX (+ fusion), and one precision's variant of it.

:func:`work_graphs` exports the encoder-side graph once (exposing ``token_states`` for the
quantizers) and fuses it; a split export also writes the fp32 head graphs that every variant shares.
:func:`make_variant` turns that into the graph file of one precision, through the accuracy guard when
a scorer is given, and describes how it was made (``Variant.details``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.runtime.manifest import Layout, Precision, Variant
from mtst.tasks import TaskKind

from .bundle import graph_file
from .fusion import DEFAULT_OPT_LEVEL, encoder_geometry, fuse_graph
from .guard import GuardResult, Scorer, guarded_build
from .onnx import TRACE_BATCH, GraphKind, export_graph
from .quantize import (
    DEFAULT_FP32_GROUPS,
    GROUP_ORDER,
    STATES,
    available_groups,
    cpu_fp32_fallback_ops,
    quantize_graph,
    strip_outputs,
)
from .runners import OrtRunner

__all__ = ["WorkGraphs", "head_graphs", "make_variant", "work_graphs"]


@dataclass(frozen=True, slots=True)
class WorkGraphs:
    """What every variant is made from: the exported (and fused) encoder-side graph and the head graphs."""

    bundle: Path  # the temporary bundle directory
    plain: Path  # exposes token_states
    fused: Path  # == plain without optimization
    fusions: dict[str, int]
    optimized: bool
    core_role: str  # "model" or "encoder"
    head_graphs: dict[str, str]  # split: role -> fp32 head graph file, shared by every variant
    strip: tuple[str, ...]  # work outputs to remove from the final graph
    layout: Layout
    opset: int
    inputs: tuple[str, ...]
    trace_len: int


def head_graphs(model: Any, bundle: Path, *, opset: int, trace_len: int) -> dict[str, str]:
    """``heads.onnx`` (+ ``token_heads.onnx`` when the model has a token head), fp32, into ``bundle``;
    returns role -> file name."""
    graphs: dict[str, str] = {}
    for kind in (GraphKind.HEADS, GraphKind.TOKEN_HEADS):
        if kind is GraphKind.TOKEN_HEADS and not model.task_list(TaskKind.TOKEN):
            continue
        name = graph_file(kind.value, Precision.FP32)
        export_graph(model, bundle / name, kind, opset=opset, trace_len=trace_len)
        graphs[kind.value] = name
    return graphs


def work_graphs(
    model: Any, work: Path, bundle: Path, *, split: bool, optimize: bool, opset: int, trace_len: int
) -> WorkGraphs:
    """torch -> ONNX (in ``work``) and fusion; a split export also writes the head graphs into ``bundle``."""
    core_role = "encoder" if split else "model"
    plain = work / f"{core_role}.plain.onnx"
    kind = GraphKind.ENCODER if split else GraphKind.SINGLE
    export_graph(model, plain, kind, opset=opset, trace_len=trace_len, expose_states=True)
    fusions: dict[str, int] = {}
    fused = plain
    if optimize:
        heads_n, hidden = encoder_geometry(model.encoder.config)
        fused = work / f"{core_role}.fused.onnx"
        fusions = fuse_graph(plain, fused, num_heads=heads_n, hidden_size=hidden).fusions
    has_token = bool(model.task_list(TaskKind.TOKEN))
    return WorkGraphs(
        bundle=bundle,
        plain=plain,
        fused=fused,
        fusions=fusions,
        optimized=optimize,
        core_role=core_role,
        head_graphs=head_graphs(model, bundle, opset=opset, trace_len=trace_len) if split else {},
        strip=(STATES,) if (not split or not has_token) else (),
        layout=Layout.SPLIT if split else Layout.SINGLE,
        opset=opset,
        inputs=tuple(model.input_names),
        trace_len=trace_len,
    )


def make_variant(
    precision: Precision,
    g: WorkGraphs,
    *,
    scorer: Scorer | None,
    calibration: list[dict[str, np.ndarray]],
) -> tuple[Variant, GuardResult | None]:
    """Write the graph of one precision into the bundle (through the accuracy guard when on)."""
    name = graph_file(g.core_role, precision)
    dst = g.bundle / name
    src = g.plain if precision is Precision.INT8_STATIC else g.fused
    graphs = {g.core_role: name, **g.head_graphs}
    made: dict[str, Any] = {}

    def build(groups: tuple[str, ...]) -> Path:
        if precision is Precision.FP32:
            shutil.copyfile(src, dst)
            made["options"], made["excluded"] = {}, ()
        else:
            res = quantize_graph(precision, src, dst, exclude_groups=groups, calibration=calibration)
            made["options"], made["excluded"] = res.options, res.excluded_nodes
        if g.strip:
            strip_outputs(dst, g.strip)
        return dst

    def runner(_: Path) -> OrtRunner:
        return OrtRunner(g.bundle, Variant(precision, g.layout, graphs, g.opset), g.inputs)

    result: GuardResult | None = None
    if scorer is not None:
        _, result = guarded_build(
            precision,
            build,
            runner,
            scorer,
            group_order=GROUP_ORDER if precision is not Precision.FP32 else (),
            available_groups=available_groups(src),
            start_groups=DEFAULT_FP32_GROUPS.get(precision, ()),
        )
        fp32_groups = result.chosen.excluded_groups
    else:
        fp32_groups = DEFAULT_FP32_GROUPS.get(precision, ())
        build(fp32_groups)
    details = _details(precision, g, graphs, made, fp32_groups, result)
    return Variant(precision, g.layout, graphs, g.opset, details), result


def _details(
    precision: Precision,
    g: WorkGraphs,
    graphs: dict[str, str],
    made: dict[str, Any],
    fp32_groups: tuple[str, ...],
    result: GuardResult | None,
) -> dict[str, Any]:
    """``Variant.details``: how the variant was made (fusions, quantizer options, fp32 groups, guard)."""
    static = precision is Precision.INT8_STATIC
    details: dict[str, Any] = {
        "fused": g.optimized and not static,
        "fusions": {} if static else g.fusions,
        "opt_level": DEFAULT_OPT_LEVEL if g.optimized else None,
        "quantization": made["options"],
        "fp32_groups": list(fp32_groups),
        "fp32_nodes": list(made["excluded"]),
        "bytes": {f: (g.bundle / f).stat().st_size for f in sorted(set(graphs.values()))},
        "trace_shape": [TRACE_BATCH, g.trace_len],
        "guard": result.to_dict() if result is not None else {"enabled": False},
    }
    if static:
        details["source_graph"] = "unfused (TensorRT fuses itself and does not read ORT contrib ops)"
    if precision is Precision.FP16:
        details["cpu_fp32_fallback_ops"] = cpu_fp32_fallback_ops(g.bundle / graphs[g.core_role])
    return details
