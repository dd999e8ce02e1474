"""One training batch's loss: examples (augmented) → tokens → the task's head → cross-entropy.

Sentence tasks score the pooled embedding, token tasks the first sub-token of every word (the others
carry the ignore index, see :mod:`mtst.alignment`). With the encoder frozen and its outputs cached
(:func:`mtst.freezing.build_cache`), only the head runs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.augment import Augmenter
from mtst.data import Example, SentenceExample, TaskData, TokenExample
from mtst.device import autocast
from mtst.freezing import CachedTask
from mtst.model import MultiTaskModel
from mtst.tasks import TaskKind

__all__ = ["TaskLoss"]


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
            return self._loss(task, indices, cache)

    def _loss(self, task: str, indices: np.ndarray, cache: CachedTask | None) -> torch.Tensor:
        model, data = self.model, self.data[task]
        if cache is not None:
            feats, labels = cache.batch(indices)
            logits = model.heads[task](feats.to(self.device))  # (B, L) or (M, L)
            return F.cross_entropy(logits.float(), labels.to(self.device))
        examples = [self._augment(task, data.train[int(i)]) for i in indices]
        if data.spec.kind is TaskKind.SENTENCE:
            sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
            enc = encode_sentence_batch(
                model.tokenizer, [ex.text for ex in sentences], max_seq_len=model.max_seq_len
            )
            labels = torch.tensor([data.label_to_id[ex.label] for ex in sentences], device=self.device)
            logits = model(**self._inputs(enc), tasks=[task]).logits[task]  # (B, L)
            return F.cross_entropy(logits.float(), labels)
        tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
        enc, labels_np, _ = encode_token_batch(
            model.tokenizer, tokens, data.label_to_id, max_seq_len=model.max_seq_len
        )
        logits = model(**self._inputs(enc), tasks=[task]).logits[task]  # (B, T, L)
        labels = torch.from_numpy(labels_np).to(self.device)
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.float().sum() * 0.0  # nothing labelled survived truncation
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def _augment(self, task: str, example: Example) -> Example:
        rng = self.aug_rngs[task]
        for augmenter, prob in self.augmenters[task]:
            if rng.random() < prob:
                example = augmenter(example, rng)
        return example

    def _inputs(self, enc: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.model.input_names}
