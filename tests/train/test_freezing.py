"""Freezing policies: what trains, eval mode of frozen parts, bit-identical frozen weights after real
optimizer steps (AdamW with weight decay), and the encoder-output cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtst.alignment import IGNORE_INDEX, encode_sentence_batch, encode_token_batch
from mtst.config import FreezeConfig
from mtst.data import DataSource, load_examples
from mtst.errors import ConfigError
from mtst.freezing import (
    apply_freezing,
    build_cache,
    count_parameters,
    encoder_layers,
    plan_freezing,
    set_train_mode,
)
from mtst.train import train


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_policies_choose_the_trainable_parameters(tiny_model) -> None:
    names = [n for n, _ in tiny_model.named_parameters()]
    enc = {n for n in names if n.startswith("encoder.")}
    heads = {n for n in names if n.startswith("heads.")}

    full = plan_freezing(tiny_model, FreezeConfig(), tasks=["intent", "ner"])
    assert full.trainable == enc | heads and not full.encoder_frozen and full.eval_modules == ()

    frozen = plan_freezing(tiny_model, FreezeConfig(policy="frozen_encoder"), tasks=["intent", "ner"])
    assert frozen.trainable == heads and frozen.encoder_frozen and frozen.eval_modules == ("encoder",)

    top1 = plan_freezing(tiny_model, FreezeConfig(policy="top_k", top_k=1), tasks=["intent", "ner"])
    assert {n for n in top1.trainable if n.startswith("encoder.")} == {
        n for n in enc if n.startswith("encoder.encoder.layer.1.")
    }
    assert set(top1.eval_modules) == {"encoder.embeddings", "encoder.encoder.layer.0"}

    one_head = plan_freezing(tiny_model, FreezeConfig(frozen_heads=("intent",)), tasks=["intent", "ner"])
    assert one_head.trained_heads == ("ner",) and "heads.intent" in one_head.eval_modules
    not_in_stage = plan_freezing(tiny_model, FreezeConfig(policy="frozen_encoder"), tasks=["ner"])
    assert not_in_stage.trainable == {n for n in heads if n.startswith("heads.ner.")}

    total, trainable = count_parameters(tiny_model, frozen)
    assert total == sum(p.numel() for p in tiny_model.parameters())
    assert trainable == sum(p.numel() for n, p in tiny_model.named_parameters() if n.startswith("heads."))


def test_top_k_bounds_and_unknown_heads(tiny_model) -> None:
    with pytest.raises(ConfigError, match=r"freeze.top_k: 3 is more than the encoder's 2 layers"):
        plan_freezing(tiny_model, FreezeConfig(policy="top_k", top_k=3), tasks=["ner"])
    with pytest.raises(
        ConfigError, match=r"freeze: unknown task\(s\) \['pos'\]; the model has heads \['intent', 'ner'\]"
    ):
        plan_freezing(tiny_model, FreezeConfig(frozen_heads=("pos",)), tasks=["ner"])


def test_layer_list_is_found_generically() -> None:
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    bert = BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32),
        add_pooling_layer=False,
    )
    name, layers = encoder_layers(bert)
    assert name == "encoder.layer" and len(layers) == 3
    distil = DistilBertModel(DistilBertConfig(dim=16, n_layers=4, n_heads=2, hidden_dim=32))
    name, layers = encoder_layers(distil)
    assert name == "transformer.layer" and len(layers) == 4


def test_set_train_mode_keeps_frozen_modules_in_eval(tiny_model) -> None:
    plan = plan_freezing(
        tiny_model, FreezeConfig(policy="top_k", top_k=1, frozen_heads=("intent",)), tasks=["intent", "ner"]
    )
    apply_freezing(tiny_model, plan)
    set_train_mode(tiny_model, plan)
    assert not tiny_model.encoder.embeddings.training and not tiny_model.encoder.encoder.layer[0].training
    assert not any(m.training for m in tiny_model.encoder.encoder.layer[0].modules())
    assert tiny_model.encoder.encoder.layer[1].training and tiny_model.heads["ner"].training
    assert not tiny_model.heads["intent"].training
    assert all(p.requires_grad == (n in plan.trainable) for n, p in tiny_model.named_parameters())


@pytest.mark.parametrize(
    ("freeze", "frozen_prefixes", "trained_prefixes"),
    [
        ({"policy": "frozen_encoder"}, ["encoder."], ["heads.intent.", "heads.ner."]),
        (
            {"policy": "top_k", "top_k": 1},
            ["encoder.embeddings.", "encoder.encoder.layer.0."],
            ["encoder.encoder.layer.1.", "heads."],
        ),
        ({"policy": "full", "frozen_heads": ["intent"]}, ["heads.intent."], ["encoder.", "heads.ner."]),
    ],
)
def test_frozen_parts_stay_bit_identical_after_training(
    make_config, tmp_path, freeze, frozen_prefixes, trained_prefixes
) -> None:
    """Real AdamW steps with weight decay 0.1: frozen tensors must not move by a single bit."""
    from mtst.model import MultiTaskModel

    cfg = make_config(
        freeze=freeze, optim={"max_steps": 12, "weight_decay": 0.1}, checkpoint={"every_steps": 100}
    )
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    init = MultiTaskModel.from_pretrained(cfg.backbone)  # the pretrained encoder as it was
    trained = MultiTaskModel.from_pretrained(result.run_dir / "checkpoints" / "step-0000012")
    before, after = _snapshot(init.encoder), _snapshot(trained.encoder)
    changed = {f"encoder.{k}" for k in _changed(before, after)}
    for prefix in frozen_prefixes:
        if prefix.startswith("encoder."):
            keys = [f"encoder.{k}" for k in before if f"encoder.{k}".startswith(prefix)]
            assert keys and not (set(keys) & changed), prefix
    for prefix in trained_prefixes:
        if prefix.startswith("encoder."):
            assert any(k.startswith(prefix) for k in changed), prefix


def test_frozen_heads_stay_bit_identical_across_stages(make_config, tmp_path) -> None:
    """Staged: A alone; then B with the encoder and A's head frozen; then the top layer unfrozen for B."""
    from safetensors.torch import load_file

    cfg = make_config(
        optim={"max_steps": None, "weight_decay": 0.1},
        checkpoint={"every_steps": 100, "keep_last": 5},
        stages=[
            {"name": "a", "tasks": ["intent"], "max_steps": 6},
            {"name": "b", "tasks": ["ner"], "freeze": {"policy": "frozen_encoder"}, "max_steps": 6},
            {
                "name": "c",
                "tasks": ["ner"],
                "freeze": {"policy": "top_k", "top_k": 1},
                "max_steps": 6,
                "encoder_lr": 1e-4,
            },
        ],
    )
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.steps == 18 and result.task_steps == {"intent": 6, "ner": 12}
    ck = tmp_path / "run" / "checkpoints"
    after_a, after_b, after_c = (
        load_file(str(ck / f"step-{s:07d}" / "model.safetensors")) for s in (6, 12, 18)
    )
    enc = [k for k in after_a if k.startswith("encoder.")]
    intent = [k for k in after_a if k.startswith("heads.intent.")]
    ner = [k for k in after_a if k.startswith("heads.ner.")]
    # stage b: the encoder and A's head do not move; B's head does
    assert all(torch.equal(after_a[k], after_b[k]) for k in enc + intent)
    assert not all(torch.equal(after_a[k], after_b[k]) for k in ner)
    # stage c: A's head still frozen (not in the stage), lower layer + embeddings frozen, top layer trains
    assert all(torch.equal(after_b[k], after_c[k]) for k in intent)
    lower = [k for k in enc if not k.startswith("encoder.encoder.layer.1.")]
    assert all(torch.equal(after_b[k], after_c[k]) for k in lower)
    assert not all(
        torch.equal(after_b[k], after_c[k]) for k in enc if k.startswith("encoder.encoder.layer.1.")
    )
    records = [r for r in _records(tmp_path / "run") if r["type"] == "train"]
    assert {r["stage"] for r in records} == {"a", "b", "c"}


def _records(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_frozen_head_with_frozen_encoder_is_refused(make_config, tmp_path) -> None:
    cfg = make_config(
        optim={"max_steps": None},
        stages=[
            {"name": "a", "tasks": ["intent", "ner"], "max_steps": 2},
            {
                "name": "b",
                "tasks": ["intent", "ner"],
                "freeze": {"policy": "frozen_encoder", "frozen_heads": ["intent"]},
                "max_steps": 2,
            },
        ],
    )
    with pytest.raises(
        ConfigError, match=r"stages.b: task 'intent' has a frozen head and the encoder is frozen"
    ):
        train(cfg, run_dir=tmp_path / "run", progress=False)


def test_cached_features_give_the_same_logits_as_the_encoder(tiny_model, tiny_data) -> None:
    from mtst.tasks import TaskKind

    tiny_model.eval()
    intents = load_examples(DataSource("intent.csv"), TaskKind.SENTENCE, data_root=tiny_data)[:40]
    l2i = {lab: i for i, lab in enumerate(tiny_model.tasks["intent"].labels)}
    cache = build_cache(tiny_model, "intent", intents, l2i, batch_size=7)
    idx = np.array([3, 0, 17, 39, 8])
    feats, labels = cache.batch(idx)
    enc = encode_sentence_batch(tiny_model.tokenizer, [intents[i].text for i in idx], max_seq_len=64)
    with torch.no_grad():
        direct = tiny_model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits["intent"]
        cached = tiny_model.heads["intent"](feats)
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-5)
    assert labels.tolist() == [l2i[intents[i].label] for i in idx]

    sents = load_examples(DataSource("ner_train.txt"), TaskKind.TOKEN, data_root=tiny_data)[:30]
    t2i = {lab: i for i, lab in enumerate(tiny_model.tasks["ner"].labels)}
    cache = build_cache(tiny_model, "ner", sents, t2i, batch_size=4)
    idx = np.array([5, 1, 29])
    feats, labels = cache.batch(idx)
    enc, lab, _ = encode_token_batch(tiny_model.tokenizer, [sents[i] for i in idx], t2i, max_seq_len=64)
    with torch.no_grad():
        direct = tiny_model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits["ner"]  # (B, T, L)
        cached = tiny_model.heads["ner"](feats)  # (M, L)
    keep = torch.from_numpy(lab) != IGNORE_INDEX
    torch.testing.assert_close(cached, direct[keep], atol=1e-5, rtol=1e-5)
    assert labels.tolist() == torch.from_numpy(lab)[keep].tolist()
    assert cache.features.shape[0] == sum(len(s.tokens) for s in sents)  # one state per word here


def test_frozen_encoder_training_uses_the_cache(make_config, config_dict, tmp_path, caplog) -> None:
    import logging

    tasks = config_dict()["tasks"]
    for t in tasks:  # without head dropout both paths make the same updates up to float rounding
        t["head"] = {"dropout": 0.0}
    # cross-task losses need encoder outputs a cache does not hold (token states of sentence batches,
    # embeddings of token batches): cached and uncached runs match only without them
    off = {"enabled": False}
    cfg = make_config(
        tasks=tasks,
        freeze={"policy": "frozen_encoder"},
        optim={"max_steps": 10, "head_lr": 2e-2},
        cross_task=off,
    )
    with caplog.at_level(logging.INFO, logger="mtst.train"):
        cached = train(cfg, run_dir=tmp_path / "cached", progress=False)
    assert "encoder frozen: cached encoder outputs of ['intent', 'ner']" in caplog.text
    caplog.clear()
    uncached_cfg = make_config(
        tasks=tasks,
        freeze={"policy": "frozen_encoder", "cache": False},
        optim={"max_steps": 10, "head_lr": 2e-2},
        cross_task=off,
    )
    with caplog.at_level(logging.INFO, logger="mtst.train"):
        uncached = train(uncached_cfg, run_dir=tmp_path / "uncached", progress=False)
    assert "cached encoder outputs" not in caplog.text
    # Same batches, same head updates: only float rounding of padded vs. unpadded batches differs.
    from safetensors.torch import load_file

    a = load_file(str(cached.best_checkpoint / "model.safetensors"))
    b = load_file(str(uncached.best_checkpoint / "model.safetensors"))
    assert cached.best_step == uncached.best_step
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    for task, metrics in cached.validation.items():
        assert metrics == pytest.approx(uncached.validation[task])
    # the validation metrics (encoder outputs remembered across evaluations) equal a plain evaluation
    from mtst.data import load_task_data
    from mtst.evaluation import evaluate_task, torch_logits_fn
    from mtst.model import MultiTaskModel

    best = MultiTaskModel.from_pretrained(cached.best_checkpoint)
    data = load_task_data(cfg)
    for task, d in data.items():
        plain = evaluate_task(
            torch_logits_fn(best, task), best.tokenizer, d.spec, d.validation, max_seq_len=64
        )
        assert plain.metrics == pytest.approx(cached.validation[task])
