"""Training on several processes or machines: ``torchrun … -m mtst.train CONFIG`` (PyTorch DDP).

torchrun starts one process per device and tells each its place in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``; ``--nnodes`` and its rendezvous give
the same variables on every machine). :class:`Distributed` is that place plus the few collectives the
training loop needs; with one process (``WORLD_SIZE`` unset or 1) every method is a no-op and the loop
runs exactly as it does without torchrun.

How a run is split (the run config does not change with the number of processes):

- every rank draws the same task and the same batch of ``optim.batch_size`` example indices (the task
  sampler and the batch orders are global, seeded, and in every checkpoint), then keeps its own
  positions of it, ``batch[rank::world_size]``: ``optim.batch_size`` is the **global** batch of one
  optimizer step, the same with 1 process as with N, so a resume may change the number of processes;
- each rank's loss is the *sum* over its examples (tokens for token tasks) times ``world_size /
  n_global``; DDP averages gradients over ranks, which gives the gradient of the global batch's mean
  loss, as one process would compute it (:class:`mtst.task_loss.StepLoss`);
- dropout draws from a torch generator seeded by (seed, step, rank) at every step, so a resumed run
  draws what an uninterrupted one draws without per-rank RNG state in the checkpoint;
- rank 0 alone evaluates, selects ``best/``, writes checkpoints (atomically) and the metrics log; the
  others wait at a broadcast or a barrier and take rank 0's decisions (best score, early stop).

No pickle crosses between processes: what rank 0 tells the others travels as JSON bytes in a tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import inspect
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtst import errors
from mtst.errors import ConfigError

__all__ = ["TIMEOUT", "Distributed", "process_group"]

# how long a rank waits in a collective, e.g. while rank 0 evaluates or writes a checkpoint; a rank that
# dies is noticed sooner: torchrun stops the others when one of its processes fails
TIMEOUT = datetime.timedelta(hours=1)

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run (rank 0 of 1 without torchrun) and the collectives it takes part in."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_env(cls) -> Distributed:
        """The place torchrun gives (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or an initialized group's."""
        if dist.is_available() and dist.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
        try:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK: expected integers ({exc})") from None
        if not 0 <= rank < max(world, 1):
            raise ConfigError(f"RANK {rank} is not in 0..{world - 1} (WORLD_SIZE {world})")
        return cls(rank=rank, world_size=max(world, 1), local_rank=local)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, writes checkpoints and logs."""
        return self.rank == 0

    @property
    def part(self) -> slice:
        """This rank's positions in every global batch (disjoint across ranks, all of it with one process)."""
        return slice(self.rank, None, self.world_size)

    # ------------------------------------------------------------------ collectives
    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's ``value`` (JSON values) on every rank; the others' argument is ignored."""
        if not self.enabled:
            return value
        data = json.dumps(value).encode("utf-8") if self.main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        if self.main:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        else:
            buf = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        dist.broadcast(buf, src=0)
        return json.loads(buf.cpu().numpy().tobytes().decode("utf-8"))

    def decide(self, fn: Callable[[], T]) -> T:
        """Rank 0 calls ``fn`` and every process gets its answer (JSON values); an mtst error there is
        raised in every process (of the same class, with rank 0's message), so that all stop alike."""
        if not self.enabled:
            return fn()
        answer: Any = None
        error: errors.MtstError | None = None
        if self.main:
            try:
                answer = fn()
            except errors.MtstError as exc:
                error = exc
        failed = None if error is None else [type(error).__name__, str(error)]
        shared = self.broadcast_json({"answer": answer, "error": failed})
        if error is not None:
            raise error
        if shared["error"] is not None:
            kind = getattr(errors, shared["error"][0], errors.MtstError)
            raise (
                kind if isinstance(kind, type) and issubclass(kind, errors.MtstError) else errors.MtstError
            )(f"(rank 0) {shared['error'][1]}")
        return cast(T, shared["answer"])

    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    # ------------------------------------------------------------------ training
    def seed_step(self, seed: int, step: int) -> None:
        """Seed torch's generator (dropout) from (seed, step, rank): several processes only."""
        if self.enabled:
            entropy = [seed % 2**63, step, self.rank]
            torch.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DDP (several processes), else itself.

        Each step trains one task, so the other tasks' heads (and loss weights) get no gradient:
        ``find_unused_parameters`` lets DDP finish the step without them and leaves their gradients
        None on every rank, so AdamW skips them as it does in one process. Frozen parameters
        (``requires_grad=False``) are not DDP's: nothing is reduced into them, they stay bit-identical.
        """
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        options: dict[str, Any] = {"find_unused_parameters": True}
        # the model's buffers are constants (position ids), never re-sent; newer torch names it otherwise
        known = inspect.signature(DistributedDataParallel.__init__).parameters
        options["forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"] = False
        if self.device.type == "cuda":
            options["device_ids"] = [self.device.index or 0]
        return DistributedDataParallel(module, **options)


@contextlib.contextmanager
def process_group(place: Distributed, device: torch.device) -> Iterator[Distributed]:
    """The process group of a torchrun run (gloo on CPU, NCCL on CUDA: one GPU per local rank), torn
    down after; with one process nothing is started and ``place`` comes back with ``device``."""
    if not place.enabled:
        yield dataclasses.replace(place, device=device)
        return
    started = not dist.is_initialized()
    if started:
        _check_launch(place, device)
    if device.type == "cuda":
        device = torch.device("cuda", place.local_rank)
        torch.cuda.set_device(device)
    if started:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, rank=place.rank, world_size=place.world_size)
    try:
        yield dataclasses.replace(place, device=device)
    finally:
        if started:
            dist.destroy_process_group()


def _check_launch(place: Distributed, device: torch.device) -> None:
    """What torchrun sets and a hand-made ``WORLD_SIZE`` may lack; one GPU per process on CUDA."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE {place.world_size} but {' and '.join(missing)} not set: start several processes "
            "with torchrun (torchrun --nproc-per-node N -m mtst.train CONFIG), which sets them"
        )
    if device.type == "cuda" and place.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {place.local_rank}: this machine has {torch.cuda.device_count()} CUDA device(s) and "
            "each process needs its own; start at most that many (--nproc-per-node) or use --device cpu"
        )
