"""SIGKILL at 30+ random moments of a tiny training run (a checkpoint every 2 steps), resumed with
``--resume`` after each: the final weights (sha256), validation/test metrics and metrics log equal an
uninterrupted run's bit for bit -- and the interrupted run uses other PYTHONHASHSEEDs than the reference.

The killed segments run in forked children of one process that imported torch once
(``_train_zygote.py``); the reference and the final segment are fresh interpreters.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml
from _fixtures_text import train_config, train_data  # noqa: F401

KILLS = 32
MAX_STEPS = 80
ZYGOTE = Path(__file__).with_name("_train_zygote.py")


def _env(hash_seed: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONHASHSEED=str(hash_seed),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def _args(config: Path, out: Path) -> list[str]:
    return [str(config), "--output", str(out), "--resume", "--quiet"]


def _fresh_run(config: Path, out: Path, hash_seed: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mtst.cli", *_args(config, out)],
        env=_env(hash_seed),
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def _lines(out: Path) -> int:
    try:
        with open(out / "metrics.jsonl", encoding="utf-8") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def _mid_checkpoint(out: Path) -> bool:
    try:
        return any(e.name.startswith(".step-") and ".tmp-" in e.name for e in os.scandir(out / "checkpoints"))
    except FileNotFoundError:
        return False


class Zygote:
    """The forking trainer: ``start(args)`` -> child pid; ``ended(timeout)`` -> its wait status or None."""

    def __init__(self, hash_seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)],
            env=_env(hash_seed),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def start(self, args: list[str]) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        return int(self.events.get(timeout=60)["pid"])

    def ended(self, timeout: float) -> int | None:
        try:
            return int(self.events.get(timeout=timeout)["status"])
        except queue.Empty:
            return None

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def _kill_when(z: Zygote, args: list[str], when: Callable[[], bool]) -> str:
    """Start a resuming segment; SIGKILL it as soon as ``when()`` holds: "killed" or "finished"."""
    pid = z.start(args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if when():
            os.kill(pid, signal.SIGKILL)
            status = z.ended(60)
            assert status is not None
            # the child may have finished just before the signal
            return "killed" if os.WIFSIGNALED(status) else "finished"
        status = z.ended(0.001)
        if status is not None:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"segment failed: status {status}"
            return "finished"
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("training segment did not finish in time")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(out: Path) -> list[dict]:
    # throughput is a timing, the one field that may differ
    return [
        {k: v for k, v in json.loads(x).items() if k != "samples_per_s"}
        for x in (out / "metrics.jsonl").read_text("utf-8").splitlines()
    ]


def test_sigkill_at_random_moments_resumes_bit_equal_across_hash_seeds(
    tiny_encoder_dir: Path, train_data: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(train_config(tiny_encoder_dir, train_data, max_steps=MAX_STEPS)))
    reference = tmp_path / "reference"
    _fresh_run(config, reference, hash_seed=0)

    out = tmp_path / "killed"
    args = _args(config, out)
    rng = random.Random(2024)
    moments: Counter[str] = Counter()
    z = Zygote(hash_seed=4242)
    try:
        while sum(moments.values()) < KILLS:
            start = _lines(out)
            kind = rng.choices(["mid-checkpoint", "after-step", "at-start"], weights=[1, 4, 5])[0]
            if kind == "at-start":  # anywhere in loading config, data, model, checkpoint
                t0, delay = time.monotonic(), rng.uniform(0.0, 0.4)
                when = lambda t0=t0, delay=delay: time.monotonic() - t0 >= delay  # noqa: E731
            elif kind == "mid-checkpoint":
                when = lambda start=start: _lines(out) > start and _mid_checkpoint(out)  # noqa: E731
            else:
                armed: list[float] = []
                delay = rng.uniform(0.0, 0.15)

                def when(start: int = start, delay: float = delay, armed: list[float] = armed) -> bool:
                    if not armed and _lines(out) > start:
                        armed.append(time.monotonic())
                    return bool(armed) and time.monotonic() - armed[0] >= delay

            result = _kill_when(z, args, when)
            assert result == "killed", f"the run finished after {dict(moments)} kills: make it longer"
            moments[kind] += 1
    finally:
        z.close()
    _fresh_run(config, out, hash_seed=99)  # the last segment, in a fresh interpreter with a third hash seed

    last = f"checkpoints/step-{MAX_STEPS:07d}/model.safetensors"
    weights = {part: (_sha(reference / part), _sha(out / part)) for part in ("best/model.safetensors", last)}
    print(
        f"\nkill/resume: {sum(moments.values())} SIGKILLs {dict(moments)}, {MAX_STEPS} steps, hash seeds 0 vs "
        f"4242/99: weights {'equal' if all(a == b for a, b in weights.values()) else 'DIFFER'}"
    )
    for part, (a, b) in weights.items():
        assert a == b, (part, dict(moments))
    assert (out / "test_metrics.json").read_bytes() == (reference / "test_metrics.json").read_bytes()
    res_a, res_b = (json.loads((d / "results.json").read_text()) for d in (reference, out))
    for key in ("steps", "best_step", "task_steps", "validation", "test", "loss_weights"):
        assert res_a[key] == res_b[key], key
    assert _log(out) == _log(reference)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
