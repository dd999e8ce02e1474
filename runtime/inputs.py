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

    One ``isfinite`` pass and one ``all`` when every value is finite (the rows are looked at only
    when something is not): faster than a finite sum both for one row (1.2 vs 2.8 us, no
    ``np.errstate`` to enter) and for 4096 rows of 384 (0.12 vs 0.34 ms), and a sum of finite values
    that overflows float32 is no reason to look twice.
    """
    finite = np.isfinite(a)
    if finite.all():
        return None
    return int(np.flatnonzero(~finite.all(axis=1))[0])


def check_head_logits(names: Sequence[str], logits: Sequence[np.ndarray], emb: np.ndarray) -> None:
    """ValueError naming the row when finite embeddings were too large for the heads' float32 arithmetic."""
    for name, lg in zip(names, logits, strict=True):
        row = first_nonfinite_row(lg)
        if row is not None:
            raise ValueError(
                f"embeddings[{row}]: head {name!r} gives non-finite scores (largest |value| in the row "
                f"{float(np.abs(emb[row]).max()):.3g}); expected embeddings like embed()'s (L2 norm 1)"
            )
