"""Run configs of ``mtst-train``: one reader for YAML or TOML files, ``--set`` overrides.

A config file is a mapping whose keys are the fields of :class:`~mtst.schema.TrainConfig`::

    backbone: null                  # the packaged all-MiniLM-L6-v2
    data_root: ../shared/data       # relative data paths are read from here
    tasks:
      - name: intent
        kind: sentence_classification
        train: {path: banking77/train.csv, label_column: category}
        validation_fraction: 0.1
    optim: {encoder_lr: 5.0e-5, head_lr: 2.0e-3, epochs: 2}

Unknown keys are errors naming the key and the keys allowed there. Values are converted from the
schema's annotations (:mod:`mtst.schema`, re-exported here): a float field takes ``5e-5`` even though
YAML 1.1 reads it as a string, lists become tuples, strings enums. Torch-free.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, Union

from mtst.data.sources import DataSource
from mtst.errors import ConfigError, parse_enum
from mtst.schema import (
    AugmentConfig,
    CheckpointConfig,
    CompareConfig,
    EvalConfig,
    FreezeConfig,
    FreezePolicy,
    LossWeighting,
    LossWeightingConfig,
    OptimConfig,
    Pooling,
    SamplingConfig,
    SamplingStrategy,
    Schedule,
    StageConfig,
    TaskConfig,
    TrainConfig,
)
from mtst.schema_abstain import CalibrationConfig, CrossTaskConfig

__all__ = [
    "AugmentConfig",
    "CalibrationConfig",
    "CheckpointConfig",
    "CompareConfig",
    "CrossTaskConfig",
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
    "apply_overrides",
    "config_from_dict",
    "dataclass_from_dict",
    "load_config",
    "read_config_file",
]

T = TypeVar("T")

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
        return _convert_union(tp, value, where)
    if tp is Any:
        return value
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return parse_enum(tp, value, where)
    if tp is DataSource:
        return _data_source(value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return dataclass_from_dict(tp, value, where)
    if origin is tuple:
        return _convert_tuple(tp, value, where)
    if origin in (Mapping, dict, typing.Mapping):
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert_key(key_t, k, where): _convert(val_t, v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"config field {where}: unsupported annotation {tp!r}")  # a bug in this module


def _convert_union(tp: Any, value: Any, where: str) -> Any:
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
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(tp)}")


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads 5e-5 as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string, got {value!r}")


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}


def _convert_key(key_t: Any, key: Any, where: str) -> Any:
    """A mapping key: YAML reads ``0: negative`` with an int key, which a ``str`` key takes as ``"0"``."""
    if key_t is str and isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return _convert(key_t, key, where)


def _convert_tuple(tp: Any, value: Any, where: str) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, _item_where(where, v, i)) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected a list of {len(args)} values, got {list(value)!r}")
    return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _data_source(value: Any, where: str) -> DataSource:
    """A path, or a mapping of DataSource fields, each converted from its annotation."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a data source (a path or a mapping with 'path'), got {value!r}")
    try:
        DataSource.check_keys(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    kwargs = _converted_fields(DataSource, value, where)
    try:
        return DataSource(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _item_where(where: str, value: Any, index: int) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return f"{where}.{value['name']}"
    return f"{where}[{index}]"


def _converted_fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The fields of dataclass ``cls`` found in ``data``, each converted from its annotation."""
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
    return kwargs


def dataclass_from_dict(cls: type[T], data: Any, where: str) -> T:
    """An instance of the frozen dataclass ``cls`` from a plain mapping: unknown keys, missing fields
    and values that do not fit the annotations raise ConfigError naming ``where`` and the key."""
    kwargs = _converted_fields(cls, data, where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - a field check this module missed
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a plain mapping (a parsed file or ``to_dict()``)."""
    return dataclass_from_dict(TrainConfig, data, "")


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
