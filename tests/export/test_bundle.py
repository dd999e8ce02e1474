"""Bundle writing on the tiny checkpoint: layouts, manifest, tokenizer, verification, heads-only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from tokenizers import Tokenizer

from mtst.errors import BundleError, ConfigError
from mtst.export import encoder_fingerprint, export_bundle, export_heads
from mtst.export.runners import OrtRunner, TorchRunner
from mtst.model import MultiTaskModel
from mtst.runtime import verify_bundle
from mtst.runtime.manifest import HeadKind, Layout, Manifest, Precision
from mtst.tasks import TaskSpec


def _feeds(model: MultiTaskModel, texts: list[str]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.tokenize(texts).items()}


def test_single_bundle_has_contract_files_manifest_and_dynamic_axes(
    tiny_bundle: Path, tiny_checkpoint
) -> None:
    m = verify_bundle(tiny_bundle)
    assert sorted(p.name for p in tiny_bundle.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "parity.json",
        "tokenizer.json",
        "tokenizer.tables.json",  # the C++ runtime's Unicode tables (mtst.export.tokenizer_tables)
    ]
    assert m.tokenizer_tables == "tokenizer.tables.json" and "tokenizer.tables.json" in m.files
    assert m.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert (m.max_seq_len, m.pooling, m.embedding_dim, m.pad_token_id) == (64, "mean", 32, 0)
    assert [(h.name, h.kind, h.output) for h in m.heads] == [
        ("embedding", HeadKind.EMBEDDING, "embedding"),
        ("intent", HeadKind.SENTENCE, "intent"),
        ("ner", HeadKind.TOKEN, "ner"),
    ]
    assert (
        m.head("ner").labels == ("O", "B-PER", "I-PER", "B-LOC", "I-LOC") and m.head("ner").scheme == "IOB2"
    )
    (v,) = m.variants
    assert (v.precision, v.layout, v.graphs, v.opset) == (
        Precision.FP32,
        Layout.SINGLE,
        {"model": "model.onnx"},
        17,
    )
    assert m.encoder_sha256 == encoder_fingerprint(tiny_checkpoint)
    prov = m.provenance
    assert prov["base_encoder"] and prov["checkpoint"]["path"] == str(tiny_checkpoint.resolve())
    assert set(prov["versions"]) == {"mtst", "torch", "onnx", "onnxruntime", "transformers"}
    assert set(m.files) == {"model.onnx", "parity.json", "tokenizer.json", "tokenizer.tables.json"}
    assert m.files["model.onnx"].bytes == (tiny_bundle / "model.onnx").stat().st_size

    graph = onnx.load(str(tiny_bundle / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["embedding", "intent", "ner"]
    dims = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output
    }
    assert dims == {"embedding": ["batch", 32], "intent": ["batch", 3], "ner": ["batch", "sequence", 5]}


def test_tokenizer_json_has_truncation_and_padding_off(tiny_bundle: Path) -> None:
    tok = Tokenizer.from_file(str(tiny_bundle / "tokenizer.json"))
    assert tok.truncation is None and tok.padding is None
    assert len(tok.encode("hello world").ids) == 4  # [CLS] hello world [SEP], not padded to 128


def test_exported_graph_matches_torch_at_untraced_shapes(tiny_bundle: Path, tiny_model) -> None:
    m = Manifest.read(tiny_bundle)
    runner = OrtRunner(tiny_bundle, m.variants[0], m.inputs)
    ref = TorchRunner(tiny_model)
    for texts in (["hi"], ["Anna lives in Berlin", "a", "three words here", "x y", "q", "w e r t y", "z"]):
        feeds = _feeds(tiny_model, texts)
        got, want = runner(feeds), ref(feeds)
        for name in ("embedding", "intent", "ner"):
            np.testing.assert_allclose(got[name], want[name], atol=1e-4)


def test_parity_json_keeps_sentences_shapes_and_figures(tiny_bundle: Path) -> None:
    doc = json.loads((tiny_bundle / "parity.json").read_text())
    assert len(doc["sentences"]) == 64 and all(isinstance(s, str) and s for s in doc["sentences"])
    assert doc["lengths"] == {"1": 1, "short": 16, "long": 32, "max": 64}
    assert doc["batch_sizes"] == [1, 7, 32] and doc["trace_shape"] == [2, 19]
    res = doc["variants"]["fp32/single"]
    shapes = {tuple(c["shape"]) for c in res["cases"]}
    assert shapes == {(b, t) for b in (1, 7, 32) for t in (1, 16, 32, 64)}
    assert (2, 19) not in shapes
    assert res["embedding"]["cos_min"] > 0.9999 and res["heads"]["intent"]["label_agreement"] == 1.0
    ner = res["heads"]["ner"]
    assert (
        ner["labels_compared_all_rows"] > 1000
        and 100 < ner["labels_compared"] < ner["labels_compared_all_rows"]
    )
    assert doc["violations"] == []


def test_split_bundle_runs_encoder_and_heads_separately(
    tiny_checkpoint, tmp_path, bench_corpus, tiny_model
) -> None:
    out = tmp_path / "split"
    report = export_bundle(tiny_checkpoint, out, split=True, parity_data=bench_corpus, accuracy_guard=False)
    m = verify_bundle(out)
    (v,) = m.variants
    assert v.layout is Layout.SPLIT
    assert v.graphs == {"encoder": "encoder.onnx", "heads": "heads.onnx", "token_heads": "token_heads.onnx"}
    enc = onnx.load(str(out / "encoder.onnx")).graph
    assert [o.name for o in enc.output] == ["embedding", "token_states"]
    assert [i.name for i in onnx.load(str(out / "heads.onnx")).graph.input] == ["embedding"]
    assert [o.name for o in onnx.load(str(out / "token_heads.onnx")).graph.output] == ["ner"]
    assert report.variants[0].bytes["heads.onnx"] < 10_000
    feeds = _feeds(tiny_model, ["Anna lives in Berlin", "hello there, how are you doing today?"])
    got, want = OrtRunner(out, v, m.inputs)(feeds), TorchRunner(tiny_model)(feeds)
    for name in ("embedding", "intent", "ner"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4)


def test_split_needs_a_sentence_head(tiny_encoder_dir, tmp_path, bench_corpus) -> None:
    MultiTaskModel.from_pretrained(
        tiny_encoder_dir,
        tasks=[TaskSpec("ner", "token_classification", ["O", "B-PER", "I-PER"])],
        max_seq_len=32,
    ).save_pretrained(tmp_path / "ck")
    with pytest.raises(ConfigError, match=r"--split needs at least one sentence head"):
        export_bundle(tmp_path / "ck", tmp_path / "b", split=True, parity_data=bench_corpus)
    assert not (tmp_path / "b").exists()


def test_heads_only_bundle_for_the_same_encoder(tiny_checkpoint, tiny_bundle, tmp_path, bench_corpus) -> None:
    model = MultiTaskModel.from_pretrained(tiny_checkpoint)
    # retrain heads on the frozen encoder: here, new head weights and a new task
    model.add_task(TaskSpec("topic", "sentence_classification", ["a", "b", "c", "d"]))
    for p in model.heads.parameters():
        p.data.normal_()
    model.save_pretrained(tmp_path / "ck2")
    report = export_heads(
        tmp_path / "ck2", tmp_path / "heads", encoder_from=tiny_bundle, parity_data=bench_corpus
    )
    m = verify_bundle(tmp_path / "heads")
    (v,) = m.variants
    assert v.layout is Layout.HEADS and v.graphs == {"heads": "heads.onnx", "token_heads": "token_heads.onnx"}
    assert m.encoder_sha256 == Manifest.read(tiny_bundle).encoder_sha256
    assert [h.name for h in m.heads] == ["intent", "ner", "topic"] and m.tokenizer == ""
    assert sum(p.stat().st_size for p in (tmp_path / "heads").iterdir()) < 200_000
    assert report.variants[0].parity["heads"]["topic"]["label_agreement"] == 1.0


def test_heads_only_refuses_another_encoder(tiny_checkpoint, tiny_bundle, tmp_path, bench_corpus) -> None:
    model = MultiTaskModel.from_pretrained(tiny_checkpoint)
    model.encoder.encoder.layer[0].output.dense.bias.data += 0.01  # fine-tuned encoder
    model.save_pretrained(tmp_path / "ck2")
    new, old = encoder_fingerprint(tmp_path / "ck2"), Manifest.read(tiny_bundle).encoder_sha256
    assert new != old
    with pytest.raises(BundleError, match=rf"encoder weights hash to {new}, but .* from encoder {old}"):
        export_heads(tmp_path / "ck2", tmp_path / "heads", encoder_from=tiny_bundle, parity_data=bench_corpus)
    assert not (tmp_path / "heads").exists()


def test_encoder_fingerprint_ignores_heads_and_precision(tiny_checkpoint, tmp_path) -> None:
    model = MultiTaskModel.from_pretrained(tiny_checkpoint)
    for p in model.heads.parameters():
        p.data.zero_()
    model.save_pretrained(tmp_path / "ck2")
    assert encoder_fingerprint(tmp_path / "ck2") == encoder_fingerprint(tiny_checkpoint)


def test_tampered_bundle_is_detected(tiny_bundle: Path, tmp_path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx: sha256 mismatch"):
        verify_bundle(copy)
    shutil.copyfile(tiny_bundle / "model.onnx", copy / "model.onnx")
    verify_bundle(copy)
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match=r"tokenizer.json: size mismatch"):
        verify_bundle(copy)


def test_bundle_without_manifest_is_not_a_bundle(tiny_bundle: Path, tmp_path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(
        BundleError, match=r"manifest.json: missing \(not an mtst bundle, or an unfinished export\)"
    ):
        verify_bundle(copy)


def test_overwrite_replaces_a_bundle(tiny_checkpoint, tiny_bundle, tmp_path, bench_corpus) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with pytest.raises(ConfigError, match=r"already exists \(pass --overwrite"):
        export_bundle(tiny_checkpoint, copy, parity_data=bench_corpus)
    export_bundle(
        tiny_checkpoint, copy, split=True, overwrite=True, parity_data=bench_corpus, accuracy_guard=False
    )
    assert verify_bundle(copy).variants[0].layout is Layout.SPLIT
    assert not (copy / "model.onnx").exists()


def test_export_hashes_every_file_once(tiny_checkpoint, tmp_path, bench_corpus, monkeypatch) -> None:
    """The manifest's hashes are the ones the runtime's verification checks: no file is hashed twice."""
    import mtst.runtime.bundle
    import mtst.runtime.manifest

    hashed: list[str] = []
    real = mtst.runtime.manifest.sha256_file

    def counting(path, **kwargs):
        hashed.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(mtst.runtime.manifest, "sha256_file", counting)
    monkeypatch.setattr(mtst.runtime.bundle, "sha256_file", counting)
    out = tmp_path / "b"
    export_bundle(tiny_checkpoint, out, split=True, parity_data=bench_corpus, accuracy_guard=False)
    files = Manifest.read(out).files
    # encoder.onnx, heads.onnx, token_heads.onnx, tokenizer.json, tokenizer.tables.json, parity.json
    assert len(files) == 6 and sorted(hashed) == sorted(files)
    for name, entry in files.items():
        assert entry.sha256 == real(out / name)
