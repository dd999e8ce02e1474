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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtst.alignment import encode_sentence_batch
from mtst.config import TrainConfig
from mtst.data import TaskData
from mtst.model import MultiTaskModel
from mtst.tasks import TaskKind

__all__ = ["CrossTaskLoss", "CrossTerms"]

logger = logging.getLogger(__name__)


def _uniform_ce(logits: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy of ``logits`` ``(N, L)`` against the uniform distribution: ``(N,)``."""
    z = logits.float()
    return torch.logsumexp(z, dim=-1) - z.mean(dim=-1)


@dataclass(frozen=True)
class CrossTerms:
    """The not-mine losses of one batch as (sum over this process's items, items scored) per term.

    Each term is a mean over its items; kept as sums so that several processes, each holding part of the
    batch, add up to exactly the one-process loss (:class:`mtst.task_loss.StepLoss` all-reduces the
    counts). ``weights`` scale each term's mean.
    """

    sums: tuple[torch.Tensor, ...]
    counts: tuple[int, ...]
    weights: tuple[float, ...]

    def loss(self, totals: Sequence[float], scale: float = 1.0) -> torch.Tensor:
        """``scale * sum_i weight_i * sums_i / totals_i`` (``totals``: items of each term over every process)."""
        parts = [w * s / max(t, 1.0) for s, t, w in zip(self.sums, totals, self.weights, strict=True)]
        return torch.stack(parts).sum() * scale

    def zeroed(self) -> CrossTerms:
        """The same terms contributing nothing (a process with no part of the batch)."""
        return CrossTerms(tuple(s * 0.0 for s in self.sums), tuple(0 for _ in self.counts), self.weights)


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
        *,
        part: slice = slice(None),
        n_rows: int | None = None,
    ) -> CrossTerms | None:
        """Losses of the trained ``heads`` other than ``task`` on this batch's encoder outputs, plus
        ``task``'s own out-of-domain sentences; None when there is nothing to add.

        With several processes the outputs are those of this process's ``part`` of a global batch of
        ``n_rows`` rows: the rows that token heads see as all-O are drawn over the global batch (the
        same draw as one process makes), and this process scores the drawn rows of its part.
        """
        terms: list[tuple[torch.Tensor, int, float]] = []
        if self.enabled:
            others = [h for h in heads if self.cfg.sees(h, task)]
            terms += self._not_mine(others, step, embedding, token_states, input_ids, part, n_rows)
        if task in self.ood and task in heads and self.cfg.ood_ratio > 0:
            terms += self._own_ood(task, step)
        if not terms:
            return None
        sums, counts, weights = zip(*terms, strict=True)
        return CrossTerms(tuple(sums), tuple(counts), tuple(weights))

    def _not_mine(
        self,
        heads: list[str],
        step: int,
        embedding: torch.Tensor | None,
        token_states: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        part: slice,
        n_rows: int | None,
    ) -> list[tuple[torch.Tensor, int, float]]:
        terms: list[tuple[torch.Tensor, int, float]] = []
        w = self.cfg.sentence_weight
        if embedding is not None and w > 0:
            for h in heads:
                if self.kinds[h] is TaskKind.SENTENCE:
                    terms.append((_uniform_ce(self.model.heads[h](embedding)).sum(), len(embedding), w))
        token_heads = [h for h in heads if self.kinds[h] is TaskKind.TOKEN]
        if token_heads and token_states is not None and input_ids is not None and self.cfg.token_ratio > 0:
            rng = np.random.default_rng((self.seed, step, 1))
            drawn = rng.random(n_rows if n_rows is not None else len(token_states)) < self.cfg.token_ratio
            rows = np.flatnonzero(drawn[part])
            idx = torch.from_numpy(rows).to(token_states.device)
            terms += self._all_outside(token_heads, token_states[idx], input_ids[idx])
        return terms

    def _all_outside(
        self, heads: list[str], states: torch.Tensor, input_ids: torch.Tensor
    ) -> list[tuple[torch.Tensor, int, float]]:
        """Cross-entropy of every real (non-special, non-padding) token against ``O`` (summed; the count).

        A term is returned even with no token to score (sum 0, count 0): every process then lists the
        same terms in the same order, whatever part of the batch it holds.
        """
        real = ~torch.isin(input_ids, self.special.to(input_ids.device))  # padding is a special token
        picked = states[real]  # (M, H)
        out = []
        for h in heads:
            target = torch.full((len(picked),), self.outside[h], dtype=torch.long, device=picked.device)
            logits = self.model.heads[h](picked).float()
            out.append((F.cross_entropy(logits, target, reduction="sum"), len(picked), 1.0))
        return out

    def _own_ood(self, task: str, step: int) -> list[tuple[torch.Tensor, int, float]]:
        """The task's own OOD sentences: the same draw in every process (several processes average it)."""
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
        return [(_uniform_ce(model.heads[task](emb)).sum(), len(emb), w)] if w > 0 else []
