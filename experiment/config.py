"""Experiment configs of ``mtst-experiment``: a base run config and named variants of it, and the
training runs (:class:`ModelPlan`) each variant makes.

See :mod:`mtst.experiment.run` for the file format and what a run does. Everything here is checked when
the file is read (unknown keys, bad values, every variant's run config built once), so that a typo in
the last variant fails before hours of training, with the file, the variant and the key named.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from mtst.config import (
    SamplingConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    dataclass_from_dict,
    read_config_file,
)
from mtst.errors import ConfigError, parse_enum
from mtst.runtime.manifest import parse_precision

__all__ = [
    "ExperimentConfig",
    "ExportOptions",
    "LatencyConfig",
    "ModelPlan",
    "VariantConfig",
    "VariantKind",
    "load_experiment",
    "model_dir",
    "plan_models",
    "single_task_config",
    "variant_config",
]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class VariantKind(str, Enum):
    MULTITASK = "multitask"  # one model, every task of the variant
    SEPARATE = "separate"  # one model per task


@dataclass(frozen=True)
class VariantConfig:
    name: str
    kind: VariantKind = VariantKind.MULTITASK
    description: str = ""
    tasks: tuple[str, ...] = ()  # a subset of the base's tasks (default: all)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # key path -> value, like --set
    budget_from: str | None = None  # separate: per-task steps of this multitask variant
    precisions: tuple[str, ...] | None = None  # default: the experiment's (multitask), fp32 (separate)


def _check_amounts(obj: Any, where: str) -> None:
    """Counts (int fields) >= 1, amounts (float fields) >= 0."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool):
            continue
        minimum = 1 if isinstance(value, int) else 0
        if value < minimum:
            raise ConfigError(
                f"{where}.{f.name}: expected a {type(value).__name__} >= {minimum}, got {value!r}"
            )


@dataclass(frozen=True)
class LatencyConfig:
    """CPU latency per sentence: batch 1, ``mtst.runtime.Engine.predict`` end to end, median."""

    sentences: int = 200  # real validation sentences, taken in turn from every task
    threads: int = 1  # ONNX Runtime intra-op threads
    warmup: int = 5

    def __post_init__(self) -> None:
        _check_amounts(self, "latency")


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`mtst.export.export_bundle` for every model of the experiment."""

    accuracy_guard: bool = True
    parity_check: bool = True
    eval_limit: int = 2000  # validation examples a task for the guard
    max_metric_drop: float = 0.005

    def __post_init__(self) -> None:
        _check_amounts(self, "export")
        if not 0.0 <= self.max_metric_drop < 1.0:
            raise ConfigError(
                f"export.max_metric_drop: expected a value in [0, 1), got {self.max_metric_drop!r}"
            )


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    path: Path
    base: dict[str, Any]  # the raw run config with `set` and CLI overrides applied
    variants: tuple[VariantConfig, ...]
    precisions: tuple[str, ...] = ("fp32", "int8-static-cpu", "fp16")
    max_steps: int | None = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    export: ExportOptions = field(default_factory=ExportOptions)
    raw: dict[str, Any] = field(default_factory=dict)  # the file's mapping (after extends)

    def variant(self, name: str) -> VariantConfig:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(
            f"variant {name!r}: not in {self.path} (variants: {[v.name for v in self.variants]})"
        )

    def precisions_of(self, variant: VariantConfig) -> tuple[str, ...]:
        if variant.precisions is not None:
            return variant.precisions
        return self.precisions if variant.kind is VariantKind.MULTITASK else ("fp32",)


@dataclass(frozen=True)
class ModelPlan:
    """One training run of a variant: ``main`` (multitask) or a task name (separate)."""

    variant: str
    name: str
    config: TrainConfig  # with the test splits: the final evaluation reads them from here

    @property
    def train_config(self) -> TrainConfig:
        """What ``mtst-train`` gets: the same config without test splits."""
        tasks = tuple(dataclasses.replace(t, test=None) for t in self.config.tasks)
        return dataclasses.replace(self.config, tasks=tasks)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.config.tasks)


def model_dir(out: Path, plan: ModelPlan) -> Path:
    """Where the experiment in ``out`` keeps one training run: ``run/``, ``bundle/``, ``trained.json`` ..."""
    return out / "variants" / plan.variant / plan.name


# ---------------------------------------------------------------------------------------------- reading
_TOP_KEYS = ("name", "extends", "base", "set", "max_steps", "precisions", "latency", "export", "variants")
_VARIANT_KEYS = ("name", "kind", "description", "tasks", "set", "budget_from", "precisions")


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {sorted(allowed)}")


def _read_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: extends itself (through {[str(p) for p in seen]})")
    data = read_config_file(path)
    _check_keys(data, _TOP_KEYS, str(path))
    parent_ref = data.pop("extends", None)
    if parent_ref is None:
        data = dict(data)
        if isinstance(data.get("base"), str):
            data["base"] = str((path.parent / data["base"]).resolve())
        return data
    if not isinstance(parent_ref, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {parent_ref!r}")
    parent = _read_with_extends(path.parent / parent_ref, (*seen, path))
    out = {**parent, **{k: v for k, v in data.items() if k != "set"}}
    if isinstance(data.get("base"), str):
        out["base"] = str((path.parent / data["base"]).resolve())
    out["set"] = [
        *_string_list(parent.get("set"), f"{path}: set"),
        *_string_list(data.get("set"), f"{path}: set"),
    ]
    return out


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of 'KEY=VALUE' strings, got {value!r}")
    return list(value)


def _precisions(value: Any, where: str) -> tuple[str, ...]:
    """Precision names (aliases of :data:`mtst.runtime.manifest.PRECISION_ALIASES`) as manifest values."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list such as [fp32, int8, fp16], got {value!r}")
    out = tuple(dict.fromkeys(parse_precision(v, f"{where}[{i}]").value for i, v in enumerate(value)))
    if "fp32" not in out:
        raise ConfigError(f"{where}: fp32 is the reference every other precision is read against; add it")
    return out


def _section(cls: type[T], raw: Mapping[str, Any], key: str, path: Path) -> T:
    """The ``latency`` / ``export`` section: its dataclass with defaults for what the file leaves out."""
    value = raw.get(key)
    try:
        return dataclass_from_dict(cls, {} if value is None else value, key)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _variant(data: Any, index: int, path: Path, task_names: Sequence[str]) -> VariantConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: variants[{index}]: expected a mapping with a name, got {data!r}")
    name = data.get("name")
    where = f"{path}: variants.{name}" if isinstance(name, str) else f"{path}: variants[{index}]"
    _check_keys(data, _VARIANT_KEYS, where)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{where}: name {name!r}: expected lower-case letters, digits, '-' or '_' (a folder name)"
        )
    kind = parse_enum(VariantKind, data.get("kind", "multitask"), f"{where}.kind")
    tasks = data.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{where}.tasks: expected a list of task names, got {tasks!r}")
    unknown = [t for t in tasks if t not in task_names]
    if unknown:
        raise ConfigError(f"{where}.tasks: unknown task(s) {unknown}; the base has {list(task_names)}")
    overrides = data.get("set") or {}
    if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"{where}.set: expected a mapping of config keys to values, got {overrides!r}")
    budget = data.get("budget_from")
    if kind is VariantKind.SEPARATE and not isinstance(budget, str):
        raise ConfigError(
            f"{where}.budget_from: a separate variant needs the multitask variant whose per-task steps "
            f"it matches, got {budget!r}"
        )
    if kind is VariantKind.MULTITASK and budget is not None:
        raise ConfigError(f"{where}.budget_from: only used by kind 'separate'")
    precisions = data.get("precisions")
    return VariantConfig(
        name=name,
        kind=kind,
        description=str(data.get("description") or ""),
        tasks=tuple(tasks),
        overrides=dict(overrides),
        budget_from=budget,
        precisions=_precisions(precisions, f"{where}.precisions") if precisions is not None else None,
    )


def load_experiment(
    path: str | Path, *, overrides: Sequence[str] = (), data_root: str | Path | None = None
) -> ExperimentConfig:
    """Read and validate an experiment config; every variant's run config is built once to fail early.

    ``overrides`` (``--set``) and ``data_root`` (``--data-root``) apply to the base, before the variants.
    """
    path = Path(path)
    raw = _read_with_extends(path)
    base_ref = raw.get("base")
    if isinstance(base_ref, str):
        base = read_config_file(Path(base_ref))
    elif isinstance(base_ref, Mapping):
        base = dict(base_ref)
    else:
        raise ConfigError(
            f"{path}: base: expected a run config (a mapping) or its file name, got {base_ref!r}"
        )
    try:
        base = apply_overrides(base, [*_string_list(raw.get("set"), "set"), *overrides])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data_root is not None:
        base["data_root"] = str(data_root)
    if base.get("data_root") is not None:  # mtst-train reads it relative to the working directory
        base["data_root"] = str(Path(str(base["data_root"])).expanduser().resolve())
    tasks = base.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"{path}: base.tasks: expected a list of tasks")
    task_names = [str(t.get("name")) for t in tasks if isinstance(t, Mapping)]
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not variants_raw:
        raise ConfigError(f"{path}: variants: expected a non-empty list of variants")
    variants = tuple(_variant(v, i, path, task_names) for i, v in enumerate(variants_raw))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: variants: duplicate names {dupes}")
    max_steps = raw.get("max_steps")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ConfigError(f"{path}: max_steps: expected an integer >= 1 or null, got {max_steps!r}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
        raise ConfigError(f"{path}: name: {name!r} must be letters, digits, '_', '.', '-' (a folder name)")
    export = _section(ExportOptions, raw, "export", path)
    exp = ExperimentConfig(
        name=name,
        path=path,
        base=base,
        variants=variants,
        precisions=_precisions(raw["precisions"], f"{path}: precisions")
        if "precisions" in raw
        else ("fp32", "int8-static-cpu", "fp16"),
        max_steps=max_steps,
        latency=_section(LatencyConfig, raw, "latency", path),
        export=export,
        raw=raw,
    )
    by_name = {v.name: v for v in variants}
    for v in variants:
        if v.budget_from is not None:
            ref = by_name.get(v.budget_from)
            if ref is None or ref.kind is not VariantKind.MULTITASK:
                raise ConfigError(
                    f"{path}: variants.{v.name}.budget_from: {v.budget_from!r} is not a multitask variant of "
                    f"this experiment ({[x.name for x in variants if x.kind is VariantKind.MULTITASK]})"
                )
        plan_models(exp, v, budget={t: 1 for t in task_names})  # validates the run config(s)
    return exp


def variant_config(exp: ExperimentConfig, variant: VariantConfig) -> TrainConfig:
    """The base with the variant's task subset and overrides, run id ``<experiment>-<variant>``."""
    raw = dict(exp.base)
    if variant.tasks:
        raw["tasks"] = [t for t in raw["tasks"] if isinstance(t, Mapping) and t.get("name") in variant.tasks]
    items = [f"{k}={json.dumps(v)}" for k, v in variant.overrides.items()]
    where = f"{exp.path}: variants.{variant.name}.set"
    try:
        raw = apply_overrides(raw, items)
        raw["run_id"] = f"{exp.name}-{variant.name}"[:128]
        if exp.max_steps is not None:  # like mtst-train --max-steps: the cap holds in every stage too
            raw["optim"] = {
                **(raw.get("optim") or {}),
                "max_steps": min(exp.max_steps, (raw.get("optim") or {}).get("max_steps") or exp.max_steps),
            }
            raw["stages"] = [
                {**s, "max_steps": min(exp.max_steps, s.get("max_steps") or exp.max_steps)}
                if isinstance(s, Mapping)
                else s
                for s in raw.get("stages") or []
            ]
        return config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def plan_models(
    exp: ExperimentConfig, variant: VariantConfig, *, budget: Mapping[str, int] | None = None
) -> tuple[ModelPlan, ...]:
    """The training runs of ``variant``; a separate variant needs ``budget`` (task -> steps)."""
    cfg = variant_config(exp, variant)
    if variant.kind is VariantKind.MULTITASK:
        return (ModelPlan(variant.name, "main", cfg),)
    if cfg.stages:
        raise ConfigError(f"{exp.path}: variants.{variant.name}: a separate variant cannot have stages")
    if budget is None:
        raise ConfigError(
            f"variant {variant.name!r}: the per-task budget of {variant.budget_from!r} is not known yet"
        )
    plans = []
    for tc in cfg.tasks:
        if tc.name not in budget:
            raise ConfigError(
                f"variant {variant.name!r}: {variant.budget_from!r} did not train task {tc.name!r}, so there "
                "is no budget to match"
            )
        single = single_task_config(cfg, tc.name, steps=budget[tc.name])
        plans.append(
            ModelPlan(variant.name, tc.name, dataclasses.replace(single, run_id=f"{cfg.run_id}-{tc.name}"))
        )
    return tuple(plans)


def single_task_config(cfg: TrainConfig, task: str, *, steps: int) -> TrainConfig:
    """``cfg`` cut down to one task, trained for ``steps`` steps with the same hyper-parameters."""
    tc = cfg.task(task)
    metric = (
        cfg.eval.metric if cfg.eval.metric == "mean" or cfg.eval.metric.startswith(f"{task}.") else "mean"
    )
    return dataclasses.replace(
        cfg,
        tasks=(tc,),
        run_id=f"{cfg.run_id or 'run'}-{task}",
        optim=dataclasses.replace(cfg.optim, max_steps=max(1, steps)),
        sampling=SamplingConfig(),
        freeze=dataclasses.replace(
            cfg.freeze, frozen_heads=tuple(h for h in cfg.freeze.frozen_heads if h == task)
        ),
        eval=dataclasses.replace(cfg.eval, metric=metric),
    )
