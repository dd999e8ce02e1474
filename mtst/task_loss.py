"""One training batch's loss: examples (augmented) → tokens → the task's head → cross-entropy.

Sentence tasks score the pooled embedding, token tasks the first sub-token of every word (the others
carry the ignore index, see :mod:`mtst.alignment`). With the encoder frozen and its outputs cached
(:func:`mtst.freezing.build_cache`), only the head runs. :class:`StepLoss` weights it (the loss to
back-propagate) and, with several processes, computes this rank's share of the global batch
(:mod:`mtst.distributed`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.augment import Augmenter
from mtst.data import Example, SentenceExample, TaskData, TokenExample
from mtst.device import autocast
from mtst.distributed import Distributed
from mtst.freezing import CachedTask
from mtst.loss_weighting import LossWeighter
from mtst.model import MultiTaskModel
from mtst.tasks import TaskKind

__all__ = ["StepLoss", "TaskLoss"]

EVERYTHING = slice(None)


class TaskLoss:
    """``loss(task, indices, cache)``: the mean loss of one batch of ``task``'s training examples."""

    def __init__(
        self,
        model: MultiTaskModel,
        data: Mapping[str, TaskData],
        augmenters: Mapping[str, Sequence[tuple[Augmenter, float]]],
        aug_rngs: Mapping[str, random.Random],
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
    ) -> None:
        self.model, self.data, self.augmenters, self.aug_rngs = model, data, augmenters, aug_rngs
        self.device, self.amp_dtype = device, amp_dtype

    def __call__(self, task: str, indices: np.ndarray, cache: CachedTask | None) -> torch.Tensor:
        with autocast(self.amp_dtype):
            logits, labels = self._logits(task, indices, cache, EVERYTHING)
            if cache is not None or self.data[task].spec.kind is TaskKind.SENTENCE:
                return F.cross_entropy(logits.float(), labels)
            if not bool((labels != IGNORE_INDEX).any()):
                return logits.float().sum() * 0.0  # nothing labelled survived truncation
            return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)

    def summed(
        self, task: str, indices: np.ndarray, cache: CachedTask | None, part: slice
    ) -> tuple[torch.Tensor, int]:
        """(sum of the losses, number of labels scored) of the examples at positions ``part`` of the batch.

        Augmentation draws for the whole batch (its RNG stays the same on every rank). An empty part
        scores the batch's first example at weight 0: the rank still runs the forward and backward
        passes that DDP waits for, over the same parameters as the others, and adds nothing.
        """
        empty = len(indices[part]) == 0
        with autocast(self.amp_dtype):
            logits, labels = self._logits(task, indices, cache, slice(0, 1) if empty else part)
            total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        if empty:
            return total * 0.0, 0
        return total, int((labels != IGNORE_INDEX).sum())

    def _logits(
        self, task: str, indices: np.ndarray, cache: CachedTask | None, part: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels, one row per scored item (an example, or a token of one): (N, L), (N,)."""
        model, data = self.model, self.data[task]
        if cache is not None:
            feats, labels = cache.batch(indices[part])
            return model.heads[task](feats.to(self.device)), labels.to(self.device)  # (B, L) or (M, L)
        examples = [self._augment(task, data.train[int(i)]) for i in indices][part]
        if data.spec.kind is TaskKind.SENTENCE:
            sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
            enc = encode_sentence_batch(
                model.tokenizer, [ex.text for ex in sentences], max_seq_len=model.max_seq_len
            )
            labels = torch.tensor([data.label_to_id[ex.label] for ex in sentences], device=self.device)
            return model(**self._inputs(enc), tasks=[task]).logits[task], labels  # (B, L)
        tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
        enc, labels_np, _ = encode_token_batch(
            model.tokenizer, tokens, data.label_to_id, max_seq_len=model.max_seq_len
        )
        logits = model(**self._inputs(enc), tasks=[task]).logits[task]  # (B, T, L)
        return logits.flatten(0, 1), torch.from_numpy(labels_np).to(self.device).flatten()

    def _augment(self, task: str, example: Example) -> Example:
        rng = self.aug_rngs[task]
        for augmenter, prob in self.augmenters[task]:
            if rng.random() < prob:
                example = augmenter(example, rng)
        return example

    def _inputs(self, enc: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.model.input_names}


class StepLoss(nn.Module):
    """``step_loss(task, indices)``: (the weighted loss to back-propagate, the batch's mean task loss).

    A module holding the model and the loss weighter, so that DDP (:meth:`Distributed.wrap`) reduces the
    gradients of both: learned loss weights stay the same on every rank. One process: the batch's mean
    loss, weighted. Several: this rank's summed loss times ``world_size / n_global`` (DDP then averages
    the gradients over ranks: the global batch's mean-loss gradient); the mean loss it reports is the
    global batch's, from one all-reduce of (labels scored, loss sum).
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

    def forward(self, task: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        cache = self.caches.get(task)
        if not self.place.enabled:
            loss = self.task_loss(task, indices, cache)
            return self.weighter(task, loss.float()), loss.detach()
        total, count = self.task_loss.summed(task, indices, cache, self.place.part)
        n, global_total = self.place.sum([count, float(total.detach())])
        n = max(n, 1.0)
        local = total * (self.place.world_size / n)
        return self.weighter(task, local.float()), torch.tensor(global_total / n)
