"""Graph-level pieces on the tiny BERT (hidden 32, 4 attention heads, 2 layers): export, fusion,
quantization plans, parity shapes, the guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tokenizers import Tokenizer

from mtst.errors import ParityError
from mtst.export import export_bundle
from mtst.export.fusion import encoder_geometry, fuse_graph
from mtst.export.onnx import GraphKind, export_graph
from mtst.export.parity import BATCH_SIZES, build_cases, load_sentences, parity_lengths, trace_length
from mtst.export.quantize import encoder_core, sensitive_groups
from mtst.runtime import verify_bundle
from mtst.runtime.manifest import Precision


@pytest.fixture
def tiny_plain_and_fused(tiny_model, tmp_path: Path) -> tuple[Path, Path, dict[str, int]]:
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    export_graph(tiny_model, plain, GraphKind.SINGLE, opset=17, trace_len=19, expose_states=True)
    heads, hidden = encoder_geometry(tiny_model.encoder.config)
    result = fuse_graph(plain, fused, num_heads=heads, hidden_size=hidden)
    return plain, fused, result.fusions


def test_tiny_bert_fuses_with_its_own_geometry(tiny_model, tiny_plain_and_fused) -> None:
    assert encoder_geometry(tiny_model.encoder.config) == (4, 32)
    _, fused, fusions = tiny_plain_and_fused
    assert fusions == {
        "EmbedLayerNormalization": 1,
        "Attention": 2,
        "BiasGelu": 2,
        "LayerNormalization": 4,  # residual adds left unfused (SkipLayerNormalization is slow on CPU)
    }
    attention = [n for n in onnx.load(str(fused)).graph.node if n.op_type == "Attention"]
    assert [a.i for n in attention for a in n.attribute if a.name == "num_heads"] == [4, 4]


def test_export_leaves_the_model_in_eval_mode(tiny_model, tmp_path: Path) -> None:
    tiny_model.train()
    export_graph(tiny_model, tmp_path / "m.onnx", GraphKind.SINGLE, opset=17, trace_len=19)
    assert not any(m.training for m in tiny_model.modules())


def test_encoder_core_and_groups_separate_encoder_from_heads(tiny_plain_and_fused) -> None:
    plain, fused, _ = tiny_plain_and_fused
    for path in (plain, fused):
        model = onnx.load(str(path))
        for i, n in enumerate(model.graph.node):
            n.name = n.name or f"n{i}"
        core = set(encoder_core(model))
        heads = [
            n for n in model.graph.node if "heads" in n.name or "/intent/" in n.name or "/ner/" in n.name
        ]
        assert heads and not core & {n.name for n in heads if n.op_type in ("MatMul", "Gemm")}
        groups = sensitive_groups(model, sorted(core))
        assert set(groups) == {"ffn_output", "attention", "last_layer"}
        assert len(groups["ffn_output"]) == 2 and all("output/dense" in n for n in groups["ffn_output"])
        assert all("layer.1" in n or n.endswith("_1") for n in groups["last_layer"])


def test_parity_cases_cover_every_shape_but_the_traced_one(tiny_model, bench_corpus: Path) -> None:
    tok = Tokenizer.from_str(tiny_model.tokenizer.backend_tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    sentences = load_sentences(bench_corpus, limit=64)
    assert len(sentences) == 64
    cases = build_cases(tok, sentences, max_seq_len=64, inputs=tiny_model.input_names, pad_id=0)
    lengths = parity_lengths(64)
    shapes = [c.feeds["input_ids"].shape for c in cases]
    assert shapes == [(b, t) for t in lengths.values() for b in BATCH_SIZES]
    assert (2, trace_length(64)) not in shapes and trace_length(64) not in lengths.values()
    by = {c.label: c for c in cases}
    # length 1: one real word-piece per row, no special tokens, rows differ
    one = by["b32/1"]
    assert one.real.all() and len(set(one.feeds["input_ids"][:, 0].tolist())) > 10
    # padded batches mix full rows and padding; specials are not "real" tokens
    short = by["b32/short"]
    assert short.feeds["attention_mask"][0].all() and not short.feeds["attention_mask"].all()
    assert not short.real[:, 0].any()  # [CLS]
    assert by["b1/max"].feeds["attention_mask"].sum() == 64
    # whole-sentence rows (label agreement is bounded on them): odd rows that were not cut
    assert not any(c.whole.any() for c in cases if c.length_name == "1" or c.batch_size == 1)
    assert not by["b32/max"].whole[::2].any() and by["b32/max"].whole[1::2].sum() >= 12


def test_parity_lengths_and_trace_length_adapt_to_small_models() -> None:
    assert parity_lengths(256) == {"1": 1, "short": 16, "long": 96, "max": 256}
    assert parity_lengths(8) == {"1": 1, "short": 2, "long": 4, "max": 8}
    assert trace_length(8) == 5 and trace_length(256) == 19


def test_int8_on_the_tiny_model_and_the_guard_in_agreement_mode(
    tiny_checkpoint, tmp_path, bench_corpus
) -> None:
    out = tmp_path / "b"
    report = export_bundle(tiny_checkpoint, out, quantize="int8", parity_data=bench_corpus)
    m = verify_bundle(out)
    (v,) = m.variants
    # "int8" is the batch-invariant CPU int8: constant activation scales calibrated on real sentences
    assert (v.precision, v.graphs) == (Precision.INT8_STATIC_CPU, {"model": "model.int8-static-cpu.onnx"})
    assert v.details["quantization"]["batch_invariant"] is True
    assert v.details["quantization"]["calibration_sentences"] > 0
    ops = {n.op_type for n in onnx.load(str(out / "model.int8-static-cpu.onnx")).graph.node}
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    assert {"QuantizeLinear", "MatMulIntegerToFloat", "QAttention"} <= ops
    # smoothed before quantizing, the word table int8 per row; what was done is in the manifest
    quant = v.details["quantization"]
    assert quant["calibration_method"] == "minmax" and quant["embedding"] == "int8 per row"
    smoothing = quant["smoothing"]
    assert (
        smoothing["alpha"] == 0.85 and smoothing["nodes"] == smoothing["folded"] + smoothing["mul_nodes"] > 0
    )
    assert "EmbedLayerNormalization" not in ops and "QEmbedLayerNormalization" not in ops
    graph = onnx.load(str(out / "model.int8-static-cpu.onnx")).graph
    assert sum(n.name.endswith("_smooth") for n in graph.node) == smoothing["mul_nodes"]
    assert report.guard == "label agreement on real sentences (no validation data)"
    guard = v.details["guard"]
    assert guard["attempts"][-1]["passed"]
    tasks = guard["attempts"][-1]["tasks"]
    assert tasks["intent"]["mode"] == "agreement" and tasks["intent"]["label_agreement"] >= 0.97
    doc = json.loads((out / "parity.json").read_text())
    assert doc["bounds"]["int8-static-cpu/single"]["label_agreement"] == 0.80
    # no fp32 vocab-sized table left; the exported variant's embeddings stay close to torch fp32
    tables = [numpy_helper.to_array(i) for i in graph.initializer if i.dims[:1] == [30522]]
    assert sorted((t.dtype.name, t.shape) for t in tables) == [("float32", (30522, 1)), ("int8", (30522, 32))]
    assert doc["variants"]["int8-static-cpu/single"]["embedding"]["cos_min"] > 0.98


def test_guard_refuses_with_a_table_when_no_attempt_is_good_enough(
    tiny_checkpoint, tmp_path, bench_corpus
) -> None:
    with pytest.raises(ParityError) as info:
        export_bundle(
            tiny_checkpoint,
            tmp_path / "b",
            quantize="int8-static",
            parity_data=bench_corpus,
            calibration_data=bench_corpus,
            min_label_agreement=1.0,
        )
    msg = str(info.value)
    assert msg.startswith("int8-static: every attempt loses too much accuracy, refusing to write it")
    assert "fp32 groups" in msg and "ffn_output,attention,last_layer" in msg
    assert "label agreement" in msg
    assert not (tmp_path / "b").exists()


def test_ort_runner_on_fp16_graph_agrees_with_fp32(
    tiny_checkpoint, tmp_path, bench_corpus, tiny_model
) -> None:
    from mtst.export.runners import OrtRunner

    out = tmp_path / "b"
    export_bundle(
        tiny_checkpoint, out, quantize=["none", "fp16"], parity_data=bench_corpus, accuracy_guard=False
    )
    m = verify_bundle(out)
    feeds = {k: v.numpy() for k, v in tiny_model.tokenize(["Anna lives in Berlin", "hello"]).items()}
    a = OrtRunner(out, m.variant("fp32"), m.inputs)(feeds)
    b = OrtRunner(out, m.variant("fp16"), m.inputs)(feeds)
    for name in ("embedding", "intent", "ner"):
        assert b[name].dtype == np.float32
        np.testing.assert_allclose(a[name], b[name], atol=5e-3)


def test_guard_scores_eval_data_files_with_each_tasks_metric(tiny_checkpoint, tmp_path, bench_corpus) -> None:
    intent = tmp_path / "intent.csv"
    intent.write_text(
        "text,label\n"
        + "".join(
            f"{t},{lab}\n"
            for t, lab in [("hi there", "greet"), ("bye now", "bye"), ("thanks a lot", "thanks")] * 5
        )
    )
    ner = tmp_path / "ner.txt"
    ner.write_text("Anna NNP B-NP B-PER\nlives VBZ B-VP O\nin IN B-PP O\nBerlin NNP B-NP B-LOC\n\n" * 4)
    report = export_bundle(
        tiny_checkpoint,
        tmp_path / "b",
        quantize=["none", "fp16"],
        parity_data=bench_corpus,
        eval_data={"intent": intent, "ner": ner},
        max_metric_drop=0.2,
    )
    # files given with --eval-data may be any split (test data too): not called validation data
    assert report.guard == "metrics (--eval-data files)"
    assert "accuracy guard: metrics (--eval-data files)" in report.summary()
    for v in report.variants:
        assert v.metrics["intent"]["metric"] == "accuracy" and v.metrics["intent"]["examples"] == 15
        assert v.metrics["ner"]["metric"] == "f1" and v.metrics["ner"]["examples"] == 4
    fp32 = report.variants[0].metrics
    assert (
        fp32["intent"]["value"] == fp32["intent"]["torch_fp32"] and fp32["intent"]["label_agreement"] == 1.0
    )
    m = verify_bundle(tmp_path / "b")
    assert m.provenance["export_options"]["eval_sets"]["intent"] == {
        "source": str(intent.resolve()),
        "examples": 15,
    }


def test_cpu_sessions_keep_the_residual_adds_unfused(
    tiny_plain_and_fused, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ORT would fuse Add + LayerNormalization into its (slow on CPU) SkipLayerNormalization when a
    # session loads the graph; the runtime's CPU sessions leave that optimizer out
    import onnxruntime as ort

    from mtst.runtime.providers import SessionSettings, create_session, resolve_providers

    _, fused, _ = tiny_plain_and_fused
    dumped = tmp_path / "cpu-optimized.onnx"
    plain_options = SessionSettings.session_options

    def dumping(self: SessionSettings) -> ort.SessionOptions:
        so = plain_options(self)
        so.optimized_model_filepath = str(dumped)
        return so

    monkeypatch.setattr(SessionSettings, "session_options", dumping)
    create_session(fused, resolve_providers("cpu"), SessionSettings(intra_op_threads=1))
    ops = {n.op_type for n in onnx.load(str(dumped)).graph.node}
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops

    # the same graph in a default ORT session: fused (what the runtime avoids)
    ort.InferenceSession(str(fused), SessionSettings().session_options(), providers=["CPUExecutionProvider"])
    assert "SkipLayerNormalization" in {n.op_type for n in onnx.load(str(dumped)).graph.node}


def test_fusion_can_still_fuse_skip_layer_norm(tiny_model, tmp_path: Path) -> None:
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    export_graph(tiny_model, plain, GraphKind.SINGLE, opset=17, trace_len=19, expose_states=True)
    heads, hidden = encoder_geometry(tiny_model.encoder.config)
    result = fuse_graph(plain, fused, num_heads=heads, hidden_size=hidden, skip_layer_norm=True)
    assert result.fusions["SkipLayerNormalization"] == 4 and "LayerNormalization" not in result.fusions
