"""scripts/gpu-check.sh --dry-run: the GPU check's every step on CPU, so that it cannot rot before a GPU
run; and scripts/carry.py, which carries the wheel and the checkpoint there in parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import carry  # noqa: E402


def test_split_and_join_check_the_hash(tmp_path: Path) -> None:
    big, small = tmp_path / "thing.whl", tmp_path / "small.whl"
    big.write_bytes(os.urandom(5 * 2**20 + 123))
    small.write_bytes(b"tiny")
    loads = carry.Loads(tmp_path / "a", 2 * 2**20 + 10)
    parts = carry.split(big, loads, part_bytes=2 * 2**20) + carry.split(small, loads)
    assert [p.name for p in parts] == [
        "thing.whl.part00",
        "thing.whl.part01",
        "thing.whl.part02",
        "small.whl.part00",
    ]
    # one run call each; the small file fills the room left in the first load
    assert [p.parent.name for p in parts] == ["load00", "load01", "load02", "load00"]
    assert all(
        sum(f.stat().st_size for f in d.iterdir()) <= 2 * 2**20 + 10 for d in (tmp_path / "a").iterdir()
    )
    # parts may arrive in different folders (copied to /tmp/ortgpu by earlier calls)
    (tmp_path / "b").mkdir()
    parts[2].rename(tmp_path / "b" / parts[2].name)
    assert [p.name for p in carry.join([tmp_path / "a", tmp_path / "b"], tmp_path / "out0")] == [
        "small.whl",
        "thing.whl",
    ]
    joined = carry.join([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert [p.read_bytes() for p in joined] == [small.read_bytes(), big.read_bytes()]
    damaged = bytearray((tmp_path / "b" / parts[2].name).read_bytes())
    damaged[0] ^= 1
    (tmp_path / "b" / parts[2].name).write_bytes(bytes(damaged))
    with pytest.raises(
        SystemExit, match=r"thing.whl: sha256 [0-9a-f]{64} != [0-9a-f]{64} \(a part is damaged\)"
    ):
        carry.join([tmp_path / "a", tmp_path / "b"], tmp_path / "out2")
    (tmp_path / "b" / parts[2].name).unlink()
    with pytest.raises(SystemExit, match=r"thing.whl: part 02 of 3 is missing"):
        carry.join([tmp_path / "a", tmp_path / "b"], tmp_path / "out3")


def test_farm_makes_mtst_importable_without_install(tmp_path: Path) -> None:
    """As on the GPU machine, where mtst is not installed: -S leaves out site's .pth files (the editable
    install's import hook); the dependencies come from this interpreter's path."""
    carry.farm(tmp_path / "site", ROOT)
    code = (
        "import mtst.runtime.trt, mtst.bench.fp16, mtst.export.trt_profiles; print(mtst.runtime.trt.__file__)"
    )
    deps = [p for p in sys.path if p and Path(p).resolve() != ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *deps])}
    done = subprocess.run(  # not in the repository root, whose mtst/ folder has no runtime/ in it
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "site" / "mtst" / "runtime" / "trt.py")


def test_dry_run(bench_checkpoint: Path, bench_corpus: Path, tmp_path: Path) -> None:
    """Every step but the wheel: the export of an fp32 + fp16 bundle included."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    cmd = ["bash", str(ROOT / "scripts/gpu-check.sh"), "--dry-run", "--checkpoint", str(bench_checkpoint)]
    cmd += ["--data", str(bench_corpus), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout[-3000:])
    manifest = json.loads((out / "bundle-manifest.json").read_text())
    assert {v["precision"] for v in manifest["variants"]} == {"fp32", "fp16"} and manifest["trt_profiles"]
    report = json.loads((out / "report.json").read_text())
    assert report["dry_run"] is True and report["provider"] == "cpu"
    systems = {"mtst-fp16-iobind", "mtst-fp16-plain", "mtst-fp32", "torch-fp32", "torch-compile"}
    assert set(report["realtime"]) == systems == set(report["throughput"])
    assert all(r["n"] == 12 and 0 < r["p50_ms"] <= r["p99_ms"] for r in report["realtime"].values())
    assert report["fidelity"]["cos_min"] > 0.99 and set(report["fidelity"]["label_agreement"]) == {
        "intent",
        "ner",
    }
    assert report["fp16_check"]["overflow"] is False
    assert report["cold_start"]["load_s"] > 0 and "io_binding_p50_gain" in report["ratios"]
    assert (out / "mtst-bench" / "report.json").is_file()
    assert "| mtst-fp16-iobind |" in (out / "report.md").read_text()
    assert report["versions"]["onnxruntime"] and report["plots"] == ["latency.png", "throughput.png"]
