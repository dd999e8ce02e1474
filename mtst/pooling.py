"""Pooling of token states into one sentence vector, then L2 normalization.

Variants are data: ``POOLERS[Pooling.MEAN]`` is the function. The same arithmetic is traced into
the ONNX graph, so keep it to ops that export cleanly (no data-dependent control flow).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mtst.schema import Pooling  # the enum is config, torch-free; the arithmetic is here

__all__ = ["POOLERS", "Pooling", "cls_pool", "max_pool", "mean_pool", "pool_and_normalize"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real (unpadded) token states. hidden (B, T, H), mask (B, T) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the first token ([CLS] for BERT-family encoders)."""
    return hidden[:, 0]


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over the real tokens; padding is pushed far below any real value."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m + (1.0 - m) * -1e4).max(dim=1).values


POOLERS: dict[Pooling, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    Pooling.MEAN: mean_pool,
    Pooling.CLS: cls_pool,
    Pooling.MAX: max_pool,
}


def pool_and_normalize(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool, then L2-normalize: the fixed-length sentence embedding. (B, T, H) -> (B, H)."""
    return F.normalize(POOLERS[pooling](hidden, mask), p=2.0, dim=-1, eps=1e-12)
