"""The optimizer and the learning-rate schedule of a training stage.

AdamW with two learning rates (a new head under-trains at the encoder's lr: DESIGN.md, traps) and a
schedule that is a pure function of the stage step (linear warmup, then linear / cosine decay to
``min_lr_ratio``, or constant), so that a resumed run recomputes it instead of restoring it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mtst.errors import ConfigError
from mtst.freezing import FreezePlan
from mtst.loss_weighting import LossWeighter
from mtst.model import MultiTaskModel
from mtst.schema import Schedule

__all__ = ["LrSchedule", "build_optimizer", "lr_factor"]


def lr_factor(step: int, *, total: int, warmup: int, schedule: Schedule, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at 0-based ``step``: linear warmup, then linear/cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule is Schedule.CONSTANT:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule is Schedule.COSINE:
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


@dataclass(frozen=True)
class LrSchedule:
    """One stage's schedule; ``to_dict()`` is recorded in checkpoints for the reader."""

    kind: Schedule
    total: int
    warmup: int
    min_lr_ratio: float
    steps_per_epoch: int

    def factor(self, step: int) -> float:
        return lr_factor(
            step, total=self.total, warmup=self.warmup, schedule=self.kind, min_ratio=self.min_lr_ratio
        )

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every parameter group's lr for 0-based stage ``step``."""
        factor = self.factor(step)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "total": self.total,
            "warmup": self.warmup,
            "min_lr_ratio": self.min_lr_ratio,
            "steps_per_epoch": self.steps_per_epoch,
        }


def build_optimizer(
    model: MultiTaskModel,
    weighter: LossWeighter,
    plan: FreezePlan,
    *,
    encoder_lr: float,
    head_lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: encoder and heads at their own lr; no weight decay on
    biases, norms and scalars (ndim < 2); learned loss weights at the head lr without decay."""
    groups: dict[str, list[torch.nn.Parameter]] = {
        k: [] for k in ("encoder", "encoder_no_decay", "heads", "heads_no_decay")
    }
    for name, p in model.named_parameters():
        if name not in plan.trainable:
            continue
        part = "encoder" if name.startswith("encoder.") else "heads"
        groups[part + ("_no_decay" if p.ndim < 2 else "")].append(p)
    lrs = {"encoder": encoder_lr, "encoder_no_decay": encoder_lr, "heads": head_lr, "heads_no_decay": head_lr}
    param_groups = [
        {
            "name": k,
            "params": v,
            "lr": lrs[k],
            "base_lr": lrs[k],
            "weight_decay": 0.0 if k.endswith("no_decay") else weight_decay,
        }
        for k, v in groups.items()
        if v
    ]
    extra = [p for p in weighter.parameters()]
    if extra:
        param_groups.append(
            {
                "name": "loss_weighting",
                "params": extra,
                "lr": head_lr,
                "base_lr": head_lr,
                "weight_decay": 0.0,
            }
        )
    if not param_groups:
        raise ConfigError("freeze: nothing left to train (every parameter is frozen)")
    return torch.optim.AdamW(param_groups, lr=head_lr, betas=betas, eps=eps)
