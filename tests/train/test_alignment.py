"""mtst.alignment: sentence batches, first-sub-token labels at pre-tokenizer-word granularity,
truncation, predictions back to tags, and the contract with runtime decoding of raw text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtst.alignment import (
    IGNORE_INDEX,
    encode_sentence_batch,
    encode_token_batch,
    predictions_to_tags,
    word_pieces,
)
from mtst.data import DataSource, TokenExample, label_set, load_examples
from mtst.errors import ConfigError, DataError
from mtst.runtime.decode import bio_spans, decode_entities, word_starts
from mtst.tasks import TaskKind

LABELS = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
L2I = {t: i for i, t in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer(minilm_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path))


@pytest.fixture(scope="module")
def raw_tokenizer(minilm_path: Path):
    """The tokenizer as the runtime uses it: tokenizer.json, padding and truncation off."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_path / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_sentence_batch_is_int64_dynamic_and_truncated(tokenizer):
    batch = encode_sentence_batch(
        tokenizer, ["hello world", "a much longer sentence than the first one"], max_seq_len=64
    )
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == np.int64 for v in batch.values())
    n_long = len(tokenizer("a much longer sentence than the first one")["input_ids"])
    assert batch["input_ids"].shape == (2, n_long)  # padded to the longest text, not to 64
    assert batch["attention_mask"].sum(axis=1).tolist() == [4, n_long]
    cut = encode_sentence_batch(tokenizer, ["word " * 100], max_seq_len=16)
    assert cut["input_ids"].shape == (1, 16) and cut["input_ids"][0, -1] == tokenizer.sep_token_id
    with pytest.raises(ConfigError, match=r"max_seq_len: expected an integer >= 2, got 1"):
        encode_sentence_batch(tokenizer, ["x"], max_seq_len=1)


def test_word_pieces(tokenizer):
    assert word_pieces(tokenizer, "U.S.") == ("U", ".", "S", ".")
    assert word_pieces(tokenizer, "1996-08-22") == ("1996", "-", "08", "-", "22")
    assert word_pieces(tokenizer, "Müller") == ("Müller",)  # pieces are substrings of the original token
    assert word_pieces(tokenizer, "東京") == ("東", "京")  # the normalizer splits CJK characters
    assert word_pieces(tokenizer, "\u200b") == ()  # normalizes to nothing


def test_token_batch_labels_first_sub_token_of_each_word(tokenizer):
    ex = TokenExample(
        ("U.S.", "envoy", "Lüdenscheidt", "met", "Peter", "Blackburn"),
        ("B-LOC", "O", "B-LOC", "O", "B-PER", "I-PER"),
    )
    short = TokenExample(("Hi",), ("O",))
    inputs, labels, first = encode_token_batch(tokenizer, [ex, short], L2I, max_seq_len=64)
    assert labels.dtype == np.int64 and labels.shape == inputs["input_ids"].shape
    pieces = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    n = int(inputs["attention_mask"][0].sum())
    expected = []
    word_tags = ["B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", "B-LOC", "O", "B-PER", "I-PER"]  # U . S . envoy ...
    words = iter(word_tags)
    for pos, piece in enumerate(pieces[:n]):
        if pos in (0, n - 1) or piece.startswith("##"):
            expected.append(IGNORE_INDEX)  # [CLS], [SEP] and WordPiece continuations
        else:
            expected.append(L2I[next(words)])
    assert next(words, None) is None
    assert "##" in "".join(pieces[:n])  # the example really has continuation sub-tokens
    assert labels[0, :n].tolist() == expected
    assert first[0] == [1, 5, 6, pieces.index("met"), pieces.index("peter"), pieces.index("blackburn")]
    assert pieces[first[0][2]] == "lu"  # first sub-token of Lüdenscheidt (lower-cased, accent stripped)
    # the short sequence is padded; padding gets the ignore index
    assert (labels[1, 3:] == IGNORE_INDEX).all() and labels[1, :3].tolist() == [IGNORE_INDEX, 0, IGNORE_INDEX]
    assert first[1] == [1]


def test_token_batch_truncation_reports_cut_tokens(tokenizer):
    tokens = tuple(f"w{i}" for i in range(20))
    tags = ("B-PER", "I-PER") + ("O",) * 18
    ex = TokenExample(tokens, tags)
    inputs, labels, first = encode_token_batch(tokenizer, [ex], L2I, max_seq_len=12)
    assert inputs["input_ids"].shape == (1, 12)
    cut = [i for i, p in enumerate(first[0]) if p < 0]
    kept = [p for p in first[0] if p >= 0]
    assert cut == list(range(len(kept), 20))  # a tail of tokens is cut, in order
    assert all(labels[0, p] != IGNORE_INDEX for p in kept)
    assert max(kept) < 11  # [SEP] stays the last position
    # perfect predictions give back the gold tags of the kept tokens and "O" for the cut ones
    pred = predictions_to_tags(np.where(labels < 0, 0, labels), first, LABELS)
    assert pred[0][: len(kept)] == list(tags[: len(kept)])
    assert pred[0][len(kept) :] == ["O"] * len(cut)


def test_token_batch_unknown_tag_and_empty(tokenizer):
    with pytest.raises(DataError) as err:
        encode_token_batch(tokenizer, [TokenExample(("Acme",), ("B-ORG",), "f.txt:7")], L2I, max_seq_len=16)
    assert (
        str(err.value)
        == "f.txt:7: tag 'B-ORG' (token 0 'Acme') is not in the label set ['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']"
    )
    with pytest.raises(
        DataError, match=r"^f.txt:9: no token of \['\\u200b'\] survives the tokenizer's normalizer$"
    ):
        encode_token_batch(tokenizer, [TokenExample(("\u200b",), ("O",), "f.txt:9")], L2I, max_seq_len=16)


def test_predictions_to_tags_from_logits():
    logits = np.zeros((1, 5, len(LABELS)), dtype=np.float32)  # (B, T, L)
    logits[0, 1, L2I["B-PER"]] = 3.0
    logits[0, 2, L2I["I-PER"]] = 3.0
    logits[0, 3, L2I["I-PER"]] = 3.0  # a continuation position: not read
    assert predictions_to_tags(logits, [[1, 2, -1]], LABELS) == [["B-PER", "I-PER", "O"]]
    with pytest.raises(ConfigError, match=r"predictions have 5 labels per token, the label set has 3"):
        predictions_to_tags(logits, [[1]], LABELS[:3])
    with pytest.raises(ConfigError, match=r"first_index 9 is beyond the 5 positions of sequence 0"):
        predictions_to_tags(logits, [[9]], LABELS)


@pytest.mark.slow
def test_alignment_matches_runtime_decoding_on_conll(tokenizer, raw_tokenizer, data_root):
    """Words of the alignment == words the runtime sees in the joined raw text (Encoding.word_ids),
    and perfect tags at those words decode to exactly the gold mentions, with character offsets."""
    examples = load_examples(DataSource("conll2003/valid.txt"), TaskKind.TOKEN, data_root=data_root)
    labels = label_set(examples, TaskKind.TOKEN)
    l2i = {t: i for i, t in enumerate(labels)}
    split_tokens = 0
    for start in range(0, len(examples), 128):
        batch = examples[start : start + 128]
        inputs, label_ids, first = encode_token_batch(tokenizer, batch, l2i, max_seq_len=512)
        texts = [" ".join(ex.tokens) for ex in batch]
        encodings = raw_tokenizer.encode_batch(texts)
        for b, (ex, text, enc) in enumerate(zip(batch, texts, encodings, strict=True)):
            n = len(enc.ids)
            assert inputs["input_ids"][b, :n].tolist() == enc.ids, ex.where
            labelled = np.nonzero(label_ids[b] != IGNORE_INDEX)[0].tolist()
            assert labelled == word_starts(enc.word_ids), ex.where
            split_tokens += sum(len(word_pieces(tokenizer, t)) > 1 for t in ex.tokens)
            # decode raw text with the gold word tags, as the runtime would decode predictions
            tag_ids = np.where(label_ids[b, :n] < 0, 0, label_ids[b, :n])
            entities = decode_entities(text, enc.word_ids, enc.offsets, tag_ids.tolist(), [1.0] * n, labels)
            gold = [(t, " ".join(ex.tokens[s:e])) for t, s, e in bio_spans(ex.tags)]
            assert [(e.label, e.text) for e in entities] == gold, ex.where
        assert predictions_to_tags(np.where(label_ids < 0, 0, label_ids), first, labels) == [
            list(e.tags) for e in batch
        ]
    assert split_tokens > 1000  # CoNLL really has tokens the pre-tokenizer splits (U.S., 1996-08-22, ...)
