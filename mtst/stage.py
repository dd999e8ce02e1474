"""One stage of a training run, prepared: what its loop reads, built once before the loop starts.

:func:`prepare_stage` freezes what the stage does not train, caches the encoder's outputs when only
heads train (and nothing changes the inputs), builds the optimizer (encoder lr / head lr groups), the
task sampler, the AMP scaler and the lr schedule, and returns them as one frozen :class:`Stage`.
A resumed run then loads its saved optimizer, sampler and scaler state into these
(:func:`mtst.train_state.restore_stage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch

from mtst.config import StageConfig, TrainConfig
from mtst.data import TaskData
from mtst.errors import ConfigError
from mtst.freezing import CachedTask, FreezePlan, apply_freezing, build_caches, plan_freezing, set_train_mode
from mtst.loss_weighting import LossWeighter
from mtst.model import MultiTaskModel
from mtst.optim import LrSchedule, build_optimizer
from mtst.sampling import LengthGroupedBatches, TaskSampler, build_task_sampler
from mtst.train_state import StageParts

__all__ = ["Stage", "prepare_stage"]

logger = logging.getLogger("mtst.train")  # the training loop's log lines


@dataclass(frozen=True)
class Stage:
    """One stage, prepared: what its loop reads (the optimizer, sampler and scaler change inside)."""

    index: int
    config: StageConfig
    plan: FreezePlan
    caches: dict[str, CachedTask]  # task -> encoder outputs (frozen encoder, no augmentation)
    optimizer: torch.optim.AdamW
    params: list[torch.nn.Parameter]  # what gradient clipping covers
    sampler: TaskSampler
    scaler: torch.amp.GradScaler
    schedule: LrSchedule
    eval_tasks: tuple[str, ...]  # this stage's tasks and every earlier stage's
    eval_memo: dict[str, dict[bytes, torch.Tensor]]  # frozen-encoder outputs on validation batches

    @property
    def total(self) -> int:
        return self.schedule.total

    def parts(self, stage_step: int) -> StageParts:
        """What a checkpoint at ``stage_step`` of this stage saves of it."""
        position = {"stage_step": stage_step, "epoch": stage_step / self.schedule.steps_per_epoch}
        return StageParts(self.optimizer, self.sampler, self.scaler, {**self.schedule.to_dict(), **position})


def prepare_stage(
    cfg: TrainConfig,
    index: int,
    total: int,
    *,
    model: MultiTaskModel,
    weighter: LossWeighter,
    data: Mapping[str, TaskData],
    batchers: Mapping[str, LengthGroupedBatches],
    augmented: Collection[str],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> Stage:
    """Stage ``index`` of ``cfg`` with ``total`` steps; ``augmented``: tasks whose inputs change each epoch."""
    stages = cfg.effective_stages()
    stage = stages[index]
    plan = plan_freezing(model, stage.freeze, tasks=stage.tasks)
    for t in stage.tasks:
        if plan.encoder_frozen and t not in plan.trained_heads:
            raise ConfigError(
                f"stages.{stage.name}: task {t!r} has a frozen head and the encoder is frozen, so nothing of it "
                "would train; remove it from the stage's tasks"
            )
    apply_freezing(model, plan)
    logger.info(
        "stage %s (%d/%d): tasks %s, %d steps; %s",
        stage.name,
        index + 1,
        len(stages),
        list(stage.tasks),
        total,
        plan.describe(model),
    )
    caches: dict[str, CachedTask] = {}
    # heads-only training on cached encoder outputs when nothing upstream of the heads changes
    if plan.encoder_frozen and stage.freeze.cache and not any(t in augmented for t in stage.tasks):
        t0 = time.perf_counter()
        caches = build_caches(model, stage.tasks, data, batch_size=cfg.eval.batch_size, device=device)
        size, elapsed = sum(c.nbytes for c in caches.values()) / 1e6, time.perf_counter() - t0
        logger.info(
            "encoder frozen: cached encoder outputs of %s (%.1f MB) in %.1f s", list(caches), size, elapsed
        )
    opt = build_optimizer(
        model,
        weighter,
        plan,
        encoder_lr=stage.encoder_lr if stage.encoder_lr is not None else cfg.optim.encoder_lr,
        head_lr=stage.head_lr if stage.head_lr is not None else cfg.optim.head_lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
    )
    optim = cfg.optim
    warmup = optim.warmup_steps if optim.warmup_steps is not None else int(optim.warmup_ratio * total)
    sampler = build_task_sampler(
        cfg.sampling, {t: len(data[t].train) for t in stage.tasks}, seed=cfg.seed + 104_729 * (index + 1)
    )
    steps_per_epoch = sum(len(batchers[t]) for t in stage.tasks)
    set_train_mode(model, plan)
    return Stage(
        index=index,
        config=stage,
        plan=plan,
        caches=caches,
        optimizer=opt,
        params=[p for g in opt.param_groups for p in g["params"]],
        sampler=sampler,
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16),
        schedule=LrSchedule(optim.schedule, total, warmup, optim.min_lr_ratio, steps_per_epoch),
        eval_tasks=tuple(dict.fromkeys(t for s in stages[: index + 1] for t in s.tasks)),
        eval_memo={},
    )
