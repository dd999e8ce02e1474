"""A run killed at any moment (SIGKILL), also while a checkpoint is being written, and resumed with
``--resume`` ends exactly where an uninterrupted run with the same seed ends: same weights bit for
bit, same validation and test metrics, same metrics log (minus throughput)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from mtst.train_state import read_latest


def _command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mtst.cli", str(config), "--output", str(out), "--resume", "--quiet"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def _mid_checkpoint(out: Path) -> bool:
    """A checkpoint directory is being written right now (its temporary sibling exists)."""
    try:
        return any(e.name.startswith(".step-") and ".tmp-" in e.name for e in os.scandir(out / "checkpoints"))
    except FileNotFoundError:
        return False


def _steps_logged(out: Path) -> int:
    try:
        return sum(1 for _ in open(out / "metrics.jsonl", encoding="utf-8"))
    except FileNotFoundError:
        return 0


def _run_and_kill(config: Path, out: Path, when: Callable[[], bool], *, deadline_s: float = 120) -> bool:
    """Start a resuming run; SIGKILL it as soon as ``when()`` holds. False if it finished first."""
    proc = subprocess.Popen(
        _command(config, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < deadline_s:
            if when():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        if proc.poll() is None:
            proc.kill()
            pytest.fail("training subprocess did not finish in time")
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


def test_killed_run_resumes_to_the_same_end(config_dict, tmp_path) -> None:
    from safetensors.torch import load_file

    raw = config_dict(
        optim={"max_steps": 36, "weight_decay": 0.05},
        eval={"every_steps": 8},
        checkpoint={"every_steps": 3, "keep_last": 2},
    )
    # augmentation draws from its own RNG and dropout from torch's: both must come back on resume
    raw["tasks"][0]["augment"] = [{"name": "word_swap", "prob": 0.5}]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))

    reference = tmp_path / "reference"
    done = subprocess.run(_command(config, reference), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    out = tmp_path / "killed"
    rng = random.Random()
    kills = []
    # 1: while a checkpoint directory is being written (at most three tries to catch one)
    for _ in range(3):
        if _run_and_kill(config, out, lambda: _mid_checkpoint(out) and _steps_logged(out) >= 1):
            kills.append("mid-checkpoint")
            break
    assert kills == ["mid-checkpoint"], "never caught a checkpoint being written"
    assert any(p.name.startswith(".step-") for p in (out / "checkpoints").iterdir())  # the half-written one
    read_latest(out)  # latest.json is intact
    # 2, 3: at random moments after the start of training
    for _ in range(2):
        start_lines = _steps_logged(out)
        delay = rng.uniform(0.0, 1.5)
        armed: list[float] = []

        def when(start_lines: int = start_lines, delay: float = delay, armed: list[float] = armed) -> bool:
            if not armed and _steps_logged(out) > start_lines:
                armed.append(time.monotonic())
            return bool(armed) and time.monotonic() - armed[0] >= delay

        if _run_and_kill(config, out, when):
            kills.append(f"random {delay:.2f}s")
        read_latest(out)
    # then let it finish
    done = subprocess.run(_command(config, out), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert len(kills) >= 2, kills

    for part in ("best/model.safetensors", "checkpoints/step-0000036/model.safetensors"):
        a, b = load_file(str(reference / part)), load_file(str(out / part))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), (part, kills)
    assert json.loads((out / "test_metrics.json").read_text()) == json.loads(
        (reference / "test_metrics.json").read_text()
    )
    res_a, res_b = (json.loads((d / "results.json").read_text()) for d in (reference, out))
    for key in ("steps", "best_step", "task_steps", "validation", "test", "loss_weights"):
        assert res_a[key] == res_b[key], (key, kills)
    log_a, log_b = (
        [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (reference, out)
    )
    assert _strip(log_a) == _strip(log_b), kills
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # leftovers cleaned up
