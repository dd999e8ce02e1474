"""The accuracy guard: a reduced-precision graph must keep every task's metric.

For each task, the guard scores the torch fp32 model and the exported graph on the task's
**validation** data (never test): from the checkpoint's training config (``mtst.json["config"]`` and
``data_root``; a task without a validation file gets the same seeded hold-out of its training data
as training used), or from ``--eval-data task=FILE``. It reports the task's primary metric
(accuracy / entity F1) per precision and the share of labels equal to torch fp32's.

A variant passes when no task's metric drops by more than ``max_metric_drop``. A task without
evaluation data is judged on label agreement with torch fp32 over real sentences (the parity and
calibration sentences) instead, against ``min_label_agreement``; the report says so per task.

:func:`guarded_build` builds a variant, scores it, and while it fails retries with the sensitive
node groups of :data:`mtst.export.quantize.GROUP_ORDER` kept in fp32, cumulatively. If every
attempt fails it raises :class:`~mtst.errors.ParityError` with the table of drops: a worse bundle is
never written silently.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError, DataError, ParityError
from mtst.runtime.manifest import Precision
from mtst.tasks import TaskKind, TaskSpec

__all__ = [
    "DEFAULT_EVAL_LIMIT",
    "DEFAULT_MAX_METRIC_DROP",
    "DEFAULT_MIN_LABEL_AGREEMENT",
    "EvalSet",
    "GuardAttempt",
    "GuardOptions",
    "GuardResult",
    "Scorer",
    "TaskScore",
    "evaluation_sets",
    "guarded_build",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_METRIC_DROP = 0.005
DEFAULT_MIN_LABEL_AGREEMENT = 0.97
DEFAULT_EVAL_LIMIT = 2000  # validation examples per task (seeded sample) -- bounds export time
_EPS = 1e-9  # a drop of exactly the limit passes (0.835 - 0.830 is 0.00500000000004 in floats)

Batch = dict[str, np.ndarray]
Outputs = Callable[[Batch], dict[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class GuardOptions:
    """How the guard judges a variant (``mtst-export --eval-data/--eval-limit/--max-metric-drop/...``)."""

    enabled: bool = True
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP
    min_label_agreement: float = DEFAULT_MIN_LABEL_AGREEMENT
    eval_data: Mapping[str, str | Path] | None = None  # task -> validation file (else the training config's)
    eval_limit: int | None = DEFAULT_EVAL_LIMIT  # validation examples a task (seeded sample); None = all

    def __post_init__(self) -> None:
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(
                f"eval_limit {self.eval_limit!r}: expected a positive number of examples or None"
            )

    def check_thresholds(self) -> None:
        """ConfigError unless both thresholds are in range (checked where the guard runs)."""
        if not 0.0 <= self.max_metric_drop < 1.0:
            raise ConfigError(f"max_metric_drop {self.max_metric_drop!r}: expected a value in [0, 1)")
        if not 0.0 < self.min_label_agreement <= 1.0:
            raise ConfigError(f"min_label_agreement {self.min_label_agreement!r}: expected a value in (0, 1]")


@dataclass(frozen=True, slots=True)
class EvalSet:
    task: TaskSpec
    examples: list[Any]  # mtst.data examples
    source: str  # where they came from (for the report)


@dataclass(frozen=True, slots=True)
class TaskScore:
    task: str
    mode: str  # "metric" (validation data) or "agreement" (label agreement only)
    metric: str  # primary metric name, or "label_agreement"
    reference: float  # torch fp32
    value: float  # the exported graph
    agreement: float  # share of labels equal to torch fp32's
    examples: int

    @property
    def drop(self) -> float:
        return self.reference - self.value


@dataclass(frozen=True, slots=True)
class GuardAttempt:
    excluded_groups: tuple[str, ...]
    scores: tuple[TaskScore, ...]
    failures: tuple[str, ...]  # empty = passed

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class GuardResult:
    precision: Precision
    attempts: tuple[GuardAttempt, ...]
    max_metric_drop: float
    min_label_agreement: float

    @property
    def chosen(self) -> GuardAttempt:
        return self.attempts[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_metric_drop": self.max_metric_drop,
            "min_label_agreement": self.min_label_agreement,
            "excluded_groups": list(self.chosen.excluded_groups),
            "attempts": [
                {
                    "excluded_groups": list(a.excluded_groups),
                    "passed": a.passed,
                    "failures": list(a.failures),
                    "tasks": {
                        s.task: {
                            "mode": s.mode,
                            "metric": s.metric,
                            "torch_fp32": s.reference,
                            "value": s.value,
                            "drop": s.drop,
                            "label_agreement": s.agreement,
                            "examples": s.examples,
                        }
                        for s in a.scores
                    },
                }
                for a in self.attempts
            ],
        }


def format_table(precision: Precision, attempts: Sequence[GuardAttempt]) -> str:
    lines = [
        f"{'fp32 groups':32s} {'task':16s} {'metric':16s} {'torch':>8s} {precision.value:>12s} "
        f"{'drop':>8s} {'agree':>7s}"
    ]
    for a in attempts:
        groups = ",".join(a.excluded_groups) or "-"
        for s in a.scores:
            lines.append(
                f"{groups:32s} {s.task:16s} {s.metric:16s} {s.reference:8.4f} {s.value:12.4f} "
                f"{s.drop:8.4f} {s.agreement:7.4f}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- data
def _sample(examples: list[Any], limit: int | None, seed: int = 0) -> list[Any]:
    if limit is None or len(examples) <= limit:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def evaluation_sets(
    meta: Mapping[str, Any], tasks: Mapping[str, TaskSpec], options: GuardOptions
) -> dict[str, EvalSet]:
    """Validation examples per task, from ``options.eval_data`` (task -> file) or the checkpoint's config,
    at most ``options.eval_limit`` a task."""
    from mtst.data import DataSource, load_examples

    eval_data, limit = dict(options.eval_data or {}), options.eval_limit
    unknown = sorted(set(eval_data) - set(tasks))
    if unknown:
        raise ConfigError(
            f"--eval-data: task(s) {unknown} are not in the checkpoint (tasks: {sorted(tasks)})"
        )
    config = None
    validation: dict[str, tuple[list[Any], str]] = {}
    if meta.get("config"):
        import dataclasses

        from mtst.config import config_from_dict
        from mtst.data import load_task_data

        config = config_from_dict(meta["config"])
        if meta.get("data_root"):  # the absolute root training read from
            config = dataclasses.replace(config, data_root=str(meta["data_root"]))
        # training's own loader: the same files, the same seeded hold-out (never the training examples)
        try:
            task_data = load_task_data(config)
        except DataError as exc:
            raise DataError(
                f"accuracy guard: cannot read the checkpoint's validation data: {exc} "
                "(give --eval-data TASK=FILE, or --no-accuracy-guard)"
            ) from None
        for name, data in task_data.items():
            tc = data.config
            where = (
                tc.validation.path
                if tc.validation
                else f"{tc.train.path} (validation_fraction {tc.validation_fraction})"
            )
            validation[name] = (data.validation, where)
    task_cfgs = {t.name: t for t in (config.tasks if config else ())}
    out: dict[str, EvalSet] = {}
    for name, task in tasks.items():
        cfg = task_cfgs.get(name)
        if name in eval_data:
            path = Path(eval_data[name]).expanduser().resolve()
            template = (cfg.validation or cfg.train) if cfg else None
            if (
                template is not None
                and DataSource(path=str(path)).resolved_format is template.resolved_format
            ):
                # the task's column/label settings; a split key only where it names validation data
                is_val = cfg is not None and template is cfg.validation
                fields = {
                    **template.to_dict(),
                    "path": str(path),
                    "limit": None,
                    "split": template.split if is_val else None,
                    "extra_splits": list(template.extra_splits) if is_val else [],
                }
                source = DataSource.from_dict(fields)
            else:
                source = DataSource(path=str(path))
            examples = load_examples(source, task.kind, data_root=None)
            out[name] = EvalSet(task, _sample(examples, limit), str(path))
        elif name in validation:
            examples, where = validation[name]
            out[name] = EvalSet(task, _sample(examples, limit), where)
    return out


# ---------------------------------------------------------------------------------------------- scoring
class Scorer:
    """Scores graphs against the torch fp32 reference; torch's scores are computed once."""

    def __init__(
        self,
        *,
        reference: Outputs,
        tokenizer: Any,
        max_seq_len: int,
        eval_sets: Mapping[str, EvalSet],
        agreement_batches: Sequence[tuple[Batch, np.ndarray]],
        tasks: Mapping[str, TaskSpec],
        options: GuardOptions,
    ) -> None:
        options.check_thresholds()
        missing = [t for t in tasks if t not in eval_sets]
        if missing and not agreement_batches:
            raise ConfigError(
                f"accuracy guard: tasks {missing} have no evaluation data and no real sentences were "
                "given for label agreement (pass --eval-data TASK=FILE or --parity-data FILE)"
            )
        self.reference = reference
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.eval_sets = dict(eval_sets)
        self.agreement_batches = list(agreement_batches)
        self.tasks = dict(tasks)
        self.max_metric_drop = options.max_metric_drop
        self.min_label_agreement = options.min_label_agreement
        self._ref_eval: dict[str, Any] = {}
        self._ref_outputs: list[dict[str, np.ndarray]] | None = None
        if missing:
            logger.warning(
                "accuracy guard: no validation data for %s: judging them on label agreement over %d real "
                "sentences instead",
                missing,
                sum(len(b[1]) for b in self.agreement_batches),
            )

    def _evaluate(self, run: Outputs, name: str) -> Any:
        from mtst.evaluation import evaluate_task

        es = self.eval_sets[name]
        return evaluate_task(
            lambda batch: run(batch)[name], self.tokenizer, es.task, es.examples, max_seq_len=self.max_seq_len
        )

    def score(self, run: Outputs, excluded_groups: tuple[str, ...] = ()) -> GuardAttempt:
        from mtst.metrics import primary_metric

        scores: list[TaskScore] = []
        for name, task in self.tasks.items():
            if name in self.eval_sets:
                if name not in self._ref_eval:
                    self._ref_eval[name] = self._evaluate(self.reference, name)
                ref = self._ref_eval[name]
                got = self._evaluate(run, name)
                metric = primary_metric(task.kind)
                scores.append(
                    TaskScore(
                        name,
                        "metric",
                        metric,
                        float(ref.metrics[metric]),
                        float(got.metrics[metric]),
                        _agreement(ref.predictions, got.predictions),
                        len(self.eval_sets[name].examples),
                    )
                )
            else:
                agree = self._agreement_on_sentences(run, task)
                scores.append(
                    TaskScore(name, "agreement", "label_agreement", 1.0, agree, agree, self._n_rows())
                )
        failures = []
        for s in scores:
            if s.mode == "metric" and s.drop > self.max_metric_drop + _EPS:
                failures.append(
                    f"task {s.task!r}: {s.metric} {s.value:.4f} vs torch fp32 {s.reference:.4f} "
                    f"(drop {s.drop:.4f} > {self.max_metric_drop})"
                )
            if s.mode == "agreement" and s.agreement < self.min_label_agreement - _EPS:
                failures.append(
                    f"task {s.task!r}: label agreement {s.agreement:.4f} < {self.min_label_agreement} "
                    "(no validation data)"
                )
        return GuardAttempt(excluded_groups, tuple(scores), tuple(failures))

    def _n_rows(self) -> int:
        return sum(len(real) for _, real in self.agreement_batches)

    def _agreement_on_sentences(self, run: Outputs, task: TaskSpec) -> float:
        if self._ref_outputs is None:
            self._ref_outputs = [self.reference(b) for b, _ in self.agreement_batches]
        agree = total = 0
        for (batch, real), ref in zip(self.agreement_batches, self._ref_outputs, strict=True):
            r, g = ref[task.name], run(batch)[task.name]
            if task.kind is TaskKind.TOKEN:
                r, g = r[real], g[real]
            agree += int((r.argmax(-1) == g.argmax(-1)).sum())
            total += int(r.shape[0])
        return agree / total if total else 1.0


def _agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    flat_a = [x for row in a for x in (row if isinstance(row, list) else [row])]
    flat_b = [x for row in b for x in (row if isinstance(row, list) else [row])]
    if not flat_a:
        return 1.0
    return sum(x == y for x, y in zip(flat_a, flat_b, strict=True)) / len(flat_a)


# ---------------------------------------------------------------------------------------------- retry
def guarded_build(
    precision: Precision,
    build: Callable[[tuple[str, ...]], Path],
    runner: Callable[[Path], Outputs],
    scorer: Scorer,
    *,
    group_order: Sequence[str],
    available_groups: Sequence[str],
    start_groups: Sequence[str] = (),
) -> tuple[Path, GuardResult]:
    """Build, score, and retry with more node groups in fp32 until the variant passes (or refuse).

    The first attempt keeps ``start_groups`` in fp32; each retry adds the next available group of
    ``group_order``.
    """
    plans: list[tuple[str, ...]] = [tuple(g for g in start_groups if g in available_groups)]
    for g in group_order:
        if g in available_groups and g not in plans[-1]:
            plans.append((*plans[-1], g))
    attempts: list[GuardAttempt] = []
    for groups in plans:
        path = build(groups)
        attempt = scorer.score(runner(path), groups)
        attempts.append(attempt)
        logger.info(
            "guard %s, fp32 groups %s: %s (%s)",
            precision.value,
            list(groups) or "none",
            "passed" if attempt.passed else "; ".join(attempt.failures),
            ", ".join(
                f"{s.task} {s.metric} {s.value:.4f} vs {s.reference:.4f}, agree {s.agreement:.4f}"
                for s in attempt.scores
            ),
        )
        if attempt.passed:
            return path, GuardResult(
                precision, tuple(attempts), scorer.max_metric_drop, scorer.min_label_agreement
            )
    raise ParityError(
        f"{precision.value}: every attempt loses too much accuracy, refusing to write it "
        f"(last: {'; '.join(attempts[-1].failures)}).\n{format_table(precision, attempts)}"
    )
