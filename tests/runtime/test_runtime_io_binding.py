"""IO binding: the same answers as a plain ``session.run``, bit for bit, on CPU OrtValues.

ONNX Runtime runs IO binding on CPU too, so the path that CUDA takes (inputs bound once, outputs
allocated by the session, a split bundle's embedding handed from encoder to heads as an OrtValue) is
checked here against the plain path on single and split bundles, toy and exported, every head and
head subsets, one text and mixed-length batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mtst.errors import ConfigError
from mtst.runtime.engine import Engine
from mtst.runtime.results import Prediction, TokenEntities


def _pair(bundle: Path, **kwargs) -> tuple[Engine, Engine]:
    plain = Engine.load(bundle, providers="cpu", io_binding=False, **kwargs)
    bound = Engine.load(bundle, providers="cpu", io_binding=True, **kwargs)
    assert not any(g.bind for g in plain._heads.runner.graphs)
    assert all(g.bind and g.device == "cpu" for g in bound._heads.runner.graphs)
    return plain, bound


def _same(a: list[Prediction], b: list[Prediction]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert p.embedding is not None and q.embedding is not None
        assert np.array_equal(p.embedding, q.embedding)
        assert p.logits is not None and q.logits is not None and p.logits.keys() == q.logits.keys()
        for name in p.logits:
            assert np.array_equal(p.logits[name], q.logits[name]), name
        assert p.heads == q.heads


@pytest.fixture(scope="module", params=["toy_single", "toy_split", "exported_single", "exported_split"])
def bundle(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def test_bound_equals_plain(bundle: Path, sentences: list[str]) -> None:
    plain, bound = _pair(bundle)
    heads = list(plain.heads)
    for subset in (None, heads[:1], heads[1:]):  # every head, the sentence head alone, the token head alone
        for texts in (sentences[:1], sentences):  # batch 1 and mixed lengths
            kw = {"heads": subset, "return_embedding": True, "return_logits": True}
            _same(plain.predict(texts, **kw), bound.predict(texts, **kw))
    assert np.array_equal(plain.embed(sentences), bound.embed(sentences))
    assert any(isinstance(v, TokenEntities) for p in bound.predict(sentences) for v in p.heads.values())


def test_bound_equals_plain_in_parallel_batches(toy_split: Path, sentences: list[str]) -> None:
    plain, bound = _pair(toy_split, parallel_batches=2, batch_size=4)
    kw = {"return_embedding": True, "return_logits": True}
    _same(plain.predict(sentences * 3, **kw), bound.predict(sentences * 3, **kw))


def test_heads_on_embeddings_bound(exported_split: Path, sentences: list[str]) -> None:
    plain, bound = _pair(exported_split)
    emb = plain.embed(sentences)
    assert plain.predict_from_embeddings(emb) == bound.predict_from_embeddings(emb)
    strided = np.asfortranarray(emb)  # not C-contiguous: bound inputs must still read it right
    assert bound.predict_from_embeddings(strided) == plain.predict_from_embeddings(emb)


def test_embed_device_leaves_the_embeddings_as_ortvalues(bundle: Path, sentences: list[str]) -> None:
    plain, bound = _pair(bundle, batch_size=3)
    for engine in (plain, bound):  # whatever io_binding says, embed_device binds
        out = engine.embed_device(sentences)
        assert out.device == "cpu" and out.n == len(sentences) and len(out.parts) > 1
        assert all(isinstance(v, ort.OrtValue) for _, v in out.parts)
        assert sorted(np.concatenate([idx for idx, _ in out.parts]).tolist()) == list(range(len(sentences)))
        assert np.array_equal(out.numpy(), plain.embed(sentences))
    one = bound.embed_device(sentences[:1])
    assert len(one.parts) == 1 and one.parts[0][1].shape() == [1, plain.embedding_dim]


def test_split_runner_device_outputs(toy_split: Path, sentences: list[str]) -> None:
    """run_device on a split runner: encoder output handed to the heads on the device, heads' outputs
    returned as OrtValues; run() returns the same numbers on the host."""
    _, bound = _pair(toy_split)
    runner = bound._heads.runner
    tok = bound._tokenizer
    assert tok is not None
    feeds = tok.pad(tok.encode(sentences)[0])
    names = ["embedding", "intent", "ner"]
    on_device = runner.run_device(feeds, names)
    assert all(isinstance(v, ort.OrtValue) for v in on_device)
    for a, b in zip(on_device, runner.run(feeds, names), strict=True):
        assert np.array_equal(a.numpy(), b)


def test_auto_is_off_on_cpu_and_bad_values_fail(toy_single: Path) -> None:
    engine = Engine.load(toy_single, providers="cpu")  # io_binding="auto"
    assert not any(g.bind for g in engine._heads.runner.graphs)
    with pytest.raises(ConfigError, match=r"io_binding: expected True, False or 'auto', got 'on'"):
        Engine.load(toy_single, providers="cpu", io_binding="on")
