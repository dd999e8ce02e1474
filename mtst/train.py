"""The training loop of ``mtst-train``.

One run = data → model → stages. Each stage (one implicit stage unless the config has ``stages``) is
prepared once (:func:`mtst.stage.prepare_stage` returns a frozen :class:`~mtst.stage.Stage`: freeze
plan, encoder cache when the encoder is frozen, optimizer with encoder-lr / head-lr groups, task
sampler, AMP scaler, lr schedule) and then runs a loop that reads top to bottom::

    lr of this step → task + batch → forward → weighted loss → backward → clip → step
    → log → evaluate (every N steps, epoch ends, stage end) → best/ → checkpoint → stop?

Everything that decides what happens next (weights, optimizer moments, sampler and batch positions,
augmentation and global RNG states, counters) is in every checkpoint, so ``resume=True`` continues
a killed run to the same end as an uninterrupted one. Test data is scored once, on the best model.

Under torchrun (``torchrun --nproc-per-node N -m mtst.train CONFIG``) the same loop runs in every
process with DDP: each takes its part of every global batch, rank 0 alone evaluates, writes and logs
(:mod:`mtst.distributed`). ``python -m mtst.train`` is ``mtst-train``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtst.alignment import token_lengths
from mtst.augment import build_augmenter
from mtst.calibrate import calibrate_model, write_calibration
from mtst.config import StageConfig, TrainConfig
from mtst.cross_task import CrossTaskLoss
from mtst.data import load_task_data
from mtst.device import amp_dtype, resolve_device
from mtst.distributed import Distributed, process_group
from mtst.errors import ConfigError
from mtst.evaluation import evaluate_tasks, selection_score
from mtst.freezing import count_parameters, plan_freezing, set_train_mode
from mtst.loss_weighting import UncertaintyLossWeighting, build_loss_weighting
from mtst.model import MultiTaskModel
from mtst.optim import build_optimizer, lr_factor
from mtst.runtime.fsutil import atomic_write_json, atomic_write_text
from mtst.sampling import LengthGroupedBatches
from mtst.stage import Stage, prepare_stage
from mtst.task_loss import StepLoss, TaskLoss
from mtst.train_log import MetricsLog, Window, dump_yaml, progress_bar, redirect_logging
from mtst.train_state import (
    CheckpointPayload,
    LoopState,
    RunParts,
    TrainResult,
    capture_state,
    open_run_dir,
    read_checkpoint,
    restore_run,
    restore_stage,
    write_checkpoint,
)

__all__ = [
    "TrainResult",
    "build_optimizer",
    "lr_factor",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)


def train(
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``output_dir/run_id``); ``resume`` continues from ``latest.json``.

    Started by torchrun (``WORLD_SIZE`` > 1), every process calls this: DDP, see :mod:`mtst.distributed`.
    """
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / (cfg.run_id or "run")
    with process_group(Distributed.from_env(), resolve_device(device or cfg.device)) as place:
        return _Run(cfg, run_dir, resume=resume, place=place, progress=progress).run()


class _Run:
    """One training run: the model, data and counters that live across stages."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, *, resume: bool, place: Distributed, progress: bool | None
    ) -> None:
        self.cfg, self.run_dir, self.place, self.device = cfg, run_dir, place, place.device
        self.show_progress = place.main and (sys.stderr.isatty() if progress is None else progress)
        found = place.decide(lambda: str(open_run_dir(run_dir, resume=resume) or ""))  # rank 0 looks
        latest = Path(found) if found else None
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
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
        ).to(self.device)
        self.weighter = build_loss_weighting(
            cfg.loss_weighting, {t.name: t.loss_weight for t in cfg.tasks}
        ).to(self.device)
        self.batchers = {
            name: LengthGroupedBatches(
                token_lengths(self.model.tokenizer, d.train, cfg.max_seq_len),
                cfg.optim.batch_size,  # the global batch: each process takes its part (mtst.distributed)
                seed=cfg.seed + 7919 * (i + 1),
            )
            for i, (name, d) in enumerate(self.data.items())
        }
        self.augmenters = {
            name: [(build_augmenter(a.name, d.train, **dict(a.options)), a.prob) for a in d.config.augment]
            for name, d in self.data.items()
        }
        aug_rngs = {name: random.Random(cfg.seed * 1_000_003 + i) for i, name in enumerate(self.data)}
        self.run_parts = RunParts(self.weighter, self.batchers, aug_rngs)
        cross = CrossTaskLoss(cfg, self.model, self.data, device=self.device)
        self.task_loss = TaskLoss(
            self.model,
            self.data,
            self.augmenters,
            aug_rngs,
            device=self.device,
            amp_dtype=self.amp_dtype,
            cross=cross if cross.enabled or cross.ood else None,
        )
        self.step_loss: torch.nn.Module | None = None  # per stage: StepLoss, in DDP with several processes
        self.state = LoopState(task_steps={t: 0 for t in self.data})
        self.stages = cfg.effective_stages()
        self.meta_base = {
            "config": cfg.to_dict(),
            "data_root": str(cfg.resolved_data_root() or Path.cwd()),
            "run_id": cfg.run_id,
        }
        self.pending: CheckpointPayload | None = None  # a loaded checkpoint's stage state, until restored
        self.window = Window()  # losses since the last log line
        if latest is not None:
            self._load(latest)
        self.log = MetricsLog(run_dir / "metrics.jsonl")
        if place.main:
            atomic_write_text(run_dir / "config.resolved.yaml", dump_yaml(cfg.to_dict()))
            self.log.truncate(self.state.step if latest is not None else 0)

    # ------------------------------------------------------------------ top level
    def run(self) -> TrainResult:
        totals = [self._stage_steps(s) for s in self.stages]
        bar = progress_bar(
            total=sum(totals), initial=min(self.state.step, sum(totals)), enabled=self.show_progress
        )
        stage: Stage | None = None
        with bar, redirect_logging(bar):
            while self.state.stage < len(self.stages):
                stage = self._prepare_stage(self.state.stage, totals[self.state.stage])
                self._run_stage(stage, bar)
        return self._finish(stage)

    def _prepare_stage(self, index: int, total: int) -> Stage:
        """The stage's plan, caches, optimizer, sampler, scaler and schedule; a resumed run's state in them."""
        st = prepare_stage(
            self.cfg,
            index,
            total,
            model=self.model,
            weighter=self.weighter,
            data=self.data,
            batchers=self.batchers,
            augmented=[t for t, augs in self.augmenters.items() if augs],
            device=self.device,
            amp_dtype=self.amp_dtype,
        )
        if self.pending is not None:  # resuming: the saved state replaces the fresh one, RNG last
            restore_stage(self.pending, st.parts(0))
            self.pending = None
        else:
            probabilities = {k: round(v, 3) for k, v in st.sampler.probabilities.items()}
            logger.info("sampling %s: %s", self.cfg.sampling.strategy.value, probabilities)
        # a fresh DDP wrapper per stage: the stage's freeze plan decides which parameters it reduces
        self.step_loss = None
        step_loss = StepLoss(self.model, self.weighter, self.task_loss, st.caches, self.place)
        self.step_loss = self.place.wrap(step_loss)
        return st

    def _run_stage(self, st: Stage, bar: Any) -> None:
        """The loop of one stage, to its last step or an early stop; then the stage-end checkpoint."""
        cfg, state, opt, scaler, step_loss = self.cfg, self.state, st.optimizer, st.scaler, self.step_loss
        assert step_loss is not None  # set by _prepare_stage
        t_start = time.perf_counter()
        while state.stage_step < st.total and not state.stopped_early:
            st.schedule.apply(opt, state.stage_step)  # the lr of this step
            task = next(st.sampler)  # one batch of one task (the global batch; each process takes its part)
            indices = next(self.batchers[task])
            self.place.seed_step(cfg.seed, state.step)  # several processes: dropout from (seed, step, rank)
            # weighted, plus the other heads' not-mine losses (mtst.cross_task); the batch's mean task loss
            loss, task_loss = step_loss(task, indices, state.step, st.plan.trained_heads)
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(st.params, cfg.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.stage_step += 1
            state.samples += len(indices)
            state.task_steps[task] += 1
            self.window.add(task, float(task_loss.item()), len(indices))
            bar.update(1)
            stage_done = state.stage_step == st.total
            if state.step % cfg.log_every == 0 or stage_done:
                if self.place.main:
                    self._log_train(st)
                self.window = Window()
            # evaluate: every N steps, at each epoch end, at the stage end
            if (
                (cfg.eval.every_steps and state.step % cfg.eval.every_steps == 0)
                or (cfg.eval.at_epoch_end and state.stage_step % st.schedule.steps_per_epoch == 0)
                or stage_done
            ):
                self._evaluate_and_select(st)
                set_train_mode(self.model, st.plan)
            if not stage_done and not state.stopped_early and state.step % cfg.checkpoint.every_steps == 0:
                state.elapsed_s += time.perf_counter() - t_start
                t_start = time.perf_counter()
                self._checkpoint(st)
        # the stage is over: the next one starts fresh (its own best model, optimizer, sampler)
        state.elapsed_s += time.perf_counter() - t_start
        if state.stopped_early:
            logger.info(
                "stage %s: stopped early at step %d (best step %s)",
                st.config.name,
                state.step,
                state.best_step,
            )
        state.stage += 1
        state.stage_step = 0
        if state.stage < len(self.stages):
            state.best_score, state.best_step, state.bad_evals, state.stopped_early = None, None, 0, False
        self._checkpoint(None)

    # ------------------------------------------------------------------ evaluation and selection
    def evaluate(
        self, tasks: Sequence[str], split: str, stage: Stage | None = None
    ) -> dict[str, dict[str, float]]:
        """Metrics per task on ``split``; with the ``stage``'s encoder frozen, its outputs on the validation
        batches are computed once per stage and reused by later evaluations (only heads change)."""
        frozen = stage is not None and stage.plan.encoder_frozen and split == "validation"
        memo = stage.eval_memo if stage is not None and frozen else None
        return evaluate_tasks(
            self.model, self.data, tasks, split=split, batch_size=self.cfg.eval.batch_size, memo=memo
        )

    def _evaluate_and_select(self, st: Stage) -> None:
        """Rank 0 evaluates, selects and logs; every process takes its decisions (best score, early stop)."""
        state = self.state
        if state.last_eval_step == state.step:
            return
        state.last_eval_step = state.step
        for k, v in self.place.decide(lambda: self._select(st)).items():
            setattr(state, k, v)

    def _select(self, st: Stage) -> dict[str, Any]:
        """Evaluate, keep ``best/``, log; what it decided (the state's selection fields)."""
        cfg, state = self.cfg, self.state
        metrics = self.evaluate(st.eval_tasks, "validation", st)
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
        selection = {"metric": metric, "score": score, "best": state.best_score, "best_step": state.best_step}
        self.log.append(
            {
                "type": "eval",
                "split": "validation",
                "step": state.step,
                "stage": st.config.name,
                "metrics": metrics,
                "selection": selection,
            }
        )
        flat = " ".join(
            f"{t}.{k} {v:.4f}"
            for t, m in metrics.items()
            for k, v in m.items()
            if k in ("accuracy", "f1", "macro_f1")
        )
        logger.info(
            "eval step %d | %s %.4f%s | %s", state.step, metric, score, " (best)" if improved else "", flat
        )
        return {k: getattr(state, k) for k in ("best_score", "best_step", "bad_evals", "stopped_early")}

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

    def _log_train(self, st: Stage) -> None:
        state, weighter = self.state, self.weighter
        extra = {}
        if isinstance(weighter, UncertaintyLossWeighting):
            extra = {"loss_weights": weighter.weights(), "log_vars": weighter.log_variances()}
        self.log.train(
            self.window,
            step=state.step,
            stage=st.config.name,
            epoch=state.stage_step / st.schedule.steps_per_epoch,
            lrs={g["name"]: g["lr"] for g in st.optimizer.param_groups},
            samples=state.samples,
            task_steps=state.task_steps,
            extra=extra,
        )

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, st: Stage | None) -> None:
        """A resumable checkpoint; mid-stage (``st``) with the optimizer, sampler, scaler and schedule."""
        stage = st.parts(self.state.stage_step) if st is not None else None
        if self.place.main:  # the state is the same in every process: rank 0 writes, the others wait
            write_checkpoint(
                self.run_dir,
                self.model,
                capture_state(self.state, self.run_parts, self.window.state_dict(), stage),
                step=self.state.step,
                meta=self._meta(None, None, None),
                keep_last=self.cfg.checkpoint.keep_last,
            )
        self.place.barrier()

    def _load(self, path: Path) -> None:
        weights, payload = read_checkpoint(path)
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{path}: the checkpoint does not fit this config's model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]} (did the tasks or backbone change?)"
            )
        self.state = restore_run(payload, self.run_parts)
        self.window.load_state_dict(payload.state["log_window"])
        self.pending = payload
        logger.info("resuming %s from %s (step %d)", self.run_dir, path.name, self.state.step)

    # ------------------------------------------------------------------ the end
    def _stage_steps(self, stage: StageConfig) -> int:
        if stage.max_steps is not None:
            return stage.max_steps
        epochs = stage.epochs if stage.epochs is not None else self.cfg.optim.epochs
        return max(1, math.ceil(epochs * sum(len(self.batchers[t]) for t in stage.tasks)))

    def _finish(self, last: Stage | None) -> TrainResult:
        """Rank 0 scores the best model and writes ``results.json``; every process returns its result."""
        return TrainResult.from_dict(self.place.decide(lambda: self._score_best(last).to_dict()))

    def _score_best(self, last: Stage | None) -> TrainResult:
        """Best model back in, validation (as selected) and test metrics, ``results.json``."""
        from safetensors.torch import load_file

        best = self.run_dir / "best"
        tasks = list(self.data)
        validation: dict[str, dict[str, float]] = {}
        if best.is_dir():
            self.model.load_state_dict(load_file(str(best / "model.safetensors")))
            # scored when it was selected; evaluation is deterministic, so no second pass is needed
            validation = json.loads((best / "mtst.json").read_text()).get("metrics", {}).get("validation", {})
        if set(validation) != set(tasks):
            validation = self.evaluate(tasks, "validation", last)
        test = self.evaluate(tasks, "test")
        calibration: dict[str, dict[str, Any]] = {}
        if self.cfg.calibration.enabled and best.is_dir():  # temperatures + thresholds from validation data
            reports = calibrate_model(
                self.model, self.data, self.cfg.calibration, batch_size=self.cfg.eval.batch_size
            )
            write_calibration(best, reports)
            calibration = {name: r.to_dict() for name, r in reports.items()}
        atomic_write_json(
            self.run_dir / "test_metrics.json",
            {"best_step": self.state.best_step, "metrics": test, "calibration": calibration},
        )
        final = self.stages[-1]
        plan = last.plan if last is not None else plan_freezing(self.model, final.freeze, tasks=final.tasks)
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
            calibration=calibration,
        )
        atomic_write_json(self.run_dir / "results.json", result.to_dict())
        return result


# python -m mtst.train is mtst-train: the form torchrun starts (torchrun … -m mtst.train CONFIG)
if __name__ == "__main__":
    import runpy

    # run mtst-train's command line as a program (cli imports this module to train: no import cycle)
    runpy.run_module("mtst.cli", run_name="__main__")
