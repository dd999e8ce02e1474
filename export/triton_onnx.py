"""The ONNX Runtime path of a Triton repository: ``<name>_onnx`` (the bundle's single-layout graph,
platform ``onnxruntime_onnx``, optional TensorRT accelerator), the tokenizer step ``<name>_tokenizer``
and the ensemble ``<name>_ensemble`` that wires the two."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from mtst.errors import BundleError
from mtst.runtime.bundle import Bundle, hash_file
from mtst.runtime.fsutil import atomic_write_text
from mtst.runtime.manifest import MANIFEST_NAME, HeadKind, Layout, Precision, Variant
from mtst.runtime.onnx_refs import external_data_refs
from mtst.runtime.triton_io import TEXT, TensorSpec, tokenizer_outputs

from .pbtxt import Ident, to_pbtxt
from .triton_config import Device, TritonOptions, model_config, model_file, parameters, tensor

__all__ = ["onnx_variant", "write_onnx_path"]


def onnx_variant(b: Bundle, precision: Precision | None) -> Variant | None:
    singles = [v for v in b.manifest.variants if v.layout is Layout.SINGLE]
    if precision is not None:
        for v in singles:
            if v.precision is precision:
                return v
        raise BundleError(
            f"{b.root}: no single-layout {precision.value} variant for the ONNX model; "
            f"it has {[v.key for v in b.manifest.variants]}"
        )
    fp32 = [v for v in singles if v.precision is Precision.FP32]
    return (fp32 or singles or [None])[0]


def _onnx_io(path: Path) -> tuple[list[str], dict[str, int]]:
    """Graph input names and output ranks, read without the weights' external data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in model.graph.output}
    return inputs, ranks


def _onnx_outputs(b: Bundle, graph: Path) -> list[dict[str, Any]]:
    m = b.manifest
    inputs, ranks = _onnx_io(graph)
    if sorted(inputs) != sorted(m.inputs):
        raise BundleError(
            f"{graph}: graph inputs {inputs} differ from {MANIFEST_NAME} inputs {list(m.inputs)}"
        )
    outputs = [{"name": "embedding", "data_type": Ident("TYPE_FP32"), "dims": [m.embedding_dim]}]
    for h in m.heads:
        if h.kind is HeadKind.EMBEDDING:
            continue
        token = h.kind is HeadKind.TOKEN
        dims = [-1, len(h.labels)] if token else [len(h.labels)]
        outputs.append({"name": h.output, "data_type": Ident("TYPE_FP32"), "dims": dims})
    for o in outputs:
        name, want = o["name"], len(o["dims"]) + 1
        if name not in ranks:
            raise BundleError(f"{graph}: no output {name!r}; graph outputs {sorted(ranks)}")
        if ranks[name] != want:
            raise BundleError(f"{graph}: output {name!r}: expected rank {want}, graph has rank {ranks[name]}")
    return outputs


def _trt_accelerator(b: Bundle, opts: TritonOptions) -> dict[str, Any]:
    m = b.manifest
    opt_len = min(opts.trt_opt_seq_len, m.max_seq_len)
    opt_batch = max(opts.preferred_batch_sizes)

    def shapes(batch: int, length: int) -> str:
        return ",".join(f"{name}:{batch}x{length}" for name in m.inputs)

    settings = {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": opts.trt_cache_dir,
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(opt_batch, opt_len),
        "trt_profile_max_shapes": shapes(opts.max_batch_size, m.max_seq_len),
    }
    return {
        "execution_accelerators": {
            "gpu_execution_accelerator": [
                {"name": "tensorrt", "parameters": [{"key": k, "value": v} for k, v in settings.items()]}
            ]
        }
    }


def write_onnx_path(b: Bundle, variant: Variant, repo: Path, opts: TritonOptions) -> list[str]:
    """``<name>_onnx``, ``<name>_tokenizer`` and ``<name>_ensemble``; returns notes for the report."""
    outputs, notes = _write_onnx_model(b, variant, repo / f"{opts.name}_onnx", opts)
    tok_outputs = _write_tokenizer_model(b, repo / f"{opts.name}_tokenizer", opts)
    _write_ensemble(b.manifest.inputs, outputs, tok_outputs, repo, opts)
    return notes


def _write_onnx_model(
    b: Bundle, variant: Variant, onnx_dir: Path, opts: TritonOptions
) -> tuple[list[dict[str, Any]], list[str]]:
    notes: list[str] = []
    graph_name = variant.graphs["model"]
    graph = onnx_dir / "1" / "model.onnx"
    graph.parent.mkdir(parents=True)
    shutil.copyfile(b.path(graph_name), graph)
    base = PurePosixPath(graph_name).parent
    for ref in external_data_refs(b.path(graph_name)):  # external weights keep their relative names
        target = graph.parent / PurePosixPath(ref.location)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.path(str(base / ref.location)), target)
    outputs = _onnx_outputs(b, graph)
    config = model_config(
        onnx_dir.name,
        opts,
        platform="onnxruntime_onnx",
        max_batch_size=opts.max_batch_size,
        input=[{"name": n, "data_type": Ident("TYPE_INT64"), "dims": [-1]} for n in b.manifest.inputs],
        output=outputs,
    )
    if opts.tensorrt:
        config["optimization"] = _trt_accelerator(b, opts)
        if variant.details.get("fusions"):
            notes.append(
                f"{onnx_dir.name}: the graph holds ONNX Runtime fusions {variant.details['fusions']} that "
                f"TensorRT cannot build; those nodes run on CUDA (export with --no-optimize for TensorRT)"
            )
    if variant.precision in (Precision.INT8_DYNAMIC, Precision.INT8_STATIC_CPU) and opts.device is Device.GPU:
        notes.append(
            f"{onnx_dir.name}: {variant.precision.value} graphs run on CPU kernels even on GPU instances"
        )
    atomic_write_text(onnx_dir / "config.pbtxt", to_pbtxt(config))
    return outputs, notes


def _write_tokenizer_model(b: Bundle, tok_dir: Path, opts: TritonOptions) -> tuple[TensorSpec, ...]:
    m = b.manifest
    (tok_dir / "1").mkdir(parents=True)
    shutil.copyfile(b.tokenizer_path, tok_dir / "1" / "tokenizer.json")
    tok_outputs = tokenizer_outputs(m)
    config = model_config(
        tok_dir.name,
        opts,
        backend="python",
        max_batch_size=opts.max_batch_size,
        input=[tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        output=[tensor(s) for s in tok_outputs],
    )
    config["instance_group"] = [
        {"count": opts.instances, "kind": Ident("KIND_CPU")}
    ]  # tokenizing is CPU work
    config["parameters"] = parameters(
        {
            "max_seq_len": str(m.max_seq_len),
            "pad_token_id": str(m.pad_token_id),
            "inputs": ",".join(m.inputs),
            "pad_to_multiple": str(opts.pad_to_multiple),
            "tokenizer_sha256": hash_file(tok_dir / "1" / "tokenizer.json"),
        }
    )
    atomic_write_text(tok_dir / "config.pbtxt", to_pbtxt(config))
    atomic_write_text(tok_dir / "1" / "model.py", model_file("tokenizer"))
    return tok_outputs


def _write_ensemble(
    inputs: tuple[str, ...],
    outputs: list[dict[str, Any]],
    tok_outputs: tuple[TensorSpec, ...],
    repo: Path,
    opts: TritonOptions,
) -> None:
    """text -> <name>_tokenizer -> <name>_onnx; the ensemble also returns word_ids and offsets."""
    ens_dir = repo / f"{opts.name}_ensemble"
    (ens_dir / "1").mkdir(parents=True)  # Triton wants a version folder, even an empty one
    extra = [s for s in tok_outputs if s.name not in inputs]
    ensemble = {
        "name": ens_dir.name,
        "platform": "ensemble",
        "max_batch_size": opts.max_batch_size,
        "input": [tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        "output": [*outputs, *(tensor(s) for s in extra)],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": f"{opts.name}_tokenizer",
                    "model_version": -1,
                    "input_map": [{"key": TEXT, "value": TEXT}],
                    "output_map": [{"key": s.name, "value": s.name} for s in tok_outputs],
                },
                {
                    "model_name": f"{opts.name}_onnx",
                    "model_version": -1,
                    "input_map": [{"key": n, "value": n} for n in inputs],
                    "output_map": [{"key": o["name"], "value": o["name"]} for o in outputs],
                },
            ]
        },
    }
    atomic_write_text(ens_dir / "config.pbtxt", to_pbtxt(ensemble))
