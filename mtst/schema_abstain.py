"""Run-config sections for heads that know when a sentence is not theirs. Torch-free.

::

    calibration:                 # after training, on each task's validation split (never test)
      enabled: true
      target: coverage           # coverage | risk | none: what a sentence head's threshold is chosen for
      value: 0.98                # coverage: share of its own validation sentences it still answers
      token_target: coverage     # the same for a token head's entities
      token_value: 0.98
    cross_task:                  # each head sees the other tasks' sentences as "not mine"
      enabled: null              # null: on when the run has several tasks
      sentence_weight: 0.5       # weight of the outlier-exposure loss of sentence heads
      token_ratio: 0.25          # share of other tasks' sentences a token head sees as all-O
      ood_ratio: 0.25            # a task's own ood file: sentences per batch, as a share of batch_size
      exclude: [[intent, clinc]] # pairs of tasks that share a domain: neither sees the other's sentences

A task's own out-of-domain sentences: ``tasks[i].ood: {path: ..., ...}`` (a data source read like a
sentence task's; its labels, if any, are ignored), e.g. CLINC150's ``oos_train`` split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtst.calibration import ThresholdTarget
from mtst.errors import ConfigError, parse_enum

__all__ = ["CalibrationConfig", "CrossTaskConfig"]


def _check_target(where: str, target: ThresholdTarget, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if target is ThresholdTarget.COVERAGE and not 0.0 < value <= 1.0:
        raise ConfigError(f"{where}: a coverage target must be in (0, 1], got {value!r}")
    if target is ThresholdTarget.RISK and not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: a risk target must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class CalibrationConfig:
    """Temperatures and abstention thresholds fitted after training on validation data (mtst.calibrate)."""

    enabled: bool = True
    target: ThresholdTarget = ThresholdTarget.COVERAGE
    value: float = 0.98
    token_target: ThresholdTarget = ThresholdTarget.COVERAGE
    token_value: float = 0.98

    def __post_init__(self) -> None:
        for name in ("target", "token_target"):
            object.__setattr__(
                self, name, parse_enum(ThresholdTarget, getattr(self, name), f"calibration.{name}")
            )
        _check_target("calibration.value", self.target, self.value)
        _check_target("calibration.token_value", self.token_target, self.token_value)


@dataclass(frozen=True)
class CrossTaskConfig:
    """Cross-task training: every head learns to abstain on the other tasks' sentences (mtst.cross_task)."""

    enabled: bool | None = None  # None: on when the run has several tasks
    sentence_weight: float = 0.5
    token_ratio: float = 0.25
    ood_ratio: float = 0.25
    exclude: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.exclude, list):
            object.__setattr__(self, "exclude", tuple(tuple(p) for p in self.exclude))
        if not math.isfinite(self.sentence_weight) or self.sentence_weight < 0:
            raise ConfigError(
                f"cross_task.sentence_weight: expected a number >= 0, got {self.sentence_weight!r}"
            )
        for name in ("token_ratio", "ood_ratio"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"cross_task.{name}: expected a value in [0, 1], got {v!r}")
        for pair in self.exclude:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(
                    f"cross_task.exclude: expected pairs of two different tasks, got {list(pair)}"
                )

    def active(self, n_tasks: int) -> bool:
        return self.enabled if self.enabled is not None else n_tasks > 1

    def sees(self, head: str, source: str) -> bool:
        """Whether ``head`` is shown ``source``'s sentences as not its own."""
        return head != source and (head, source) not in self.exclude and (source, head) not in self.exclude
