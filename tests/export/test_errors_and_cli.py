"""Bad arguments give clear errors; the CLI; an interrupted export leaves no bundle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtst.errors import CheckpointError, ConfigError, DataError
from mtst.export import export_bundle
from mtst.export.cli import main
from mtst.runtime import verify_bundle
from mtst.runtime.manifest import Layout, Precision


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope: no such checkpoint directory"):
        export_bundle(tmp_path / "nope", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"not an mtst checkpoint \(mtst.json is missing\)"):
        export_bundle(tmp_path / "empty", tmp_path / "b")


def test_unknown_precision(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"quantize 'int4': expected one of none, fp32, int8, int8-static-cpu, int8-dynamic"
    ):
        export_bundle(tiny_checkpoint, tmp_path / "b", quantize=["none", "int4"])


@pytest.mark.parametrize("opset", [13, 21, "17"])
def test_opset_out_of_range(tiny_checkpoint: Path, tmp_path: Path, opset) -> None:
    with pytest.raises(ConfigError, match=rf"opset {opset!r}: expected an integer in 14..20"):
        export_bundle(tiny_checkpoint, tmp_path / "b", opset=opset)


def test_calibration_file_missing_or_empty(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"calib.txt: sentence file not found"):
        export_bundle(
            tiny_checkpoint, tmp_path / "b", quantize="int8-static", calibration_data=tmp_path / "calib.txt"
        )
    (tmp_path / "calib.txt").write_text("\n   \n\n")
    with pytest.raises(DataError, match=r"calib.txt: no sentences \(the file is empty or blank"):
        export_bundle(
            tiny_checkpoint, tmp_path / "b", quantize="int8-static", calibration_data=tmp_path / "calib.txt"
        )
    assert not (tmp_path / "b").exists()


def test_output_exists(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"b: already exists \(pass --overwrite"):
        export_bundle(tiny_checkpoint, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"b: exists and is not a bundle; refusing to replace it"):
        export_bundle(tiny_checkpoint, tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_eval_data_for_an_unknown_task(tiny_checkpoint: Path, tmp_path: Path, bench_corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"--eval-data: task\(s\) \['topic'\] are not in the checkpoint"):
        export_bundle(
            tiny_checkpoint, tmp_path / "b", eval_data={"topic": bench_corpus}, parity_data=bench_corpus
        )


def test_cli_writes_a_multi_precision_bundle(
    tiny_checkpoint: Path, tmp_path: Path, bench_corpus: Path
) -> None:
    out = tmp_path / "b"
    args = [
        str(tiny_checkpoint),
        "-o",
        str(out),
        "--quantize",
        "none",
        "--quantize",
        "int8",
        "--quantize",
        "int8-dynamic",
        "--quantize",
        "fp16",
    ]
    result = CliRunner().invoke(
        main, [*args, "--split", "--parity-data", str(bench_corpus), "--no-accuracy-guard"]
    )
    assert result.exit_code == 0, result.output
    m = verify_bundle(out)
    assert [(v.precision, v.layout) for v in m.variants] == [
        (Precision.FP32, Layout.SPLIT),
        (Precision.INT8_STATIC_CPU, Layout.SPLIT),
        (Precision.INT8_DYNAMIC, Layout.SPLIT),
        (Precision.FP16, Layout.SPLIT),
    ]
    assert {v.graphs["heads"] for v in m.variants} == {"heads.onnx"}  # heads stay fp32, shared
    assert (
        "int8-static-cpu/split" in result.output
        and "int8-dynamic/split" in result.output
        and "fusions: EmbedLayerNormalization×1, Attention×2" in result.output
    )


def test_cli_errors_are_one_line_messages(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [str(tiny_checkpoint), "-o", str(tmp_path / "b"), "--quantize", "int3"])
    assert result.exit_code == 1
    assert "Error: ConfigError: quantize 'int3': expected one of" in result.output
    result = CliRunner().invoke(main, [str(tiny_checkpoint), "-o", str(tmp_path / "b"), "--heads-only"])
    assert result.exit_code == 2 and "--heads-only and --encoder-from go together" in result.output
    result = CliRunner().invoke(
        main, [str(tiny_checkpoint), "-o", str(tmp_path / "b"), "--eval-data", "intent"]
    )
    assert result.exit_code == 2 and "'intent': expected TASK=FILE" in result.output


def test_killed_export_leaves_no_bundle(tiny_checkpoint: Path, tmp_path: Path, bench_corpus: Path) -> None:
    """SIGKILL in the middle of an export (after graphs are written, before the rename): no bundle."""
    out = tmp_path / "b"
    script = textwrap.dedent(
        f"""
        import time
        import mtst.export.pipeline as p
        real = p.run_parity
        def slow(*a, **k):
            print("PARITY", flush=True)
            time.sleep(60)
            return real(*a, **k)
        p.run_parity = slow
        p.export_bundle({str(tiny_checkpoint)!r}, {str(out)!r}, parity_data={str(bench_corpus)!r},
                        accuracy_guard=False)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the graphs are in the temporary directory
        assert line.strip() == "PARITY"
        tmp_dirs = [p for p in tmp_path.iterdir() if p.name.startswith(".b.tmp-")]
        assert len(tmp_dirs) == 1 and (tmp_dirs[0] / "model.onnx").is_file()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    assert not out.exists()
    # what is left is a hidden temporary directory that no reader mistakes for a bundle
    with pytest.raises(Exception, match=r"not a directory|missing"):
        verify_bundle(out)
