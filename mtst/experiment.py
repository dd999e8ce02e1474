"""``mtst-experiment``: one config, many training variants, one table (multi-task vs separate vs frozen).

An experiment config names a **base** run config (``mtst-train``'s format, inline or a file) and a
list of **variants**, each a set of overrides of that base::

    name: results
    base: {tasks: [...], optim: {...}, ...}       # or base: multitask.yaml (relative to this file)
    set: ["optim.epochs=2"]                        # overrides of the base, applied to every variant
    max_steps: null                                # caps every training run (and every stage)
    precisions: [fp32, int8, fp16]                 # bundles of the multi-task variants
    variants:
      - {name: mt-proportional, set: {sampling.strategy: proportional}}
      - {name: separate, kind: separate, budget_from: mt-proportional}
      - {name: staged, tasks: [intent, ner], set: {stages: [...]}}

A ``multitask`` variant trains one model; a ``separate`` variant trains one model per task, each for
exactly as many steps of its task as the ``budget_from`` variant gave it (:func:`mtst.compare.
single_task_config`). ``extends: other.yaml`` takes another experiment file's keys as defaults (a tiny
variant for tests keeps the real variants and only shrinks the data).

Phases, in this order (``events.jsonl`` records them):

1. **train** every selected variant's model(s): a subprocess of ``mtst-train`` each, on a config whose
   tasks carry **no test split** (validation only: early stopping and model selection never see
   test data). A subprocess per model gives all of its memory back to the OS when it ends (a long
   experiment in one process keeps the peak of its largest run) and a crash of one run leaves the
   others; ``--resume`` continues a killed run through ``mtst-train --resume``;
2. **export** each model's ``best/`` checkpoint with :func:`mtst.export.export_bundle` (one bundle,
   one variant per precision; the accuracy guard reads validation data only);
3. **final evaluation** (:mod:`mtst.experiment_eval`): the test split of every task through the
   exported graphs on ONNX Runtime, and CPU latency (batch 1, every model in one interleaved loop);
4. **report** (:mod:`mtst.experiment_report`): ``results.json``, ``results.md``, plots.

Per model, ``variants/<variant>/<model>/`` holds ``run/`` (the training run), ``train.log``,
``trained.json``, ``bundle/``, ``exported.json`` and ``test.json``; with ``--resume`` whatever is
finished is kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.config import TrainConfig, apply_overrides, config_from_dict, read_config_file
from mtst.errors import ConfigError, MtstError
from mtst.fsutil import atomic_write_json, atomic_write_text

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "ExportOptions",
    "LatencyConfig",
    "ModelPlan",
    "VariantConfig",
    "VariantKind",
    "load_experiment",
    "plan_models",
    "run_experiment",
]

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": "fp32", "none": "fp32", "int8": "int8-dynamic", "int8-dynamic": "int8-dynamic"}
PRECISIONS.update({"fp16": "fp16", "int8-static": "int8-static"})
_QUANTIZE = {"fp32": "none", "int8-dynamic": "int8", "fp16": "fp16", "int8-static": "int8-static"}
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


@dataclass(frozen=True)
class LatencyConfig:
    """CPU latency per sentence: batch 1, ``mtst.runtime.Engine.predict`` end to end, median."""

    sentences: int = 200  # real validation sentences, taken in turn from every task
    threads: int = 1  # ONNX Runtime intra-op threads
    warmup: int = 5


@dataclass(frozen=True)
class ExportOptions:
    """Options of :func:`mtst.export.export_bundle` for every model of the experiment."""

    accuracy_guard: bool = True
    parity_check: bool = True
    eval_limit: int = 2000  # validation examples a task for the guard
    max_metric_drop: float = 0.005


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    path: Path
    base: dict[str, Any]  # the raw run config with `set` and CLI overrides applied
    variants: tuple[VariantConfig, ...]
    precisions: tuple[str, ...] = ("fp32", "int8-dynamic", "fp16")
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


# ---------------------------------------------------------------------------------------------- config
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


def _precision(value: Any, where: str) -> str:
    key = str(value).strip().lower()
    if key not in PRECISIONS:
        raise ConfigError(f"{where}: {value!r} is not one of {sorted(PRECISIONS)}")
    return PRECISIONS[key]


def _precisions(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list such as [fp32, int8, fp16], got {value!r}")
    out = tuple(dict.fromkeys(_precision(v, f"{where}[{i}]") for i, v in enumerate(value)))
    if "fp32" not in out:
        raise ConfigError(f"{where}: fp32 is the reference every other precision is read against; add it")
    return out


def _small_dataclass(cls: Any, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(data, list(fields), where)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if not ok:
            kind = (
                "true or false"
                if isinstance(default, bool)
                else f"a {type(default).__name__} >= {1 if isinstance(default, int) else 0}"
            )
            raise ConfigError(f"{where}.{name}: expected {kind}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


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
    try:
        kind = VariantKind(data.get("kind", "multitask"))
    except ValueError:
        raise ConfigError(
            f"{where}.kind: {data.get('kind')!r} is not one of {[k.value for k in VariantKind]}"
        ) from None
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
    export = _small_dataclass(ExportOptions, raw.get("export"), f"{path}: export")
    if not 0.0 <= export.max_metric_drop < 1.0:
        raise ConfigError(
            f"{path}: export.max_metric_drop: expected a value in [0, 1), got {export.max_metric_drop!r}"
        )
    exp = ExperimentConfig(
        name=name,
        path=path,
        base=base,
        variants=variants,
        precisions=_precisions(raw["precisions"], f"{path}: precisions")
        if "precisions" in raw
        else ("fp32", "int8-dynamic", "fp16"),
        max_steps=max_steps,
        latency=_small_dataclass(LatencyConfig, raw.get("latency"), f"{path}: latency"),
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
    from mtst.compare import single_task_config

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


# ---------------------------------------------------------------------------------------------- run
@dataclass(frozen=True)
class ExperimentResult:
    out: Path
    report: dict[str, Any]  # what results.json holds
    failed: dict[str, str]  # variant -> error


class EventLog:
    """``events.jsonl``: the order in which things happened (the test-split check reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0
        if path.exists():
            self.seq = sum(1 for _ in path.open(encoding="utf-8"))

    def add(self, event: str, **fields: Any) -> None:
        self.seq += 1
        record = {"seq": self.seq, "time": round(time.time(), 3), "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def model_dir(out: Path, plan: ModelPlan) -> Path:
    return out / "variants" / plan.variant / plan.name


def _select(exp: ExperimentConfig, only: Iterable[str] | None) -> list[VariantConfig]:
    names = [n.strip() for item in (only or ()) for n in item.split(",") if n.strip()]
    if not names:
        return list(exp.variants)
    unknown = [n for n in names if n not in {v.name for v in exp.variants}]
    if unknown:
        raise ConfigError(
            f"--only: unknown variant(s) {unknown}; the experiment has {[v.name for v in exp.variants]}"
        )
    return [v for v in exp.variants if v.name in names]


def run_experiment(
    exp: ExperimentConfig,
    out: str | Path,
    *,
    only: Iterable[str] | None = None,
    resume: bool = False,
    command: Sequence[str] | None = None,
) -> ExperimentResult:
    """Run the selected variants of ``exp`` into ``out`` and write the report (see the module docstring)."""
    from mtst.experiment_eval import final_evaluation
    from mtst.experiment_report import write_report

    out = Path(out)
    selected = _select(exp, only)
    state_file = out / "experiment.json"
    if out.exists() and any(out.iterdir()) and not resume:
        raise ConfigError(
            f"{out}: an experiment is already there; pass --resume to continue it or --output DIR"
        )
    if resume and out.exists() and any(out.iterdir()) and not state_file.is_file():
        raise ConfigError(
            f"{out}: not an experiment directory ({state_file.name} is missing); refusing to write into it"
        )
    out.mkdir(parents=True, exist_ok=True)
    state = _read_json(state_file) if state_file.is_file() else {"invocations": []}
    invocation = {
        "command": list(command or []),
        "start": time.time(),
        "end": None,
        "only": [v.name for v in selected],
    }
    state["invocations"].append(invocation)
    state["config"] = exp.raw
    state["config_file"] = str(exp.path)
    atomic_write_json(state_file, state)
    events = EventLog(out / "events.jsonl")
    events.add("start", variants=[v.name for v in selected], resume=resume)

    # 1 + 2: train and export, references (budget_from) first
    order = [v for v in selected if v.kind is VariantKind.MULTITASK] + [
        v for v in selected if v.kind is not VariantKind.MULTITASK
    ]
    done: dict[str, tuple[ModelPlan, ...]] = {}
    failed: dict[str, str] = {}
    for i, v in enumerate(order, 1):
        logger.info(
            "variant %d/%d: %s (%s)%s",
            i,
            len(order),
            v.name,
            v.kind.value,
            f" - {v.description}" if v.description else "",
        )
        try:
            budget = _budget(exp, v, out) if v.kind is VariantKind.SEPARATE else None
            plans = plan_models(exp, v, budget=budget)
            for plan in plans:
                _train_model(exp, plan, out, events)
                _export_model(exp, plan, out, events)
            done[v.name] = plans
        except (MtstError, _TrainingFailed) as exc:
            logger.error("variant %s failed: %s", v.name, exc)
            failed[v.name] = str(exc)
            events.add("failed", variant=v.name, error=str(exc))

    # 3: the test split and latency, only now that every selected model is trained and exported
    ordered = {v.name: done[v.name] for v in selected if v.name in done}
    final = final_evaluation(exp, ordered, out, events=events)
    invocation["end"] = time.time()
    atomic_write_json(state_file, state)
    # 4: report
    report = write_report(
        exp, [v for v in selected if v.name in done], ordered, final, out, state=state, failed=failed
    )
    events.add("report", path=str(out / "results.md"))
    return ExperimentResult(out, report, failed)


def _budget(exp: ExperimentConfig, v: VariantConfig, out: Path) -> dict[str, int]:
    assert v.budget_from is not None
    ref = exp.variant(v.budget_from)
    trained = model_dir(out, ModelPlan(ref.name, "main", variant_config(exp, ref))) / "trained.json"
    if not trained.is_file():
        raise ConfigError(
            f"variant {v.name!r} matches the per-task steps of {ref.name!r}, which has not finished training "
            f"({trained} is missing): run it too (--only {ref.name},{v.name})"
        )
    return {t: int(n) for t, n in _read_json(trained)["task_steps"].items()}


class _TrainingFailed(Exception):
    pass


def _train_model(exp: ExperimentConfig, plan: ModelPlan, out: Path, events: EventLog) -> None:
    """Train ``plan`` in a ``mtst-train`` subprocess (resuming a killed run), then write ``trained.json``."""
    mdir = model_dir(out, plan)
    trained, run_dir = mdir / "trained.json", mdir / "run"
    cfg_dict = plan.train_config.to_dict()
    cfg_file = mdir / "train.yaml"
    if cfg_file.is_file():
        import yaml

        old = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        if old != cfg_dict:
            diff = sorted(k for k in set(old) | set(cfg_dict) if old.get(k) != cfg_dict.get(k))
            raise ConfigError(
                f"{cfg_file}: {plan.variant}/{plan.name} was started with another config (differs in {diff}); "
                "use a new --output, or put the old config back to resume"
            )
    if trained.is_file():
        logger.info("%s/%s: trained already (%s)", plan.variant, plan.name, trained)
        return
    mdir.mkdir(parents=True, exist_ok=True)
    import yaml

    atomic_write_text(cfg_file, yaml.safe_dump(cfg_dict, sort_keys=False, allow_unicode=True))
    attempts_file = mdir / "attempts.json"
    log_file = mdir / "train.log"
    attempts = _read_json(attempts_file) if attempts_file.is_file() else []
    for a in attempts:  # a killed attempt ran until its log was last written
        if a.get("end") is None:
            a["end"] = log_file.stat().st_mtime if log_file.exists() else a["start"]
            a["killed"] = True
    resume = (run_dir / "latest.json").is_file() or (run_dir / "metrics.jsonl").is_file()
    cmd = [
        sys.executable,
        "-m",
        "mtst.cli",
        str(cfg_file),
        "--output",
        str(run_dir),
        *(["--resume"] if resume else []),
    ]
    attempts.append({"start": time.time(), "end": None, "resume": resume})
    atomic_write_json(attempts_file, attempts)
    events.add("train_start", variant=plan.variant, model=plan.name, resume=resume)
    logger.info(
        "%s/%s: training%s (log: %s)", plan.variant, plan.name, " (resumed)" if resume else "", log_file
    )
    tail: list[str] = []
    with (
        log_file.open("a", encoding="utf-8") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            line = line.rstrip()
            tail = [*tail[-19:], line]
            logger.info("[%s/%s] %s", plan.variant, plan.name, line)
        rc = proc.wait()
    attempts[-1]["end"] = time.time()
    attempts[-1]["returncode"] = rc
    atomic_write_json(attempts_file, attempts)
    if rc != 0:
        raise _TrainingFailed(
            f"{plan.variant}/{plan.name}: mtst-train exited with {rc} (log: {log_file}); last lines:\n"
            + "\n".join(tail[-8:])
        )
    result = _read_json(run_dir / "results.json")
    params = _parameters(plan, Path(result["best_checkpoint"]))
    summary = {
        "variant": plan.variant,
        "model": plan.name,
        "tasks": list(plan.tasks),
        "steps": result["steps"],
        "best_step": result["best_step"],
        "task_steps": result["task_steps"],
        "validation": result["validation"],
        "stopped_early": result["stopped_early"],
        "train_loop_s": result["train_time_s"],
        "train_wall_s": round(sum(a["end"] - a["start"] for a in attempts), 3),
        "attempts": len(attempts),
        "params_total": params[0],
        "params_trainable": params[1],
        "loss_weights": result["loss_weights"],
        "forgetting": _forgetting(plan.config, run_dir / "metrics.jsonl", result["validation"]),
        "best_checkpoint": result["best_checkpoint"],
    }
    atomic_write_json(trained, summary)
    events.add("train_end", variant=plan.variant, model=plan.name, steps=result["steps"])


def _parameters(plan: ModelPlan, checkpoint: Path) -> tuple[int, int]:
    """(total, trained in any stage): a staged run trains the encoder in stage 1 and a head later."""
    from mtst.checkpoint import load_model
    from mtst.freezing import plan_freezing

    model = load_model(checkpoint)
    trained: set[str] = set()
    for stage in plan.config.effective_stages():
        trained |= plan_freezing(model, stage.freeze, tasks=stage.tasks).trainable
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    return sum(sizes.values()), sum(n for name, n in sizes.items() if name in trained)


def _forgetting(
    cfg: TrainConfig, metrics_file: Path, final: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    """For a task that a stage stops training: its validation metric when that stage ended (the
    weights the next stage starts from) and on the final model."""
    from mtst.metrics import primary_metric

    stages = cfg.effective_stages()
    if len(stages) < 2:
        return []
    evals = [
        r
        for r in map(json.loads, metrics_file.read_text(encoding="utf-8").splitlines())
        if r.get("type") == "eval"
    ]
    out = []
    for i, stage in enumerate(stages[:-1]):
        later = {t for s in stages[i + 1 :] for t in s.tasks if t not in s.freeze.frozen_heads}
        at_end = [r for r in evals if r.get("stage") == stage.name]
        for t in stage.tasks:
            if t in later or not at_end or t not in at_end[-1]["metrics"] or t not in final:
                continue
            metric = primary_metric(cfg.task(t).kind)
            before, after = at_end[-1]["metrics"][t][metric], final[t][metric]
            out.append(
                {
                    "task": t,
                    "metric": metric,
                    "stage": stage.name,
                    "before": before,
                    "after": after,
                    "change": after - before,
                }
            )
    return out


def _export_model(exp: ExperimentConfig, plan: ModelPlan, out: Path, events: EventLog) -> None:
    """Export ``best/`` with every precision of the variant into ``bundle/`` (validation data only)."""
    from mtst.errors import ParityError
    from mtst.export import export_bundle

    mdir = model_dir(out, plan)
    done = mdir / "exported.json"
    if done.is_file():
        return
    best = Path(_read_json(mdir / "trained.json")["best_checkpoint"])
    precisions = exp.precisions_of(exp.variant(plan.variant))
    opts = exp.export
    kwargs: dict[str, Any] = {
        "quantize": [_QUANTIZE[p] for p in precisions],
        "overwrite": True,
        "eval_limit": opts.eval_limit,
        "max_metric_drop": opts.max_metric_drop,
        "progress": lambda msg: logger.info("%s/%s: %s", plan.variant, plan.name, msg),
    }
    t0 = time.perf_counter()
    refused = None
    try:
        report = export_bundle(
            best,
            mdir / "bundle",
            accuracy_guard=opts.accuracy_guard,
            parity_check=opts.parity_check,
            **kwargs,
        )
    except ParityError as exc:  # the table still shows what the unguarded graph scores, with the reason
        refused = str(exc)
        logger.warning(
            "%s/%s: export refused (%s); exporting without guard and parity check for the table",
            plan.variant,
            plan.name,
            exc,
        )
        report = export_bundle(best, mdir / "bundle", accuracy_guard=False, parity_check=False, **kwargs)
    summary = {
        "bundle": str(mdir / "bundle"),
        "seconds": round(time.perf_counter() - t0, 3),
        "guard": report.guard,
        "refused": refused,
        "variants": {
            v.precision.value: {
                "graphs": dict(v.graphs),
                "bytes": v.total_bytes,
                "fp32_groups": list(v.fp32_groups),
                "validation": v.metrics,
                "parity": v.parity,
            }
            for v in report.variants
        },
        "parity_violations": list(report.parity_violations),
    }
    atomic_write_json(done, summary)
    events.add("export_end", variant=plan.variant, model=plan.name, precisions=list(precisions))


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
