"""Where training runs: the torch device and mixed precision (autocast on CUDA only)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from mtst.errors import ConfigError

__all__ = ["amp_dtype", "autocast", "resolve_device"]

logger = logging.getLogger("mtst.train")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
        )
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 / fp16 autocast on CUDA (``auto``: bf16 where supported); None (fp32) elsewhere."""
    if device.type == "cuda" and amp != "off":
        bf16 = amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported())
        return torch.bfloat16 if bf16 else torch.float16
    if amp in ("bf16", "fp16"):
        logger.info("amp %s: mixed precision is used on CUDA only; training in fp32 on %s", amp, device)
    return None


def autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)
