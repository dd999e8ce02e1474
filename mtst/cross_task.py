"""Cross-task training: every head is shown the other tasks' sentences as "not mine".

A multi-task bundle answers every head for every sentence, and a head that only ever saw its own
domain answers confidently outside it. While one task's batch trains, the encoder outputs it
computes anyway are fed to the *other* heads too (no extra encoder pass):

- a **sentence head** gets the outlier-exposure loss of Hendrycks et al. (2019), the cross-entropy
  of its prediction against the uniform distribution, ``logsumexp(z) - mean(z)``, weighted by
  ``cross_task.sentence_weight``: its calibrated top probability falls towards 1/L there, under
  the abstention threshold;
- a **token head** sees a share (``cross_task.token_ratio``) of the other tasks' sentences with
  every token tagged ``O``. Only a share: real text is not free of entities, so all-O is a label that
  is often but not always right.

A task's own out-of-domain file (``tasks[i].ood``, e.g. CLINC150's ``oos_train``) adds
``ood_ratio * batch_size`` of its sentences to each batch of that task, through the encoder, with the
same losses. Which rows and which OOD sentences are used depends on the seed and the global step
only, so a resumed run makes the same choices (no state to save). With the encoder frozen and its
outputs cached, sentence heads still see the other sentence tasks' cached embeddings; token heads
and token-task batches (whose cache holds no embedding) are left out there.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from mtst.alignment import encode_sentence_batch
from mtst.config import TrainConfig
from mtst.data import TaskData
from mtst.model import MultiTaskModel
from mtst.tasks import TaskKind

__all__ = ["CrossTaskLoss", "outlier_exposure"]

logger = logging.getLogger(__name__)


def outlier_exposure(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``(N, L)`` against the uniform distribution."""
    z = logits.float()
    return (torch.logsumexp(z, dim=-1) - z.mean(dim=-1)).mean()


class CrossTaskLoss:
    """``extra(task, step, heads, ...)``: the not-mine losses a batch of ``task`` adds (or None)."""

    def __init__(
        self, cfg: TrainConfig, model: MultiTaskModel, data: Mapping[str, TaskData], *, device: torch.device
    ) -> None:
        self.cfg = cfg.cross_task
        self.enabled = self.cfg.active(len(cfg.tasks))
        self.model, self.device, self.seed = model, device, cfg.seed
        self.batch_size = cfg.optim.batch_size
        self.kinds = {name: d.spec.kind for name, d in data.items()}
        self.outside = {name: d.label_to_id["O"] for name, d in data.items() if d.spec.kind is TaskKind.TOKEN}
        self.ood = {name: d.ood for name, d in data.items() if d.ood}
        self.special = torch.tensor(sorted(model.tokenizer.all_special_ids), dtype=torch.long)
        if self.enabled:
            logger.info(
                "cross-task training: sentence heads weight %.2f, token heads %.0f%% of other sentences as all-O%s",
                self.cfg.sentence_weight,
                100 * self.cfg.token_ratio,
                f"; out-of-domain files of {sorted(self.ood)}" if self.ood else "",
            )

    # ------------------------------------------------------------------ one batch
    def extra(
        self,
        task: str,
        step: int,
        heads: Collection[str],
        embedding: torch.Tensor | None,
        token_states: torch.Tensor | None,
        input_ids: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Losses of the trained ``heads`` other than ``task`` on this batch's encoder outputs, plus
        ``task``'s own out-of-domain sentences; None when there is nothing to add."""
        terms: list[torch.Tensor] = []
        if self.enabled:
            others = [h for h in heads if self.cfg.sees(h, task)]
            terms += self._not_mine(others, step, embedding, token_states, input_ids)
        if task in self.ood and task in heads and self.cfg.ood_ratio > 0:
            terms += self._own_ood(task, step)
        return torch.stack(terms).sum() if terms else None

    def _not_mine(
        self,
        heads: list[str],
        step: int,
        embedding: torch.Tensor | None,
        token_states: torch.Tensor | None,
        input_ids: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        terms: list[torch.Tensor] = []
        w = self.cfg.sentence_weight
        if embedding is not None and w > 0:
            for h in heads:
                if self.kinds[h] is TaskKind.SENTENCE:
                    terms.append(w * outlier_exposure(self.model.heads[h](embedding)))
        token_heads = [h for h in heads if self.kinds[h] is TaskKind.TOKEN]
        if token_heads and token_states is not None and input_ids is not None and self.cfg.token_ratio > 0:
            rng = np.random.default_rng((self.seed, step, 1))
            rows = np.flatnonzero(rng.random(len(token_states)) < self.cfg.token_ratio)
            if len(rows):
                idx = torch.from_numpy(rows).to(token_states.device)
                terms += self._all_outside(token_heads, token_states[idx], input_ids[idx])
        return terms

    def _all_outside(
        self, heads: list[str], states: torch.Tensor, input_ids: torch.Tensor
    ) -> list[torch.Tensor]:
        """Cross-entropy of every real (non-special, non-padding) token against ``O``."""
        real = ~torch.isin(input_ids, self.special.to(input_ids.device))  # padding is a special token
        if not bool(real.any()):
            return []
        picked = states[real]  # (M, H)
        out = []
        for h in heads:
            target = torch.full((len(picked),), self.outside[h], dtype=torch.long, device=picked.device)
            out.append(F.cross_entropy(self.model.heads[h](picked).float(), target))
        return out

    def _own_ood(self, task: str, step: int) -> list[torch.Tensor]:
        pool = self.ood[task]
        k = max(1, round(self.cfg.ood_ratio * self.batch_size))
        rng = np.random.default_rng((self.seed, step, 2))
        picks = rng.choice(len(pool), size=k, replace=len(pool) < k)
        model = self.model
        enc = encode_sentence_batch(
            model.tokenizer, [pool[int(i)] for i in picks], max_seq_len=model.max_seq_len
        )
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in model.input_names}
        states, emb = model.encode_tokens(**inputs)
        if self.kinds[task] is TaskKind.TOKEN:
            return self._all_outside([task], states, inputs["input_ids"])
        w = self.cfg.sentence_weight
        return [w * outlier_exposure(model.heads[task](emb))] if w > 0 else []
