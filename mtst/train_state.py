"""Resumable training checkpoints, without pickle.

::

    runs/<id>/
      latest.json                     # {"step": 400, "checkpoint": "checkpoints/step-0000400"}, atomic
      checkpoints/step-0000400/
        mtst.json model.safetensors encoder/ tokenizer/      # the model (mtst.checkpoint)
        training_state/
          state.json                  # counters, sampler/batch/augmentation states, python+numpy RNG,
                                      # optimizer param groups and scalar state, AMP scaler state
          tensors.safetensors         # optimizer moments, torch RNG (uint8), loss-weighting params

A checkpoint directory is written into a temporary sibling and renamed into place
(:func:`mtst.runtime.fsutil.atomic_directory`); only then is ``latest.json`` replaced, so a kill at any moment
leaves the previous checkpoint as "latest". Older checkpoints beyond ``keep_last`` are deleted after.
A finished run's summary, ``results.json``, is a :class:`TrainResult`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtst.checkpoint import WEIGHTS, read_meta
from mtst.errors import CheckpointError, ConfigError
from mtst.loss_weighting import LossWeighter
from mtst.model import MultiTaskModel, write_model_files
from mtst.runtime.fsutil import atomic_directory, atomic_write_json
from mtst.sampling import LengthGroupedBatches, TaskSampler

__all__ = [
    "CheckpointPayload",
    "LoopState",
    "RunParts",
    "StageParts",
    "TrainResult",
    "capture_rng",
    "capture_state",
    "checkpoint_name",
    "flatten_optimizer",
    "open_run_dir",
    "read_checkpoint",
    "read_latest",
    "restore_rng",
    "restore_run",
    "restore_stage",
    "rng_from_json",
    "rng_to_json",
    "unflatten_optimizer",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

STATE_DIR = "training_state"
STATE_JSON = "state.json"
STATE_TENSORS = "tensors.safetensors"
LATEST = "latest.json"
STATE_VERSION = 1


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


# ---------------------------------------------------------------------- optimizer
def flatten_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON values."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {
        "param_groups": groups,
        "scalars": scalars,
        "tuple_keys": _tuple_keys(sd["param_groups"]),
    }


def _tuple_keys(groups: list[dict[str, Any]]) -> list[str]:
    return sorted({k for g in groups for k, v in g.items() if isinstance(v, tuple)})


def unflatten_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    prefix: str = "optimizer",
) -> None:
    """Load what :func:`flatten_optimizer` wrote back into ``optimizer`` (same parameter layout)."""
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if not name.startswith(head):
            continue
        pid, key = name[len(head) :].split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    tuple_keys = set(meta.get("tuple_keys", []))
    groups = [{k: (tuple(v) if k in tuple_keys else v) for k, v in g.items()} for g in meta["param_groups"]]
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise CheckpointError(
            "optimizer state does not fit this run: parameter groups of sizes "
            f"{[len(g['params']) for g in groups]} saved, {[len(g['params']) for g in current]} now"
        )
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------- RNG
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, numpy and torch (CPU + CUDA) global RNG states: torch's as uint8 tensors."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    np_json = {
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np.asarray(np_state["state"]["key"]).tolist(), "pos": int(np_state["state"]["pos"])},
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors, {"python": [version, list(internal), gauss], "numpy": np_json}


def rng_to_json(rng: random.Random) -> list[Any]:
    """A ``random.Random``'s state as JSON values (the augmentation RNGs)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(data: list[Any]) -> tuple[Any, ...]:
    return (data[0], tuple(data[1]), data[2])


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    n = meta["numpy"]
    np.random.set_state(
        (
            n["bit_generator"],
            np.asarray(n["state"]["key"], dtype=np.uint32),
            n["state"]["pos"],
            n["has_gauss"],
            n["gauss"],
        )
    )
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------- checkpoints
class CheckpointPayload:
    """What a training checkpoint holds besides the model: JSON state and named tensors."""

    def __init__(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.tensors = tensors


def write_checkpoint(
    run_dir: Path,
    model: MultiTaskModel,
    payload: CheckpointPayload,
    *,
    step: int,
    meta: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-N`` atomically, point ``latest.json`` at it, prune old ones."""
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    target = root / checkpoint_name(step)
    with atomic_directory(target, overwrite=True) as tmp:
        write_model_files(model, tmp, extra=meta)
        state_dir = tmp / STATE_DIR
        state_dir.mkdir()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in payload.tensors.items()},
            str(state_dir / STATE_TENSORS),
        )
        (state_dir / STATE_JSON).write_text(
            json.dumps({"version": STATE_VERSION, **payload.state}, ensure_ascii=False) + "\n"
        )
    atomic_write_json(run_dir / LATEST, {"step": step, "checkpoint": f"checkpoints/{target.name}"})
    _prune(root, keep_last=keep_last, current=target.name)
    logger.debug("checkpoint %s", target)
    return target


def _prune(root: Path, *, keep_last: int, current: str) -> None:
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for p in steps[:-keep_last]:
        if p.name != current:
            shutil.rmtree(p, ignore_errors=True)
    # leftovers of a kill during a write: temporary and moved-aside directories
    for p in root.iterdir():
        if p.name.startswith(".step-") and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def read_latest(run_dir: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or None when the run has none yet."""
    latest = run_dir / LATEST
    if not latest.is_file():
        return None
    try:
        info = json.loads(latest.read_text())
        path = run_dir / str(info["checkpoint"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{latest}: unreadable ({exc})") from None
    if not (path / STATE_DIR / STATE_JSON).is_file():
        raise CheckpointError(f"{latest}: names {path}, which has no {STATE_DIR}/{STATE_JSON}")
    return path


def open_run_dir(run_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint a run in ``run_dir`` continues from (None: it starts), the directory made. A run
    already there is an error unless ``resume``."""
    latest = read_latest(run_dir) if run_dir.exists() else None
    if not resume and (latest is not None or (run_dir / "metrics.jsonl").exists()):
        raise ConfigError(
            f"{run_dir}: a run is already there; pass --resume to continue it or --output DIR for a new run"
        )
    if resume and latest is None:
        logger.info("%s: no checkpoint yet, starting from the beginning", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return latest


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointPayload]:
    """(model state dict, payload) of a training checkpoint; weights-only loads throughout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_meta(path)
    state_dir = path / STATE_DIR
    try:
        weights = load_file(str(path / WEIGHTS))
        tensors = load_file(str(state_dir / STATE_TENSORS))
        state = json.loads((state_dir / STATE_JSON).read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the training state ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{state_dir / STATE_JSON}: version {state.get('version')!r}, this mtst reads {STATE_VERSION}"
        )
    return weights, CheckpointPayload(state, tensors)


# ---------------------------------------------------------------------- what a training run saves
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
class RunParts:
    """The run's own positions besides the counters: loss weights, batch orders, augmentation RNGs."""

    weighter: LossWeighter
    batchers: Mapping[str, LengthGroupedBatches]
    aug_rngs: Mapping[str, random.Random]


@dataclass(frozen=True)
class StageParts:
    """What a mid-stage checkpoint adds (a stage-end one has none: the next stage starts fresh)."""

    optimizer: torch.optim.Optimizer
    sampler: TaskSampler
    scaler: torch.amp.GradScaler
    scheduler: Mapping[str, Any]  # the lr schedule and the position in it, for readers of state.json


def capture_state(
    loop: LoopState, parts: RunParts, log_window: Mapping[str, Any], stage: StageParts | None
) -> CheckpointPayload:
    """Everything that decides what happens next, as JSON values and named tensors (global RNGs too)."""
    tensors = {f"loss_weighting.{k}": v for k, v in parts.weighter.state_dict().items()}
    rng_tensors, rng_json = capture_rng()
    tensors.update(rng_tensors)
    state: dict[str, Any] = {
        "loop": asdict(loop),
        "batchers": {t: b.state_dict() for t, b in parts.batchers.items()},
        "augment_rng": {t: rng_to_json(r) for t, r in parts.aug_rngs.items()},
        "rng": rng_json,
        "log_window": dict(log_window),
    }
    if stage is not None:
        state["scheduler"] = dict(stage.scheduler)
        opt_tensors, opt_json = flatten_optimizer(stage.optimizer)
        tensors.update(opt_tensors)
        state["optimizer"] = opt_json
        state["sampler"] = stage.sampler.state_dict()
        state["scaler"] = stage.scaler.state_dict() if stage.scaler.is_enabled() else None
    return CheckpointPayload(state, tensors)


def restore_run(payload: CheckpointPayload, parts: RunParts) -> LoopState:
    """Put the run's positions back (the stage's, and the global RNGs, wait for :func:`restore_stage`)."""
    prefix = "loss_weighting."
    parts.weighter.load_state_dict(
        {k[len(prefix) :]: v for k, v in payload.tensors.items() if k.startswith(prefix)}
    )
    s = payload.state
    for t, b in parts.batchers.items():
        b.load_state_dict(s["batchers"][t])
    for t, r in parts.aug_rngs.items():
        r.setstate(rng_from_json(s["augment_rng"][t]))
    return LoopState(**s["loop"])


def restore_stage(payload: CheckpointPayload, stage: StageParts) -> None:
    """The stage's optimizer, sampler and scaler (mid-stage checkpoints), then the global RNGs, last."""
    s = payload.state
    if "optimizer" in s:
        unflatten_optimizer(stage.optimizer, payload.tensors, s["optimizer"])
        stage.sampler.load_state_dict(s["sampler"])
        if s.get("scaler"):
            stage.scaler.load_state_dict(s["scaler"])
    restore_rng(payload.tensors, s["rng"])


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
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> report (mtst.calibrate)

    def to_dict(self) -> dict[str, Any]:
        """``results.json``: paths as strings."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(
            **{**data, "run_dir": Path(data["run_dir"]), "best_checkpoint": Path(data["best_checkpoint"])}
        )
