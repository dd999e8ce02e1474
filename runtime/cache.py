"""A thread-safe LRU cache of sentence embeddings keyed by text (frozen-backbone serving)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from mtst.errors import ConfigError

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Maps a text to its (read-only) embedding and truncated flag; evicts the least recently used.

    Safe to share between threads: every access holds one lock for a few dictionary operations.
    """

    def __init__(self, maxsize: int) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ConfigError(f"embedding_cache: expected an integer >= 1 (entries), got {maxsize!r}")
        self.maxsize = maxsize
        self._data: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, text: str) -> tuple[np.ndarray, bool] | None:
        with self._lock:
            item = self._data.get(text)
            if item is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return item

    def put(self, text: str, embedding: np.ndarray, truncated: bool) -> None:
        row = np.array(embedding, dtype=np.float32, copy=True)  # own copy: not a view of a batch
        row.flags.writeable = False
        with self._lock:
            self._data[text] = (row, bool(truncated))
            self._data.move_to_end(text)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def through(
        self, texts: list[str], compute: Callable[[list[str]], tuple[np.ndarray, np.ndarray]], dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(N, dim)`` and truncated flags of ``texts``: hits from the cache, the rest (each
        distinct text once) from ``compute(missing texts)``, which are then cached."""
        out = np.empty((len(texts), dim), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        missing: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            hit = self.get(t)
            if hit is None:
                missing.setdefault(t, []).append(i)
            else:
                out[i], truncated[i] = hit
        if missing:
            todo = list(missing)
            emb, trunc = compute(todo)
            for j, t in enumerate(todo):
                self.put(t, emb[j], bool(trunc[j]))
                for i in missing[t]:
                    out[i] = emb[j]
                    truncated[i] = trunc[j]
        return out, truncated

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0
