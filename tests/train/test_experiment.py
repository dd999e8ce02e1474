"""mtst-experiment: config checks (fast) and the committed experiment on a tiny slice of the real data.

The slow module fixture runs ``configs/experiment-tiny.yaml`` (every variant of ``configs/experiment.yaml``
on a few dozen examples per task, 6 steps a run, the tiny random BERT) once through the CLI; the
tests read what it left behind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mtst.errors import ConfigError
from mtst.experiment import VariantKind, load_experiment, plan_models
from mtst.experiment.cli import main

REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "configs" / "experiment.yaml"
TINY = REPO / "configs" / "experiment-tiny.yaml"
GRAPHS = {"fp32": "model.onnx", "int8-static-cpu": "model.int8-static-cpu.onnx", "fp16": "model.fp16.onnx"}


# ---------------------------------------------------------------------------------------------- config
def _write(tmp_path: Path, data: dict[str, Any], name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def exp_dict(config_dict) -> Any:
    """A small experiment on the tiny training fixtures (tests/train/conftest.py)."""

    def make(**over: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": "small",
            "base": config_dict(optim={"max_steps": 4}, eval={"every_steps": 2}),
            "precisions": ["fp32", "int8"],
            "latency": {"sentences": 4, "warmup": 1},
            "export": {"parity_check": False, "eval_limit": 20, "max_metric_drop": 0.9},
            "variants": [
                {"name": "mt", "set": {"sampling.strategy": "round_robin"}},
                {"name": "sep", "kind": "separate", "budget_from": "mt"},
                {"name": "frozen", "set": {"freeze.policy": "frozen_encoder", "optim.head_lr": 1e-2}},
            ],
        }
        data.update(over)
        return data

    return make


def test_the_committed_configs_load_and_plan() -> None:
    exp = load_experiment(REAL)
    names = [v.name for v in exp.variants]
    assert names[:2] == ["separate", "mt-proportional"] and "staged" in names and "mt-frozen" in names
    assert exp.precisions == ("fp32", "int8-static-cpu", "fp16")
    staged = plan_models(exp, exp.variant("staged"))
    assert [t.name for t in staged[0].config.tasks] == ["intent", "ner"] and len(staged[0].config.stages) == 2
    imb = plan_models(exp, exp.variant("imb-temperature"))[0].config
    assert imb.task("ner").train.limit == 5000 and imb.sampling.temperature == 3.0
    # a separate variant is one model per task with the budget's steps
    sep = plan_models(exp, exp.variant("separate"), budget={"intent": 7, "ner": 9, "sentiment": 11})
    assert [(p.name, p.config.optim.max_steps) for p in sep] == [("intent", 7), ("ner", 9), ("sentiment", 11)]
    # the training configs carry no test split; the plans keep it for the final evaluation
    for plan in sep:
        assert all(t.test is not None for t in plan.config.tasks)
        assert all(t.test is None for t in plan.train_config.tasks)
    tiny = load_experiment(TINY, overrides=["backbone=/somewhere"])
    assert [v.name for v in tiny.variants] == names  # extends: the same variants, tiny data
    assert tiny.base["backbone"] == "/somewhere" and tiny.max_steps == 6
    frozen = plan_models(tiny, tiny.variant("mt-frozen"))[0].config
    assert frozen.optim.max_steps == 6 and frozen.task("intent").train.limit == 1000
    assert all(s.max_steps == 6 for s in plan_models(tiny, tiny.variant("staged"))[0].config.stages)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"exp.yaml: unknown key 'colour'; allowed keys: \['base', 'export'"),
        ({"variants": []}, "variants: expected a non-empty list of variants"),
        ({"precisions": ["int4"]}, r"precisions\[0\]: 'int4' is not one of"),
        ({"precisions": ["int8"]}, "fp32 is the reference every other precision is read against"),
        ({"max_steps": 0}, "max_steps: expected an integer >= 1 or null, got 0"),
        ({"latency": {"sentences": 0}}, r"latency.sentences: expected a int >= 1, got 0"),
        (
            {"export": {"max_metric_drop": 1.5}},
            r"export.max_metric_drop: expected a value in \[0, 1\), got 1.5",
        ),
        ({"base": 3}, "base: expected a run config"),
    ],
)
def test_bad_experiment_configs_name_the_key(exp_dict, tmp_path, change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, exp_dict(**change)))


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"name": "Bad Name"}, r"variants.Bad Name: name 'Bad Name': expected lower-case letters"),
        (
            {"name": "x", "kind": "ensemble"},
            r"variants.x.kind: 'ensemble' is not one of \['multitask', 'separate'\]",
        ),
        (
            {"name": "x", "tasks": ["pos"]},
            r"variants.x.tasks: unknown task\(s\) \['pos'\]; the base has \['intent', 'ner'\]",
        ),
        (
            {"name": "x", "kind": "separate"},
            "variants.x.budget_from: a separate variant needs the multitask variant",
        ),
        (
            {"name": "x", "kind": "separate", "budget_from": "nope"},
            r"variants.x.budget_from: 'nope' is not a multitask variant",
        ),
        ({"name": "x", "budget_from": "mt"}, "variants.x.budget_from: only used by kind 'separate'"),
        (
            {"name": "x", "set": {"optim.lr": 1}},
            r"variants.x.set: --set 'optim.lr=1': unknown key 'optim.lr'",
        ),
        (
            {"name": "x", "set": {"optim.batch_size": "big"}},
            r"variants.x.set: .*optim.batch_size: expected an integer, got 'big'",
        ),
        ({"name": "x", "colour": 1}, r"variants.x: unknown key 'colour'"),
        ({"name": "mt"}, r"variants: duplicate names \['mt'\]"),
    ],
)
def test_bad_variants_name_the_variant(exp_dict, tmp_path, variant, message) -> None:
    data = exp_dict()
    data["variants"].append(variant)
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, data))


def test_a_separate_variant_with_stages_is_refused(exp_dict, tmp_path) -> None:
    data = exp_dict()
    data["variants"][1]["set"] = {
        "stages": [{"name": "a", "tasks": ["intent"]}, {"name": "b", "tasks": ["ner"]}]
    }
    with pytest.raises(ConfigError, match=r"variants\.sep: a separate variant cannot have stages"):
        load_experiment(_write(tmp_path, data))


def test_extends_appends_set_and_replaces_the_rest(exp_dict, tmp_path) -> None:
    parent = exp_dict(set=["optim.batch_size=4"])
    _write(tmp_path, parent, "parent.yaml")
    child = _write(
        tmp_path, {"extends": "parent.yaml", "name": "child", "set": ["seed=9"], "max_steps": 2}, "child.yaml"
    )
    exp = load_experiment(child, overrides=["log_every=1"])
    assert (
        exp.name == "child"
        and exp.max_steps == 2
        and [v.name for v in exp.variants] == ["mt", "sep", "frozen"]
    )
    assert exp.base["optim"]["batch_size"] == 4 and exp.base["seed"] == 9 and exp.base["log_every"] == 1
    _write(tmp_path, {"extends": "loop.yaml"}, "loop.yaml")
    with pytest.raises(ConfigError, match="extends itself"):
        load_experiment(tmp_path / "loop.yaml")


def test_cli_errors_are_one_line(exp_dict, tmp_path) -> None:
    path = _write(tmp_path, exp_dict())
    runner = CliRunner()
    unknown = runner.invoke(
        main, [str(path), "--only", "mt,nope", "--output", str(tmp_path / "o"), "--quiet"]
    )
    assert (
        unknown.exit_code == 1
        and r"--only: unknown variant(s) ['nope']; the experiment has ['mt', 'sep', 'frozen']"
        in unknown.output
    )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("x")
    busy = runner.invoke(main, [str(path), "--output", str(tmp_path / "busy"), "--quiet"])
    assert (
        busy.exit_code == 1 and "an experiment is already there; pass --resume to continue it" in busy.output
    )
    alien = runner.invoke(main, [str(path), "--output", str(tmp_path / "busy"), "--resume", "--quiet"])
    assert alien.exit_code == 1 and "not an experiment directory (experiment.json is missing)" in alien.output
    no_ref = runner.invoke(main, [str(path), "--only", "sep", "--output", str(tmp_path / "o2"), "--quiet"])
    assert (
        no_ref.exit_code == 1
        and "matches the per-task steps of 'mt', which has not finished training" in no_ref.output
    )


def test_forgetting_reads_the_stage_end_evaluation(tmp_path) -> None:
    from mtst.config import config_from_dict
    from mtst.experiment.run import _forgetting

    cfg = config_from_dict(
        {
            "tasks": [
                {"name": "intent", "kind": "sentence_classification", "train": "a.csv"},
                {"name": "ner", "kind": "token_classification", "train": "b.txt"},
            ],
            "stages": [
                {"name": "a", "tasks": ["intent"]},
                {"name": "b", "tasks": ["ner"], "freeze": {"policy": "top_k", "top_k": 2}},
            ],
        }
    )
    records = [
        {"type": "eval", "stage": "a", "step": 5, "metrics": {"intent": {"accuracy": 0.5}}},
        {"type": "eval", "stage": "a", "step": 10, "metrics": {"intent": {"accuracy": 0.8}}},
        {"type": "train", "stage": "b", "step": 15},
        {
            "type": "eval",
            "stage": "b",
            "step": 20,
            "metrics": {"intent": {"accuracy": 0.7}, "ner": {"f1": 0.4}},
        },
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = _forgetting(cfg, path, {"intent": {"accuracy": 0.75}, "ner": {"f1": 0.5}})
    assert out == [
        {
            "task": "intent",
            "metric": "accuracy",
            "stage": "a",
            "before": 0.8,
            "after": 0.75,
            "change": pytest.approx(-0.05),
        }
    ]


# ---------------------------------------------------------------------------------------------- tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_encoder_dir, data_root) -> dict[str, Any]:
    """configs/experiment-tiny.yaml once through the CLI, recording the order of training runs and test reads."""
    import mtst.experiment.evaluate as experiment_eval
    import mtst.experiment.run as experiment

    out = tmp_path_factory.mktemp("experiment") / "out"
    calls: list[tuple[str, str]] = []
    train_model, load_test = experiment._train_model, experiment_eval.load_test_examples

    def recorded_train(exp, plan, out_dir, events):
        calls.append(("train", f"{plan.variant}/{plan.name}"))
        return train_model(exp, plan, out_dir, events)

    def recorded_test(source, kind, *, data_root):
        calls.append(("test", source.path))
        return load_test(source, kind, data_root=data_root)

    args = [
        str(TINY),
        "--output",
        str(out),
        "--data-root",
        str(data_root),
        "--set",
        f"backbone={tiny_encoder_dir}",
        "--quiet",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "_train_model", recorded_train)
        mp.setattr(experiment_eval, "load_test_examples", recorded_test)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    return {"out": out, "args": args, "calls": calls, "report": report, "output": result.output}


@pytest.mark.slow
def test_every_variant_has_a_row_per_precision_with_every_task(tiny_run) -> None:
    exp = load_experiment(TINY)
    rows = tiny_run["report"]["rows"]
    expected = [(v.name, p) for v in exp.variants for p in exp.precisions_of(v)]
    assert [(r["variant"], r["precision"]) for r in rows] == expected
    multitask = [v for v in exp.variants if v.kind is VariantKind.MULTITASK]
    assert len(expected) == 3 * len(multitask) + 2  # fp32/int8/fp16 each; the two separate variants fp32
    for r in rows:
        v = exp.variant(r["variant"])
        tasks = list(v.tasks) or ["intent", "ner", "sentiment"]
        assert sorted(r["test"]) == sorted(tasks), r["variant"]
        assert all(0.0 <= x <= 1.0 for x in r["test"].values())
        assert r["models"] == (tasks if v.kind is VariantKind.SEPARATE else ["main"])
        assert r["encoder_passes"] == len(r["models"])
        assert r["latency_ms_median"] > 0 and r["latency_ms_p90"] >= r["latency_ms_median"]
        assert 0 < r["params_trainable"] <= r["params_total"] and r["train_wall_s"] > 0
    by = {(r["variant"], r["precision"]): r for r in rows}
    frozen, full = by[("mt-frozen", "fp32")], by[("mt-proportional", "fp32")]
    assert frozen["params_trainable"] < full["params_trainable"] // 50  # heads only
    assert by[("mt-top2", "fp32")]["params_trainable"] < full["params_trainable"]
    assert full["params_trainable"] == full["params_total"]
    # separate: three models, each with the steps its task had in mt-proportional (at least one)
    sep = by[("separate", "fp32")]
    heads = frozen["params_trainable"]  # three single-task models: three encoders, the same three heads
    assert sep["params_total"] == sep["params_trainable"] == 3 * full["params_total"] - 2 * heads
    assert sep["task_steps"] == {t: max(1, n) for t, n in full["task_steps"].items()}
    assert by[("imb-ner-alone", "fp32")]["task_steps"] == {
        "ner": max(1, by[("imb-proportional", "fp32")]["task_steps"]["ner"])
    }
    # staged: the intent head and the encoder are frozen in stage b, so intent cannot change
    (forget,) = by[("staged", "fp32")]["forgetting"]
    assert forget["task"] == "intent" and forget["stage"] == "a-intent" and forget["change"] == 0.0


@pytest.mark.slow
def test_the_table_and_the_files(tiny_run) -> None:
    out = tiny_run["out"]
    md = (out / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = table[0]
    assert header.startswith(
        "| variant | precision | intent accuracy | ner f1 | sentiment accuracy | trainable params |"
    )
    assert "| CPU ms / sentence (median, p90) | notes |" in header
    body = table[1:]
    assert len(body) == len(tiny_run["report"]["rows"])
    assert all(line.count(" | ") == header.count(" | ") for line in body)
    assert re.search(r"^\| staged \| fp32 \| [01]\.\d{4} \| [01]\.\d{4} \| – \|", md, re.M)
    assert "intent val" in md and "at the end of stage a-intent" in md
    assert "## Reproduce" in md and "--set backbone=" in md.replace("'", "") and "## Hardware" in md
    assert "```yaml" in md and "variants:" in md  # the resolved config
    for task in ("intent", "ner", "sentiment"):
        png = out / "plots" / f"val_{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/val_{task}.png)" in md
    report = tiny_run["report"]
    assert report["system"]["cpu_model"] and report["system"]["logical_cpus"] >= 1 and report["wall_s"] > 0
    assert report["latency"]["method"]["interleaved"] and len(report["latency"]["ms"]) == 8 * 3 + 3 + 1
    assert any("vs `separate`" in c for c in report["comparisons"])
    assert any("int8-static-cpu vs fp32" in c for c in report["comparisons"])
    assert "| mt-proportional | int8-static-cpu |" in tiny_run["output"]  # the CLI prints the table


@pytest.mark.slow
def test_exported_precisions_were_evaluated_through_onnx_runtime(tiny_run, data_root) -> None:
    from transformers import AutoTokenizer

    from mtst.checkpoint import read_meta
    from mtst.data import load_examples
    from mtst.evaluation import evaluate_task
    from mtst.runtime import load_bundle
    from mtst.tasks import TaskSpec

    out = tiny_run["out"]
    for variant_dir in (out / "variants").iterdir():
        for model in variant_dir.iterdir():
            test = json.loads((model / "test.json").read_text())
            manifest = load_bundle(model / "bundle").manifest
            assert sorted(v.precision.value for v in manifest.variants) == sorted(test)
            for precision, result in test.items():
                assert result["evaluated_with"] == "onnxruntime" and result["graph"] == GRAPHS[precision]
                assert result["providers"] == ["CPUExecutionProvider"] and result["runs"] > 0
    # recompute one int8 figure with a session of our own on the bundle's int8 graph
    import numpy as np
    import onnxruntime as ort

    model = out / "variants" / "mt-proportional" / "main"
    best = Path(json.loads((model / "trained.json").read_text())["best_checkpoint"])
    meta = read_meta(best)
    spec = next(TaskSpec.from_dict(t) for t in meta["tasks"] if t["name"] == "ner")
    session = ort.InferenceSession(
        str(model / "bundle" / GRAPHS["int8-static-cpu"]), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    tc = load_experiment(TINY, data_root=data_root).base["tasks"][1]
    from mtst.data import DataSource

    examples = load_examples(DataSource.from_dict(tc["test"]), "token_classification", data_root=data_root)
    metrics = evaluate_task(
        lambda b: session.run(["ner"], {k: np.asarray(b[k], dtype=np.int64) for k in names})[0],
        AutoTokenizer.from_pretrained(str(best / "tokenizer")),
        spec,
        examples,
        max_seq_len=meta["max_seq_len"],
    ).metrics
    recorded = json.loads((model / "test.json").read_text())["int8-static-cpu"]["metrics"]["ner"]
    assert metrics == pytest.approx(recorded)


@pytest.mark.slow
def test_the_test_split_is_read_only_after_every_model_is_trained_and_exported(tiny_run) -> None:
    calls, out = tiny_run["calls"], tiny_run["out"]
    kinds = [k for k, _ in calls]
    assert kinds.count("train") == 8 + 3 + 1 and "test" in kinds
    first_test = kinds.index("test")
    assert "train" not in kinds[first_test:]  # every training run came before the first test read
    assert {p for k, p in calls if k == "test"} == {
        "banking77/test.csv",
        "conll2003/test.txt",
        "sst2/dev.tsv",
    }
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    last_build = max(e["seq"] for e in events if e["event"] in ("train_end", "export_end"))
    assert all(e["seq"] > last_build for e in events if e["event"] in ("test_load", "test_eval"))
    # what training saw: no test split in any run's config, only validation evaluations
    for resolved in out.glob("variants/*/*/run/config.resolved.yaml"):
        cfg = yaml.safe_load(resolved.read_text())
        assert all(t["test"] is None for t in cfg["tasks"]), resolved
        run = resolved.parent
        evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
        assert evals and {e["split"] for e in evals} == {"validation"}
        assert json.loads((run / "test_metrics.json").read_text())["metrics"] == {}
    # the export guard scored validation data (never test) for int8 and fp16
    exported = json.loads((out / "variants" / "mt-proportional" / "main" / "exported.json").read_text())
    assert exported["guard"] != "off" and set(exported["variants"]) == set(GRAPHS)


@pytest.mark.slow
def test_resume_keeps_finished_variants_and_continues_a_run(tiny_run) -> None:
    out, args = tiny_run["out"], tiny_run["args"]
    before = json.loads((out / "results.json").read_text())
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "an experiment is already there; pass --resume" in again.output
    # mt-top2 as if killed after training but before its trained.json: mtst-train --resume finishes it
    model = out / "variants" / "mt-top2" / "main"
    for name in ("trained.json", "exported.json", "test.json"):
        (model / name).unlink()
    n_events = len((out / "events.jsonl").read_text().splitlines())
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    new = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()[n_events:]]
    trained = [(e["variant"], e["resume"]) for e in new if e["event"] == "train_start"]
    assert trained == [("mt-top2", True)]  # nothing else retrained
    assert [e["variant"] for e in new if e["event"] == "test_eval"] == ["mt-top2"] * 3
    after = json.loads((out / "results.json").read_text())
    assert [r["test"] for r in after["rows"]] == [r["test"] for r in before["rows"]]
    assert len(after["invocations"]) == 2
    assert json.loads((model / "trained.json").read_text())["attempts"] == 2


def test_comparisons_pair_only_tasks_trained_on_the_same_data() -> None:
    from mtst.experiment.report import comparisons

    exp = load_experiment(REAL)

    def row(variant: str, kind: str, **test: float) -> dict:
        return {"variant": variant, "kind": kind, "precision": "fp32", "test": test}

    rows = [
        row("separate", "separate", intent=0.90, ner=0.80, sentiment=0.85),
        row("mt-proportional", "multitask", intent=0.91, ner=0.82, sentiment=0.84),
        # NER on 5k sentences and SST-2 on 20k: never paired with `separate` (14k / 10k)
        row("imb-proportional", "multitask", ner=0.78, sentiment=0.86),
        row("imb-ner-alone", "separate", ner=0.75),
    ]
    lines = comparisons(exp, rows)
    assert "`mt-proportional` vs `separate`: intent +1.0 pt, ner +2.0 pt, sentiment -1.0 pt" in lines
    assert "`imb-proportional` vs `imb-ner-alone`: ner +3.0 pt" in lines
    assert not any(line.startswith("`imb-proportional` vs `separate`") for line in lines)
    assert not any(line.startswith("`mt-proportional` vs `imb-ner-alone`") for line in lines)
