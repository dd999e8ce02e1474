"""mtst-train and mtst-embed through click's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mtst.cli import embed_main, main

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def test_train_the_tiny_config_on_real_data(tiny_encoder_dir, data_root, tmp_path) -> None:
    out = tmp_path / "run"
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
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| ner | f1 |" in result.output and "| intent | accuracy |" in result.output
    assert "| sentiment | accuracy |" in result.output and "steps 30 (best " in result.output
    for name in (
        "best/mtst.json",
        "latest.json",
        "metrics.jsonl",
        "config.resolved.yaml",
        "test_metrics.json",
        "results.json",
    ):
        assert (out / name).exists(), name
    meta = json.loads((out / "best" / "mtst.json").read_text())
    assert meta["config"]["backbone"] == str(tiny_encoder_dir)  # the override is in the resolved config
    assert meta["data_root"] == str(data_root.resolve())
    assert [t["name"] for t in meta["tasks"]] == ["intent", "ner", "sentiment"]
    assert meta["tasks"][2]["labels"] == ["negative", "positive"]

    # the same directory again: refused, unless resumed (a finished run resumes to the same result)
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "a run is already there; pass --resume to continue it" in again.output
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "results.json").read_text())["steps"] == 30


def test_max_steps_and_set_override_the_file(config_dict, tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_dict()))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            str(config),
            "--output",
            str(out),
            "--max-steps",
            "4",
            "--set",
            "eval.every_steps=2",
            "--set",
            "tasks.ner.loss_weight=0.5",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["optim"]["max_steps"] == 4 and resolved["tasks"][1]["loss_weight"] == 0.5
    assert [
        json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x
    ] == [2, 4]


def test_errors_are_one_clear_line(config_dict, tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_dict()))
    runner = CliRunner()
    bad_key = runner.invoke(main, [str(config), "--set", "optim.lr=1e-3", "--quiet"])
    assert bad_key.exit_code == 1
    assert (
        "Error: " in bad_key.output
        and "--set 'optim.lr=1e-3': unknown key 'optim.lr'; allowed keys in optim:" in bad_key.output
    )
    missing = runner.invoke(main, [str(tmp_path / "nope.yaml"), "--quiet"])
    assert missing.exit_code == 1 and "nope.yaml: no such config file" in missing.output
    bad_device = runner.invoke(main, [str(config), "--device", "tpu"])
    assert bad_device.exit_code == 2 and "Invalid value for '--device'" in bad_device.output
    raw = config_dict()
    raw["tasks"][0]["train"] = "missing.csv"
    config.write_text(yaml.safe_dump(raw))
    no_data = runner.invoke(main, [str(config), "--output", str(tmp_path / "x"), "--quiet"])
    assert no_data.exit_code == 1 and "data file 'missing.csv' not found" in no_data.output


def test_compare_separate_writes_the_table(config_dict, tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(config_dict(optim={"max_steps": 12}, compare={"latency_sentences": 20})))
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, [str(config), "--output", str(out), "--compare-separate", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (
        "| multi-task |" in result.output
        and "| single: intent |" in result.output
        and "| separate: all 2 |" in result.output
    )
    report = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    multi, intent, ner, both = (
        rows["multi-task"],
        rows["single: intent"],
        rows["single: ner"],
        rows["separate: all 2"],
    )
    # the same budget: each single model trains as many steps as its task got in the multi-task run
    assert intent["steps"] + ner["steps"] == multi["steps"] == 12
    steps = json.loads((out / "variants" / "multitask" / "main" / "run" / "results.json").read_text())[
        "task_steps"
    ]
    assert intent["steps"] == steps["intent"] and ner["steps"] == steps["ner"]
    assert multi["encoder_passes"] == 1 and both["encoder_passes"] == 2
    assert both["params_total"] == intent["params_total"] + ner["params_total"] > multi["params_total"]
    assert set(multi["test"]) == {"ner"} and set(multi["validation"]) == {"intent", "ner"}
    assert all(r["latency_ms"] > 0 for r in rows.values())
    assert report["latency"]["sentences"] == 20 and (out / "compare.md").read_text().startswith("| model |")
    assert (out / "variants" / "separate" / "ner" / "run" / "best" / "mtst.json").exists()


def test_embed_prints_shape_and_cosine_matrix(tiny_encoder_dir) -> None:
    result = CliRunner().invoke(
        embed_main, ["--model", str(tiny_encoder_dir), "A man is eating.", "A man eats food.", "Stocks fell."]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "embeddings: 3 x 32 float32, L2-normalized, pooling mean"
    assert lines[3].startswith("[0]   1.000") and lines[3].endswith("A man is eating.")
    assert len(lines) == 6


def test_missing_torch_names_the_extra(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    result = CliRunner().invoke(main, ["whatever.yaml"])
    assert result.exit_code == 1 and "training needs PyTorch: pip install 'mtst[train]'" in result.output


@pytest.mark.parametrize("module", ["mtst.config", "mtst.sampling", "mtst.evaluation", "mtst.cli"])
def test_config_side_is_torch_free(module: str) -> None:
    code = f"import sys, {module}\nprint(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_embed_with_the_default_backbone_shows_similar_sentences() -> None:
    result = CliRunner().invoke(
        embed_main,
        ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "embeddings: 3 x 384 float32, L2-normalized, pooling mean"
    row0 = result.output.splitlines()[3].split()
    assert float(row0[2]) > 0.6 > 0.2 > float(row0[3])  # eating/eating close, eating/movie far
