"""The training loop of ``mtst-train``.

One run = data → model → stages. Each stage (one implicit stage unless the config has ``stages``)
reads top to bottom::

    freeze (plan, eval mode for frozen parts) → encoder cache when the encoder is frozen
    → optimizer (encoder lr / head lr groups, no decay on biases and norms) → task sampler
    → loop: lr schedule → task + batch → forward → weighted loss → backward → clip → step
            → log → evaluate (every N steps, epoch ends, stage end) → best/ → checkpoint → stop?

Everything that decides what happens next (weights, optimizer moments, sampler and batch positions,
augmentation and global RNG states, counters) is in every checkpoint, so ``resume=True`` continues
a killed run to the same end as an uninterrupted one. Test data is scored once, on the best model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.augment import Augmenter, build_augmenter
from mtst.config import Schedule, StageConfig, TaskConfig, TrainConfig
from mtst.data import (
    Example,
    SentenceExample,
    TokenExample,
    check_labels,
    label_set,
    load_examples,
    split_off,
)
from mtst.errors import ConfigError
from mtst.evaluation import evaluate_task, selection_score, torch_logits_fn
from mtst.freezing import (
    CachedTask,
    FreezePlan,
    apply_freezing,
    build_cache,
    count_parameters,
    plan_freezing,
    set_train_mode,
)
from mtst.loss_weighting import LossWeighter, UncertaintyLossWeighting, build_loss_weighting
from mtst.model import MultiTaskModel
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text
from mtst.sampling import LengthGroupedBatches, TaskSampler, build_task_sampler
from mtst.tasks import TaskKind, TaskSpec
from mtst.train_state import (
    CheckpointPayload,
    capture_rng,
    flatten_optimizer,
    read_checkpoint,
    read_latest,
    restore_rng,
    unflatten_optimizer,
    write_checkpoint,
)

__all__ = [
    "TaskData",
    "TrainResult",
    "build_optimizer",
    "load_task_data",
    "lr_factor",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- data
@dataclass
class TaskData:
    config: TaskConfig
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example] | None
    label_to_id: dict[str, int] = field(default_factory=dict)


def load_task_data(cfg: TrainConfig) -> dict[str, TaskData]:
    """Every task's splits, label set from the training split, eval labels checked against it."""
    root = cfg.resolved_data_root()
    out: dict[str, TaskData] = {}
    for tc in cfg.tasks:
        train_ex = load_examples(tc.train, tc.kind, data_root=root)
        if tc.validation is not None:
            val_ex = load_examples(tc.validation, tc.kind, data_root=root)
        else:
            train_ex, val_ex = split_off(train_ex, tc.validation_fraction, seed=cfg.seed)
            logger.info("task %s: held out %d of the training examples for validation", tc.name, len(val_ex))
        labels = label_set(train_ex, tc.kind)
        check_labels(val_ex, labels, what=f"the validation data of task {tc.name!r}")
        test_ex = None
        if tc.test is not None:
            test_ex = load_examples(tc.test, tc.kind, data_root=root)
            check_labels(test_ex, labels, what=f"the test data of task {tc.name!r}")
        spec = TaskSpec(tc.name, tc.kind, labels, tc.head)
        out[tc.name] = TaskData(tc, spec, train_ex, val_ex, test_ex, {lab: i for i, lab in enumerate(labels)})
        logger.info(
            "task %s (%s): %d train / %d validation / %s test examples, %d labels",
            tc.name,
            tc.kind.value,
            len(train_ex),
            len(val_ex),
            len(test_ex) if test_ex is not None else "no",
            len(labels),
        )
    return out


def _lengths(tokenizer: Any, examples: Sequence[Example], max_seq_len: int) -> np.ndarray:
    """Token counts (for length-grouped batches)."""
    sentences = [ex.text for ex in examples if isinstance(ex, SentenceExample)]
    words = [list(ex.tokens) for ex in examples if isinstance(ex, TokenExample)]
    if sentences:
        enc = tokenizer(sentences, truncation=True, max_length=max_seq_len)
    else:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_seq_len)
    return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)


# ---------------------------------------------------------------------- pieces of the loop
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
        )
    return torch.device(name)


def lr_factor(step: int, *, total: int, warmup: int, schedule: Schedule, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at 0-based ``step``: linear warmup, then linear/cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule is Schedule.CONSTANT:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule is Schedule.COSINE:
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


def build_optimizer(
    model: MultiTaskModel,
    weighter: LossWeighter,
    plan: FreezePlan,
    *,
    encoder_lr: float,
    head_lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: encoder and heads at their own lr; no weight decay on
    biases, norms and scalars (ndim < 2); learned loss weights at the head lr without decay."""
    groups: dict[str, list[torch.nn.Parameter]] = {
        k: [] for k in ("encoder", "encoder_no_decay", "heads", "heads_no_decay")
    }
    for name, p in model.named_parameters():
        if name not in plan.trainable:
            continue
        part = "encoder" if name.startswith("encoder.") else "heads"
        groups[part + ("_no_decay" if p.ndim < 2 else "")].append(p)
    lrs = {"encoder": encoder_lr, "encoder_no_decay": encoder_lr, "heads": head_lr, "heads_no_decay": head_lr}
    param_groups = [
        {
            "name": k,
            "params": v,
            "lr": lrs[k],
            "base_lr": lrs[k],
            "weight_decay": 0.0 if k.endswith("no_decay") else weight_decay,
        }
        for k, v in groups.items()
        if v
    ]
    extra = [p for p in weighter.parameters()]
    if extra:
        param_groups.append(
            {
                "name": "loss_weighting",
                "params": extra,
                "lr": head_lr,
                "base_lr": head_lr,
                "weight_decay": 0.0,
            }
        )
    if not param_groups:
        raise ConfigError("freeze: nothing left to train (every parameter is frozen)")
    return torch.optim.AdamW(param_groups, lr=head_lr, betas=betas, eps=eps)


@dataclass
class LoopState:
    """Counters that a checkpoint carries (JSON)."""

    step: int = 0  # optimizer steps so far, over all stages
    stage: int = 0  # index of the stage running (== number of stages when done)
    stage_step: int = 0
    samples: int = 0
    task_steps: dict[str, int] = field(default_factory=dict)
    best_score: float | None = None  # best selection score of the current stage
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    last_eval_step: int = -1
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    steps: int
    best_step: int | None
    task_steps: dict[str, int]
    validation: dict[str, dict[str, float]]  # best model, validation split
    test: dict[str, dict[str, float]]  # best model, test split (tasks that have one)
    stopped_early: bool
    train_time_s: float
    params_total: int
    params_trainable: int
    loss_weights: dict[str, float]


# ---------------------------------------------------------------------- the run
def train(
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``output_dir/run_id``); ``resume`` continues from ``latest.json``."""
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / (cfg.run_id or "run")
    return _Run(
        cfg, run_dir, resume=resume, device=resolve_device(device or cfg.device), progress=progress
    ).run()


class _Run:
    def __init__(
        self, cfg: TrainConfig, run_dir: Path, *, resume: bool, device: torch.device, progress: bool | None
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.device = device
        self.show_progress = sys.stderr.isatty() if progress is None else progress
        latest = read_latest(run_dir) if run_dir.exists() else None
        if not resume and (latest is not None or (run_dir / "metrics.jsonl").exists()):
            raise ConfigError(
                f"{run_dir}: a run is already there; pass --resume to continue it or --output DIR for a new run"
            )
        if resume and latest is None:
            logger.info("%s: no checkpoint yet, starting from the beginning", run_dir)
        self.resume_from = latest
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.amp_dtype: torch.dtype | None = None
        if device.type == "cuda" and cfg.amp != "off":
            bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        elif cfg.amp in ("bf16", "fp16"):
            logger.info(
                "amp %s: mixed precision is used on CUDA only; training in fp32 on %s", cfg.amp, device
            )

        # seed everything before anything random is created (head init, dropout)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        self.data = load_task_data(cfg)
        self.model = MultiTaskModel.from_pretrained(
            cfg.backbone,
            tasks=[d.spec for d in self.data.values()],
            pooling=cfg.pooling,
            max_seq_len=cfg.max_seq_len,
        ).to(device)
        self.weighter = build_loss_weighting(
            cfg.loss_weighting, {t.name: t.loss_weight for t in cfg.tasks}
        ).to(device)
        tok = self.model.tokenizer
        self.batchers = {
            name: LengthGroupedBatches(
                _lengths(tok, d.train, cfg.max_seq_len), cfg.optim.batch_size, seed=cfg.seed + 7919 * (i + 1)
            )
            for i, (name, d) in enumerate(self.data.items())
        }
        self.augmenters: dict[str, list[tuple[Augmenter, float]]] = {
            name: [(build_augmenter(a.name, d.train, **dict(a.options)), a.prob) for a in d.config.augment]
            for name, d in self.data.items()
        }
        self.aug_rngs = {name: random.Random(cfg.seed * 1_000_003 + i) for i, name in enumerate(self.data)}
        self.state = LoopState(task_steps={t: 0 for t in self.data})
        self.stages = cfg.effective_stages()
        self.meta_base = {
            "config": cfg.to_dict(),
            "data_root": str(cfg.resolved_data_root() or Path.cwd()),
            "run_id": cfg.run_id,
        }
        self.pending: CheckpointPayload | None = None
        self.eval_memo: dict[
            str, dict[bytes, torch.Tensor]
        ] = {}  # frozen-encoder outputs on validation batches
        self.window = (
            _Window()
        )  # losses since the last log line (checkpointed: the log is the same after a resume)
        if latest is not None:
            self._load(latest)
        atomic_write_text(run_dir / "config.resolved.yaml", _yaml(cfg.to_dict()))
        self.metrics_path = run_dir / "metrics.jsonl"
        self._truncate_metrics(self.state.step if latest is not None else 0)

    # ------------------------------------------------------------------ top level
    def run(self) -> TrainResult:
        totals = [self._stage_steps(s) for s in self.stages]
        bar = _progress(
            total=sum(totals), initial=min(self.state.step, sum(totals)), enabled=self.show_progress
        )
        with bar, _redirect_logging(bar):
            self.bar = bar
            while self.state.stage < len(self.stages):
                self._run_stage(self.state.stage, totals[self.state.stage])
        return self._finish()

    def _run_stage(self, index: int, total: int) -> None:
        cfg, stage, model, state = self.cfg, self.stages[index], self.model, self.state
        # 1. what trains
        plan = plan_freezing(model, stage.freeze, tasks=stage.tasks)
        for t in stage.tasks:
            if plan.encoder_frozen and t not in plan.trained_heads:
                raise ConfigError(
                    f"stages.{stage.name}: task {t!r} has a frozen head and the encoder is frozen, so nothing of it "
                    "would train; remove it from the stage's tasks"
                )
        apply_freezing(model, plan)
        self.plan = plan
        self.eval_memo = {}
        logger.info(
            "stage %s (%d/%d): tasks %s, %d steps; %s",
            stage.name,
            index + 1,
            len(self.stages),
            list(stage.tasks),
            total,
            plan.describe(model),
        )
        # 2. heads-only training on cached encoder outputs when nothing upstream of the heads changes
        caches: dict[str, CachedTask] = {}
        if plan.encoder_frozen and stage.freeze.cache and not any(self.augmenters[t] for t in stage.tasks):
            t0 = time.perf_counter()
            for t in stage.tasks:
                d = self.data[t]
                caches[t] = build_cache(
                    model, t, d.train, d.label_to_id, batch_size=cfg.eval.batch_size, device=self.device
                )
            logger.info(
                "encoder frozen: cached encoder outputs of %s (%.1f MB) in %.1f s",
                list(caches),
                sum(c.nbytes for c in caches.values()) / 1e6,
                time.perf_counter() - t0,
            )
        # 3. optimizer, schedule, sampler
        opt = build_optimizer(
            model,
            self.weighter,
            plan,
            encoder_lr=stage.encoder_lr if stage.encoder_lr is not None else cfg.optim.encoder_lr,
            head_lr=stage.head_lr if stage.head_lr is not None else cfg.optim.head_lr,
            weight_decay=cfg.optim.weight_decay,
            betas=cfg.optim.betas,
            eps=cfg.optim.eps,
        )
        warmup = (
            cfg.optim.warmup_steps
            if cfg.optim.warmup_steps is not None
            else int(cfg.optim.warmup_ratio * total)
        )
        sampler = build_task_sampler(
            cfg.sampling,
            {t: len(self.data[t].train) for t in stage.tasks},
            seed=cfg.seed + 104_729 * (index + 1),
        )
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        steps_per_epoch = sum(len(self.batchers[t]) for t in stage.tasks)
        eval_tasks = [t for s in self.stages[: index + 1] for t in s.tasks]
        eval_tasks = list(dict.fromkeys(eval_tasks))
        if self.pending is not None:  # resuming: the saved state replaces the fresh one, RNG last
            self._restore_stage(opt, sampler, scaler)
        else:
            logger.info(
                "sampling %s: %s",
                cfg.sampling.strategy.value,
                {k: round(v, 3) for k, v in sampler.probabilities.items()},
            )
        trainable_params = [p for g in opt.param_groups for p in g["params"]]
        set_train_mode(model, plan)
        # the lr schedule is a pure function of the stage step; recorded in checkpoints for the reader
        self.schedule: dict[str, Any] = {
            "kind": cfg.optim.schedule.value,
            "total": total,
            "warmup": warmup,
            "min_lr_ratio": cfg.optim.min_lr_ratio,
            "steps_per_epoch": steps_per_epoch,
        }

        window = self.window
        t_start = time.perf_counter()
        while state.stage_step < total and not state.stopped_early:
            # lr of this step
            factor = lr_factor(
                state.stage_step,
                total=total,
                warmup=warmup,
                schedule=cfg.optim.schedule,
                min_ratio=cfg.optim.min_lr_ratio,
            )
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            # one batch of one task
            task = next(sampler)
            indices = next(self.batchers[task])
            with self._autocast():
                task_loss = self._task_loss(task, indices, caches.get(task))
            loss = self.weighter(task, task_loss.float())
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable_params, cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.stage_step += 1
            state.samples += len(indices)
            state.task_steps[task] += 1
            window.add(task, float(task_loss.item()), len(indices))
            self.bar.update(1)
            # log
            if state.step % cfg.log_every == 0 or state.stage_step == total:
                self._log_train(window, opt, stage, steps_per_epoch)
                window = self.window = _Window()
            # evaluate: every N steps, at each epoch end, at the stage end
            stage_done = state.stage_step == total
            if (
                (cfg.eval.every_steps and state.step % cfg.eval.every_steps == 0)
                or (cfg.eval.at_epoch_end and state.stage_step % steps_per_epoch == 0)
                or stage_done
            ):
                self._evaluate_and_select(eval_tasks, stage)
                set_train_mode(model, plan)
            # checkpoint
            if (
                state.stage_step < total
                and not state.stopped_early
                and state.step % cfg.checkpoint.every_steps == 0
            ):
                state.elapsed_s += time.perf_counter() - t_start
                t_start = time.perf_counter()
                self._checkpoint(opt, sampler, scaler)
        # the stage is over: the next one starts fresh (its own best model, optimizer, sampler)
        state.elapsed_s += time.perf_counter() - t_start
        if state.stopped_early:
            logger.info(
                "stage %s: stopped early at step %d (best step %s)", stage.name, state.step, state.best_step
            )
        state.stage += 1
        state.stage_step = 0
        if state.stage < len(self.stages):
            state.best_score, state.best_step, state.bad_evals, state.stopped_early = None, None, 0, False
        self._checkpoint(None, None, None)

    # ------------------------------------------------------------------ one step's loss
    def _task_loss(self, task: str, indices: np.ndarray, cache: CachedTask | None) -> torch.Tensor:
        model, data = self.model, self.data[task]
        if cache is not None:
            feats, labels = cache.batch(indices)
            logits = model.heads[task](feats.to(self.device))  # (B, L) or (M, L)
            return F.cross_entropy(logits.float(), labels.to(self.device))
        examples = [self._augment(task, data.train[int(i)]) for i in indices]
        if data.spec.kind is TaskKind.SENTENCE:
            sentences = [ex for ex in examples if isinstance(ex, SentenceExample)]
            enc = encode_sentence_batch(
                model.tokenizer, [ex.text for ex in sentences], max_seq_len=model.max_seq_len
            )
            labels = torch.tensor([data.label_to_id[ex.label] for ex in sentences], device=self.device)
            logits = model(**self._inputs(enc), tasks=[task]).logits[task]  # (B, L)
            return F.cross_entropy(logits.float(), labels)
        tokens = [ex for ex in examples if isinstance(ex, TokenExample)]
        enc, labels_np, _ = encode_token_batch(
            model.tokenizer, tokens, data.label_to_id, max_seq_len=model.max_seq_len
        )
        logits = model(**self._inputs(enc), tasks=[task]).logits[task]  # (B, T, L)
        labels = torch.from_numpy(labels_np).to(self.device)
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.float().sum() * 0.0  # nothing labelled survived truncation
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)

    def _augment(self, task: str, example: Example) -> Example:
        rng = self.aug_rngs[task]
        for augmenter, prob in self.augmenters[task]:
            if rng.random() < prob:
                example = augmenter(example, rng)
        return example

    def _inputs(self, enc: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in enc.items() if k in self.model.input_names}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ------------------------------------------------------------------ evaluation and selection
    def evaluate(self, tasks: Sequence[str], split: str = "validation") -> dict[str, dict[str, float]]:
        """Metrics per task on ``split``. With the encoder frozen, its outputs on the validation
        batches are computed once per stage and reused by later evaluations (only heads change)."""
        self.model.eval()
        out: dict[str, dict[str, float]] = {}
        frozen = (
            split == "validation" and getattr(self, "plan", None) is not None and self.plan.encoder_frozen
        )
        for t in tasks:
            d = self.data[t]
            examples = d.validation if split == "validation" else d.test
            if not examples:
                continue
            fn = (
                _memo_logits_fn(self.model, t, self.eval_memo.setdefault(t, {}))
                if frozen
                else torch_logits_fn(self.model, t)
            )
            out[t] = evaluate_task(
                fn,
                self.model.tokenizer,
                d.spec,
                examples,
                max_seq_len=self.model.max_seq_len,
                batch_size=self.cfg.eval.batch_size,
            ).metrics
        return out

    def _evaluate_and_select(self, tasks: Sequence[str], stage: StageConfig) -> None:
        cfg, state = self.cfg, self.state
        if state.last_eval_step == state.step:
            return
        state.last_eval_step = state.step
        metrics = self.evaluate(tasks)
        metric = cfg.eval.metric
        if metric != "mean" and metric.split(".", 1)[0] not in metrics:
            metric = "mean"  # a stage that does not train the selection task yet
        score = selection_score(metrics, {t: self.data[t].spec.kind for t in metrics}, metric)
        improved = state.best_score is None or score > state.best_score + cfg.eval.min_delta
        if improved:
            state.best_score, state.best_step, state.bad_evals = score, state.step, 0
            self.model.save_pretrained(self.run_dir / "best", extra=self._meta(metrics, metric, score))
        else:
            state.bad_evals += 1
            if cfg.eval.patience is not None and state.bad_evals >= cfg.eval.patience:
                state.stopped_early = True
        record = {
            "type": "eval",
            "split": "validation",
            "step": state.step,
            "stage": stage.name,
            "metrics": metrics,
            "selection": {
                "metric": metric,
                "score": score,
                "best": state.best_score,
                "best_step": state.best_step,
            },
        }
        self._append(record)
        flat = " ".join(
            f"{t}.{k} {v:.4f}"
            for t, m in metrics.items()
            for k, v in m.items()
            if k in ("accuracy", "f1", "macro_f1")
        )
        logger.info(
            "eval step %d | %s %.4f%s | %s", state.step, metric, score, " (best)" if improved else "", flat
        )

    def _meta(
        self, metrics: dict[str, dict[str, float]] | None, metric: str | None, score: float | None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            **self.meta_base,
            "step": self.state.step,
            "loss_weights": self.weighter.weights(),
        }
        if metrics is not None:
            meta["metrics"] = {"validation": metrics}
            meta["selection"] = {"metric": metric, "score": score}
        return meta

    # ------------------------------------------------------------------ logging
    def _log_train(
        self, window: _Window, opt: torch.optim.Optimizer, stage: StageConfig, steps_per_epoch: int
    ) -> None:
        state = self.state
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        lr = lrs.get("encoder", lrs.get("heads", next(iter(lrs.values()))))
        record: dict[str, Any] = {
            "type": "train",
            "step": state.step,
            "stage": stage.name,
            "epoch": round(state.stage_step / steps_per_epoch, 4),
            "task": "+".join(sorted(window.losses)),
            "loss": window.mean_loss,
            "task_loss": {t: sum(v) / len(v) for t, v in sorted(window.losses.items())},
            "lr": lr,
            "lrs": lrs,
            "samples_per_s": window.samples / max(window.elapsed, 1e-9),
            "samples": state.samples,
            "task_steps": dict(state.task_steps),
        }
        if isinstance(self.weighter, UncertaintyLossWeighting):
            record["loss_weights"] = self.weighter.weights()
            record["log_vars"] = self.weighter.log_variances()
        self._append(record)
        per_task = " ".join(f"{t} {v:.3f}" for t, v in record["task_loss"].items())
        logger.info(
            "step %d | loss %.3f | lr %.1e | %.0f samples/s | %s",
            state.step,
            record["loss"],
            lr,
            record["samples_per_s"],
            per_task,
        )

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """On resume: drop what a killed run logged after its last checkpoint (it is logged again)."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if int(record.get("step", 0)) <= step:
                keep.append(line)
        atomic_write_text(self.metrics_path, "".join(x + "\n" for x in keep))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(
        self, opt: torch.optim.Optimizer | None, sampler: TaskSampler | None, scaler: Any
    ) -> None:
        tensors: dict[str, torch.Tensor] = {
            f"loss_weighting.{k}": v for k, v in self.weighter.state_dict().items()
        }
        rng_tensors, rng_json = capture_rng()
        tensors.update(rng_tensors)
        state: dict[str, Any] = {
            "loop": asdict(self.state),
            "batchers": {t: b.state_dict() for t, b in self.batchers.items()},
            "augment_rng": {t: _rng_json(r) for t, r in self.aug_rngs.items()},
            "rng": rng_json,
            "log_window": {"losses": self.window.losses, "samples": self.window.samples},
        }
        if opt is not None and sampler is not None:
            state["scheduler"] = {
                **self.schedule,
                "stage_step": self.state.stage_step,
                "epoch": self.state.stage_step / self.schedule["steps_per_epoch"],
            }
            opt_tensors, opt_json = flatten_optimizer(opt)
            tensors.update(opt_tensors)
            state["optimizer"] = opt_json
            state["sampler"] = sampler.state_dict()
            state["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
        write_checkpoint(
            self.run_dir,
            self.model,
            CheckpointPayload(state, tensors),
            step=self.state.step,
            meta=self._meta(None, None, None),
            keep_last=self.cfg.checkpoint.keep_last,
        )

    def _load(self, path: Path) -> None:
        weights, payload = read_checkpoint(path)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: the checkpoint does not fit this config's model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]} (did the tasks or backbone change?)"
            )
        lw = {
            k[len("loss_weighting.") :]: v
            for k, v in payload.tensors.items()
            if k.startswith("loss_weighting.")
        }
        self.weighter.load_state_dict(lw)
        s = payload.state
        self.state = LoopState(**s["loop"])
        for t, b in self.batchers.items():
            b.load_state_dict(s["batchers"][t])
        for t, r in self.aug_rngs.items():
            r.setstate(_rng_from_json(s["augment_rng"][t]))
        self.window.losses = {t: list(v) for t, v in s["log_window"]["losses"].items()}
        self.window.samples = int(s["log_window"]["samples"])
        self.pending = payload
        logger.info("resuming %s from %s (step %d)", self.run_dir, path.name, self.state.step)

    def _restore_stage(self, opt: torch.optim.Optimizer, sampler: TaskSampler, scaler: Any) -> None:
        payload = self.pending
        assert payload is not None
        s = payload.state
        if "optimizer" in s:  # a mid-stage checkpoint
            unflatten_optimizer(opt, payload.tensors, s["optimizer"])
            sampler.load_state_dict(s["sampler"])
            if s.get("scaler"):
                scaler.load_state_dict(s["scaler"])
        restore_rng(payload.tensors, s["rng"])
        self.pending = None

    # ------------------------------------------------------------------ the end
    def _stage_steps(self, stage: StageConfig) -> int:
        if stage.max_steps is not None:
            return stage.max_steps
        epochs = stage.epochs if stage.epochs is not None else self.cfg.optim.epochs
        return max(1, math.ceil(epochs * sum(len(self.batchers[t]) for t in stage.tasks)))

    def _finish(self) -> TrainResult:
        from safetensors.torch import load_file

        best = self.run_dir / "best"
        tasks = list(self.data)
        validation: dict[str, dict[str, float]] = {}
        if best.is_dir():
            self.model.load_state_dict(load_file(str(best / "model.safetensors")))
            # scored when it was selected; evaluation is deterministic, so no second pass is needed
            validation = json.loads((best / "mtst.json").read_text()).get("metrics", {}).get("validation", {})
        if set(validation) != set(tasks):
            validation = self.evaluate(tasks, "validation")
        test = self.evaluate(tasks, "test")
        atomic_write_json(
            self.run_dir / "test_metrics.json", {"best_step": self.state.best_step, "metrics": test}
        )
        last = self.stages[-1]
        plan = getattr(self, "plan", None) or plan_freezing(self.model, last.freeze, tasks=last.tasks)
        total, trainable = count_parameters(self.model, plan)
        result = TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=best,
            steps=self.state.step,
            best_step=self.state.best_step,
            task_steps=dict(self.state.task_steps),
            validation=validation,
            test=test,
            stopped_early=self.state.stopped_early,
            train_time_s=round(self.state.elapsed_s, 3),
            params_total=total,
            params_trainable=trainable,
            loss_weights=self.weighter.weights(),
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
        atomic_write_json(self.run_dir / "results.json", summary)
        return result


# ---------------------------------------------------------------------- small helpers
def _memo_logits_fn(model: MultiTaskModel, task: str, memo: dict[bytes, torch.Tensor]) -> Any:
    """Logits of ``task`` whose encoder part is remembered per input batch (frozen encoder only)."""
    kind = model.tasks[task].kind

    def fn(batch: dict[str, np.ndarray]) -> np.ndarray:
        key = b"".join(batch[k].tobytes() + str(batch[k].shape).encode() for k in sorted(batch))
        with torch.inference_mode():
            feats = memo.get(key)
            if feats is None:
                inputs = {
                    k: torch.from_numpy(v).to(model.device)
                    for k, v in batch.items()
                    if k in model.input_names
                }
                states, emb = model.encode_tokens(**inputs)
                feats = memo[key] = emb if kind is TaskKind.SENTENCE else states
            return model.heads[task](feats).float().cpu().numpy()

    return fn


class _Window:
    """Losses and throughput since the last log line."""

    def __init__(self) -> None:
        self.losses: dict[str, list[float]] = {}
        self.samples = 0
        self.t0 = time.perf_counter()

    def add(self, task: str, loss: float, n: int) -> None:
        self.losses.setdefault(task, []).append(loss)
        self.samples += n

    @property
    def mean_loss(self) -> float:
        values = [v for vs in self.losses.values() for v in vs]
        return sum(values) / len(values) if values else math.nan

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _rng_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _progress(*, total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, leave=False
    )


@contextlib.contextmanager
def _redirect_logging(bar: Any) -> Iterator[None]:
    """Log lines go through tqdm.write while a bar is shown, so they do not tear it."""
    if getattr(bar, "disable", True):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
