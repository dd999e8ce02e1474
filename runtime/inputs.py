"""Checks of what callers hand the engine besides texts (texts: ``mtst.runtime.tokenize.check_texts``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_embeddings", "check_head_logits", "first_nonfinite_row"]


def check_embeddings(embeddings: Any, dim: int) -> np.ndarray:
    """``embeddings`` as finite float32 ``(N, dim)``; TypeError/ValueError naming what is wrong (the row)."""
    if isinstance(embeddings, np.ndarray) and embeddings.dtype == np.float32:
        emb = embeddings
    else:
        try:
            arr = np.asarray(embeddings)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"embeddings: expected a float array (N, {dim}), got {exc}") from None
        if arr.dtype.kind not in "fiu":  # bool, complex, str, object ...: not embeddings
            raise TypeError(
                f"embeddings: expected a float array (N, {dim}), got dtype {arr.dtype} "
                f"({type(embeddings).__name__})"
            )
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below by row
            emb = arr.astype(np.float32)
    if emb.ndim == 1:
        emb = emb[None, :]
    if emb.ndim != 2 or emb.shape[1] != dim:
        shape = np.shape(embeddings)
        raise ValueError(f"embeddings: expected shape (N, {dim}) or ({dim},), got {shape}")
    row = first_nonfinite_row(emb)
    if row is not None:
        raise ValueError(f"embeddings[{row}]: contains NaN or infinity (or a value beyond float32's range)")
    return emb


def first_nonfinite_row(a: np.ndarray) -> int | None:
    """Index of the first row of the 2-D ``a`` holding NaN or infinity, or None.

    One reduction when every value is finite (the sum is then finite too, unless finite values add
    up past float32's range: only then, or when something is not finite, are the rows looked at).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(a.sum()):
            return None
    bad = ~np.isfinite(a).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_head_logits(names: Sequence[str], logits: Sequence[np.ndarray], emb: np.ndarray) -> None:
    """ValueError naming the row when finite embeddings were too large for the heads' float32 arithmetic."""
    for name, lg in zip(names, logits, strict=True):
        row = first_nonfinite_row(lg)
        if row is not None:
            raise ValueError(
                f"embeddings[{row}]: head {name!r} gives non-finite scores (largest |value| in the row "
                f"{float(np.abs(emb[row]).max()):.3g}); expected embeddings like embed()'s (L2 norm 1)"
            )
