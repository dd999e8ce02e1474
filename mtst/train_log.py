"""What a training run writes as it goes: ``metrics.jsonl`` records, log lines and the progress bar.

One log line shape for training (``step 200 | loss 0.412 | lr 3.0e-04 | 812 samples/s | ...``); the same
record goes to ``metrics.jsonl``. On resume the records a killed run wrote after its last checkpoint are
dropped (they are written again), so the file of a resumed run equals an uninterrupted one's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mtst.runtime.fsutil import atomic_write_text

__all__ = ["MetricsLog", "Window", "dump_yaml", "progress_bar", "redirect_logging"]

logger = logging.getLogger("mtst.train")


class Window:
    """Losses and throughput since the last log line (checkpointed: the log is the same after a resume)."""

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

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "samples": self.samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.losses = {t: list(v) for t, v in state["losses"].items()}
        self.samples = int(state["samples"])


class MetricsLog:
    """``metrics.jsonl``: one JSON record a line (``type`` train or eval)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def truncate(self, step: int) -> None:
        """On resume: drop what a killed run logged after its last checkpoint (it is logged again)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if int(record.get("step", 0)) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in keep))

    def train(
        self,
        window: Window,
        *,
        step: int,
        stage: str,
        epoch: float,
        lrs: Mapping[str, float],
        samples: int,
        task_steps: Mapping[str, int],
        extra: Mapping[str, Any],
    ) -> None:
        """Write the train record of the steps since the last one (``window``) and log its line."""
        lr = lrs.get("encoder", lrs.get("heads", next(iter(lrs.values()))))
        record: dict[str, Any] = {
            "type": "train",
            "step": step,
            "stage": stage,
            "epoch": round(epoch, 4),
            "task": "+".join(sorted(window.losses)),
            "loss": window.mean_loss,
            "task_loss": {t: sum(v) / len(v) for t, v in sorted(window.losses.items())},
            "lr": lr,
            "lrs": dict(lrs),
            "samples_per_s": window.samples / max(window.elapsed, 1e-9),
            "samples": samples,
            "task_steps": dict(task_steps),
            **extra,
        }
        self.append(record)
        per_task = " ".join(f"{t} {v:.3f}" for t, v in record["task_loss"].items())
        logger.info(
            "step %d | loss %.3f | lr %.1e | %.0f samples/s | %s",
            step,
            record["loss"],
            lr,
            record["samples_per_s"],
            per_task,
        )


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def progress_bar(*, total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, leave=False
    )


@contextlib.contextmanager
def redirect_logging(bar: Any) -> Iterator[None]:
    """Log lines go through tqdm.write while a bar is shown, so they do not tear it."""
    if getattr(bar, "disable", True):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
