"""One training batch's loss: examples (augmented) → tokens → the task's head → cross-entropy.

Sentence tasks score the pooled embedding, token tasks the first sub-token of every word (the others
carry the ignore index, see :mod:`mtst.alignment`). With the encoder frozen and its outputs cached
(:func:`mtst.freezing.build_cache`), only the head runs. The same encoder outputs feed the other
heads' "not mine" losses (:mod:`mtst.cross_task`), returned beside the task's own loss.
:class:`StepLoss` weights the task's loss, adds the cross-task losses (the loss to back-propagate) and,
with several processes, computes this rank's share of the global batch (:mod:`mtst.distributed`).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.augment import Augmenter
from mtst.cross_task import CrossTaskLoss, CrossTerms
from mtst.data import Example, SentenceExample, TaskData, TokenExample
from mtst.device import autocast
from mtst.distributed import Distributed
from mtst.freezing import CachedTask
from mtst.loss_weighting import LossWeighter
from mtst.model import MultiTaskModel
from mtst.tasks import TaskKind

__all__ = ["BatchLoss", "StepLoss", "TaskLoss"]

EVERYTHING = slice(None)


@dataclass(frozen=True)
class BatchLoss:
    task: torch.Tensor  # the mean loss of the task's own examples (what loss weighting scales)
    cross: CrossTerms | None  # the other heads' not-mine losses on this batch (mtst.cross_task)


@dataclass(frozen=True)
class _Forward:
    """One forward pass: logits and labels (one row per scored item) and the encoder outputs."""

    logits: torch.Tensor  # (N, L)
    labels: torch.Tensor  # (N,)
    embedding: torch.Tensor | None  # (B, H): from the encoder, or a sentence task's cache
    token_states: torch.Tensor | None  # (B, T, H); None from a cache
    input_ids: torch.Tensor | None  # (B, T); None from a cache


class TaskLoss:
    """``loss(task, indices, cache, step=, heads=)``: the losses of one batch of ``task``'s training
    examples; ``heads`` are the heads that train now (the stage's), ``step`` the global step."""

    def __init__(
        self,
        model: MultiTaskModel,
        data: Mapping[str, TaskData],
        augmenters: Mapping[str, Sequence[tuple[Augmenter, float]]],
        aug_rngs: Mapping[str, random.Random],
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        cross: CrossTaskLoss | None = None,
    ) -> None:
        self.model, self.data, self.augmenters, self.aug_rngs = model, data, augmenters, aug_rngs
        self.device, self.amp_dtype, self.cross = device, amp_dtype, cross

    def __call__(
        self,
        task: str,
        indices: np.ndarray,
        cache: CachedTask | None,
        *,
        step: int = 0,
        heads: Collection[str] = (),
    ) -> BatchLoss:
        with autocast(self.amp_dtype):
            fwd = self._forward(task, indices, cache, EVERYTHING)
            logits, labels = fwd.logits.float(), fwd.labels
            if cache is not None or self.data[task].spec.kind is TaskKind.SENTENCE:
                loss = F.cross_entropy(logits, labels)
            elif not bool((labels != IGNORE_INDEX).any()):
                loss = logits.sum() * 0.0  # nothing labelled survived truncation
            else:
                loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            return BatchLoss(loss, self._cross(task, fwd, step, heads, EVERYTHING, len(indices)))

    def summed(
        self,
        task: str,
        indices: np.ndarray,
        cache: CachedTask | None,
        part: slice,
        *,
        step: int = 0,
        heads: Collection[str] = (),
    ) -> tuple[torch.Tensor, int, CrossTerms | None]:
        """(sum of the losses, number of labels scored, the cross-task losses) of the examples at
        positions ``part`` of the batch.

        Augmentation draws for the whole batch (its RNG stays the same on every rank). An empty part
        scores the batch's first example at weight 0: the rank still runs the forward and backward
        passes that DDP waits for, over the same parameters as the others, and adds nothing. The
        cross-task losses come as sums and counts over this rank's part (:class:`StepLoss` adds them up).
        """
        empty = len(indices[part]) == 0
        with autocast(self.amp_dtype):
            scored = slice(0, 1) if empty else part
            fwd = self._forward(task, indices, cache, scored)
            total = F.cross_entropy(
                fwd.logits.float(), fwd.labels, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            cross = self._cross(task, fwd, step, heads, scored, len(indices))
        if empty:
            return total * 0.0, 0, None if cross is None else cross.zeroed()
        return total, int((fwd.labels != IGNORE_INDEX).sum()), cross

    def _cross(
        self, task: str, fwd: _Forward, step: int, heads: Collection[str], part: slice, n_rows: int
    ) -> CrossTerms | None:
        if self.cross is None:
            return None
        return self.cross.extra(
            task, step, heads, fwd.embedding, fwd.token_states, fwd.input_ids, part=part, n_rows=n_rows
        )

    def _forward(self, task: str, indices: np.ndarray, cache: CachedTask | None, part: slice) -> _Forward:
        model, data = self.model, self.data[task]
        if cache is not None:
            feats, labels = cache.batch(indices[part])
            feats = feats.to(self.device)
            logits = model.heads[task](feats)  # (B, L) or (M, L)
            emb = feats if data.spec.kind is TaskKind.SENTENCE else None  # a token cache holds no embedding
            return _Forward(logits, labels.to(self.device), emb, None, None)
        examples = [self._augment(task, data.train[int(i)]) for i in indices][part]
        if data.spec.kind is TaskKind.SENTENCE:
            sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
            enc = encode_sentence_batch(
                model.tokenizer, [ex.text for ex in sentences], max_seq_len=model.max_seq_len
            )
            labels = torch.tensor([data.label_to_id[ex.label] for ex in sentences], device=self.device)
            inputs = self._inputs(enc)
            out = model(**inputs, tasks=[task])
            return _Forward(out.logits[task], labels, out.embedding, out.token_states, inputs["input_ids"])
        tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
        enc, labels_np, _ = encode_token_batch(
            model.tokenizer, tokens, data.label_to_id, max_seq_len=model.max_seq_len
        )
        inputs = self._inputs(enc)
        out = model(**inputs, tasks=[task])
        logits = out.logits[task].flatten(0, 1)  # (B*T, L)
        labels_t = torch.from_numpy(labels_np).to(self.device).flatten()
        return _Forward(logits, labels_t, out.embedding, out.token_states, inputs["input_ids"])

    def _augment(self, task: str, example: Example) -> Example:
        rng = self.aug_rngs[task]
        for augmenter, prob in self.augmenters[task]:
            if rng.random() < prob:
                example = augmenter(example, rng)
        return example

    def _inputs(self, enc: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.model.input_names}


class StepLoss(nn.Module):
    """``step_loss(task, indices, step, heads)``: (the loss to back-propagate, the batch's mean task loss).

    A module holding the model and the loss weighter, so that DDP (:meth:`Distributed.wrap`) reduces the
    gradients of both: learned loss weights stay the same on every rank. One process: the batch's mean
    loss, weighted, plus the cross-task losses. Several: this rank's summed loss times
    ``world_size / n_global`` (DDP then averages the gradients over ranks: the global batch's mean-loss
    gradient) plus its cross-task sums over the global counts, scaled the same way; the mean loss it
    reports is the global batch's, from one all-reduce of (labels scored, loss sum, cross-task counts).
    """

    def __init__(
        self,
        model: MultiTaskModel,
        weighter: LossWeighter,
        task_loss: TaskLoss,
        caches: Mapping[str, CachedTask],
        place: Distributed,
    ) -> None:
        super().__init__()
        self.model, self.weighter = model, weighter
        self.task_loss, self.caches, self.place = task_loss, caches, place

    def forward(
        self, task: str, indices: np.ndarray, step: int = 0, heads: Collection[str] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.caches.get(task)
        if not self.place.enabled:
            batch = self.task_loss(task, indices, cache, step=step, heads=heads)
            loss = self.weighter(task, batch.task.float())
            if batch.cross is not None:
                loss = loss + batch.cross.loss(batch.cross.counts)
            return loss, batch.task.detach()
        total, count, cross = self.task_loss.summed(
            task, indices, cache, self.place.part, step=step, heads=heads
        )
        counts = cross.counts if cross is not None else ()
        n, global_total, *cross_totals = self.place.sum([count, float(total.detach()), *counts])
        n = max(n, 1.0)
        local = self.weighter(task, (total * (self.place.world_size / n)).float())
        if cross is not None:  # each term's mean over the global batch, once DDP averages the ranks
            local = local + cross.loss(cross_totals, scale=self.place.world_size)
        return local, torch.tensor(global_total / n)
