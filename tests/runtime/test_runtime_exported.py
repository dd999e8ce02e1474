"""The runtime on bundles written by the real exporter, against the torch model they came from.

Fast tests use the tiny two-task model (intent + ner); slow ones the real all-MiniLM-L6-v2 with an
fp32 and an int8 variant in one bundle. Bounds are the exporter's parity bounds per precision.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mtst.errors import BundleError
from mtst.runtime.decode import decode_entities
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import Precision
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities


def _corpus(path: Path, n: int) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:n]


def _torch_outputs(model, texts: list[str]) -> list[dict]:
    """Per text: embedding, sentence logits, token logits on the text's own tokens, HF encoding."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for t in texts:  # one at a time: no padding on the torch side at all
            batch = model.tokenize([t], return_offsets=True)
            offsets = batch.pop("offset_mapping")
            enc = model.tokenizer([t], truncation=True, max_length=model.max_seq_len)
            res = model(**batch)
            row = {
                "embedding": res.embedding[0].numpy(),
                "offsets": offsets[0].tolist(),
                "word_ids": enc.word_ids(0),
            }
            for name, lg in res.logits.items():
                row[name] = lg[0].numpy()
            out.append(row)
    return out


def _check_parity(
    preds: list[Prediction], ref: list[dict], model, *, cos_min: float, logit_tol: float | None, agree: float
) -> None:
    cos = [
        float(np.dot(p.embedding, r["embedding"]) / np.linalg.norm(r["embedding"]))
        for p, r in zip(preds, ref, strict=True)
    ]
    assert min(cos) >= cos_min, f"embedding cosine {min(cos):.6f} < {cos_min}"
    same = total = 0
    for p, r in zip(preds, ref, strict=True):
        assert p.logits is not None
        for name, task in model.tasks.items():
            got, want = p.logits[name], r[name]
            assert got.shape == want.shape, (name, got.shape, want.shape)  # token heads: same token count
            if logit_tol is not None:
                scale = max(1.0, float(np.abs(want).max()))
                assert np.abs(got - want).max() <= logit_tol * scale, (name, p.text)
            same += int((got.argmax(-1) == want.argmax(-1)).sum())
            total += int(np.size(want.argmax(-1)))
            head = p.heads[name]
            if task.kind.value == "sentence_classification":
                assert isinstance(head, SentenceLabel) and list(head.scores) == list(task.labels)
            else:
                assert isinstance(head, TokenEntities)
    assert same / total >= agree


def test_exported_single_equals_torch(exported_single: Path, tiny_model, bench_corpus: Path) -> None:
    texts = [*_corpus(bench_corpus, 40), "", "word " * 100, "Angela Merkel visited Paris"]
    engine = Engine.load(exported_single, providers="cpu")
    assert engine.variant.key == "fp32/single"
    preds = engine.predict(texts, return_embedding=True, return_logits=True)
    _check_parity(
        preds, _torch_outputs(tiny_model, texts), tiny_model, cos_min=0.9999, logit_tol=1e-3, agree=0.99
    )
    assert preds[-2].truncated and not preds[0].truncated


def test_exported_split_equals_single_and_torch(
    exported_single: Path, exported_split: Path, tiny_model, bench_corpus: Path
) -> None:
    texts = _corpus(bench_corpus, 40)
    split = Engine.load(exported_split, providers="cpu")
    single = Engine.load(exported_single, providers="cpu")
    assert split.variant.key == "fp32/split"
    a = split.predict(texts, return_embedding=True, return_logits=True)
    b = single.predict(texts, return_embedding=True, return_logits=True)
    _check_parity(
        a, _torch_outputs(tiny_model, texts), tiny_model, cos_min=0.9999, logit_tol=1e-3, agree=0.99
    )
    np.testing.assert_allclose(
        np.stack([p.embedding for p in a]), np.stack([p.embedding for p in b]), atol=1e-4
    )
    # heads-only path gives the same sentence labels as the full pass
    fast = split.predict_from_embeddings(split.embed(texts))
    assert [r["intent"].label for r in fast] == [p.heads["intent"].label for p in a]  # type: ignore[union-attr]


def test_entities_match_torch_decoding(exported_single: Path, tiny_model) -> None:
    """Engine entities = the same first-sub-token decoding applied to torch logits and HF offsets."""
    from mtst.runtime.results import softmax

    texts = ["Angela Merkel met Emmanuel Macron in Berlin.", "U.S. officials visited New York-based firms."]
    preds = Engine.load(exported_single, providers="cpu").predict(texts, heads=["ner"])
    labels = tiny_model.tasks["ner"].labels
    for p, r in zip(preds, _torch_outputs(tiny_model, texts), strict=True):
        probs = softmax(r["ner"])
        want = decode_entities(
            p.text, r["word_ids"], r["offsets"], probs.argmax(1).tolist(), probs.max(1).tolist(), labels
        )
        got = p.heads["ner"].entities  # type: ignore[union-attr]
        assert [(e.text, e.label, e.start, e.end) for e in got] == [
            (e.text, e.label, e.start, e.end) for e in want
        ]
        for e, w in zip(got, want, strict=True):
            assert e.score == pytest.approx(w.score, abs=1e-3)


def test_swap_real_heads_bundle(
    exported_split: Path, _tiny_model_base, bench_corpus: Path, tmp_path: Path
) -> None:
    """Heads retrained on the frozen encoder (here: new head weights) ship as a heads-only bundle."""
    import torch

    from mtst.export import export_bundle, export_heads

    retrained = copy.deepcopy(_tiny_model_base)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in retrained.heads.parameters():
            p.normal_(0, 0.5)
    ckpt = retrained.save_pretrained(tmp_path / "retrained")
    heads = tmp_path / "heads"
    export_heads(ckpt, heads, encoder_from=exported_split, parity_data=bench_corpus)
    texts = _corpus(bench_corpus, 20)
    engine = Engine.load(exported_split, providers="cpu")
    before = engine.predict(texts, return_logits=True)
    engine.swap_heads(heads)
    after = engine.predict(texts, return_logits=True, return_embedding=True)
    _check_parity(
        after, _torch_outputs(retrained, texts), retrained, cos_min=0.9999, logit_tol=1e-3, agree=0.99
    )
    assert any(
        not np.allclose(x.logits["intent"], y.logits["intent"]) for x, y in zip(before, after, strict=True)
    )  # type: ignore[index]

    # a full split bundle of another encoder: refused, naming both encoder hashes
    foreign_model = copy.deepcopy(_tiny_model_base)
    with torch.no_grad():
        next(foreign_model.encoder.parameters()).add_(0.01)
    foreign_ckpt = foreign_model.save_pretrained(tmp_path / "foreign-ckpt")
    foreign = export_bundle(
        foreign_ckpt, tmp_path / "foreign", split=True, parity_data=bench_corpus, accuracy_guard=False
    )
    theirs = foreign.encoder_sha256
    mine = engine.manifest.encoder_sha256
    assert theirs != mine
    with pytest.raises(
        BundleError, match=f"heads were built for encoder {theirs}, but this engine runs encoder {mine}"
    ):
        engine.swap_heads(tmp_path / "foreign")


@pytest.fixture(scope="module")
def minilm_int8_bundle(minilm_path: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """Real backbone, untrained heads (margins widened): one bundle with fp32, int8 (= int8-static-cpu)
    and int8-dynamic variants; returns (model, bundle)."""
    import torch

    from mtst.export import export_bundle
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

    torch.manual_seed(0)
    model = MultiTaskModel.from_pretrained(
        minilm_path,
        tasks=[
            TaskSpec("intent", "sentence_classification", ["a", "b", "c", "d"]),
            TaskSpec("ner", "token_classification", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
        ],
        max_seq_len=128,
    )
    with torch.no_grad():  # untrained heads have tiny margins (DESIGN.md); widen them like training does
        for p in model.heads.parameters():
            p.mul_(5.0)
    tmp = tmp_path_factory.mktemp("minilm-int8")
    ckpt = model.save_pretrained(tmp / "ckpt")
    bundle = tmp / "bundle"
    export_bundle(
        ckpt,
        bundle,
        quantize=["none", "int8", "int8-dynamic"],
        parity_data=bench_corpus,
        accuracy_guard=False,
    )
    return model, bundle


@pytest.mark.slow
def test_minilm_fp32_and_int8_bundle(minilm_int8_bundle, bench_corpus: Path) -> None:
    """Real backbone: one bundle with fp32 and two int8 variants; CPU picks int8-static-cpu; all in bounds."""
    from mtst.export.parity import PARITY_BOUNDS

    model, bundle = minilm_int8_bundle
    texts = _corpus(bench_corpus, 60)
    ref = _torch_outputs(model, texts)
    auto = Engine.load(bundle, providers="cpu")
    assert auto.variant.precision is Precision.INT8_STATIC_CPU
    for precision in (Precision.FP32, Precision.INT8_STATIC_CPU, Precision.INT8_DYNAMIC):
        engine = (
            auto
            if precision is Precision.INT8_STATIC_CPU
            else Engine.load(bundle, providers="cpu", precision=precision)
        )
        b = PARITY_BOUNDS[precision]
        preds = engine.predict(texts, return_embedding=True, return_logits=True)
        _check_parity(
            preds,
            ref,
            model,
            cos_min=b.embedding_cos_min,
            logit_tol=b.logits_max_abs,
            agree=b.label_agreement,
        )


def _alone_and_batched(engine: Engine, texts: list[str]) -> tuple[np.ndarray, int]:
    """(cosine of each text's embedding alone vs inside a random batch of 32, labels that differ)."""
    import random

    def run(batch: list[str]) -> list[Prediction]:
        return engine.predict(batch, return_embedding=True, return_logits=True)

    alone = [run([t])[0] for t in texts]
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    cos = np.empty(len(texts))
    changed = 0
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        for i, p in zip(idx, run([texts[i] for i in idx]), strict=True):
            a = alone[i]
            assert p.logits is not None and a.logits is not None
            cos[i] = float(np.dot(p.embedding, a.embedding))
            # every label: the sentence head's, and the token head's tag of every token
            for head in p.logits:
                changed += int(np.count_nonzero(p.logits[head].argmax(-1) != a.logits[head].argmax(-1)))
    return cos, changed


@pytest.mark.slow
def test_int8_answers_do_not_depend_on_the_rest_of_the_batch(minilm_int8_bundle, bench_corpus: Path) -> None:
    """The int8 the runtime picks on CPU: 500 real sentences alone vs inside random batches of 32 (one
    padded batch each) -- every label equal, embedding cosine >= 0.9999. int8-dynamic, whose activation
    scale spans the whole batch tensor, is not."""
    _, bundle = minilm_int8_bundle
    texts = _corpus(bench_corpus, 500)
    whole = {"providers": "cpu", "batch_size": 32, "max_batch_tokens": None, "intra_op_threads": 1}
    engine = Engine.load(bundle, **whole)
    assert engine.variant.precision is Precision.INT8_STATIC_CPU
    cos, changed = _alone_and_batched(engine, texts)
    assert changed == 0
    assert cos.min() >= 0.9999, f"min cosine alone vs batched {cos.min():.6f}"
    dynamic = Engine.load(bundle, precision="int8-dynamic", **whole)
    cos_dynamic, _ = _alone_and_batched(dynamic, texts)
    assert cos_dynamic.min() < 0.9999  # the test can tell the difference
