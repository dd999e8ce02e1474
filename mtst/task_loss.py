"""One training batch's loss: examples (augmented) → tokens → the task's head → cross-entropy.

Sentence tasks score the pooled embedding, token tasks the first sub-token of every word (the others
carry the ignore index, see :mod:`mtst.alignment`). With the encoder frozen and its outputs cached
(:func:`mtst.freezing.build_cache`), only the head runs. The same encoder outputs feed the other
heads' "not mine" losses (:mod:`mtst.cross_task`), returned beside the task's own loss.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.augment import Augmenter
from mtst.cross_task import CrossTaskLoss
from mtst.data import Example, SentenceExample, TaskData, TokenExample
from mtst.device import autocast
from mtst.freezing import CachedTask
from mtst.model import MultiTaskModel, MultiTaskOutput
from mtst.tasks import TaskKind

__all__ = ["BatchLoss", "TaskLoss"]


@dataclass(frozen=True)
class BatchLoss:
    task: torch.Tensor  # the mean loss of the task's own examples (what loss weighting scales)
    cross: torch.Tensor | None  # the other heads' not-mine losses on this batch (mtst.cross_task)


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
            loss, out, input_ids = self._loss(task, indices, cache)
            cross = None
            if self.cross is not None:
                emb, states = (out.embedding, out.token_states) if out is not None else (None, None)
                if out is None and cache is not None and self.data[task].spec.kind is TaskKind.SENTENCE:
                    emb = cache.batch(indices)[0].to(self.device)  # cached embeddings: sentence heads only
                cross = self.cross.extra(task, step, heads, emb, states, input_ids)
            return BatchLoss(loss, cross)

    def _loss(
        self, task: str, indices: np.ndarray, cache: CachedTask | None
    ) -> tuple[torch.Tensor, MultiTaskOutput | None, torch.Tensor | None]:
        """The task's loss, and the encoder outputs and input ids it came from (None from a cache)."""
        model, data = self.model, self.data[task]
        if cache is not None:
            feats, labels = cache.batch(indices)
            logits = model.heads[task](feats.to(self.device))  # (B, L) or (M, L)
            return F.cross_entropy(logits.float(), labels.to(self.device)), None, None
        examples = [self._augment(task, data.train[int(i)]) for i in indices]
        if data.spec.kind is TaskKind.SENTENCE:
            sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
            enc = encode_sentence_batch(
                model.tokenizer, [ex.text for ex in sentences], max_seq_len=model.max_seq_len
            )
            labels = torch.tensor([data.label_to_id[ex.label] for ex in sentences], device=self.device)
            inputs = self._inputs(enc)
            out = model(**inputs, tasks=[task])
            logits = out.logits[task]  # (B, L)
            return F.cross_entropy(logits.float(), labels), out, inputs["input_ids"]
        tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
        enc, labels_np, _ = encode_token_batch(
            model.tokenizer, tokens, data.label_to_id, max_seq_len=model.max_seq_len
        )
        inputs = self._inputs(enc)
        out = model(**inputs, tasks=[task])
        logits = out.logits[task]  # (B, T, L)
        labels = torch.from_numpy(labels_np).to(self.device)
        if not bool((labels != IGNORE_INDEX).any()):
            return (
                logits.float().sum() * 0.0,
                out,
                inputs["input_ids"],
            )  # nothing labelled survived truncation
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, out, inputs["input_ids"]

    def _augment(self, task: str, example: Example) -> Example:
        rng = self.aug_rngs[task]
        for augmenter, prob in self.augmenters[task]:
            if rng.random() < prob:
                example = augmenter(example, rng)
        return example

    def _inputs(self, enc: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.model.input_names}
