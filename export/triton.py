"""Bundle (or checkpoint) -> Triton Inference Server model repository (``mtst-export --format triton``).

::

    REPO/
      mtst-triton.json                 # what was written, from which bundle, with which options
      <name>/                          # Python backend: raw strings in, per-head answers out
        config.pbtxt                   #   dynamic batching, instance group, engine settings
        1/model.py                     #   adapter to mtst.runtime.triton_io.TextModel
        1/bundle/                      #   the bundle, verified (sha256) when the model loads
      <name>_onnx/                     # ONNX Runtime backend: the bundle's single-layout graph
        config.pbtxt                   #   onnxruntime_onnx, dims -1, optional TensorRT (fp16, cache)
        1/model.onnx
      <name>_tokenizer/                # Python backend: texts -> graph inputs (ensemble step 1)
        config.pbtxt
        1/model.py, 1/tokenizer.json
      <name>_ensemble/                 # text -> <name>_tokenizer -> <name>_onnx -> logits
        config.pbtxt
        1/

The whole repository is written into a temporary sibling of ``REPO`` and renamed into place at
the end, like a bundle. The ``_onnx``, ``_tokenizer`` and ``_ensemble`` models need a bundle with a
single-layout variant (a split-only bundle gets the Python-backend model alone, with a note).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from mtst.errors import BundleError, ConfigError, parse_enum
from mtst.runtime.bundle import Bundle, hash_file, load_bundle
from mtst.runtime.fsutil import atomic_directory, atomic_write_json, atomic_write_text
from mtst.runtime.manifest import MANIFEST_NAME, HeadKind, Layout, Precision, Variant, parse_precision
from mtst.runtime.onnx_refs import external_data_refs
from mtst.runtime.triton_io import (
    TEXT,
    TEXT_MODEL_PARAMETERS,
    TensorSpec,
    text_model_outputs,
    tokenizer_outputs,
)

from .bundle import ExportReport, now_utc
from .pbtxt import Ident, to_pbtxt

__all__ = [
    "REPOSITORY_FILE",
    "Device",
    "TritonOptions",
    "TritonReport",
    "export_triton",
    "export_triton_from_checkpoint",
]

logger = logging.getLogger(__name__)

REPOSITORY_FILE = "mtst-triton.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MODEL_FILES = {"text": "text_model.py", "tokenizer": "tokenizer_model.py"}


class Device(str, Enum):
    CPU = "cpu"
    GPU = "gpu"

    @property
    def kind(self) -> Ident:
        return Ident("KIND_GPU" if self is Device.GPU else "KIND_CPU")


@dataclass(frozen=True, slots=True)
class TritonOptions:
    """How the repository's models are configured (validated here, written into config.pbtxt)."""

    name: str = "mtst"
    device: Device = Device.CPU
    instances: int = 1  # instance_group count (per GPU for KIND_GPU)
    max_batch_size: int = 64
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)  # capped at max_batch_size
    queue_delay_us: int = 1000
    onnx_precision: Precision | None = None  # variant for <name>_onnx (None: fp32, else the first single)
    tensorrt: bool = False  # TensorRT accelerator (fp16, engine cache) on <name>_onnx; needs device gpu
    trt_cache_dir: str = "/tmp/mtst-trt-cache"
    trt_opt_seq_len: int = 64  # sequence length TensorRT optimizes its profile for
    pad_to_multiple: int = 16  # the tokenizer step pads to a multiple of this many tokens
    text_parameters: Mapping[str, str] = field(default_factory=dict)  # overrides of the text model's

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"name: {self.name!r}: expected letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        object.__setattr__(self, "device", parse_enum(Device, self.device, "device"))
        if self.onnx_precision is not None:
            object.__setattr__(self, "onnx_precision", parse_precision(self.onnx_precision, "onnx_precision"))
        for key, minimum in (
            ("instances", 1),
            ("max_batch_size", 1),
            ("queue_delay_us", 0),
            ("trt_opt_seq_len", 1),
            ("pad_to_multiple", 1),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
        sizes = tuple(self.preferred_batch_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ConfigError(f"preferred_batch_sizes: expected integers >= 1, got {list(sizes)}")
        capped = tuple(sorted({min(s, self.max_batch_size) for s in sizes}))
        object.__setattr__(self, "preferred_batch_sizes", capped)
        if self.tensorrt and self.device is not Device.GPU:
            raise ConfigError("tensorrt: the TensorRT accelerator runs on GPU instances: pass device='gpu'")
        unknown = sorted(set(self.text_parameters) - set(TEXT_MODEL_PARAMETERS))
        if unknown:
            raise ConfigError(
                f"text_parameters: {unknown} are not known; known: {sorted(TEXT_MODEL_PARAMETERS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["device"] = self.device.value
        d["onnx_precision"] = self.onnx_precision.value if self.onnx_precision else None
        d["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        d["text_parameters"] = dict(self.text_parameters)
        return d


@dataclass(frozen=True, slots=True)
class TritonReport:
    repository: Path
    models: dict[str, str]  # model name -> role (text, onnx, tokenizer, ensemble)
    bundle_variants: tuple[str, ...]
    onnx_variant: str | None
    notes: tuple[str, ...] = ()
    bundle_report: ExportReport | None = None  # when the bundle was exported from a checkpoint first

    def summary(self) -> str:
        lines = [self.bundle_report.summary(), ""] if self.bundle_report else []
        lines.append(f"triton repository {self.repository}")
        for model, role in self.models.items():
            detail = {
                "text": f"python backend, strings in; bundle variants {', '.join(self.bundle_variants)}",
                "onnx": f"onnxruntime_onnx, {self.onnx_variant}",
                "tokenizer": "python backend, ensemble step 1",
                "ensemble": f"text -> {self._role('tokenizer')} -> {self._role('onnx')}",
            }[role]
            lines.append(f"  {model}/  ({detail})")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _role(self, role: str) -> str:
        return next(m for m, r in self.models.items() if r == role)


# ---------------------------------------------------------------------------------------------- entry points
def check_repository_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if out.exists() and not (out / REPOSITORY_FILE).is_file() and any(out.iterdir()):
        raise ConfigError(
            f"{out}: exists and is not a repository written by mtst-export; refusing to replace it"
        )


def export_triton(
    bundle: str | Path,
    out: str | Path,
    *,
    options: TritonOptions | None = None,
    overwrite: bool = False,
) -> TritonReport:
    """Write the Triton model repository for the bundle at ``bundle`` to ``out`` (module docstring)."""
    opts = options or TritonOptions()
    out = Path(out)
    check_repository_out(out, overwrite)
    b = load_bundle(bundle, verify=True)
    single = _onnx_variant(b, opts.onnx_precision)
    notes: list[str] = []
    models: dict[str, str] = {opts.name: "text"}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        copied = _copy_bundle(b, tmp / opts.name / "1" / "bundle")
        _write_text_model(tmp / opts.name, copied, opts)
        if single is None:
            notes.append(
                f"{b.root}: no single-layout variant (it has {[v.key for v in b.manifest.variants]}): "
                f"no {opts.name}_onnx / _tokenizer / _ensemble models (export without --split for them)"
            )
        else:
            notes += _write_onnx_path(b, single, tmp, opts)
            models.update(
                {
                    f"{opts.name}_onnx": "onnx",
                    f"{opts.name}_tokenizer": "tokenizer",
                    f"{opts.name}_ensemble": "ensemble",
                }
            )
        atomic_write_json(
            tmp / REPOSITORY_FILE,
            {
                "format": "mtst-triton-repository",
                "format_version": 1,
                "models": models,
                "bundle": {
                    "source": str(b.root),
                    "encoder_sha256": b.manifest.encoder_sha256,
                    "variants": [v.key for v in b.manifest.variants],
                    "mtst_version": b.manifest.mtst_version,
                },
                "onnx_variant": single.key if single else None,
                "options": opts.to_dict(),
                "created": now_utc(),
            },
        )
    for n in notes:
        logger.warning("%s", n)
    logger.info("wrote triton repository %s (%s)", out, ", ".join(models))
    return TritonReport(
        repository=out,
        models=models,
        bundle_variants=tuple(v.key for v in b.manifest.variants),
        onnx_variant=single.key if single else None,
        notes=tuple(notes),
    )


def export_triton_from_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    options: TritonOptions | None = None,
    bundle_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> TritonReport:
    """Export ``checkpoint`` as a bundle (``export_bundle(**bundle_options)``, in a temporary folder),
    then write the repository from it."""
    from .pipeline import export_bundle

    out = Path(out)
    check_repository_out(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="mtst-triton-") as work:
        bundle_report = export_bundle(checkpoint, Path(work) / "bundle", **dict(bundle_options or {}))
        report = export_triton(Path(work) / "bundle", out, options=options, overwrite=overwrite)
    return dataclasses.replace(report, bundle_report=bundle_report)


# ---------------------------------------------------------------------------------------------- writers
def _model_file(role: str) -> str:
    return (resources.files("mtst.export") / "triton_models" / _MODEL_FILES[role]).read_text(encoding="utf-8")


def _copy_bundle(b: Bundle, dest: Path) -> Bundle:
    """The bundle's listed files and manifest, copied and verified again at ``dest``."""
    for name in [MANIFEST_NAME, *b.manifest.files]:
        target = dest / PurePosixPath(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.path(name), target)
    return load_bundle(dest, verify=True)


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": Ident(spec.data_type), "dims": list(spec.dims)}


def _params(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


def _batching(opts: TritonOptions) -> dict[str, Any] | None:
    if not opts.dynamic_batching:
        return None
    return {
        "preferred_batch_size": list(opts.preferred_batch_sizes),
        "max_queue_delay_microseconds": opts.queue_delay_us,
    }


def _common(name: str, opts: TritonOptions, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        **fields,
        "dynamic_batching": _batching(opts),
        "instance_group": [{"count": opts.instances, "kind": opts.device.kind}],
    }


def _write_text_model(model_dir: Path, b: Bundle, opts: TritonOptions) -> None:
    params = {k: v for k, v in TEXT_MODEL_PARAMETERS.items() if k != "manifest_sha256"}
    params["providers"] = "cuda,cpu" if opts.device is Device.GPU else "cpu"
    params.update(opts.text_parameters)
    params["manifest_sha256"] = hash_file(b.root / MANIFEST_NAME)
    config = _common(
        model_dir.name,
        opts,
        backend="python",
        max_batch_size=opts.max_batch_size,
        input=[_tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        output=[_tensor(s) for s in text_model_outputs(b.manifest)],
    )
    config["parameters"] = _params(params)
    atomic_write_text(model_dir / "config.pbtxt", to_pbtxt(config))
    atomic_write_text(model_dir / "1" / "model.py", _model_file("text"))


def _onnx_variant(b: Bundle, precision: Precision | None) -> Variant | None:
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


def _write_onnx_path(b: Bundle, variant: Variant, repo: Path, opts: TritonOptions) -> list[str]:
    """``<name>_onnx``, ``<name>_tokenizer`` and ``<name>_ensemble``; returns notes for the report."""
    m = b.manifest
    notes: list[str] = []
    onnx_dir = repo / f"{opts.name}_onnx"
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
    config = _common(
        onnx_dir.name,
        opts,
        platform="onnxruntime_onnx",
        max_batch_size=opts.max_batch_size,
        input=[{"name": n, "data_type": Ident("TYPE_INT64"), "dims": [-1]} for n in m.inputs],
        output=outputs,
    )
    if opts.tensorrt:
        config["optimization"] = _trt_accelerator(b, opts)
        if variant.details.get("fusions"):
            notes.append(
                f"{opts.name}_onnx: the graph holds ONNX Runtime fusions {variant.details['fusions']} that "
                f"TensorRT cannot build; those nodes run on CUDA (export with --no-optimize for TensorRT)"
            )
    if variant.precision is Precision.INT8_DYNAMIC and opts.device is Device.GPU:
        notes.append(f"{opts.name}_onnx: int8-dynamic graphs run on CPU kernels even on GPU instances")
    atomic_write_text(onnx_dir / "config.pbtxt", to_pbtxt(config))

    # ---- tokenizer step
    tok_dir = repo / f"{opts.name}_tokenizer"
    (tok_dir / "1").mkdir(parents=True)
    shutil.copyfile(b.tokenizer_path, tok_dir / "1" / "tokenizer.json")
    tok_outputs = tokenizer_outputs(m)
    tok_config = _common(
        tok_dir.name,
        opts,
        backend="python",
        max_batch_size=opts.max_batch_size,
        input=[_tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        output=[_tensor(s) for s in tok_outputs],
    )
    tok_config["instance_group"] = [{"count": opts.instances, "kind": Ident("KIND_CPU")}]
    tok_config["parameters"] = _params(
        {
            "max_seq_len": str(m.max_seq_len),
            "pad_token_id": str(m.pad_token_id),
            "inputs": ",".join(m.inputs),
            "pad_to_multiple": str(opts.pad_to_multiple),
            "tokenizer_sha256": hash_file(tok_dir / "1" / "tokenizer.json"),
        }
    )
    atomic_write_text(tok_dir / "config.pbtxt", to_pbtxt(tok_config))
    atomic_write_text(tok_dir / "1" / "model.py", _model_file("tokenizer"))

    # ---- ensemble: text -> tokenizer -> onnx
    ens_dir = repo / f"{opts.name}_ensemble"
    (ens_dir / "1").mkdir(parents=True)
    extra = [s for s in tok_outputs if s.name not in m.inputs]  # word_ids, offsets for decoding
    ensemble = {
        "name": ens_dir.name,
        "platform": "ensemble",
        "max_batch_size": opts.max_batch_size,
        "input": [_tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        "output": [*outputs, *(_tensor(s) for s in extra)],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": tok_dir.name,
                    "model_version": -1,
                    "input_map": [{"key": TEXT, "value": TEXT}],
                    "output_map": [{"key": s.name, "value": s.name} for s in tok_outputs],
                },
                {
                    "model_name": onnx_dir.name,
                    "model_version": -1,
                    "input_map": [{"key": n, "value": n} for n in m.inputs],
                    "output_map": [{"key": o["name"], "value": o["name"]} for o in outputs],
                },
            ]
        },
    }
    atomic_write_text(ens_dir / "config.pbtxt", to_pbtxt(ensemble))
    return notes
