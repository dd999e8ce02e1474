"""Freezing policies, and the encoder-output cache that makes heads-only training take seconds.

A :class:`FreezePlan` says which parameters train. Frozen parameters get ``requires_grad=False`` and
never enter the optimizer, so AdamW's decoupled weight decay cannot touch them, and every frozen
module runs in eval mode (no dropout) so that what it feeds the trainable parts is deterministic and
the same as the cached outputs. Policies (``FreezeConfig.policy``):

- ``full``: everything trains;
- ``frozen_encoder``: heads only;
- ``top_k``: the top k blocks of the encoder's layer list train, with whatever comes after them
  (e.g. a final norm); embeddings and the lower blocks are frozen. The layer list is found
  generically: the ``nn.ModuleList`` of ``num_hidden_layers`` blocks (BERT's ``encoder.layer``,
  DistilBERT's ``transformer.layer`` ...);

plus ``frozen_heads``, and heads of tasks that the current stage does not train.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtst.config import FreezeConfig, FreezePolicy
from mtst.data import TaskData
from mtst.data.sources import Example, as_sentence, as_token
from mtst.errors import ConfigError
from mtst.model import MultiTaskModel

__all__ = [
    "CachedTask",
    "FreezePlan",
    "apply_freezing",
    "build_cache",
    "build_caches",
    "count_parameters",
    "encoder_layers",
    "plan_freezing",
    "set_train_mode",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FreezePlan:
    trainable: frozenset[str]  # names of parameters that train (model.named_parameters())
    eval_modules: tuple[str, ...]  # largest fully frozen submodules: kept in eval mode
    encoder_frozen: bool
    trained_heads: tuple[str, ...]

    def describe(self, model: nn.Module) -> str:
        total, trainable = count_parameters(model, self)
        return (
            f"{trainable:,} of {total:,} parameters train "
            f"(encoder {'frozen' if self.encoder_frozen else 'partly or fully trainable'}; "
            f"heads {list(self.trained_heads)})"
        )


def encoder_layers(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """(name, list) of the encoder's transformer blocks: the ModuleList of ``num_hidden_layers`` items."""
    config = getattr(encoder, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    candidates = [
        (name, m) for name, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
    ]
    for name, m in candidates:
        if n is None or len(m) == int(n):
            return name, m
    raise ConfigError(
        f"freeze.top_k: cannot find the layer list of {type(encoder).__name__} "
        f"(an nn.ModuleList of num_hidden_layers={n} blocks)"
    )


def plan_freezing(model: MultiTaskModel, freeze: FreezeConfig, *, tasks: Sequence[str]) -> FreezePlan:
    """The plan for training ``tasks`` under ``freeze`` (heads of other tasks are frozen)."""
    unknown = [t for t in (*tasks, *freeze.frozen_heads) if t not in model.heads]
    if unknown:
        raise ConfigError(f"freeze: unknown task(s) {unknown}; the model has heads {list(model.heads)}")
    trained_heads = tuple(t for t in tasks if t not in freeze.frozen_heads)
    trainable: set[str] = set()
    enc_names = [f"encoder.{n}" for n, _ in model.encoder.named_parameters()]
    if freeze.policy is FreezePolicy.FULL:
        trainable.update(enc_names)
    elif freeze.policy is FreezePolicy.TOP_K:
        layer_path, layers = encoder_layers(model.encoder)
        if freeze.top_k > len(layers):
            raise ConfigError(f"freeze.top_k: {freeze.top_k} is more than the encoder's {len(layers)} layers")
        prefixes = [f"encoder.{layer_path}.{i}." for i in range(len(layers) - freeze.top_k, len(layers))]
        # parameters registered after the last block (a final norm, say) belong to the top too
        last_block = f"encoder.{layer_path}.{len(layers) - 1}."
        seen_last = False
        for name in enc_names:
            if name.startswith(last_block):
                seen_last = True
            if name.startswith(tuple(prefixes)) or (
                seen_last and not name.startswith(f"encoder.{layer_path}.")
            ):
                trainable.add(name)
    for t in trained_heads:
        trainable.update(f"heads.{t}.{n}" for n, _ in model.heads[t].named_parameters())
    encoder_frozen = not any(n in trainable for n in enc_names)
    return FreezePlan(frozenset(trainable), _eval_modules(model, trainable), encoder_frozen, trained_heads)


def _eval_modules(model: nn.Module, trainable: set[str]) -> tuple[str, ...]:
    """The largest submodules whose parameters are all frozen (at least one parameter)."""
    frozen: dict[str, bool] = {}
    for name, module in model.named_modules():
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        frozen[name] = bool(params) and not any(p in trainable for p in params)
    out: list[str] = []
    for name, is_frozen in frozen.items():
        if not is_frozen or not name:
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if not frozen.get(parent, False):
            out.append(name)
    return tuple(out)


def apply_freezing(model: nn.Module, plan: FreezePlan) -> None:
    """Set ``requires_grad`` from the plan."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in plan.trainable)


def set_train_mode(model: nn.Module, plan: FreezePlan) -> None:
    """Train mode for the trainable parts, eval mode (no dropout) for every frozen module."""
    model.train()
    for name in plan.eval_modules:
        model.get_submodule(name).eval()


def count_parameters(model: nn.Module, plan: FreezePlan | None = None) -> tuple[int, int]:
    """(total, trainable) parameter counts; trainable by the plan, else by ``requires_grad``."""
    total = trainable = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if (name in plan.trainable) if plan is not None else p.requires_grad:
            trainable += p.numel()
    return total, trainable


# ---------------------------------------------------------------------- encoder-output cache
@dataclass
class CachedTask:
    """Encoder outputs of one task's training examples, computed once with the encoder frozen.

    Sentence tasks: ``features`` (N, H) pooled embeddings, ``labels`` (N,). Token tasks: only the
    states at labelled positions (first sub-token of each word), flat: ``features`` (M, H),
    ``labels`` (M,), example i owning rows ``offsets[i]:offsets[i+1]`` — the rest of the sequence
    never reaches the loss.
    """

    features: torch.Tensor
    labels: torch.Tensor
    offsets: np.ndarray | None = None

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.offsets is None:
            idx = torch.from_numpy(np.asarray(indices, dtype=np.int64))
            return self.features[idx], self.labels[idx]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices])
        idx = torch.from_numpy(rows.astype(np.int64))
        return self.features[idx], self.labels[idx]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def build_caches(
    model: MultiTaskModel,
    tasks: Sequence[str],
    data: Mapping[str, TaskData],
    *,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, CachedTask]:
    """:func:`build_cache` for each of ``tasks``, on its training split."""
    return {
        t: build_cache(model, t, data[t].train, data[t].label_to_id, batch_size=batch_size, device=device)
        for t in tasks
    }


@torch.inference_mode()
def build_cache(
    model: MultiTaskModel,
    task: str,
    examples: Sequence[Example],
    label_to_id: dict[str, int],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> CachedTask:
    """Run the (frozen, eval-mode) encoder once over ``examples`` and keep what ``task``'s head reads."""
    from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
    from mtst.tasks import TaskKind

    spec = model.tasks[task]
    was_training = model.encoder.training
    model.encoder.eval()
    try:
        hidden = model.hidden_size
        if spec.kind is TaskKind.SENTENCE:
            sentences = [as_sentence(ex) for ex in examples]
            feats = torch.empty((len(sentences), hidden), dtype=torch.float32)
            order = np.argsort([len(ex.text) for ex in sentences], kind="stable")
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = encode_sentence_batch(
                    model.tokenizer, [sentences[i].text for i in idx], max_seq_len=model.max_seq_len
                )
                _, emb = model.encode_tokens(**_to_torch(enc, model, device))
                feats[torch.from_numpy(idx)] = emb.float().cpu()
            labels = torch.tensor([label_to_id[ex.label] for ex in sentences], dtype=torch.long)
            return CachedTask(feats, labels)
        tokens = [as_token(ex) for ex in examples]
        per_example: list[torch.Tensor] = [torch.empty(0)] * len(tokens)
        per_labels: list[torch.Tensor] = [torch.empty(0)] * len(tokens)
        order = np.argsort([len(ex.tokens) for ex in tokens], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc, labels_np, _ = encode_token_batch(
                model.tokenizer, [tokens[i] for i in idx], label_to_id, max_seq_len=model.max_seq_len
            )
            states, _ = model.encode_tokens(**_to_torch(enc, model, device))  # (B, T, H)
            states = states.float().cpu()
            lab = torch.from_numpy(labels_np)  # (B, T)
            for b, i in enumerate(idx):
                keep = lab[b] != IGNORE_INDEX
                per_example[i] = states[b][keep]
                per_labels[i] = lab[b][keep]
        sizes = np.array([len(x) for x in per_labels], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        return CachedTask(torch.cat(per_example), torch.cat(per_labels), offsets)
    finally:
        model.encoder.train(was_training)


def _to_torch(
    enc: dict[str, np.ndarray], model: MultiTaskModel, device: torch.device | str
) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in enc.items() if k in model.input_names}
