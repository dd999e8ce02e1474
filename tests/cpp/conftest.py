"""Fixtures of the C++ runtime tests: the built programs and bundles to run them on.

The C++ build lives in ``$MTST_CPP_BUILD`` (default: ``build/`` in the checkout; ``.ci/run`` builds it).
Without it these tests are skipped -- unless ``MTST_REQUIRE_CPP=1`` (set by ``.ci/run``), which makes a
missing build a failure, so that CI never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import add_tables

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "runtime"))  # toybundle

CONLL_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


@dataclass(frozen=True)
class CppBuild:
    predict: Path
    tokenize: Path

    def run(
        self, program: Path, *args: str | Path, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(program), *map(str, args)], input=stdin, capture_output=True, timeout=1800)


@pytest.fixture(scope="session")
def cpp() -> CppBuild:
    build = Path(os.environ.get("MTST_CPP_BUILD", REPO / "build"))
    predict = build / "runtime" / "cpp" / "mtst-cpp-predict"
    tokenize = build / "runtime" / "cpp" / "mtst-cpp-tokenize"
    if not (predict.is_file() and tokenize.is_file()):
        msg = (
            f"C++ runtime not built in {build} (cmake -S . -B build && cmake --build build -j2, "
            "or set MTST_CPP_BUILD)"
        )
        if os.environ.get("MTST_REQUIRE_CPP") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return CppBuild(predict=predict, tokenize=tokenize)


@pytest.fixture(scope="session")
def toy_cpp_bundle(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime tests' toy bundle (real MiniLM tokenizer, max_seq_len 32) with tokenizer tables."""
    from toybundle import Toy

    out = tmp_path_factory.mktemp("cpp-toy") / "bundle"
    Toy(minilm_path / "tokenizer.json").bundle(out, layout="single")
    return add_tables(out)


@pytest.fixture(scope="session")
def minilm_bundles(
    minilm_path: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Real all-MiniLM-L6-v2 with three heads (intent, sentiment, CoNLL NER labels; random heads widened
    like training widens them), exported with fp32 and int8 variants, once single and once split."""
    import torch

    from mtst.export import export_bundle
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

    torch.manual_seed(0)
    model = MultiTaskModel.from_pretrained(
        minilm_path,
        tasks=[
            TaskSpec("intent", "sentence_classification", [f"intent_{i}" for i in range(12)]),
            TaskSpec("sentiment", "sentence_classification", ["negative", "positive"]),
            TaskSpec("ner", "token_classification", CONLL_LABELS),
        ],
        max_seq_len=128,
    )
    with torch.no_grad():  # untrained heads have tiny margins (DESIGN.md); widen them like training does
        for p in model.heads.parameters():
            p.mul_(5.0)
    root = tmp_path_factory.mktemp("cpp-minilm")
    ckpt = model.save_pretrained(root / "ckpt")
    out: dict[str, Path] = {}
    for layout in ("single", "split"):
        out[layout] = root / layout
        export_bundle(
            ckpt,
            out[layout],
            quantize=["none", "int8"],
            split=layout == "split",
            parity_data=bench_corpus,
            accuracy_guard=False,
        )
    shutil.rmtree(ckpt)
    return out
