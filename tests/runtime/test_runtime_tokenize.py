"""Tokenization (truncation flag, dynamic padding, bad text), length batches and result decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtst.errors import BundleError, ConfigError
from mtst.runtime.batching import padding_waste, plan_batches
from mtst.runtime.decode import decode_entities
from mtst.runtime.results import SentenceLabel, decode_sentence, decode_tokens, softmax
from mtst.runtime.tokenize import TextTokenizer, check_texts

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def tok(minilm_tokenizer_json: Path) -> TextTokenizer:
    return TextTokenizer.from_file(minilm_tokenizer_json, max_seq_len=16, pad_token_id=0, input_names=INPUTS)


def test_packaged_tokenizer_padding_is_switched_off(tok: TextTokenizer) -> None:
    # the packaged MiniLM tokenizer.json pads to 128: the runtime must not
    encs, truncated = tok.encode(["hi", "hello there"])
    assert [len(e.ids) for e in encs] == [3, 4]
    assert not truncated.any()


def test_truncation_flag_and_length(tok: TextTokenizer) -> None:
    encs, truncated = tok.encode(["one two three", "word " * 14, "word " * 15, "word " * 500])
    assert [len(e.ids) for e in encs] == [5, 16, 16, 16]
    assert truncated.tolist() == [False, False, True, True]  # 14 words + [CLS] [SEP] = 16 fits exactly


def test_very_long_text_is_cut_early_with_the_same_result(tok: TextTokenizer) -> None:
    long = "The quick brown fox jumps over the lazy dog. " * 20_000  # 900k characters
    (enc,), truncated = tok.encode([long])
    (ref,), _ = tok.encode([long[:200]])
    assert enc.ids == ref.ids and enc.offsets == ref.offsets and truncated[0]


def test_long_whitespace_run_before_words_is_not_lost(tok: TextTokenizer) -> None:
    # the cut prefix holds no tokens at all: the whole text must be tokenized after all
    text = " " * 5000 + "hello world"
    (enc,), truncated = tok.encode([text])
    assert enc.tokens == ["[CLS]", "hello", "world", "[SEP]"] and not truncated[0]
    assert text[enc.offsets[1][0] : enc.offsets[1][1]] == "hello"


def test_pad_dynamic_int64(tok: TextTokenizer) -> None:
    encs, _ = tok.encode(["hi", "hello there friend"])
    feeds = tok.pad(encs)
    assert list(feeds) == list(INPUTS)
    assert all(v.dtype == np.int64 and v.shape == (2, 5) for v in feeds.values())
    assert feeds["input_ids"][0].tolist() == [101, 7632, 102, 0, 0]
    assert feeds["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_pad_one_text_equals_the_batch_path(tok: TextTokenizer) -> None:
    # batch-1 requests take a shorter path: same arrays as one row of a batch without padding
    encs, _ = tok.encode(["hello there friend", "hi"])
    one = tok.pad(encs[:1])
    both = tok.pad(encs)
    assert list(one) == list(INPUTS)
    for name in INPUTS:
        assert one[name].dtype == np.int64 and one[name].shape == (1, 5)
        np.testing.assert_array_equal(one[name], both[name][:1])


def test_pad_respects_manifest_inputs(minilm_tokenizer_json: Path) -> None:
    t = TextTokenizer.from_file(minilm_tokenizer_json, max_seq_len=8, pad_token_id=5, input_names=INPUTS[:2])
    encs, _ = t.encode(["a b c", "a"])
    feeds = t.pad(encs)
    assert list(feeds) == ["input_ids", "attention_mask"]
    assert feeds["input_ids"][1].tolist() == [101, 1037, 102, 5, 5]


def test_bad_inputs_manifest(minilm_tokenizer_json: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"inputs: \['input_ids', 'pixels'\]"):
        TextTokenizer.from_file(
            minilm_tokenizer_json, max_seq_len=8, pad_token_id=0, input_names=["input_ids", "pixels"]
        )
    bad = tmp_path / "tok.json"
    bad.write_text("{}")
    with pytest.raises(BundleError, match=r"tok.json: not a Hugging Face tokenizers file"):
        TextTokenizer.from_file(bad, max_seq_len=8, pad_token_id=0, input_names=INPUTS)


def test_surrogate_names_item(tok: TextTokenizer) -> None:
    with pytest.raises(ValueError, match=r"texts\[2\]: unpaired surrogate U\+D800 at character 4"):
        tok.encode(["fine", "also fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"texts\[0\]: unpaired surrogate U\+DFFF at character 0"):
        tok.encode(["\udfff"])  # one text takes the non-batch path


def test_check_texts() -> None:
    assert check_texts(("a", "b")) == ["a", "b"]
    assert check_texts(x for x in ["a"]) == ["a"]
    assert check_texts([]) == []
    with pytest.raises(TypeError, match=r"texts: expected a list of str, got one str; wrap it in a list"):
        check_texts("hello")
    with pytest.raises(TypeError, match=r"texts\[1\]: expected str, got int"):
        check_texts(["a", 3])
    with pytest.raises(TypeError, match=r"texts\[0\]: expected str, got bytes"):
        check_texts([b"a"])
    with pytest.raises(TypeError, match=r"texts\[2\]: expected str, got NoneType"):
        check_texts(["a", "b", None])
    with pytest.raises(TypeError, match=r"texts: expected a list of str, got int"):
        check_texts(5)


# ---------------------------------------------------------------------------- batching


def test_plan_batches_sorts_and_covers_everything() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000)
    plan = plan_batches(lengths, max_batch=32)
    idx = np.concatenate(plan.batches)
    assert sorted(idx.tolist()) == list(range(1000))  # a permutation: nothing lost, nothing twice
    assert np.all(np.diff(lengths[idx]) >= 0)  # length-sorted
    assert max(len(b) for b in plan.batches) == 32
    assert plan.padding_waste < padding_waste(
        lengths, [np.arange(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]
    )


def test_plan_batches_token_budget() -> None:
    lengths = [10] * 10 + [100] * 3 + [300]
    plan = plan_batches(lengths, max_batch=8, max_tokens=250)
    sizes = [(len(b), int(np.max(np.asarray(lengths)[b]))) for b in plan.batches]
    assert sizes == [(8, 10), (2, 10), (2, 100), (1, 100), (1, 300)]  # 300 > budget still runs alone
    assert all(n * m <= 250 or n == 1 for n, m in sizes)


def test_plan_batches_stable_for_equal_lengths() -> None:
    plan = plan_batches([5, 5, 5, 5, 5], max_batch=2)
    assert [b.tolist() for b in plan.batches] == [[0, 1], [2, 3], [4]]


def test_plan_batches_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"max_batch: expected an integer >= 1, got 0"):
        plan_batches([1], max_batch=0)
    with pytest.raises(ConfigError, match=r"max_tokens: expected an integer >= 1 or None, got -5"):
        plan_batches([1], max_tokens=-5)


def test_padding_waste_values() -> None:
    assert padding_waste([4, 4], [np.array([0, 1])]) == 0.0
    assert padding_waste([1, 3], [np.array([0, 1])]) == pytest.approx(2 / 6)
    assert padding_waste([], []) == 0.0


# ---------------------------------------------------------------------------- results


def test_softmax_stable() -> None:
    p = softmax(np.array([[1000.0, 1000.0], [0.0, -1000.0]]))
    assert np.allclose(p, [[0.5, 0.5], [1.0, 0.0]])
    assert p.dtype == np.float32


def test_decode_sentence() -> None:
    (a, b) = decode_sentence(np.array([[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]), ["x", "y", "z"])
    assert isinstance(a, SentenceLabel) and a.label == "y" and b.label == "x"
    assert list(a.scores) == ["x", "y", "z"]
    assert a.score == pytest.approx(np.exp(2) / (np.exp(2) + 2))
    assert sum(a.scores.values()) == pytest.approx(1.0)
    with pytest.raises(AttributeError):
        a.label = "z"  # type: ignore[misc]


def test_decode_sentence_of_one_row_is_the_batch_answer_bit_for_bit() -> None:
    # batch 1 takes its own softmax (fewer temporaries): every label, score and probability must be
    # exactly those of the same row decoded inside a batch (float32 arithmetic, same reductions)
    rng = np.random.default_rng(7)
    for width in (1, 2, 9, 77, 301):
        labels = [f"l{i}" for i in range(width)]
        for scale in (0.01, 1.0, 30.0, 1e4):
            batch = (rng.normal(size=(16, width)) * scale).astype(np.float32)
            batch[3] = batch[3, ::-1]
            together = decode_sentence(batch, labels)
            for i in range(len(batch)):
                assert decode_sentence(batch[i : i + 1], labels) == [together[i]]
                strided = np.asfortranarray(batch)[i : i + 1]  # not C-contiguous rows
                assert decode_sentence(strided, labels) == [together[i]]
                assert decode_sentence(batch[i : i + 1].astype(np.float64), labels) == [together[i]]
    tie = decode_sentence(np.array([[1.0, 3.0, 3.0]]), ["a", "b", "c"])
    assert tie[0].label == "b"  # the first of equal maxima, as argmax over the batch


def test_decode_tokens_uses_words_and_offsets(tok: TextTokenizer) -> None:
    text = "Angela Merkel visited Washington"
    (enc,), _ = tok.encode([text])
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    word_tags = [1, 2, 0, 3]  # angela=B-PER merkel=I-PER visited=O washington=B-LOC
    tags, seen = [], set()
    for w in enc.word_ids:
        # first sub-token of a word carries its tag; continuations say B-LOC, which must be ignored
        tags.append(0 if w is None else (word_tags[w] if w not in seen else 3))
        seen.add(w)
    assert len(enc.ids) > 6  # some word is split into several sub-tokens (merkel -> mer ##kel)
    logits = np.full((len(enc.ids), 5), -5.0, dtype=np.float32)
    logits[np.arange(len(tags)), tags] = 5.0
    ents = decode_tokens(text, logits, enc.word_ids, enc.offsets, labels).entities
    assert [(e.text, e.label, e.start, e.end) for e in ents] == [
        ("Angela Merkel", "PER", 0, 13),
        ("Washington", "LOC", 22, 32),
    ]
    assert all(0.99 < e.score <= 1.0 for e in ents)


def test_decode_tokens_equals_softmax_decoding(tok: TextTokenizer) -> None:
    # decode_tokens skips the softmax where it can; entities and scores must stay those of the
    # plain reading (softmax, arg-max per token, mean probability over an entity's words)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rng = np.random.default_rng(0)
    texts = ["Angela Merkel visited Washington", "the quick brown fox", "New York and Paris in June"]
    encs, _ = tok.encode(texts)
    seen_entities = seen_none = 0
    for text, enc in zip(texts, encs, strict=True):
        for scale in (0.5, 3.0):
            logits = (rng.normal(size=(len(enc.ids), len(labels))) * scale).astype(np.float32)
            logits[:, 0] += rng.choice([0.0, 40.0])  # some texts with every word outside
            probs = softmax(logits)
            want = decode_entities(
                text, enc.word_ids, enc.offsets, probs.argmax(1).tolist(), probs.max(1).tolist(), labels
            )
            got = decode_tokens(text, logits, enc.word_ids, enc.offsets, labels).entities
            assert [(e.text, e.label, e.start, e.end) for e in got] == [
                (e.text, e.label, e.start, e.end) for e in want
            ]
            assert [e.score for e in got] == pytest.approx([e.score for e in want], abs=1e-6)
            seen_entities += bool(want)
            seen_none += not want
    assert seen_entities and seen_none


def test_decode_tokens_outside_tags_only() -> None:
    # every word tagged outside (including a non-"O" outside tag): no entity
    logits = np.array([[0.0, 9.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 7.0], [0.0, 9.0, 0.0]], np.float32)
    got = decode_tokens(
        "ab cd", logits, [None, 0, 1, None], [(0, 0), (0, 2), (3, 5), (0, 0)], ["O", "X", "NONE"]
    )
    assert got.entities == ()
