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

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.config import TrainConfig
from mtst.errors import ConfigError, MtstError
from mtst.experiment_config import (
    ExperimentConfig,
    ExportOptions,
    LatencyConfig,
    ModelPlan,
    VariantConfig,
    VariantKind,
    load_experiment,
    plan_models,
    variant_config,
)
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "ExportOptions",
    "LatencyConfig",
    "ModelPlan",
    "VariantConfig",
    "VariantKind",
    "load_experiment",
    "model_dir",
    "plan_models",
    "run_experiment",
    "variant_config",
]

logger = logging.getLogger(__name__)

_QUANTIZE = {
    "fp32": "none",
    "int8-dynamic": "int8-dynamic",
    "int8-static-cpu": "int8-static-cpu",
    "fp16": "fp16",
    "int8-static": "int8-static",
}
_TIME = re.compile(r"^\d\d:\d\d:\d\d ")  # mtst-train's log lines start with the time; ours do too


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
        "load_at_start": _load(),
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
    trained = out / "variants" / ref.name / "main" / "trained.json"
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
    for stale in ("exported.json", "test.json"):  # from an earlier training of this model
        (mdir / stale).unlink(missing_ok=True)
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
    events.add("train_start", variant=plan.variant, model=plan.name, resume=resume, load=_load())
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
            logger.info("[%s/%s] %s", plan.variant, plan.name, _TIME.sub("", line))
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
    events.add("train_end", variant=plan.variant, model=plan.name, steps=result["steps"], load=_load())


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
    # fp32 alone: parity against torch says it all; the accuracy guard is for reduced precisions
    guard = opts.accuracy_guard and any(p != "fp32" for p in precisions)
    try:
        report = export_bundle(
            best,
            mdir / "bundle",
            accuracy_guard=guard,
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


def _load() -> list[float] | None:
    """The load average: a training time measured on a busy machine says so in events.jsonl."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None
