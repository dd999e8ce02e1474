"""fp16 overflow check: fp16 vs fp32 variants of a tiny bundle, and a graph that does overflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from mtst.bench.cli import fp16_main
from mtst.bench.fp16 import FP16_MAX, check_fp16, op_stats
from mtst.runtime.providers import Provider
from mtst.runtime.texts import read_sentences


def test_fp16_against_fp32(fp16_bundle: Path, bench_corpus: Path) -> None:
    texts = read_sentences(bench_corpus, limit=24)
    check = check_fp16(fp16_bundle, texts)
    assert check.sentences == 24 and check.provider == "cpu"
    assert 0 < check.embedding_max_abs_diff < 0.02  # fp16 differs, a little
    assert check.embedding_cos_min > 0.999
    assert set(check.logits_max_abs_diff) == {"intent", "ner"}
    assert all(0 < d < 0.1 for d in check.logits_max_abs_diff.values())
    assert not check.overflow and check.nonfinite_outputs == {"embedding": 0, "intent": 0, "ner": 0}
    ln = [s for op, s in check.ops.items() if op.endswith("LayerNormalization")]
    assert ln and all(s.nodes >= 1 and 0 < s.max_abs < FP16_MAX and s.headroom > 1 for s in ln)
    d = check.to_dict()
    assert d["overflow"] is False and "headroom" in next(iter(d["ops"].values()))


def _overflowing_graph(path: Path) -> None:
    """fp16 x -> Add(x, x) -> LayerNormalization (fp32 after a Cast, as fp16 exports keep it)."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [
        helper.make_node("Add", ["x", "x"], ["sum"]),
        helper.make_node("Cast", ["sum"], ["sum32"], to=TensorProto.FLOAT),
        helper.make_node("LayerNormalization", ["sum32", "gamma", "beta"], ["y"], axis=-1),
    ]
    inits = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("gamma", "beta")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        inits,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_overflow_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    _overflowing_graph(path)
    fine = op_stats(path, Provider.CPU, [{"x": np.full((2, 4), 1000.0, np.float16)}])
    ln = fine["LayerNormalization"]
    assert ln.nonfinite == 0 and ln.max_abs == 2000.0 and not ln.overflows
    over = op_stats(path, Provider.CPU, [{"x": np.array([[40000.0, 1, 2, 3]], np.float16)}])
    stats = over["LayerNormalization"]  # 40000 + 40000 is past fp16's 65504: inf on a GPU
    # ORT's CPU provider computes the fp16 Add in fp32 (no fp16 kernel): finite, but flagged by magnitude
    assert stats.nodes == 1 and stats.max_abs == 80000.0 and stats.headroom < 1 and stats.overflows


def test_cli_prints_and_writes_the_report(fp16_bundle: Path, bench_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16.json"
    result = CliRunner().invoke(
        fp16_main, [str(fp16_bundle), "--data", str(bench_corpus), "--sentences", "8", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert '"overflow": false' in out.read_text() and '"sentences": 8' in result.output
