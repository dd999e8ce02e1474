"""Checks of what callers hand the engine besides texts (texts: ``mtst.runtime.tokenize.check_texts``)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_embeddings"]


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
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"embeddings[{row}]: contains NaN or infinity (or a value beyond float32's range)")
    return emb
