"""The report of ``mtst-experiment``: ``results.json``, ``results.md`` (one table) and validation plots.

One table row per variant and precision: each task's primary test metric (accuracy, entity F1), the
parameters trained, training time, encoder passes per sentence and CPU latency per sentence. A
``separate`` variant is one row for its N models: N encoder passes, latency = the sum of its models'
times on the same sentence, parameters and time summed.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.config import TrainConfig
from mtst.errors import ConfigError
from mtst.experiment.config import ExperimentConfig, ModelPlan, VariantConfig, model_dir, variant_config
from mtst.experiment.evaluate import FinalEvaluation
from mtst.metrics import primary_metric
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = [
    "Outcome",
    "build_rows",
    "comparisons",
    "plot_validation",
    "render_markdown",
    "task_metrics",
    "write_report",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the train, export and evaluation phases leave for a report."""

    variants: tuple[VariantConfig, ...]  # the selected variants that finished, in config order
    models: dict[str, tuple[ModelPlan, ...]]  # variant -> its training runs
    final: FinalEvaluation
    state: dict[str, Any]  # experiment.json: invocations, config
    failed: dict[str, str]  # variant -> error


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def task_metrics(exp: ExperimentConfig) -> dict[str, str]:
    """Task -> the primary metric the table shows, in the base config's task order."""
    return {t["name"]: primary_metric(t["kind"]) for t in exp.base["tasks"]}


def build_rows(exp: ExperimentConfig, outcome: Outcome, out: Path) -> list[dict[str, Any]]:
    """One row per variant and precision (a separate variant's models summed into one row)."""
    final = outcome.final
    metric_of = task_metrics(exp)
    rows = []
    for v in outcome.variants:
        plans = outcome.models[v.name]
        trained = {p.name: _read(model_dir(out, p) / "trained.json") for p in plans}
        exported = {p.name: _read(model_dir(out, p) / "exported.json") for p in plans}
        for precision in exp.precisions_of(v):
            test: dict[str, float] = {}
            test_all: dict[str, dict[str, float]] = {}
            for p in plans:
                for task, m in final.test[v.name][p.name][precision]["metrics"].items():
                    test[task] = m[metric_of[task]]
                    test_all[task] = m
            per_model = [final.latency["ms"][f"{v.name}/{p.name}/{precision}"] for p in plans]
            per_sentence = (
                [sum(x) for x in zip(*per_model, strict=True)] if per_model and per_model[0] else []
            )
            notes = _notes(v, precision, trained, exported)
            rows.append(
                {
                    "variant": v.name,
                    "kind": v.kind.value,
                    "description": v.description,
                    "precision": precision,
                    "models": [p.name for p in plans],
                    "test": test,
                    "test_metrics": test_all,
                    "validation": {t: m for tr in trained.values() for t, m in tr["validation"].items()},
                    "params_total": sum(t["params_total"] for t in trained.values()),
                    "params_trainable": sum(t["params_trainable"] for t in trained.values()),
                    "train_wall_s": round(sum(t["train_wall_s"] for t in trained.values()), 1),
                    "train_loop_s": round(sum(t["train_loop_s"] for t in trained.values()), 1),
                    "steps": sum(t["steps"] for t in trained.values()),
                    "task_steps": {k: n for t in trained.values() for k, n in t["task_steps"].items()},
                    "encoder_passes": len(plans),
                    "latency_ms_median": statistics.median(per_sentence) if per_sentence else None,
                    "latency_ms_p90": _percentile(per_sentence, 0.9) if per_sentence else None,
                    "forgetting": [f for t in trained.values() for f in t.get("forgetting", [])],
                    "export": {
                        name: {
                            "guard": e["guard"],
                            "refused": e["refused"],
                            **e["variants"].get(precision, {}),
                        }
                        for name, e in exported.items()
                    },
                    "notes": notes,
                }
            )
    return rows


def _notes(v: VariantConfig, precision: str, trained: Mapping[str, Any], exported: Mapping[str, Any]) -> str:
    notes = []
    if precision == "fp32":
        steps = {k: n for t in trained.values() for k, n in t["task_steps"].items() if n}
        notes.append("steps " + " / ".join(f"{k} {n}" for k, n in steps.items()))
        for t in trained.values():
            for f in t.get("forgetting", []):
                notes.append(
                    f"{f['task']} val {f['before']:.4f} at the end of stage {f['stage']} → {f['after']:.4f} final"
                )
            weights = t.get("loss_weights") or {}
            if any(abs(w - 1.0) > 1e-6 for w in weights.values()):
                notes.append("loss weights " + " / ".join(f"{k} {w:.2f}" for k, w in weights.items()))
            if t.get("attempts", 1) > 1:
                notes.append(f"{t['model']} resumed ({t['attempts']} attempts)")
    for name, e in exported.items():
        groups = e["variants"].get(precision, {}).get("fp32_groups") or []
        if groups and precision != "fp32":
            notes.append(f"kept fp32: {', '.join(groups)}" + (f" ({name})" if len(exported) > 1 else ""))
        if e.get("refused") and precision != "fp32":
            notes.append("accuracy guard refused this export (table shows the unguarded graph)")
    return "; ".join(notes)


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _fmt_time(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def render_table(exp: ExperimentConfig, rows: Sequence[Mapping[str, Any]]) -> str:
    metric_of = task_metrics(exp)
    head = ["variant", "precision", *(f"{t} {m}" for t, m in metric_of.items())]
    head += [
        "trainable params",
        "train time",
        "encoder passes / sentence",
        "CPU ms / sentence (median, p90)",
        "notes",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 3) + ["---"]) + "|",
    ]
    for r in rows:
        cells = [r["variant"], r["precision"]]
        cells += [f"{r['test'][t]:.4f}" if t in r["test"] else "–" for t in metric_of]
        lat = r["latency_ms_median"]
        cells += [
            f"{_fmt_params(r['params_trainable'])} of {_fmt_params(r['params_total'])}",
            _fmt_time(r["train_wall_s"]),
            str(r["encoder_passes"]),
            "–" if lat is None else f"{lat:.2f}, {r['latency_ms_p90']:.2f}",
            r["notes"].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _train_configs(exp: ExperimentConfig, names: Iterable[str]) -> dict[str, TrainConfig]:
    """Each named variant's run config (variants the experiment no longer has are left out)."""
    out: dict[str, TrainConfig] = {}
    for name in names:
        try:
            out[name] = variant_config(exp, exp.variant(name))
        except (ConfigError, KeyError, AttributeError):
            continue
    return out


def _same_train_data(configs: Mapping[str, TrainConfig], a: str, b: str, task: str) -> bool:
    """Whether ``task`` trains on the same data (file, columns, limit, seed) in variants a and b."""
    if a not in configs or b not in configs:
        return True  # rows without a config (an older results.json): compare as before
    try:
        return bool(configs[a].task(task).train == configs[b].task(task).train)
    except ConfigError:
        return False


def comparisons(exp: ExperimentConfig, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Differences the table implies, computed (test split, fp32 unless said)."""
    out: list[str] = []
    fp32 = {r["variant"]: r for r in rows if r["precision"] == "fp32"}
    separate = [r for r in fp32.values() if r["kind"] == "separate"]
    configs = _train_configs(exp, fp32) if separate else {}
    for sep in separate:
        for r in fp32.values():
            if r["kind"] != "multitask":
                continue
            # only tasks trained on the same data in both variants (same training file, limit and seed)
            shared = [
                t
                for t in r["test"]
                if t in sep["test"] and _same_train_data(configs, r["variant"], sep["variant"], t)
            ]
            if not shared:
                continue
            deltas = ", ".join(f"{t} {100 * (r['test'][t] - sep['test'][t]):+.1f} pt" for t in shared)
            out.append(f"`{r['variant']}` vs `{sep['variant']}`: {deltas}")
    for r in rows:
        if r["precision"] == "fp32" or r["variant"] not in fp32:
            continue
        ref = fp32[r["variant"]]["test"]
        deltas = ", ".join(f"{t} {100 * (r['test'][t] - ref[t]):+.2f} pt" for t in r["test"] if t in ref)
        out.append(f"`{r['variant']}` {r['precision']} vs fp32: {deltas}")
    return out


def render_markdown(exp: ExperimentConfig, report: Mapping[str, Any]) -> str:
    import yaml

    rows = report["rows"]
    lat = report["latency"]["method"]
    sysinfo = report["system"]
    lines = [
        f"# Experiment `{exp.name}`: multi-task vs separate vs frozen, fp32 vs int8 vs fp16",
        "",
        "Every number below comes from one run of the command under *Reproduce*. Metrics are on each task's "
        "**test split**, computed through the **exported ONNX graph** of each precision on ONNX Runtime (CPU); "
        "the test split was read only after every model was trained and exported (validation data alone "
        "chose checkpoints and stopped training).",
        "",
        render_table(exp, rows),
        "Columns: test metric per task (accuracy for sentence tasks, entity-level micro F1 for NER); trainable "
        "parameters (every parameter trained in any stage) of all parameters; training wall time (data loading, "
        "encoder caching and validation included); encoder passes needed to answer every task of the row for one "
        f"sentence; CPU latency per sentence: `Engine.predict([text])` end to end, batch 1, {lat.get('threads')} ONNX "
        f"Runtime thread(s), median and p90 over {lat.get('sentences')} real validation sentences, every engine of "
        "the table loaded in one process and timed in turn sentence by sentence (a separate row adds its models' "
        "times on the same sentence).",
        "",
    ]
    comp = report["comparisons"]
    if comp:
        lines += ["## Differences (computed from the table)", "", *(f"- {c}" for c in comp), ""]
    if report["failed"]:
        lines += ["## Variants that failed", "", *(f"- `{k}`: {v}" for k, v in report["failed"].items()), ""]
    plots = report["plots"]
    if plots:
        lines += ["## Validation metric vs step", ""]
        lines += [f"![{t}]({p})" for t, p in plots.items()] + [""]
    inv = report["invocations"]
    lines += [
        "## Reproduce",
        "",
        "```bash",
        *(" ".join(i["command"]) for i in inv if i["command"]),
        "```",
        "",
        f"Total wall time: {_fmt_time(report['wall_s'])} over {len(inv)} invocation(s).",
        "",
        "## Hardware",
        "",
        f"- CPU: {sysinfo['cpu_model']}, {sysinfo['logical_cpus']} logical CPUs ({sysinfo['usable_cpus']} usable), "
        f"{(sysinfo.get('memory_total_mb') or 0) / 1024:.1f} GiB memory; training used {sysinfo['torch_threads']} torch threads",
        f"- {sysinfo['platform']}, Python {sysinfo['python']}; "
        + ", ".join(f"{k} {v}" for k, v in sysinfo.get("versions", {}).items()),
        f"- load average at the end: {sysinfo.get('load_average')}",
        "",
        "## Config",
        "",
        f"`{report['config_file']}`, resolved (after `extends`):",
        "",
        "```yaml",
        yaml.safe_dump(report["config"], sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def plot_validation(exp: ExperimentConfig, outcome: Outcome, out: Path) -> dict[str, str]:
    """One PNG per task: its validation metric vs step, a line per variant. Returns task -> relative path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric_of = task_metrics(exp)
    (out / "plots").mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    for task, metric in metric_of.items():
        fig, ax = plt.subplots(figsize=(8, 4.5))
        drawn = 0
        for v in outcome.variants:
            for p in outcome.models[v.name]:
                if task not in p.tasks:
                    continue
                steps, values = [], []
                metrics_file = model_dir(out, p) / "run" / "metrics.jsonl"
                for line in metrics_file.read_text(encoding="utf-8").splitlines():
                    rec = json.loads(line)
                    if rec.get("type") == "eval" and task in rec.get("metrics", {}):
                        steps.append(rec["step"])
                        values.append(rec["metrics"][task][metric])
                if steps:
                    ax.plot(steps, values, marker="o", markersize=3, label=v.name)
                    drawn += 1
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("optimizer step (all tasks of the run)")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{task}: validation {metric} vs step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        name = f"plots/val_{task}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths[task] = name
    return paths


def system_info() -> dict[str, Any]:
    try:
        from mtst.bench.system import collect_system_info

        info = collect_system_info().to_dict()
    except ImportError:  # pragma: no cover - bench is part of the distribution
        info = {
            "cpu_model": platform.processor(),
            "logical_cpus": None,
            "usable_cpus": None,
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
    import torch

    info["torch_threads"] = torch.get_num_threads()
    return info


def write_report(exp: ExperimentConfig, out: Path, outcome: Outcome) -> dict[str, Any]:
    """``results.json``, ``results.md`` and the validation plots of an experiment in ``out``."""
    rows = build_rows(exp, outcome, out)
    plots = plot_validation(exp, outcome, out)
    inv = outcome.state["invocations"]
    report = {
        "experiment": exp.name,
        "config_file": str(exp.path),
        "config": exp.raw,
        "base": exp.base,
        "invocations": inv,
        "wall_s": round(sum((i["end"] or i["start"]) - i["start"] for i in inv), 1),
        "system": system_info(),
        "tasks": {t: {"metric": m} for t, m in task_metrics(exp).items()},
        "rows": rows,
        "comparisons": comparisons(exp, rows),
        "test": outcome.final.test,
        "latency": outcome.final.latency,
        "plots": plots,
        "failed": dict(outcome.failed),
    }
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", render_markdown(exp, report))
    logger.info("wrote %s, %s and %d plot(s)", out / "results.json", out / "results.md", len(plots))
    return report
