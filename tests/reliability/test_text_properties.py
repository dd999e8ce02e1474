"""Adversarial text, property-based (hypothesis), and one regression test per bug the suite found.

Properties: any list of any strings (surrogates included) gets one right answer per text, in order,
each the same as the text's answer alone -- or a ValueError naming the first text that is not valid
Unicode; any float32 array gets finite scores or a ValueError naming the first bad row.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from _fixtures_text import answers_match, text_bundle, text_checkpoint  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mtst.runtime.engine import Engine

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ANY_CHAR = st.characters(exclude_categories=())  # surrogates (Cs) too
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(
        st.sampled_from([" ", "[SEP]", "[CLS]", "[MASK]", "Anna", "Paris", "\u200b", "中", "é", "\x00"]),
        max_size=60,
    ).map("".join),
)


@pytest.fixture(scope="module")
def engine(text_bundle: Path) -> Engine:
    return Engine.load(text_bundle, providers="cpu", precision="fp32")


def _first_surrogate(texts: list[str]) -> int | None:
    for i, t in enumerate(texts):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in t):
            return i
    return None


@SETTINGS
@given(texts=st.lists(TEXT, max_size=12))
def test_any_texts_answer_in_order_or_name_the_bad_one(engine: Engine, texts: list[str]) -> None:
    bad = _first_surrogate(texts)
    if bad is not None:
        with pytest.raises(ValueError, match=rf"^texts\[{bad}\]: unpaired surrogate"):
            engine.predict(texts)
        with pytest.raises(ValueError, match=rf"^texts\[{bad}\]: unpaired surrogate"):
            engine.embed(texts)
        return
    preds = engine.predict(texts, return_embedding=True)
    assert [p.text for p in preds] == texts
    emb = engine.embed(texts)
    assert emb.shape == (len(texts), engine.embedding_dim) and np.isfinite(emb).all()
    for t, p, e in zip(texts, preds, emb, strict=True):
        alone = engine.predict([t], return_embedding=True)[0]
        differs = answers_match(p, alone)
        assert differs is None, (t, differs)
        assert float(np.dot(e, alone.embedding)) >= 0.99999


@SETTINGS
@given(
    emb=arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.just(32)),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_any_embeddings_give_finite_scores_or_name_the_row(engine: Engine, emb: np.ndarray) -> None:
    try:
        res = engine.predict_from_embeddings(emb)
    except ValueError as exc:
        m = re.match(r"embeddings\[(\d+)\]: ", str(exc))
        assert m, str(exc)
        row = int(m.group(1))
        assert row < len(emb)
        # the first bad row: non-finite values, or values large enough to overflow the heads
        assert all(np.isfinite(emb[:row]).all(axis=1))
        return
    assert len(res) == len(emb)
    for r in res:
        vals = list(r["intent"].scores.values())
        assert np.isfinite(vals).all() and abs(sum(vals) - 1.0) < 1e-5


# ---------------------------------------------------------------------------- regressions


def test_item_beyond_the_first_chunk_is_named_by_its_own_index(engine: Engine) -> None:
    """Lists are tokenized in chunks of 4,096: a bad text at 5,000 was reported as texts[904]."""
    texts = ["fine"] * 10_000
    texts[5000] = "bad \udc80"
    for call in (engine.predict, engine.embed):
        with pytest.raises(ValueError, match=r"^texts\[5000\]: unpaired surrogate U\+DC80 at character 4"):
            call(texts)


def test_cache_misses_are_named_by_their_index_in_the_request(text_bundle: Path) -> None:
    cached = Engine.load(text_bundle, providers="cpu", precision="fp32", embedding_cache=100)
    cached.embed(["a", "b"])
    with pytest.raises(ValueError, match=r"^texts\[3\]: unpaired surrogate"):
        cached.embed(["a", "b", "c", "\ud800"])  # the cache computes only [c, \ud800]


def test_huge_embeddings_are_refused_by_row_not_answered_with_nan(engine: Engine) -> None:
    x = np.zeros((3, 32), dtype=np.float32)
    x[:, 0] = 1.0
    x[1] = 3e38  # finite float32, but the heads' float32 products overflow: NaN scores before
    with pytest.raises(ValueError, match=r"^embeddings\[1\]: head 'intent' gives non-finite scores"):
        engine.predict_from_embeddings(x)
    big = np.zeros((2, 32))
    big[1, 5] = 1e300  # beyond float32: became inf with a RuntimeWarning
    with pytest.raises(ValueError, match=r"^embeddings\[1\]: contains NaN or infinity"):
        engine.predict_from_embeddings(big)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (None, TypeError, r"expected a float array \(N, 32\), got dtype object \(NoneType\)"),
        (1.0, ValueError, r"expected shape \(N, 32\) or \(32,\), got \(\)"),
        ([[0.5] * 33], ValueError, r"expected shape \(N, 32\) or \(32,\), got \(1, 33\)"),
        (np.ones((2, 32), complex), TypeError, r"expected a float array \(N, 32\), got dtype complex128"),
        (np.ones((2, 32), bool), TypeError, r"expected a float array \(N, 32\), got dtype bool"),
    ],
)
def test_embeddings_of_the_wrong_kind_get_typed_errors(engine: Engine, value, error, message) -> None:
    """None, scalars and lists raised AttributeError ('.shape'); complex was cast silently, bool read as 0/1."""
    with pytest.raises(error, match=f"^embeddings: {message}"):
        engine.predict_from_embeddings(value)


def test_over_long_text_without_whitespace_is_cut_and_answers_as_whole(engine: Engine) -> None:
    """1 MB of punctuation or CJK was tokenized whole (a million tokens, seconds per call); it is cut
    now, with the same answer as the whole text's tokenization."""
    tok = engine._tokenizer
    assert tok is not None
    for text in ("." * (1 << 20), "中" * (1 << 20), "a." * (1 << 19)):
        t0 = time.perf_counter()
        (enc,), truncated = tok.encode([text])
        assert time.perf_counter() - t0 < 1.0  # about 10 ms; the whole text took seconds
        whole = tok._tok.encode(text, add_special_tokens=True)
        assert truncated[0] and enc.ids == whole.ids
    # one huge word is [UNK] whole and cut alike: the cut cannot stand (the kept token reaches it)
    (enc,), truncated = tok.encode(["x" * 100_000])
    assert enc.ids == tok._tok.encode("x" * 100_000, add_special_tokens=True).ids and not truncated[0]
