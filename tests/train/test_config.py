from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtst.config import (
    FreezePolicy,
    SamplingStrategy,
    Schedule,
    apply_overrides,
    config_from_dict,
    load_config,
)
from mtst.data import DataSource
from mtst.errors import ConfigError
from mtst.tasks import TaskKind

REPO = Path(__file__).resolve().parents[2]

MINIMAL = {
    "tasks": [
        {
            "name": "intent",
            "kind": "sentence_classification",
            "train": {"path": "b/train.csv", "label_column": "category"},
        },
        {"name": "ner", "kind": "token_classification", "train": "c/train.txt", "validation": "c/valid.txt"},
    ]
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_and_toml_give_the_same_config(tmp_path: Path) -> None:
    y = _write(tmp_path / "run.yaml", {**MINIMAL, "optim": {"head_lr": 3e-3, "betas": [0.9, 0.98]}})
    toml = tmp_path / "run.toml"
    toml.write_text(
        "[optim]\nhead_lr = 3e-3\nbetas = [0.9, 0.98]\n\n"
        "[[tasks]]\nname = 'intent'\nkind = 'sentence_classification'\n"
        "train = {path = 'b/train.csv', label_column = 'category'}\n\n"
        "[[tasks]]\nname = 'ner'\nkind = 'token_classification'\ntrain = 'c/train.txt'\nvalidation = 'c/valid.txt'\n"
    )
    a, b = load_config(y), load_config(toml)
    assert a == b and a.run_id == "run"
    assert a.optim.head_lr == 3e-3 and a.optim.betas == (0.9, 0.98)
    assert a.tasks[0].kind is TaskKind.SENTENCE and a.tasks[0].train == DataSource(
        "b/train.csv", label_column="category"
    )
    assert a.tasks[1].validation == DataSource("c/valid.txt")


def test_defaults_give_heads_a_higher_lr_and_one_stage() -> None:
    cfg = config_from_dict(MINIMAL)
    assert (
        cfg.optim.head_lr >= 10 * cfg.optim.encoder_lr
    )  # DESIGN.md trap: a head at the encoder's lr under-trains
    (stage,) = cfg.effective_stages()
    assert stage.tasks == ("intent", "ner") and stage.freeze.policy is FreezePolicy.FULL
    assert cfg.sampling.strategy is SamplingStrategy.PROPORTIONAL and cfg.optim.schedule is Schedule.LINEAR


def test_yaml_1_1_exponent_strings_are_read_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "optim:\n  encoder_lr: 5e-5\n")
    assert yaml.safe_load(path.read_text())["optim"]["encoder_lr"] == "5e-5"  # PyYAML's reading
    assert load_config(path).optim.encoder_lr == 5e-5


def test_to_dict_round_trips() -> None:
    cfg = config_from_dict(
        {
            **MINIMAL,
            "sampling": {"strategy": "weights", "weights": {"intent": 1, "ner": 3}},
            "stages": [
                {"name": "a", "tasks": ["intent"]},
                {"name": "b", "tasks": ["ner"], "freeze": {"policy": "frozen_encoder"}, "max_steps": 5},
            ],
            "loss_weighting": {"method": "uncertainty"},
        }
    )
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()  # plain values only


def test_overrides_are_type_checked_and_address_tasks_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.yaml", MINIMAL)
    cfg = load_config(
        path,
        overrides=[
            "optim.head_lr=3e-3",
            "tasks.ner.loss_weight=2",
            "tasks.intent.train.limit=50",
            "freeze.policy=top_k",
            "freeze.top_k=2",
            "eval.metric=ner.f1",
        ],
        data_root=tmp_path,
        max_steps=7,
    )
    assert cfg.optim.head_lr == 3e-3 and cfg.task("ner").loss_weight == 2.0
    assert cfg.task("intent").train.limit == 50 and cfg.task("intent").train.label_column == "category"
    assert cfg.freeze.top_k == 2 and cfg.optim.max_steps == 7 and cfg.data_root == str(tmp_path)
    with pytest.raises(ConfigError, match=r"r.yaml: optim.head_lr: expected a number, got 'fast'"):
        load_config(path, overrides=["optim.head_lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lr'; allowed keys in optim: \['batch_size', "):
        load_config(path, overrides=["optim.lr=1e-3"])
    with pytest.raises(ConfigError, match=r"no entry named 'sst2' in tasks \(have \['intent', 'ner'\]\)"):
        load_config(path, overrides=["tasks.sst2.loss_weight=2"])
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        load_config(path, overrides=["optim.head_lr"])
    with pytest.raises(ConfigError, match=r"optim.batch_size: expected an integer, got 'x'"):
        load_config(path, overrides=["optim.batch_size=x"])
    with pytest.raises(
        ConfigError, match=r"unknown key 'tasks.ner.train.colour'; allowed keys in tasks.ner.train: \["
    ):
        load_config(path, overrides=["tasks.ner.train.colour=red"])


def test_apply_overrides_does_not_touch_the_input() -> None:
    raw = {"tasks": [dict(t) for t in MINIMAL["tasks"]]}
    out = apply_overrides(raw, ["tasks.intent.loss_weight=0.5", "sampling.weights.ner=2"])
    assert "loss_weight" not in raw["tasks"][0] and out["tasks"][0]["loss_weight"] == 0.5
    assert out["sampling"] == {"weights": {"ner": 2}}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"optimizer": {}}, r"unknown key 'optimizer'; allowed keys: \['amp', 'backbone', "),
        ({"optim": {"head_lr": -1}}, r"optim.head_lr: expected a number > 0, got -1.0"),
        ({"optim": {"batch_size": 0}}, r"optim.batch_size: expected an integer >= 1, got 0"),
        (
            {"optim": {"schedule": "step"}},
            r"optim.schedule: 'step' is not one of \['linear', 'cosine', 'constant'\]",
        ),
        (
            {"sampling": {"strategy": "weights"}},
            r"sampling.weights: strategy 'weights' needs a weight per task",
        ),
        (
            {"sampling": {"strategy": "weights", "weights": {"pos": 1}}},
            r"sampling.weights: unknown task\(s\) \['pos'\]",
        ),
        ({"sampling": {"temperature": 0}}, r"sampling.temperature: expected a number > 0, got 0.0"),
        ({"freeze": {"policy": "top_k"}}, r"freeze.top_k: policy 'top_k' needs top_k >= 1, got 0"),
        ({"freeze": {"frozen_heads": ["pos"]}}, r"freeze.frozen_heads: unknown task\(s\) \['pos'\]"),
        ({"eval": {"metric": "pos.f1"}}, r"eval.metric: unknown task\(s\) \['pos'\]"),
        ({"eval": {"metric": "best"}}, r"eval.metric: expected 'mean' or '<task>.<metric>'"),
        ({"pooling": "sum"}, r"pooling: 'sum' is not one of \['mean', 'cls', 'max'\]"),
        ({"device": "tpu"}, r"device: 'tpu' is not one of"),
        (
            {"stages": [{"name": "a", "tasks": ["intent"]}]},
            r"stages: task\(s\) \['ner'\] are trained in no stage",
        ),
        ({"stages": [{"name": "a", "tasks": ["intent", "x"]}]}, r"stages.a.tasks: unknown task\(s\) \['x'\]"),
        ({"tasks": []}, r"tasks: at least one task is needed"),
    ],
)
def test_bad_values_name_the_field(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**MINIMAL, **patch})


def test_bad_task_entries_name_the_task() -> None:
    task = {"name": "intent", "kind": "sentence_classification", "train": "b/train.csv"}
    with pytest.raises(
        ConfigError, match=r"unknown key 'tasks.intent.labels'; allowed keys in tasks.intent: \["
    ):
        config_from_dict({"tasks": [{**task, "labels": ["a"]}]})
    with pytest.raises(ConfigError, match=r"tasks.intent.kind: 'regression' is not one of"):
        config_from_dict({"tasks": [{**task, "kind": "regression"}]})
    with pytest.raises(ConfigError, match=r"tasks.intent.train: missing \(required\)"):
        config_from_dict({"tasks": [{"name": "intent", "kind": "sentence_classification"}]})
    with pytest.raises(
        ConfigError,
        match=r"tasks.intent.validation_fraction: without a validation file it must be in \(0, 0.5\]",
    ):
        config_from_dict({"tasks": [{**task, "validation_fraction": 0}]})
    with pytest.raises(ConfigError, match=r"tasks: name 'embedding' is reserved"):
        config_from_dict({"tasks": [{**task, "name": "embedding"}]})
    with pytest.raises(
        ConfigError, match=r"augment: 'back_translation' is not one of \['mention_replacement', "
    ):
        config_from_dict({"tasks": [{**task, "augment": [{"name": "back_translation"}]}]})
    with pytest.raises(
        ConfigError, match=r"augment.token_dropout.options: unknown option\(s\) \['q'\]; it takes \['p'\]"
    ):
        config_from_dict({"tasks": [{**task, "augment": [{"name": "token_dropout", "options": {"q": 1}}]}]})
    with pytest.raises(ConfigError, match=r"tasks: duplicate task names \['intent'\]"):
        config_from_dict({"tasks": [task, task]})
    with pytest.raises(
        ConfigError, match=r"tasks.intent.train: data source .*unknown field\(s\) \['column'\]"
    ):
        config_from_dict({"tasks": [{**task, "train": {"path": "x.csv", "column": 1}}]})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("tasks: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"empty.yaml: the config file is empty"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"run.json: unknown config format '.json'"):
        load_config(tmp_path / "run.json")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping at the top level, got list"):
        load_config(tmp_path / "list.yaml")


# the run configs of mtst-train (configs/experiment*.yaml are mtst-experiment's, another schema)
@pytest.mark.parametrize(
    "name", ["multitask.yaml", "imbalance.yaml", "frozen-heads.yaml", "staged.yaml", "tiny.yaml"]
)
def test_shipped_configs_load_and_name_existing_files(name: str, data_root: Path) -> None:
    cfg = load_config(REPO / "configs" / name, data_root=data_root)
    for task in cfg.tasks:
        for source in (task.train, task.validation, task.test):
            if source is not None:
                assert source.resolve_path(cfg.resolved_data_root()).is_file(), (name, source.path)
