"""``mtst-train CONFIG --compare-separate``: one multi-task model against one model per task.

Same budget: every single-task model trains for exactly as many steps of its task as the multi-task
run gave that task (same batch size, so the same number of examples seen), with the same
hyper-parameters, freezing policy and seed. The table reports, per model, each task's primary
metric on validation and test data, parameters (total / trainable), encoder passes needed per input
to get every task's answer (1 for the multi-task model, N for N separate models), and CPU latency per
input: the median over real validation sentences, batch 1, tokenization included, every model timed
in the same run, interleaved sentence by sentence so that load on the machine hits all alike.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.config import SamplingConfig, TrainConfig
from mtst.data import SentenceExample, TokenExample
from mtst.errors import ConfigError
from mtst.metrics import primary_metric
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text

__all__ = ["CompareReport", "ModelRow", "compare_separate", "latency_sentences", "single_task_config"]

logger = logging.getLogger(__name__)


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
            f"{lat['threads']} torch thread(s), tokenization included, {lat['device']}."
        )
        return "\n".join(lines) + "\n"


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


def latency_sentences(examples: dict[str, Sequence[Any]], n: int) -> list[str]:
    """``n`` real sentences taken in turn from each task's examples (token tasks: tokens joined)."""
    texts: dict[str, list[str]] = {}
    for task, exs in examples.items():
        texts[task] = [
            ex.text if isinstance(ex, SentenceExample) else " ".join(ex.tokens)
            for ex in exs
            if isinstance(ex, SentenceExample | TokenExample)
        ]
    out: list[str] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in texts.values()):
        for v in texts.values():
            if i < len(v) and len(out) < n:
                out.append(v[i])
        i += 1
    return out


def _measure(models: dict[str, Any], sentences: Sequence[str], *, threads: int) -> dict[str, list[float]]:
    """Per model, per sentence: seconds for tokenize + one forward pass (all of its heads), batch 1."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m in models.values():
            m.eval()
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for s in sentences[: min(5, len(sentences))]:  # warm-up
                for m in models.values():
                    m(**m.tokenize([s]))
            for s in sentences:
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(**m.tokenize([s]))
                    times[name].append(time.perf_counter() - t0)
        return times
    finally:
        torch.set_num_threads(old)


def compare_separate(
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool | None = None,
) -> CompareReport:
    """Train the multi-task model and one model per task, write ``compare.md`` and ``compare.json``."""
    from mtst.freezing import count_parameters, plan_freezing
    from mtst.model import MultiTaskModel
    from mtst.train import load_task_data, train

    if cfg.stages:
        raise ConfigError(
            "--compare-separate: needs a config without stages (one budget per task is ambiguous)"
        )
    if len(cfg.tasks) < 2:
        raise ConfigError("--compare-separate: needs a config with at least two tasks")
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / (cfg.run_id or "run")
    logger.info("compare: training the multi-task model")
    multi = train(cfg, run_dir=run_dir / "multitask", resume=resume, device=device, progress=progress)
    singles = {}
    for tc in cfg.tasks:
        steps = multi.task_steps.get(tc.name, 0)
        logger.info(
            "compare: training a single-task model for %s (%d steps, as in the multi-task run)",
            tc.name,
            steps,
        )
        singles[tc.name] = train(
            single_task_config(cfg, tc.name, steps=steps),
            run_dir=run_dir / f"single-{tc.name}",
            resume=resume,
            device=device,
            progress=progress,
        )

    # latency, on CPU, every model in the same process and loop
    data = load_task_data(cfg)
    sentences = latency_sentences({t: d.validation for t, d in data.items()}, cfg.compare.latency_sentences)
    models = {"multi": MultiTaskModel.from_pretrained(multi.best_checkpoint)}
    models.update({t: MultiTaskModel.from_pretrained(r.best_checkpoint) for t, r in singles.items()})
    times = _measure(models, sentences, threads=cfg.compare.latency_threads)
    sums = [sum(times[t][i] for t in singles) for i in range(len(sentences))]

    metric_names = {tc.name: primary_metric(tc.kind) for tc in cfg.tasks}

    def pick(results: dict[str, dict[str, float]]) -> dict[str, float]:
        return {t: m[metric_names[t]] for t, m in results.items()}

    def params(result: Any, model: Any, task_cfg: TrainConfig) -> tuple[int, int]:
        stage = task_cfg.effective_stages()[-1]
        return count_parameters(model, plan_freezing(model, stage.freeze, tasks=stage.tasks))

    rows = []
    total, trainable = params(multi, models["multi"], cfg)
    rows.append(
        ModelRow(
            "multi-task",
            tuple(singles),
            pick(multi.validation),
            pick(multi.test),
            total,
            trainable,
            1,
            1000 * statistics.median(times["multi"]),
            multi.steps,
        )
    )
    sep_total = sep_trainable = sep_steps = 0
    for t, r in singles.items():
        total, trainable = params(r, models[t], single_task_config(cfg, t, steps=r.steps))
        sep_total, sep_trainable, sep_steps = (
            sep_total + total,
            sep_trainable + trainable,
            sep_steps + r.steps,
        )
        rows.append(
            ModelRow(
                f"single: {t}",
                (t,),
                pick(r.validation),
                pick(r.test),
                total,
                trainable,
                1,
                1000 * statistics.median(times[t]),
                r.steps,
            )
        )
    val_all = {t: v for r in singles.values() for t, v in pick(r.validation).items()}
    test_all = {t: v for r in singles.values() for t, v in pick(r.test).items()}
    rows.append(
        ModelRow(
            f"separate: all {len(singles)}",
            tuple(singles),
            val_all,
            test_all,
            sep_total,
            sep_trainable,
            len(singles),
            1000 * statistics.median(sums),
            sep_steps,
        )
    )
    report = CompareReport(
        tuple(rows),
        metric_names,
        {
            "sentences": len(sentences),
            "threads": cfg.compare.latency_threads,
            "batch": 1,
            "device": "cpu",
            "statistic": "median",
            "tokenization_included": True,
        },
    )
    atomic_write_json(run_dir / "compare.json", report.to_dict())
    atomic_write_text(run_dir / "compare.md", report.markdown())
    logger.info("compare: wrote %s and %s", run_dir / "compare.md", run_dir / "compare.json")
    return report
