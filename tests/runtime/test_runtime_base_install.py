"""The base install alone (``pip install mtst``, no extras) runs ``mtst-predict`` on a real bundle.

A fresh virtual environment gets the package from a copy of the sources (so the build leaves
nothing in the checkout); pip fetches numpy, onnxruntime, tokenizers, click and tqdm from the
package index (or its cache). The bundle is made by the real exporter from the tiny test model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from mtst.runtime.engine import Engine

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Apple opened an office in Paris.", "Great movie!"]


def _source_copy(dest: Path) -> Path:
    skip = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "runs", "out", "tests")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for folder in ("mtst", "runtime", "export", "bench", "experiment"):
        shutil.copytree(REPO / folder, dest / folder, ignore=skip)
    return dest


@pytest.mark.slow
def test_fresh_base_install_runs_mtst_predict(tmp_path: Path, exported_split: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    src = _source_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # nothing heavy came with the base install
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print([m for m in ('torch', 'transformers', 'onnx') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    out = subprocess.run(
        [str(env_dir / "bin" / "mtst-predict"), str(exported_split), *TEXTS, "-p", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    expected = Engine.load(exported_split, providers="cpu").predict(TEXTS)
    assert [r["text"] for r in rows] == TEXTS
    for row, p in zip(rows, expected, strict=True):
        for name, head in p.heads.items():
            got = row["heads"][name]
            want = head.to_dict()
            if "label" in want:
                assert got["label"] == want["label"]
                assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            else:
                assert [(e["text"], e["label"], e["start"], e["end"]) for e in got["entities"]] == [
                    (e["text"], e["label"], e["start"], e["end"]) for e in want["entities"]
                ]
    assert sys.executable != str(py)
