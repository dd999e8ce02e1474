"""The training loop end to end on the tiny BERT and small real files."""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from mtst.config import FreezeConfig, Schedule, config_from_dict
from mtst.errors import ConfigError, DataError
from mtst.freezing import plan_freezing
from mtst.loss_weighting import StaticLossWeighting
from mtst.train import build_optimizer, lr_factor, train


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_trains_logs_checkpoints_and_scores_test_once(make_config, tmp_path, caplog) -> None:
    cfg = make_config(optim={"max_steps": 30})
    with caplog.at_level(logging.INFO, logger="mtst.train"):
        result = train(cfg, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.steps == 30 and sum(result.task_steps.values()) == 30

    records = _records(run)
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_records] == [5, 10, 15, 20, 25, 30]
    for r in train_records:
        assert {"step", "task", "loss", "lr", "samples_per_s", "epoch", "task_loss"} <= set(r)
    assert train_records[-1]["loss"] < train_records[0]["loss"]  # it learns
    evals = [r for r in records if r["type"] == "eval"]
    # every 10 steps, plus the epoch end (6 intent + 10 ner batches = 16 steps per epoch)
    assert [r["step"] for r in evals] == [10, 16, 20, 30]
    assert all(r["split"] == "validation" and set(r["metrics"]) == {"intent", "ner"} for r in evals)
    line = re.compile(
        r"step 5 \| loss \d+\.\d{3} \| lr \d\.\de-\d\d \| \d+ samples/s \| intent \d\.\d{3} ner \d\.\d{3}"
    )
    assert line.search(caplog.text), caplog.text

    # checkpoints: the last K, latest.json pointing at the newest, training state beside the model
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert steps == ["step-0000025", "step-0000030"]
    assert json.loads((run / "latest.json").read_text()) == {
        "step": 30,
        "checkpoint": "checkpoints/step-0000030",
    }
    state_dir = run / "checkpoints" / "step-0000025" / "training_state"
    assert sorted(p.name for p in state_dir.iterdir()) == ["state.json", "tensors.safetensors"]
    state = json.loads((state_dir / "state.json").read_text())
    assert state["loop"]["step"] == 25 and state["scheduler"]["stage_step"] == 25
    assert state["scheduler"]["total"] == 30 and state["scheduler"]["warmup"] == 2
    assert {"optimizer", "sampler", "batchers", "augment_rng", "rng", "log_window"} <= set(state)
    from safetensors.torch import load_file

    tensors = load_file(str(state_dir / "tensors.safetensors"))
    assert tensors["rng.torch"].dtype == torch.uint8 and any(k.endswith(".exp_avg_sq") for k in tensors)
    meta = json.loads((run / "checkpoints" / "step-0000025" / "mtst.json").read_text())
    assert meta["step"] == 25 and meta["run_id"] == "tiny" and meta["data_root"] == cfg.data_root
    assert config_from_dict(meta["config"]) == cfg  # the resolved config travels with every checkpoint
    assert config_from_dict(yaml.safe_load((run / "config.resolved.yaml").read_text())) == cfg
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl")) and not list(run.rglob("*.bin"))

    # the best model is the one with the best validation score, and test is scored on it, once
    best_eval = max(evals, key=lambda r: r["selection"]["score"])
    assert result.best_step == best_eval["step"]
    best_meta = json.loads((run / "best" / "mtst.json").read_text())
    assert (
        best_meta["step"] == result.best_step and best_meta["metrics"]["validation"] == best_eval["metrics"]
    )
    assert result.validation == best_eval["metrics"]
    test = json.loads((run / "test_metrics.json").read_text())
    assert (
        set(test["metrics"]) == {"ner"} and test["best_step"] == result.best_step
    )  # intent has no test file
    assert result.test == test["metrics"]
    assert not any(r.get("split") == "test" for r in records)  # test never feeds model selection


def test_a_finished_run_is_not_overwritten(make_config, tmp_path) -> None:
    cfg = make_config(optim={"max_steps": 2})
    train(cfg, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(
        ConfigError, match=r"run: a run is already there; pass --resume to continue it or --output DIR"
    ):
        train(cfg, run_dir=tmp_path / "run", progress=False)
    again = train(
        cfg, run_dir=tmp_path / "run", resume=True, progress=False
    )  # resuming a finished run is a no-op
    assert again.steps == 2


def test_early_stopping_stops_after_patience(make_config, tmp_path) -> None:
    # an lr this small cannot change the argmax: the score never improves after the first evaluation
    cfg = make_config(
        optim={"max_steps": 40, "encoder_lr": 0.0, "head_lr": 1e-12, "weight_decay": 0.0},
        eval={"every_steps": 2, "patience": 2, "at_epoch_end": False},
    )
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.stopped_early and result.steps == 6 and result.best_step == 2
    evals = [r for r in _records(tmp_path / "run") if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]


def test_selection_on_one_task_metric(make_config, tmp_path) -> None:
    result = train(make_config(eval={"metric": "ner.f1"}), run_dir=tmp_path / "run", progress=False)
    evals = [r for r in _records(tmp_path / "run") if r["type"] == "eval"]
    assert all(
        r["selection"]["metric"] == "ner.f1" and r["selection"]["score"] == r["metrics"]["ner"]["f1"]
        for r in evals
    )
    assert result.validation["ner"]["f1"] == max(r["metrics"]["ner"]["f1"] for r in evals)


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ({"strategy": "round_robin"}, {"intent": 10, "ner": 10}),
        ({"strategy": "weights", "weights": {"intent": 0, "ner": 1}}, {"intent": 0, "ner": 20}),
    ],
)
def test_sampling_strategy_drives_the_loop(make_config, tmp_path, sampling, expected) -> None:
    result = train(make_config(sampling=sampling), run_dir=tmp_path / "run", progress=False)
    assert result.task_steps == expected


def test_uncertainty_weights_are_learned_saved_and_reported(make_config, tmp_path) -> None:
    from safetensors.torch import load_file

    cfg = make_config(loss_weighting={"method": "uncertainty"}, optim={"max_steps": 20, "head_lr": 5e-2})
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    last = [r for r in _records(tmp_path / "run") if r["type"] == "train"][-1]
    assert set(last["log_vars"]) == {"intent", "ner"} and all(v != 0.0 for v in last["log_vars"].values())
    assert last["loss_weights"] == pytest.approx({t: math.exp(-s) for t, s in last["log_vars"].items()})
    tensors = load_file(
        str(tmp_path / "run" / "checkpoints" / "step-0000020" / "training_state" / "tensors.safetensors")
    )
    assert float(tensors["loss_weighting.log_vars.ner"]) == pytest.approx(last["log_vars"]["ner"])
    assert result.loss_weights == pytest.approx(last["loss_weights"])


def test_augmentation_is_applied_seeded_and_turns_the_cache_off(
    make_config, config_dict, tmp_path, caplog
) -> None:
    from safetensors.torch import load_file

    tasks = config_dict()["tasks"]
    tasks[0]["augment"] = [{"name": "token_dropout", "prob": 1.0, "options": {"p": 0.3}}]
    tasks[1]["augment"] = [{"name": "mention_replacement", "prob": 1.0, "options": {"p": 1.0}}]
    cfg = make_config(tasks=tasks, freeze={"policy": "frozen_encoder"}, optim={"max_steps": 8})
    plain = make_config(freeze={"policy": "frozen_encoder"}, optim={"max_steps": 8})
    with caplog.at_level(logging.INFO, logger="mtst.train"):
        a = train(cfg, run_dir=tmp_path / "a", progress=False)
    assert "cached encoder outputs" not in caplog.text  # augmented inputs change encoder outputs
    b = train(cfg, run_dir=tmp_path / "b", progress=False)
    c = train(plain, run_dir=tmp_path / "c", progress=False)
    wa, wb, wc = (
        load_file(str(r.run_dir / "checkpoints" / "step-0000008" / "model.safetensors")) for r in (a, b, c)
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # seeded: the same augmented batches
    assert not all(
        torch.equal(wa[k], wc[k]) for k in wa if k.startswith("heads.")
    )  # and they differ from the plain ones


def test_data_errors_name_the_file(make_config, config_dict, tmp_path, tiny_data) -> None:
    tasks = config_dict()["tasks"]
    tasks[0]["train"] = "no_such.csv"
    with pytest.raises(DataError, match=r"data file 'no_such.csv' not found: looked for .*no_such.csv"):
        train(make_config(tasks=tasks), run_dir=tmp_path / "a", progress=False)
    bad = tmp_path / "valid_with_new_tag.txt"
    bad.write_text("Anna B-PER\nworks O\nat O\nACME B-ORG\n")
    tasks = config_dict()["tasks"]
    tasks[1]["validation"] = str(bad)
    with pytest.raises(
        DataError,
        match=r"valid_with_new_tag.txt:1: label 'B-ORG' in the validation data of task 'ner' is not in the training label set",
    ):
        train(make_config(tasks=tasks), run_dir=tmp_path / "b", progress=False)


def test_device_cuda_without_cuda_is_a_clear_error(make_config, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"device 'cuda': CUDA is not available here"):
        train(make_config(), run_dir=tmp_path / "run", device="cuda", progress=False)


def test_lr_schedule() -> None:
    lin = [lr_factor(s, total=10, warmup=2, schedule=Schedule.LINEAR) for s in range(10)]
    assert lin[:2] == [0.5, 1.0] and lin[2] == 1.0 and lin[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in itertools.pairwise(lin[1:]))
    cos = [lr_factor(s, total=10, warmup=0, schedule=Schedule.COSINE, min_ratio=0.1) for s in range(10)]
    assert cos[0] == 1.0 and cos[-1] > 0.1 and all(a > b for a, b in itertools.pairwise(cos))
    assert lr_factor(5, total=10, warmup=0, schedule=Schedule.CONSTANT) == 1.0


def test_optimizer_groups_give_heads_their_lr_and_skip_decay_on_biases_and_norms(tiny_model) -> None:
    plan = plan_freezing(tiny_model, FreezeConfig(), tasks=["intent", "ner"])
    opt = build_optimizer(
        tiny_model, StaticLossWeighting({"intent": 1, "ner": 1}), plan,
        encoder_lr=1e-5, head_lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8,
    )  # fmt: skip
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"encoder", "encoder_no_decay", "heads", "heads_no_decay"}
    assert groups["encoder"]["lr"] == 1e-5 and groups["heads"]["lr"] == 1e-3
    no_decay = {names[id(p)] for g in ("encoder_no_decay", "heads_no_decay") for p in groups[g]["params"]}
    assert "encoder.encoder.layer.0.attention.output.LayerNorm.weight" in no_decay
    assert "encoder.encoder.layer.0.attention.self.query.bias" in no_decay
    assert "heads.intent.scale" in no_decay
    assert "encoder.encoder.layer.0.attention.self.query.weight" not in no_decay
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.01
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(tiny_model.parameters()))
