"""``torchrun … -m mtst.train``: DDP on CPU (gloo), 2 processes, the tiny encoder.

1. Two processes train what one process trains with the same global batch (``optim.batch_size``), up
   to float32 rounding: loss curve, validation metrics, learned loss weights; through stages with a
   frozen (cached) encoder and top-k freezing, whose frozen parameters stay bit-identical, and through
   a batch of one example (one process has nothing of it).
2. A two-process run whose ranks are SIGKILLed (rank 1, then rank 0) and resumed ends bit-equal to an
   uninterrupted one, here started as two torchrun "machines" (``--nnodes 2``, c10d rendezvous).
3. One process resumes a two-process run's checkpoint and finishes it (the sampler state is global).

Every torchrun runs in a session of its own and is killed with its workers when a test ends; each
process uses one thread (the machine's cores are shared), ports come from bound sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtst.train_state import read_latest

TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    return env


def _train_args(config: Path, out: Path) -> list[str]:
    return ["-m", "mtst.train", str(config), "--output", str(out), "--resume", "--quiet"]


def _torchrun(config: Path, out: Path, *, nproc: int = 2) -> list[str]:
    launch = [
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
    ]
    return [sys.executable, "-m", "torch.distributed.run", *launch, *_train_args(config, out)]


def _one_process(config: Path, out: Path) -> list[str]:
    return [sys.executable, *_train_args(config, out)]


@contextlib.contextmanager
def _started(cmds: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the commands, each in a new session; on the way out kill whatever of them is left."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for cmd in cmds:
            procs.append(
                subprocess.Popen(
                    cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # the launcher and its workers (their own session)
            p.wait()


def _run(*cmds: list[str]) -> None:
    """Run the commands side by side (the agents of one run) to their end; all must succeed."""
    with _started(list(cmds)) as procs:
        for p in procs:
            output, _ = p.communicate(timeout=TIMEOUT_S)
            assert p.returncode == 0, output.decode()[-4000:]


def _worker(launcher: subprocess.Popen[bytes], rank: int) -> Any:
    """The worker process of ``rank`` under a torchrun launcher (psutil.Process), once it is up."""
    import psutil

    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and launcher.poll() is None:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.environ().get("RANK") == str(rank) and "mtst.train" in child.cmdline():
                    return child
        time.sleep(0.05)
    pytest.fail(f"no rank {rank} worker came up")


def _kill_rank_when(cmd: list[str], rank: int, when: Callable[[], bool]) -> None:
    """Start a two-process run and SIGKILL its rank ``rank`` as soon as ``when()`` holds; torchrun then
    stops the other rank and fails."""
    with _started([cmd]) as (launcher,):
        worker = _worker(launcher, rank)
        deadline = time.monotonic() + TIMEOUT_S
        while not when():
            assert launcher.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "the kill condition never held"
            time.sleep(0.002)
        worker.send_signal(signal.SIGKILL)
        output, _ = launcher.communicate(timeout=TIMEOUT_S)
        assert launcher.returncode != 0, output.decode()[-4000:]


def _latest_step(out: Path) -> int:
    latest = read_latest(out) if out.is_dir() else None
    return 0 if latest is None else int(latest.name.split("-")[1])


def _records(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def encoder_without_dropout(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny encoder with dropout off: each process draws its own dropout masks, so only without
    dropout can two processes compute what one does."""
    out = tmp_path_factory.mktemp("tiny-bert-no-dropout") / "encoder"
    shutil.copytree(tiny_encoder_dir, out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_two_processes_train_what_one_trains(config_dict, encoder_without_dropout, tmp_path) -> None:
    raw = config_dict(
        backbone=str(encoder_without_dropout),
        # 96 intent examples in batches of 19: each epoch has a batch of one (rank 1 gets none of it)
        optim={"batch_size": 19},
        sampling={"strategy": "round_robin"},
        loss_weighting={"method": "uncertainty"},
        eval={"every_steps": 5},
        checkpoint={"every_steps": 100, "keep_last": 10},
        log_every=1,
        stages=[
            {"name": "a", "tasks": ["intent", "ner"], "max_steps": 14},
            {"name": "b", "tasks": ["ner"], "freeze": {"policy": "frozen_encoder"}, "max_steps": 6},
            {
                "name": "c",
                "tasks": ["intent", "ner"],
                "freeze": {"policy": "top_k", "top_k": 1},
                "max_steps": 6,
            },
        ],
    )
    for task in raw["tasks"]:
        task["head"] = {"dropout": 0.0}
    # cross-task training (mtst.cross_task) in both runs: each rank scores the not-mine losses of its
    # part of the batch (the all-O rows drawn over the global batch), the intent task's own OOD file
    # the same in every process; the counts are all-reduced with the task loss's
    ood = tmp_path / "ood.txt"
    ood.write_text("the weather is nice today\nplay some jazz music\nhow tall is mount everest\n")
    intent = next(t for t in raw["tasks"] if t["name"] == "intent")
    intent["ood"] = {"path": str(ood), "format": "lines"}
    raw["cross_task"] = {"enabled": True, "sentence_weight": 0.5, "token_ratio": 0.5, "ood_ratio": 0.2}
    config = tmp_path / "staged.yaml"
    config.write_text(yaml.safe_dump(raw))
    one, two = tmp_path / "one", tmp_path / "two"
    _run(_one_process(config, one))
    _run(_torchrun(config, two))

    train_1, train_2 = _records(one, "train"), _records(two, "train")
    assert [r["step"] for r in train_2] == list(range(1, 27))
    assert [(r["task"], r["samples"]) for r in train_2] == [(r["task"], r["samples"]) for r in train_1]
    sizes = [b["samples"] - a["samples"] for a, b in zip([{"samples": 0}, *train_2], train_2, strict=False)]
    assert 1 in sizes  # a batch of one example was trained on, split over two processes
    # The same global-batch gradient, summed in another order: each process pads its part to its own
    # longest sentence (other matmul shapes), sums its own losses, and DDP adds the two halves. Each of
    # these rounds at float32 epsilon (1.2e-7) and Adam carries the differences on; measured: at most
    # 2e-7 relative over these 26 steps. 1e-5 leaves room for other CPUs' kernels and still fails on
    # any real error (a part of the batch lost, counted twice or mis-scaled moves the loss by 1e-2).
    for a, b in zip(train_1, train_2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a["step"], a["loss"], b["loss"])
        assert b["log_vars"] == pytest.approx(a["log_vars"], rel=1e-5, abs=1e-7)
    # validation: argmax labels of logits that differ by ~1e-7 (no near-ties in these 24 + 40 examples)
    eval_1, eval_2 = _records(one, "eval"), _records(two, "eval")
    assert [r["step"] for r in eval_2] == [r["step"] for r in eval_1] == [5, 10, 14, 15, 20, 25, 26]
    for a, b in zip(eval_1, eval_2, strict=True):
        for task, metrics in a["metrics"].items():
            assert b["metrics"][task] == pytest.approx(metrics, abs=1e-9), (a["step"], task)
    res_1, res_2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert (res_2["steps"], res_2["best_step"]) == (res_1["steps"], res_1["best_step"])
    for task, metrics in res_1["test"].items():
        assert res_2["test"][task] == pytest.approx(metrics, abs=1e-9)
    assert res_2["loss_weights"] == pytest.approx(res_1["loss_weights"], rel=1e-5)

    # rank 0's errors stop every process with its message (here: a run is there, and no --resume)
    again = _torchrun(config, two)
    again.remove("--resume")
    with _started([again]) as (launcher,):
        output = launcher.communicate(timeout=TIMEOUT_S)[0].decode()
    assert launcher.returncode != 0
    assert output.count("a run is already there; pass --resume") == 2, output[-3000:]
    assert "Error: (rank 0) " in output

    # frozen parameters stayed bit-identical in the two-process run: stage b (frozen encoder, cached),
    # stage c (top 1 layer trains: embeddings and layer 0 frozen)
    ckpt = {s: _weights(two / "checkpoints" / f"step-{s:07d}") for s in (14, 20, 26)}
    encoder = [k for k in ckpt[14] if k.startswith("encoder.")]
    assert all(torch.equal(ckpt[14][k], ckpt[20][k]) for k in encoder)
    lower = [k for k in encoder if ".layer.1." not in k]
    assert lower and all(torch.equal(ckpt[20][k], ckpt[26][k]) for k in lower)
    assert not all(torch.equal(ckpt[20][k], ckpt[26][k]) for k in encoder if ".layer.1." in k)


@pytest.fixture(scope="module")
def killed_and_reference(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted two-process run (two torchrun agents, ``--nnodes 2``); the same run killed at
    rank 1, resumed, killed at rank 0 (a copy of it kept here), resumed to the end."""
    root = tmp_path_factory.mktemp("ddp-resume")
    raw = tiny_config(
        root / "runs",
        optim={"max_steps": 40, "batch_size": 19, "weight_decay": 0.05},
        loss_weighting={"method": "uncertainty"},
        eval={"every_steps": 8},
        checkpoint={"every_steps": 4, "keep_last": 2},
    )
    # augmentation draws from its own RNG and dropout from torch's: both must come back on resume
    raw["tasks"][0]["augment"] = [{"name": "word_swap", "prob": 0.5}]
    config = root / "kill.yaml"
    config.write_text(yaml.safe_dump(raw))

    reference = root / "reference"
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint]
    agent = [sys.executable, "-m", "torch.distributed.run", *rdzv, "--rdzv-id", "reference"]
    _run([*agent, *_train_args(config, reference)], [*agent, *_train_args(config, reference)])

    killed = root / "killed"
    _kill_rank_when(_torchrun(config, killed), 1, lambda: _latest_step(killed) >= 8)
    _kill_rank_when(_torchrun(config, killed), 0, lambda: _latest_step(killed) >= 20)
    at_20 = root / "killed-at-20"
    shutil.copytree(killed, at_20)
    _run(_torchrun(config, killed))
    return {"config": config, "reference": reference, "killed": killed, "at_20": at_20}


def _no_throughput(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


@pytest.mark.slow
def test_killed_ranks_resume_to_the_same_end(killed_and_reference) -> None:
    reference, killed = killed_and_reference["reference"], killed_and_reference["killed"]
    for part in ("best/model.safetensors", "checkpoints/step-0000040/model.safetensors", "test_metrics.json"):
        assert _sha256(killed / part) == _sha256(reference / part), part
    res_a, res_b = (json.loads((d / "results.json").read_text()) for d in (reference, killed))
    for key in ("steps", "best_step", "task_steps", "validation", "test", "loss_weights"):
        assert res_a[key] == res_b[key], key
    log_a, log_b = (
        [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (reference, killed)
    )
    assert _no_throughput(log_a) == _no_throughput(log_b)
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_one_process_resumes_a_two_process_run(killed_and_reference) -> None:
    config, reference, out = (killed_and_reference[k] for k in ("config", "reference", "at_20"))
    start = _latest_step(out)
    assert start >= 20
    _run(_one_process(config, out))
    res_1, res_2 = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert res_1["steps"] == 40 and (out / "checkpoints" / "step-0000040").is_dir()
    # the task sampler and the batch orders are global: one process continues the same sequence
    assert res_1["task_steps"] == res_2["task_steps"]
    train_1, train_2 = _records(out, "train"), _records(reference, "train")
    assert [(r["step"], r["task"], r["samples"]) for r in train_1] == [
        (r["step"], r["task"], r["samples"]) for r in train_2
    ]
    # up to the checkpoint it resumed from, the log is the two processes'
    assert _no_throughput([r for r in train_1 if r["step"] <= start]) == _no_throughput(
        [r for r in train_2 if r["step"] <= start]
    )
    assert json.loads((out / "test_metrics.json").read_text())["metrics"].keys() == {"ner"}


def test_the_torchrun_form_is_documented_and_python_m_mtst_train_is_mtst_train() -> None:
    from click.testing import CliRunner

    from mtst.cli import main

    text = CliRunner().invoke(main, ["--help"]).output
    assert "torchrun --nproc-per-node N -m mtst.train CONFIG [OPTIONS]" in text
    assert "optim.batch_size is the global batch of one step" in text
    done = subprocess.run(
        [sys.executable, "-m", "mtst.train", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: python -m mtst.train [OPTIONS] CONFIG")
    assert done.stdout.split("\n", 1)[1] == text.split("\n", 1)[1]  # the same command


def test_the_place_torchrun_gives(monkeypatch) -> None:
    from mtst.distributed import Distributed
    from mtst.errors import ConfigError

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = Distributed.from_env()
    assert (alone.rank, alone.world_size, alone.enabled, alone.main, alone.part) == (
        0,
        1,
        False,
        True,
        slice(0, None, 1),
    )
    assert alone.decide(lambda: {"a": 1}) == {"a": 1} and alone.sum([1, 2.5]) == [1.0, 2.5]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    second = Distributed.from_env()
    assert (second.enabled, second.main, second.part) == (True, False, slice(1, None, 2))
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match=r"RANK 2 is not in 0\.\.1 \(WORLD_SIZE 2\)"):
        Distributed.from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK / WORLD_SIZE / LOCAL_RANK: expected integers"):
        Distributed.from_env()


def test_compare_separate_refuses_several_processes(tmp_path) -> None:
    from click.testing import CliRunner

    from mtst.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("tasks: []\n")
    result = CliRunner().invoke(
        main, [str(config), "--compare-separate"], env={"WORLD_SIZE": "2", "RANK": "0"}
    )
    assert result.exit_code == 2
    assert "--compare-separate runs in one process; start it without torchrun" in result.output


def test_a_launch_without_torchrun_or_with_too_few_gpus_is_refused(monkeypatch) -> None:
    from mtst.distributed import Distributed, process_group
    from mtst.errors import ConfigError

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    expected = r"^WORLD_SIZE 2 but MASTER_ADDR and MASTER_PORT not set: start several processes with torchrun"
    with (
        pytest.raises(ConfigError, match=expected),
        process_group(Distributed(rank=1, world_size=2), torch.device("cpu")),
    ):
        pass
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    gpus = torch.cuda.device_count()  # 0 here without CUDA: the check needs no GPU to fail
    place = Distributed(rank=1, world_size=2, local_rank=gpus)
    expected = rf"^LOCAL_RANK {gpus}: this machine has {gpus} CUDA device\(s\) and each process needs its own"
    with pytest.raises(ConfigError, match=expected), process_group(place, torch.device("cuda")):
        pass
