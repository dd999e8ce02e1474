"""Length-bucketed batches: sort by token length, chunk, run, put results back in input order.

Padding is the cost of batching: a batch runs at its longest item's length. Sorting by length first
keeps neighbours alike (DESIGN.md: the same int8 graph ran 220 sentences/s in random batches of 32
and 565 in length-sorted ones). A batch closes when it holds ``max_batch`` items or when one more
item would make ``batch size x longest length`` exceed ``max_tokens``. :class:`Batcher` runs a
request's batches through a runner (``mtst.runtime.runners``), on worker threads when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding

from mtst.errors import ConfigError
from mtst.runtime.providers import Provider
from mtst.runtime.runners import Runner
from mtst.runtime.tokenize import TextTokenizer

__all__ = [
    "AUTO_BATCH_TOKENS",
    "BatchPlan",
    "Batcher",
    "TokenSink",
    "check_positive",
    "padding_waste",
    "plan_batches",
]

# Padded tokens per batch when the caller leaves it to the engine. On CPU, batches of about 256
# tokens keep a batch's activations in the core's L2 cache: all-MiniLM-L6-v2 int8 on 2 cores ran the
# benchmark corpus at 1,560 sentences/s with this bound vs 1,320 with 4096 (32 per batch either
# way, two batches at a time; fp32: 825 vs 730). GPUs want big batches.
AUTO_BATCH_TOKENS: dict[Provider, int] = {Provider.CPU: 256, Provider.CUDA: 4096, Provider.TENSORRT: 4096}
_ONE = np.zeros(1, dtype=np.int64)  # the index array of a one-text request

# token outputs of one batch -> decoded: (input indices, the batch's encodings, one (B, T, L) array per output)
TokenSink = Callable[[np.ndarray, Sequence[Encoding], Sequence[np.ndarray]], None]


def check_positive(name: str, value: Any, also: str = "") -> None:
    """ConfigError unless ``value`` is an integer >= 1 (``also``: what else the option takes)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: expected an integer >= 1{also}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Batches as arrays of input indices; ``np.concatenate(batches)`` is a permutation of the inputs."""

    batches: tuple[np.ndarray, ...]
    lengths: np.ndarray  # token length of every input, in input order

    @property
    def padding_waste(self) -> float:
        return padding_waste(self.lengths, self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def plan_batches(
    lengths: Sequence[int] | np.ndarray, *, max_batch: int = 32, max_tokens: int | None = None
) -> BatchPlan:
    """Length-sorted batches of at most ``max_batch`` items and (when given) ``max_tokens`` padded tokens.

    The sort is stable, so equal lengths keep their input order; a single item longer than
    ``max_tokens`` still gets a batch of its own.
    """
    if not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(f"max_batch: expected an integer >= 1, got {max_batch!r}")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens: expected an integer >= 1 or None, got {max_tokens!r}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    batches: list[np.ndarray] = []
    if max_tokens is None:
        batches = [order[i : i + max_batch] for i in range(0, len(order), max_batch)]
    else:
        start = 0
        n = len(order)
        while start < n:
            # sorted ascending: the longest of order[start:end] is order[end-1]
            end = start + 1
            while end < n and end - start < max_batch and (end - start + 1) * lens[order[end]] <= max_tokens:
                end += 1
            batches.append(order[start:end])
            start = end
    return BatchPlan(batches=tuple(batches), lengths=lens)


def padding_waste(lengths: Sequence[int] | np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Share of padded positions among all positions the batches run (0.0 = no padding)."""
    lens = np.asarray(lengths, dtype=np.int64)
    total = real = 0
    for idx in batches:
        if len(idx) == 0:
            continue
        b = lens[idx]
        total += int(b.max()) * len(idx)
        real += int(b.sum())
    return 0.0 if total == 0 else (total - real) / total


class Batcher:
    """Runs tokenized texts through a runner in length-sorted batches, results in input order.

    ``parallel_batches=N`` runs up to N batches at once on worker threads (ONNX Runtime releases the
    GIL; the threads start on first use); a request that fits one batch is then cut in N.
    """

    def __init__(self, *, batch_size: int, max_batch_tokens: int | None, parallel_batches: int = 1) -> None:
        check_positive("batch_size", batch_size)
        check_positive("parallel_batches", parallel_batches)
        if max_batch_tokens is not None:
            check_positive("max_batch_tokens", max_batch_tokens, ", None or 'auto'")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.parallel_batches = parallel_batches
        self._pool = (
            ThreadPoolExecutor(max_workers=parallel_batches, thread_name_prefix="mtst-batch")
            if parallel_batches > 1
            else None
        )

    def batches(self, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        # with parallel workers, a request that fits one batch is cut in one batch per worker
        per_worker = -(-len(lengths) // self.parallel_batches)
        size = min(self.batch_size, per_worker)
        return plan_batches(lengths, max_batch=size, max_tokens=self.max_batch_tokens).batches

    def each(self, batches: Sequence[np.ndarray], work: Callable[[np.ndarray], None]) -> None:
        """``work(idx)`` for every batch: in order, or on the worker threads (longest batches first)."""
        if self._pool is None or len(batches) == 1:
            for idx in batches:
                work(idx)
            return
        # batches come sorted by length: handing out the longest first balances the workers
        for _ in self._pool.map(work, reversed(batches)):
            pass

    def run(
        self,
        tok: TextTokenizer,
        runner: Runner,
        encs: list[Encoding],
        rows: Sequence[tuple[str, int]],
        token_outputs: Sequence[str] = (),
        sink: TokenSink | None = None,
    ) -> list[np.ndarray]:
        """Run tokenized texts through ``runner``.

        ``rows``: outputs with one row per text (the embedding, sentence logits) and their widths,
        returned as ``(N, width)`` float32 arrays in input order. ``token_outputs`` (``(B, T, L)``; T
        differs between batches) go to ``sink`` batch by batch.
        """
        names = [*(name for name, _ in rows), *token_outputs]
        k = len(rows)
        n = len(encs)
        if n == 1:  # the batch-1 path: no batch plan, no copies; the outputs are in input order
            outs = runner.run(tok.pad(encs), names)
            if sink is not None:
                sink(_ONE, encs, outs[k:])
            return outs[:k]
        gathered = [np.empty((n, width), dtype=np.float32) for _, width in rows]

        def work(idx: np.ndarray) -> None:
            batch = [encs[i] for i in idx.tolist()]
            outs = runner.run(tok.pad(batch), names)
            for dst, src in zip(gathered, outs, strict=False):
                dst[idx] = src
            if sink is not None:
                sink(idx, batch, outs[k:])

        lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=n)
        self.each(self.batches(lengths), work)
        return gathered

    def run_device(
        self, tok: TextTokenizer, runner: Runner, encs: list[Encoding], output: str
    ) -> list[tuple[np.ndarray, Any]]:
        """``output`` of every batch left on the runner's device: (input indices, OrtValue) per batch."""
        if len(encs) == 1:
            return [(_ONE.copy(), runner.run_device(tok.pad(encs), [output])[0])]
        parts: dict[int, tuple[np.ndarray, Any]] = {}
        lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
        batches = self.batches(lengths)

        def work(idx: np.ndarray) -> None:
            feeds = tok.pad([encs[i] for i in idx.tolist()])
            parts[int(idx[0])] = (idx, runner.run_device(feeds, [output])[0])

        self.each(batches, work)
        return [parts[int(idx[0])] for idx in batches]
