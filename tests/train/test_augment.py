"""mtst.augment: seeded, label-consistent augmentations for sentence and NER tasks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mtst.augment import AUGMENTERS, MentionReplacement, build_augmenter, tags_from_spans
from mtst.data import DataSource, SentenceExample, TokenExample, load_examples
from mtst.errors import ConfigError, DataError
from mtst.runtime.decode import bio_spans
from mtst.tasks import TaskKind

SENTS = [
    SentenceExample("how do i unblock my card please", "pin_blocked", "b.csv:2"),
    SentenceExample("where is my money", "transfer", "b.csv:3"),
    SentenceExample("hello", "greet", "b.csv:4"),
]
NER = [
    TokenExample(
        ("Peter", "Blackburn", "visited", "New", "York", "."),
        ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"),
        "t:1",
    ),
    TokenExample(("Anna", "met", "Bob", "in", "Paris"), ("B-PER", "O", "B-PER", "O", "B-LOC"), "t:8"),
    TokenExample(("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O"), "t:15"),
    TokenExample(("Nothing", "here"), ("O", "O"), "t:20"),
]


def is_iob2(tags) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            return False
        prev = tag
    return True


def mentions(ex: TokenExample) -> list[tuple[str, tuple[str, ...]]]:
    return [(t, ex.tokens[s:e]) for t, s, e in bio_spans(ex.tags)]


def outside(ex: TokenExample) -> list[str]:
    return [tok for tok, tag in zip(ex.tokens, ex.tags, strict=True) if tag == "O"]


# --------------------------------------------------------------------------- sentence tasks
def test_token_dropout():
    aug = build_augmenter("token_dropout", SENTS, p=0.3)
    outs = [aug(SENTS[0], random.Random(s)) for s in range(50)]
    words = SENTS[0].text.split()
    for out in outs:
        assert out.label == SENTS[0].label and out.where == SENTS[0].where
        kept = out.text.split()
        assert kept and iter_is_subsequence(kept, words)
    assert any(len(o.text.split()) < len(words) for o in outs)
    assert len({o.text for o in outs}) > 5  # really random
    # the same seed gives the same result
    assert [aug(SENTS[0], random.Random(7)).text for _ in range(2)] == [outs[7].text] * 2
    # never every word, even at p = 1
    every = build_augmenter("token_dropout", SENTS, p=1.0)
    assert all(len(every(SENTS[1], random.Random(s)).text.split()) == 1 for s in range(20))
    assert build_augmenter("token_dropout", SENTS, p=0.0)(SENTS[0], random.Random(0)) == SENTS[0]


def iter_is_subsequence(sub, seq) -> bool:
    it = iter(seq)
    return all(any(w == x for x in it) for w in sub)


def test_word_swap():
    aug = build_augmenter("word_swap", SENTS, n=2)
    outs = [aug(SENTS[0], random.Random(s)) for s in range(30)]
    for out in outs:
        assert out.label == SENTS[0].label
        assert Counter(out.text.split()) == Counter(SENTS[0].text.split())
    assert any(o.text != SENTS[0].text for o in outs)
    assert aug(SENTS[0], random.Random(3)) == outs[3]
    assert aug(SENTS[2], random.Random(0)) == SENTS[2]  # one word: nothing to swap
    one = build_augmenter("word_swap", SENTS)  # n=1 swaps exactly two positions
    out = one(SENTS[1], random.Random(0)).text.split()
    assert sum(a != b for a, b in zip(out, SENTS[1].text.split(), strict=True)) == 2


# --------------------------------------------------------------------------- token tasks
def test_mention_replacement_keeps_labels_consistent():
    aug = build_augmenter("mention_replacement", NER, p=1.0)
    assert isinstance(aug, MentionReplacement)
    assert aug.bank["PER"] == (("Peter", "Blackburn"), ("Anna",), ("Bob",))
    for seed in range(40):
        for ex in NER:
            out = aug(ex, random.Random(seed))
            assert isinstance(out, TokenExample) and out.where == ex.where
            assert len(out.tags) == len(out.tokens)
            assert is_iob2(out.tags)
            before, after = mentions(ex), mentions(out)
            assert [t for t, _ in after] == [t for t, _ in before]  # same types, same order
            for (etype, old), (_, new) in zip(before, after, strict=True):
                assert new in aug.bank[etype]  # replaced by a mention of the same type
                if len(aug.bank[etype]) > 1:
                    assert new != old  # p = 1 and another mention exists: always a change
            assert outside(out) == outside(ex)  # the O tokens are untouched
    # mentions change length: "Peter Blackburn" becomes "Anna" or "Bob", "New York" becomes "Paris"
    out = aug(NER[0], random.Random(0))
    assert len(out.tokens) == 4 and out.tags == ("B-PER", "O", "B-LOC", "O")
    half = build_augmenter("mention_replacement", NER, p=0.5)
    assert {len(half(NER[0], random.Random(s)).tokens) for s in range(40)} == {4, 5, 6}


def test_mention_replacement_is_seeded_and_respects_p():
    aug = build_augmenter("mention_replacement", NER, p=0.5)
    a = [aug(NER[1], random.Random(s)) for s in range(30)]
    b = [aug(NER[1], random.Random(s)) for s in range(30)]
    assert a == b
    assert any(o == NER[1] for o in a) and any(o != NER[1] for o in a)
    assert build_augmenter("mention_replacement", NER, p=0.0)(NER[0], random.Random(0)) == NER[0]
    assert aug(NER[3], random.Random(0)) == NER[3]  # no mention: unchanged
    with pytest.raises(DataError, match="the training examples hold no entity mention"):
        build_augmenter("mention_replacement", [NER[3]])


def test_segment_shuffle():
    aug = build_augmenter("segment_shuffle", NER, p=1.0)
    outs = [aug(NER[0], random.Random(s)) for s in range(30)]
    for out in outs:
        assert out.tags == NER[0].tags  # segments keep their place and label
        assert Counter(out.tokens[:2]) == Counter(("Peter", "Blackburn"))
        assert Counter(out.tokens[3:5]) == Counter(("New", "York"))
        assert out.tokens[2] == "visited" and out.tokens[5] == "."
    assert any(o.tokens != NER[0].tokens for o in outs)


def test_tags_from_spans():
    assert tags_from_spans(5, [("PER", 0, 2), ("LOC", 3, 4)]) == ("B-PER", "I-PER", "O", "B-LOC", "O")


def test_build_augmenter_errors():
    with pytest.raises(
        ConfigError,
        match=r"augmentation 'synonyms' is not one of \['mention_replacement', 'segment_shuffle', 'token_dropout', 'word_swap'\]",
    ):
        build_augmenter("synonyms", SENTS)
    with pytest.raises(
        ConfigError, match=r"augmentation 'token_dropout': unknown option\(s\) \['n'\]; it takes \['p'\]"
    ):
        build_augmenter("token_dropout", SENTS, n=2)
    with pytest.raises(
        ConfigError, match=r"augmentation 'mention_replacement' is for token tasks; b.csv:2 is not"
    ):
        build_augmenter("mention_replacement", SENTS)
    with pytest.raises(ConfigError, match=r"augmentation 'word_swap' is for sentence tasks; t:1 is not"):
        build_augmenter("word_swap", NER)
    with pytest.raises(
        ConfigError, match=r"augmentation token_dropout.p: expected a probability in \[0, 1\], got 1.5"
    ):
        build_augmenter("token_dropout", SENTS, p=1.5)
    with pytest.raises(ConfigError, match=r"augmentation word_swap.n: expected an integer >= 1, got 0"):
        build_augmenter("word_swap", SENTS, n=0)
    aug = build_augmenter("token_dropout", SENTS)
    with pytest.raises(
        DataError,
        match=r"^t:1: augmentation 'token_dropout' works on sentence examples, got a token example$",
    ):
        aug(NER[0], random.Random(0))
    assert set(AUGMENTERS) == {"token_dropout", "word_swap", "mention_replacement", "segment_shuffle"}


@pytest.mark.slow
def test_mention_replacement_on_conll(data_root):
    train = load_examples(
        DataSource("conll2003/train.txt", limit=3000, seed=0), TaskKind.TOKEN, data_root=data_root
    )
    aug = build_augmenter("mention_replacement", train, p=0.7)
    seen = {t: {m for m in ms} for t, ms in aug.bank.items()}
    assert set(seen) == {"PER", "LOC", "ORG", "MISC"}
    rng = random.Random(0)
    changed = 0
    for ex in train:
        out = aug(ex, rng)
        assert len(out.tags) == len(out.tokens) and is_iob2(out.tags), ex.where
        before, after = mentions(ex), mentions(out)
        assert [t for t, _ in after] == [t for t, _ in before], ex.where
        assert all(m in seen[t] for t, m in after), ex.where
        assert outside(out) == outside(ex), ex.where
        changed += out != ex
    assert changed > 1000
