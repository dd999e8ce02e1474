"""``mtst-train CONFIG --compare-separate``: one multi-task model against one model per task.

It is an experiment with two variants (:func:`compare_experiment`): ``multitask`` (the config as it is)
and ``separate`` (one model per task, ``budget_from: multitask``), run by the same machinery as
``mtst-experiment`` (:func:`mtst.experiment.run.run_experiment`): each model trains in an
``mtst-train`` subprocess on validation data only, is exported (fp32), and is scored on the test split
through its ONNX graph; only the report differs (``compare.md`` / ``compare.json``).

Same budget: every single-task model trains for exactly as many steps of its task as the multi-task
run gave that task (same batch size, so the same number of examples seen), with the same
hyper-parameters, freezing policy and seed. The table reports, per model, each task's primary
metric on validation and test data, parameters (total / trainable), encoder passes needed per input
to get every task's answer (1 for the multi-task model, N for N separate models), and CPU latency per
input: the median over real validation sentences, batch 1, ``Engine.predict([text])`` end to end
(tokenization included), every model timed in the same run, interleaved sentence by sentence so that
load on the machine hits all alike (a ``separate: all N`` row adds its models' times on each sentence).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.config import TrainConfig
from mtst.errors import ConfigError, MtstError
from mtst.experiment.config import (
    ExperimentConfig,
    LatencyConfig,
    ModelPlan,
    VariantConfig,
    VariantKind,
    model_dir,
)
from mtst.experiment.report import Outcome, task_metrics
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = ["CompareReport", "ModelRow", "compare_experiment", "compare_report", "write_compare"]

logger = logging.getLogger(__name__)

PRECISION = "fp32"  # the comparison is about the models, not their quantization


@dataclass(frozen=True)
class ModelRow:
    name: str
    tasks: tuple[str, ...]
    validation: dict[str, float]  # task -> primary metric
    test: dict[str, float]
    params_total: int
    params_trainable: int
    encoder_passes: int  # per input, to answer every task this row covers
    latency_ms: float  # median per input, CPU, batch 1
    steps: int


@dataclass(frozen=True)
class CompareReport:
    rows: tuple[ModelRow, ...]
    metrics: dict[str, str]  # task -> metric name in the table
    latency: dict[str, Any]  # how latency was measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "latency": self.latency,
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }

    def markdown(self) -> str:
        tasks = list(self.metrics)
        head = ["model", *(f"{t} {self.metrics[t]} (val / test)" for t in tasks)]
        head += [
            "params total",
            "params trainable",
            "encoder passes / input",
            "CPU ms / input (median)",
            "steps",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for r in self.rows:
            cells = [r.name]
            for t in tasks:
                if t in r.validation:
                    test = f"{r.test[t]:.4f}" if t in r.test else "–"
                    cells.append(f"{r.validation[t]:.4f} / {test}")
                else:
                    cells.append("")
            cells += [
                f"{r.params_total:,}",
                f"{r.params_trainable:,}",
                str(r.encoder_passes),
                f"{r.latency_ms:.2f}",
                str(r.steps),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lat = self.latency
        lines.append("")
        lines.append(
            f"Latency: median over {lat['sentences']} real validation sentences, batch 1, "
            f"{lat['threads']} ONNX Runtime thread(s), {lat['call']}, {lat['device']}."
        )
        return "\n".join(lines) + "\n"


def compare_experiment(cfg: TrainConfig, *, path: Path, device: str | None = None) -> ExperimentConfig:
    """``cfg`` as an experiment: a ``multitask`` variant and a ``separate`` one on its per-task budget."""
    if cfg.stages:
        raise ConfigError(
            "--compare-separate: needs a config without stages (one budget per task is ambiguous)"
        )
    if len(cfg.tasks) < 2:
        raise ConfigError("--compare-separate: needs a config with at least two tasks")
    base = cfg.to_dict()
    if base.get("data_root") is not None:  # mtst-train reads it relative to the working directory
        base["data_root"] = str(cfg.resolved_data_root())
    if device is not None:
        base["device"] = device
    return ExperimentConfig(
        name=cfg.run_id or "compare",
        path=path,
        base=base,
        variants=(
            VariantConfig("multitask", description="every task in one model"),
            VariantConfig(
                "separate",
                kind=VariantKind.SEPARATE,
                description="one model per task, each with the steps its task had in multitask",
                budget_from="multitask",
            ),
        ),
        precisions=(PRECISION,),
        latency=LatencyConfig(sentences=cfg.compare.latency_sentences, threads=cfg.compare.latency_threads),
        raw={"compare_separate": base},
    )


def write_compare(exp: ExperimentConfig, out: Path, outcome: Outcome) -> dict[str, Any]:
    """The report step of a compare run: ``compare.json`` and ``compare.md`` in ``out``."""
    if outcome.failed:
        raise MtstError(
            "--compare-separate: " + "; ".join(f"variant {k} failed: {v}" for k, v in outcome.failed.items())
        )
    report = compare_report(exp, out, outcome)
    atomic_write_json(out / "compare.json", report.to_dict())
    atomic_write_text(out / "compare.md", report.markdown())
    logger.info("compare: wrote %s and %s", out / "compare.md", out / "compare.json")
    return report.to_dict()


def compare_report(exp: ExperimentConfig, out: Path, outcome: Outcome) -> CompareReport:
    """Rows: the multi-task model, each single-task model, and the single-task models together."""
    metric_of = task_metrics(exp)
    multi, singles = outcome.models["multitask"], outcome.models["separate"]
    row = _RowBuilder(out, outcome, metric_of)
    rows = [row("multi-task", multi, tasks=tuple(p.name for p in singles))]
    rows += [row(f"single: {p.name}", [p], tasks=(p.name,)) for p in singles]
    rows.append(row(f"separate: all {len(singles)}", singles, tasks=tuple(p.name for p in singles)))
    method = outcome.final.latency["method"]
    latency = {
        "sentences": method["sentences"],
        "threads": method["threads"],
        "batch": method["batch"],
        "device": method["provider"],
        "statistic": "median",
        "tokenization_included": True,
        "call": "Engine.predict([text]) end to end (tokenization, graph, decoding)",
        "interleaved": method["interleaved"],
    }
    return CompareReport(tuple(rows), metric_of, latency)


class _RowBuilder:
    """One table row from models' ``trained.json``, test metrics and per-sentence times (summed)."""

    def __init__(self, out: Path, outcome: Outcome, metric_of: Mapping[str, str]) -> None:
        self.out, self.final, self.metric_of = out, outcome.final, metric_of

    def __call__(self, name: str, plans: Sequence[ModelPlan], *, tasks: tuple[str, ...]) -> ModelRow:
        trained = [json.loads((model_dir(self.out, p) / "trained.json").read_text()) for p in plans]
        tests = [self.final.test[p.variant][p.name][PRECISION]["metrics"] for p in plans]
        times = [self.final.latency["ms"][f"{p.variant}/{p.name}/{PRECISION}"] for p in plans]
        per_sentence = [sum(x) for x in zip(*times, strict=True)]
        return ModelRow(
            name=name,
            tasks=tasks,
            validation={t: m[self.metric_of[t]] for tr in trained for t, m in tr["validation"].items()},
            test={t: m[self.metric_of[t]] for test in tests for t, m in test.items()},
            params_total=sum(tr["params_total"] for tr in trained),
            params_trainable=sum(tr["params_trainable"] for tr in trained),
            encoder_passes=len(plans),
            latency_ms=statistics.median(per_sentence),
            steps=sum(tr["steps"] for tr in trained),
        )
