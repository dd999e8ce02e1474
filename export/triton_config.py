"""Options of ``mtst-export --format triton`` and the pieces every model's ``config.pbtxt`` is built from."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any

from mtst.errors import ConfigError, parse_enum
from mtst.runtime.manifest import Precision, parse_precision
from mtst.runtime.triton_io import TEXT_MODEL_PARAMETERS, TensorSpec

from .pbtxt import Ident

__all__ = ["Device", "TritonOptions", "model_config", "model_file", "parameters", "tensor"]

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


def model_file(role: str) -> str:
    """The Python-backend model file shipped with mtst for ``role`` (text or tokenizer)."""
    return (resources.files("mtst.export") / "triton_models" / _MODEL_FILES[role]).read_text(encoding="utf-8")


def tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": Ident(spec.data_type), "dims": list(spec.dims)}


def parameters(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": str(v)}} for k, v in values.items()]


def _batching(opts: TritonOptions) -> dict[str, Any] | None:
    if not opts.dynamic_batching:
        return None
    return {
        "preferred_batch_size": list(opts.preferred_batch_sizes),
        "max_queue_delay_microseconds": opts.queue_delay_us,
    }


def model_config(name: str, opts: TritonOptions, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        **fields,
        "dynamic_batching": _batching(opts),
        "instance_group": [{"count": opts.instances, "kind": opts.device.kind}],
    }
