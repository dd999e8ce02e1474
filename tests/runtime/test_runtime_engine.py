"""Engine on toy bundles: numbers equal an independent numpy twin; order, heads, bad input, threads, swaps."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from toybundle import INTENT, NER, TOY_ENCODER_SHA, Toy

from mtst.errors import BundleError, ConfigError
from mtst.runtime.decode import decode_entities
from mtst.runtime.engine import Engine
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities, softmax


def _check_against_reference(preds: list[Prediction], ref: list[dict], texts: list[str]) -> None:
    assert [p.text for p in preds] == texts
    for p, r in zip(preds, ref, strict=True):
        assert p.truncated == r["truncated"]
        assert p.embedding is not None and p.logits is not None
        np.testing.assert_allclose(p.embedding, r["embedding"], atol=1e-5)
        np.testing.assert_allclose(p.logits["intent"], r["intent"], atol=1e-4)
        np.testing.assert_allclose(p.logits["ner"], r["ner"], atol=1e-4)
        intent = p.heads["intent"]
        assert isinstance(intent, SentenceLabel)
        probs = softmax(r["intent"])
        assert intent.label == INTENT[int(probs.argmax())]
        assert intent.score == pytest.approx(float(probs.max()), abs=1e-5)
        probs_t = softmax(r["ner"])
        e = r["encoding"]
        ents = decode_entities(
            p.text, e.word_ids, e.offsets, probs_t.argmax(1).tolist(), probs_t.max(1).tolist(), NER
        )
        ner = p.heads["ner"]
        assert isinstance(ner, TokenEntities)
        assert [(x.text, x.label, x.start, x.end) for x in ner.entities] == [
            (x.text, x.label, x.start, x.end) for x in ents
        ]
        for x in ner.entities:
            assert p.text[x.start : x.end] == x.text


@pytest.mark.parametrize("layout", ["single", "split"])
def test_matches_numpy_twin(
    request: pytest.FixtureRequest, toy: Toy, sentences: list[str], layout: str
) -> None:
    bundle = request.getfixturevalue(f"toy_{layout}")
    engine = Engine.load(bundle, providers="cpu")
    assert engine.variant.layout.value == layout
    preds = engine.predict(sentences, return_embedding=True, return_logits=True)
    _check_against_reference(preds, toy.reference(sentences), sentences)
    assert any(p.truncated for p in preds) and not all(p.truncated for p in preds)
    assert any(p.heads["ner"].entities for p in preds)  # type: ignore[union-attr]
    np.testing.assert_allclose(engine.embed(sentences), np.stack([p.embedding for p in preds]), atol=1e-6)


def test_defaults_leave_out_embedding_and_logits(toy_single: Path) -> None:
    (p,) = Engine.load(toy_single, providers="cpu").predict(["hello"])
    assert p.embedding is None and p.logits is None
    assert set(p.to_dict()) == {"text", "truncated", "heads"}


@pytest.mark.parametrize("layout", ["single", "split"])
def test_order_preserved_across_buckets(request: pytest.FixtureRequest, toy: Toy, layout: str) -> None:
    rng = random.Random(1)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "in",
        "Paris",
        "with",
        "Angela",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    engine = Engine.load(
        request.getfixturevalue(f"toy_{layout}"), providers="cpu", batch_size=7, max_batch_tokens=100
    )
    preds = engine.predict(texts, return_embedding=True, return_logits=True)
    _check_against_reference(preds, toy.reference(texts), texts)


@pytest.mark.parametrize("layout", ["single", "split"])
def test_parallel_batches_give_the_same_numbers_in_order(
    request: pytest.FixtureRequest, layout: str, toy: Toy
) -> None:
    rng = random.Random(5)
    words = ["Angela", "Merkel", "visited", "Paris", "the", "bank", "card", "is", "blocked", "again"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(203)]
    bundle = request.getfixturevalue(f"toy_{layout}")
    engine = Engine.load(bundle, providers="cpu", intra_op_threads=1, batch_size=8, parallel_batches=3)
    assert engine.parallel_batches == 3 and engine.max_batch_tokens == 256  # "auto" on CPU
    preds = engine.predict(texts, return_embedding=True, return_logits=True)
    _check_against_reference(preds, toy.reference(texts), texts)
    np.testing.assert_allclose(engine.embed(texts), np.stack([p.embedding for p in preds]), atol=1e-6)
    # a request smaller than one batch is still cut in one batch per worker, and stays in order
    few = texts[:5]
    _check_against_reference(
        engine.predict(few, return_embedding=True, return_logits=True), toy.reference(few), few
    )


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_parallel_batches_rejects_bad_values(toy_single: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="parallel_batches"):
        Engine.load(toy_single, providers="cpu", parallel_batches=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, "big", True])
def test_max_batch_tokens_rejects_bad_values(toy_single: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        Engine.load(toy_single, providers="cpu", max_batch_tokens=bad)  # type: ignore[arg-type]


def test_huge_list_is_chunked_in_order(toy_split: Path, toy: Toy) -> None:
    texts = [f"sentence number {i} " + "x " * (i % 17) for i in range(9000)]  # > 2 chunks of 4096
    engine = Engine.load(toy_split, providers="cpu", batch_size=64)
    emb = engine.embed(texts)
    preds = engine.predict(texts, heads=["intent"])
    assert emb.shape == (9000, 8) and [p.text for p in preds] == texts
    sample = [0, 4095, 4096, 4097, 8191, 8192, 8999]
    ref = toy.reference([texts[i] for i in sample])
    np.testing.assert_allclose(emb[sample], np.stack([r["embedding"] for r in ref]), atol=1e-5)
    assert [preds[i].heads["intent"].label for i in sample] == [  # type: ignore[union-attr]
        INTENT[int(np.argmax(r["intent"]))] for r in ref
    ]


@pytest.mark.parametrize("layout", ["single", "split"])
def test_only_named_heads_run(request: pytest.FixtureRequest, layout: str, sentences: list[str]) -> None:
    engine = Engine.load(request.getfixturevalue(f"toy_{layout}"), providers="cpu")
    asked: list[list[str]] = []
    sessions = [g.session for g in engine._heads.runner.graphs]
    for s in sessions:
        orig = s.run
        s.run = lambda names, feeds, run_options=None, _o=orig: (
            asked.append(list(names)),
            _o(names, feeds, run_options),
        )[1]  # type: ignore[method-assign]
    only_intent = engine.predict(sentences, heads=["intent"])
    assert all(set(p.heads) == {"intent"} for p in only_intent)
    assert not any("ner" in names for names in asked)  # ORT was never asked for the token head
    assert not any("token_states" in names for names in asked)
    asked.clear()
    only_ner = engine.predict(sentences, heads="ner")
    assert all(set(p.heads) == {"ner"} for p in only_ner)
    assert not any("intent" in names for names in asked)
    full = engine.predict(sentences)
    assert [p.heads["intent"] for p in full] == [p.heads["intent"] for p in only_intent]
    assert [p.heads["ner"] for p in full] == [p.heads["ner"] for p in only_ner]


def test_unknown_head_lists_heads(toy_single: Path) -> None:
    engine = Engine.load(toy_single, providers="cpu")
    with pytest.raises(
        ConfigError, match=r"heads: unknown head\(s\) \['sentiment'\]; this engine has \['intent', 'ner'\]"
    ):
        engine.predict(["x"], heads=["intent", "sentiment"])
    with pytest.raises(
        ConfigError, match=r"\['embedding'\]; .* \(the embedding is not a head: use embed\(\)"
    ):
        engine.predict(["x"], heads=["embedding"])
    with pytest.raises(TypeError, match=r"heads\[0\]: expected a head name \(str\), got int"):
        engine.predict(["x"], heads=[3])  # type: ignore[list-item]


# ---------------------------------------------------------------------------- bad input (issue item 9)


def test_bad_input_each_case(toy_single: Path, toy: Toy) -> None:
    engine = Engine.load(toy_single, providers="cpu")
    assert engine.predict([]) == [] and engine.embed([]).shape == (0, 8)
    with pytest.raises(TypeError, match=r"texts: expected a list of str, got one str"):
        engine.predict("one string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]: expected str, got int"):
        engine.predict(["fine", 42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"texts\[0\]: expected str, got NoneType"):
        engine.embed([None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"texts\[1\]: unpaired surrogate U\+DC80 at character 3"):
        engine.predict(["ok", "bad\udc80"])
    odd = [
        "",
        "   \t\n ",
        "ctrl \x00\x01\x1b[31m chars",
        "中文句子 and 🙂🚀 emoji",
        "x" * 100_000,
        "word " * 50_000,
        "é" * 3,
    ]
    preds = engine.predict(odd, return_embedding=True, return_logits=True)
    _check_against_reference(preds, toy.reference(odd), odd)
    assert [p.truncated for p in preds] == [False, False, False, False, False, True, False]
    assert preds[0].heads["ner"].entities == ()  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- threads


@pytest.mark.parametrize("layout", ["single", "split"])
def test_threads_equal_serial(request: pytest.FixtureRequest, layout: str, sentences: list[str]) -> None:
    engine = Engine.load(request.getfixturevalue(f"toy_{layout}"), providers="cpu", embedding_cache=16)
    rng = random.Random(0)
    jobs = [[rng.choice(sentences) for _ in range(rng.randint(1, 6))] for _ in range(400)]
    serial = [engine.predict(j, return_embedding=True) for j in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda j: engine.predict(j, return_embedding=True), jobs))
    assert parallel == serial
    for a, b in zip(parallel, serial, strict=True):
        np.testing.assert_array_equal(np.stack([p.embedding for p in a]), np.stack([p.embedding for p in b]))


# ---------------------------------------------------------------------------- embeddings, cache, heads-only


def test_embedding_cache(toy_split: Path, sentences: list[str]) -> None:
    engine = Engine.load(toy_split, providers="cpu", embedding_cache=4)
    plain = Engine.load(toy_split, providers="cpu")
    first = engine.embed(sentences)
    assert engine.cache is not None and len(engine.cache) == 4  # LRU bound
    again = engine.embed(sentences[-4:])
    assert engine.cache.hits == 4
    np.testing.assert_array_equal(again, first[-4:])
    np.testing.assert_allclose(first, plain.embed(sentences), atol=1e-6)
    # cached path of predict (split, sentence heads only) keeps the truncated flag and the labels
    a = engine.predict(sentences, heads=["intent"])
    b = plain.predict(sentences, heads=["intent"])
    assert a == b
    with pytest.raises(ConfigError, match=r"embedding_cache: expected an integer >= 1"):
        Engine.load(toy_split, providers="cpu", embedding_cache=-1)


def test_predict_from_embeddings(toy_split: Path, toy_single: Path, sentences: list[str]) -> None:
    engine = Engine.load(toy_split, providers="cpu")
    emb = engine.embed(sentences)
    fast = engine.predict_from_embeddings(emb)
    assert [r["intent"] for r in fast] == [
        p.heads["intent"] for p in engine.predict(sentences, heads=["intent"])
    ]
    assert engine.predict_from_embeddings(emb[0])[0] == fast[0]  # one (dim,) vector
    assert engine.predict_from_embeddings(emb.astype(np.float64), heads=["intent"]) == fast
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(N, 8\) or \(8,\), got \(10, 7\)"):
        engine.predict_from_embeddings(emb[:, :7])
    bad = emb.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"embeddings\[3\]: contains NaN or infinity"):
        engine.predict_from_embeddings(bad)
    with pytest.raises(ConfigError, match=r"heads: \['ner'\] are token heads and need token states"):
        engine.predict_from_embeddings(emb, heads=["ner"])
    with pytest.raises(BundleError, match=r"predict_from_embeddings needs a split or heads-only bundle"):
        Engine.load(toy_single, providers="cpu").predict_from_embeddings(emb)


@pytest.fixture(scope="module")
def other_heads(minilm_tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Toy, Path]:
    """A heads-only bundle for the same encoder hash, with different head weights."""
    other = Toy(minilm_tokenizer_json, seed=1)
    return other, other.bundle(tmp_path_factory.mktemp("heads"), layout="heads")


def test_heads_only_engine(other_heads: tuple[Toy, Path], toy_split: Path, sentences: list[str]) -> None:
    other, path = other_heads
    heads_engine = Engine.load(path, providers="cpu")
    assert not heads_engine.has_encoder and heads_engine.variant.layout.value == "heads"
    with pytest.raises(BundleError, match=r"a heads-only bundle has no encoder: use predict_from_embeddings"):
        heads_engine.predict(["x"])
    with pytest.raises(BundleError, match=r"a heads-only bundle has no encoder"):
        heads_engine.embed(["x"])
    emb = Engine.load(toy_split, providers="cpu").embed(sentences)
    labels = [r["intent"].label for r in heads_engine.predict_from_embeddings(emb)]
    assert labels == [INTENT[int(i)] for i in np.argmax(emb @ other.w_intent + other.b_intent, axis=1)]


def test_swap_heads(other_heads: tuple[Toy, Path], toy_split: Path, toy: Toy, sentences: list[str]) -> None:
    other, path = other_heads
    engine = Engine.load(toy_split, providers="cpu")
    emb = engine.embed(sentences)
    before = engine.predict(sentences, return_logits=True)
    engine.swap_heads(path)
    assert engine.heads_source == path.resolve()
    after = engine.predict(sentences, return_logits=True, return_embedding=True)
    for p in after:
        # same encoder (embeddings unchanged), new heads: intent from other's weights on our embedding
        np.testing.assert_allclose(
            p.logits["intent"], p.embedding @ other.w_intent + other.b_intent, atol=1e-4
        )  # type: ignore[index,operator]
    np.testing.assert_allclose(np.stack([p.embedding for p in after]), emb, atol=1e-6)
    assert [p.logits["ner"].shape for p in after] == [p.logits["ner"].shape for p in before]  # type: ignore[index]
    assert any(
        not np.allclose(a.logits["intent"], b.logits["intent"])
        for a, b in zip(after, before, strict=True)  # type: ignore[index]
    )


def test_swap_refuses_foreign_encoder(toy: Toy, toy_split: Path, tmp_path: Path) -> None:
    foreign = toy.bundle(tmp_path / "foreign", layout="heads", encoder_sha256="b" * 64)
    engine = Engine.load(toy_split, providers="cpu")
    with pytest.raises(
        BundleError,
        match=f"heads were built for encoder {'b' * 64}, but this engine runs encoder {TOY_ENCODER_SHA}",
    ):
        engine.swap_heads(foreign)
    nohash = toy.bundle(tmp_path / "nohash", layout="heads", encoder_sha256=None)
    with pytest.raises(BundleError, match=r"encoder_sha256 missing: cannot tell which encoder"):
        engine.swap_heads(nohash)
    tampered = toy.bundle(tmp_path / "tampered", layout="heads")
    (tampered / "heads.onnx").write_bytes((tampered / "heads.onnx").read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match=r"heads.onnx: sha256 mismatch"):
        engine.swap_heads(tampered)
    assert engine.heads_source == toy_split.resolve()  # nothing changed


def test_swap_refused_for_single_graph(toy_single: Path, other_heads: tuple[Toy, Path]) -> None:
    with pytest.raises(
        BundleError,
        match=r"keeps its heads inside model.onnx: swap_heads needs an engine loaded from a split bundle",
    ):
        Engine.load(toy_single, providers="cpu").swap_heads(other_heads[1])


def test_swap_under_load_never_fails(
    other_heads: tuple[Toy, Path], toy_split: Path, sentences: list[str]
) -> None:
    engine = Engine.load(toy_split, providers="cpu")
    old = engine.predict(sentences)
    engine.swap_heads(other_heads[1])
    new = engine.predict(sentences)
    engine.swap_heads(toy_split)
    assert old != new
    stop = threading.Event()
    seen: list[list[Prediction]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while not stop.is_set():
            try:
                seen.append(engine.predict(sentences))
            except BaseException as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):
        engine.swap_heads(other_heads[1] if i % 2 == 0 else toy_split)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert seen and all(r in (old, new) for r in seen)  # every call saw one head set, whole


def test_min_entity_score_drops_only_the_low_scored_entities(toy_split: Path, sentences: list[str]) -> None:
    engine = Engine.load(toy_split, providers="cpu")
    texts = sentences * 3
    every = engine.predict(texts, heads=["ner", "intent"])
    scores = sorted({e.score for p in every for e in p.heads["ner"].entities})  # type: ignore[union-attr]
    assert len(scores) >= 2, "the toy bundle tags entities with different scores"
    floor = scores[len(scores) // 2]
    kept = engine.predict(texts, heads=["ner", "intent"], min_entity_score=floor)
    for a, b in zip(every, kept, strict=True):
        assert b.heads["intent"] == a.heads["intent"]  # sentence heads untouched
        assert b.heads["ner"].entities == tuple(  # type: ignore[union-attr]
            e
            for e in a.heads["ner"].entities  # type: ignore[union-attr]
            if e.score >= floor
        )
    assert sum(len(p.heads["ner"].entities) for p in kept) < sum(  # type: ignore[union-attr]
        len(p.heads["ner"].entities)  # type: ignore[union-attr]
        for p in every
    )


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, None])
def test_min_entity_score_rejects_bad_values(toy_single: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="min_entity_score"):
        Engine.load(toy_single, providers="cpu").predict(["hello"], min_entity_score=bad)  # type: ignore[arg-type]
