"""How per-task losses are weighted before the backward pass.

- :class:`StaticLossWeighting`: a fixed weight per task (``tasks[].loss_weight``).
- :class:`UncertaintyLossWeighting`: learned homoscedastic-uncertainty weights after Kendall, Gal and
  Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics"
  (CVPR 2018). Each task t has a learned log-variance s_t and contributes ``exp(-s_t) * L_t + s_t``:
  a task with a large (noisy) loss gets a large s_t and so a smaller weight, and the ``+ s_t`` term
  keeps s_t from growing without bound. The s_t are trained with the heads' learning rate and no
  weight decay, saved with every checkpoint and reported in the metrics.

Both are ``nn.Module`` so that their parameters (if any) live in the optimizer and the state dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mtst.config import LossWeighting, LossWeightingConfig
from mtst.errors import ConfigError

__all__ = ["LossWeighter", "StaticLossWeighting", "UncertaintyLossWeighting", "build_loss_weighting"]


class LossWeighter(nn.Module):
    """``weighter(task, loss)`` is the loss to back-propagate for one task's batch loss."""

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """The effective multiplier of each task's loss right now (for the metrics log)."""
        raise NotImplementedError


class StaticLossWeighting(LossWeighter):
    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        for name, w in weights.items():
            if not w >= 0:
                raise ConfigError(f"tasks.{name}.loss_weight: expected a number >= 0, got {w!r}")
        self._weights = {str(k): float(v) for k, v in weights.items()}

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return loss * self._weights[task]

    def weights(self) -> dict[str, float]:
        return dict(self._weights)


class UncertaintyLossWeighting(LossWeighter):
    """Kendall et al. (2018): ``exp(-s_t) * w_t * L_t + s_t`` with learned log-variances ``s_t``."""

    def __init__(
        self, tasks: Sequence[str], *, init_log_var: float = 0.0, static: Mapping[str, float] | None = None
    ) -> None:
        super().__init__()
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.tensor(float(init_log_var))) for t in tasks})
        self._static = {t: float((static or {}).get(t, 1.0)) for t in tasks}

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[task]
        return torch.exp(-s) * (self._static[task] * loss) + s

    def weights(self) -> dict[str, float]:
        return {t: float(torch.exp(-p.detach()).item()) * self._static[t] for t, p in self.log_vars.items()}

    def log_variances(self) -> dict[str, float]:
        return {t: float(p.detach().item()) for t, p in self.log_vars.items()}


def build_loss_weighting(cfg: LossWeightingConfig, task_weights: Mapping[str, float]) -> LossWeighter:
    """The weighting ``cfg`` asks for; ``task_weights`` are the tasks' static ``loss_weight``."""
    if cfg.method is LossWeighting.STATIC:
        return StaticLossWeighting(task_weights)
    return UncertaintyLossWeighting(list(task_weights), init_log_var=cfg.init_log_var, static=task_weights)
