"""Tokenization of examples for training and evaluation, and first-sub-token labels for token tasks.

Needs a Hugging Face *fast* tokenizer (transformers), not torch: arrays are numpy int64 so that the
same batches feed torch (``torch.from_numpy``) and ONNX Runtime.

Token tasks are labelled at *pre-tokenizer word* granularity (docs/architecture.md, Contract 2),
because that is what the runtime sees when it decodes raw text (``Encoding.word_ids``). A CoNLL
token that the tokenizer's normalizer + pre-tokenizer split into several words (``U.S.`` ->
``U . S .``) is passed to the tokenizer as those words: the first word gets the token's tag, the
others ``I-TYPE`` (``O`` stays ``O``). Within a word, only the first sub-token carries a label;
WordPiece continuations, special tokens and padding get :data:`IGNORE_INDEX`.

The split uses the tokenizer's own normalizer (lower-casing, accents, spacing around CJK
characters) and pre-tokenizer, so for BERT-style tokenizers the ids equal those of the joined text
``" ".join(tokens)``; a test checks this on CoNLL-2003 with the real MiniLM tokenizer.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtst.data import Example, SentenceExample, TokenExample
from mtst.errors import ConfigError, DataError

__all__ = [
    "IGNORE_INDEX",
    "encode_sentence_batch",
    "encode_token_batch",
    "predictions_to_tags",
    "token_lengths",
    "word_pieces",
]

IGNORE_INDEX = -100  # the label torch's cross-entropy skips
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# tokenizer -> {token: pieces}; CoNLL has ~24k distinct tokens, re-split every epoch otherwise
_PIECE_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, ...]]] = weakref.WeakKeyDictionary()
_CACHE_LIMIT = 500_000


def _backend(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__}: alignment needs a fast (Rust) tokenizer with a backend_tokenizer"
        )
    return backend


def _check_max_len(max_seq_len: int) -> None:
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 2:
        raise ConfigError(f"max_seq_len: expected an integer >= 2, got {max_seq_len!r}")


def word_pieces(tokenizer: Any, token: str) -> tuple[str, ...]:
    """The pre-tokenizer words of one token, as substrings of the token (``"U.S."`` -> ``U . S .``).

    Normalization runs first, as it does on raw text (BERT puts spaces around CJK characters and
    removes control characters). A token that normalizes to nothing (a lone zero-width space) has
    no pieces.
    """
    cache = _PIECE_CACHE.get(tokenizer)
    if cache is None:
        cache = _PIECE_CACHE[tokenizer] = {}
    pieces = cache.get(token)
    if pieces is not None:
        return pieces
    from tokenizers import PreTokenizedString

    backend = _backend(tokenizer)
    pretok = PreTokenizedString(token)
    if backend.normalizer is not None:
        pretok.normalize(lambda normalized: backend.normalizer.normalize(normalized))
    if backend.pre_tokenizer is not None:
        backend.pre_tokenizer.pre_tokenize(pretok)
    splits = pretok.get_splits(offset_referential="original", offset_type="char")
    pieces = tuple(token[start:end] for _, (start, end), _ in splits if end > start)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[token] = pieces
    return pieces


def _as_int64(enc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(enc[k], dtype=np.int64) for k in MODEL_INPUTS if k in enc}


def encode_sentence_batch(tokenizer: Any, texts: Sequence[str], *, max_seq_len: int) -> dict[str, np.ndarray]:
    """Model inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` when the tokenizer makes
    them), int64 ``(B, T)``, padded to the longest text of the batch, truncated at ``max_seq_len``."""
    _check_max_len(max_seq_len)
    if not texts:
        raise DataError("encode_sentence_batch: empty batch")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_seq_len, return_tensors="np")
    return _as_int64(enc)


def encode_token_batch(
    tokenizer: Any,
    examples: Sequence[TokenExample],
    label_to_id: Mapping[str, int],
    *,
    max_seq_len: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[list[int]]]:
    """Model inputs, labels and the first sub-token of every original token.

    Returns ``(inputs, labels, first_index)``: ``inputs`` as :func:`encode_sentence_batch`;
    ``labels`` int64 ``(B, T)`` with :data:`IGNORE_INDEX` everywhere except the first sub-token of
    each pre-tokenizer word; ``first_index[b][i]`` is the position of token ``i``'s first sub-token,
    or -1 when truncation cut it off (or it normalizes to nothing).
    """
    _check_max_len(max_seq_len)
    if not examples:
        raise DataError("encode_token_batch: empty batch")
    words_batch: list[list[str]] = []
    owners_batch: list[list[int]] = []  # word -> index of the original token
    label_batch: list[list[int]] = []  # word -> label id
    for ex in examples:
        words: list[str] = []
        owners: list[int] = []
        word_labels: list[int] = []
        for i, (token, tag) in enumerate(zip(ex.tokens, ex.tags, strict=True)):
            for j, piece in enumerate(word_pieces(tokenizer, token)):
                piece_tag = tag if j == 0 or tag == "O" else "I-" + tag[2:]
                if piece_tag not in label_to_id:
                    raise DataError(
                        f"{ex.where}: tag {piece_tag!r} (token {i} {token!r}) is not in the label set {list(label_to_id)}"
                    )
                words.append(piece)
                owners.append(i)
                word_labels.append(int(label_to_id[piece_tag]))
        if not words:
            raise DataError(f"{ex.where}: no token of {list(ex.tokens)} survives the tokenizer's normalizer")
        words_batch.append(words)
        owners_batch.append(owners)
        label_batch.append(word_labels)

    enc = tokenizer(
        words_batch,
        is_split_into_words=True,
        padding=True,
        truncation=True,
        max_length=max_seq_len,
        return_tensors="np",
    )
    inputs = _as_int64(enc)
    batch, length = inputs["input_ids"].shape
    labels = np.full((batch, length), IGNORE_INDEX, dtype=np.int64)  # (B, T)
    first_index: list[list[int]] = []
    for b, ex in enumerate(examples):
        firsts = [-1] * len(ex.tokens)
        previous: int | None = None
        for pos, word in enumerate(enc.word_ids(b)):
            if word is not None and word != previous:  # first sub-token of a word
                labels[b, pos] = label_batch[b][word]
                owner = owners_batch[b][word]
                if firsts[owner] < 0:
                    firsts[owner] = pos
            previous = word
        first_index.append(firsts)
    return inputs, labels, first_index


def predictions_to_tags(
    predictions: np.ndarray, first_index: Sequence[Sequence[int]], labels: Sequence[str]
) -> list[list[str]]:
    """Tags per original token from logits ``(B, T, L)`` or label ids ``(B, T)``.

    A token's tag is the prediction at its first sub-token; tokens cut off by truncation
    (``first_index`` -1) are ``"O"``.
    """
    pred = np.asarray(predictions)
    if pred.ndim == 3:
        if pred.shape[-1] != len(labels):
            raise ConfigError(
                f"predictions have {pred.shape[-1]} labels per token, the label set has {len(labels)}"
            )
        pred = pred.argmax(axis=-1)  # (B, T)
    if pred.ndim != 2:
        raise ConfigError(
            f"predictions: expected logits (B, T, L) or label ids (B, T), got shape {pred.shape}"
        )
    if pred.shape[0] != len(first_index):
        raise ConfigError(f"predictions hold {pred.shape[0]} sequences, first_index {len(first_index)}")
    out: list[list[str]] = []
    for b, firsts in enumerate(first_index):
        tags: list[str] = []
        for pos in firsts:
            if pos < 0:
                tags.append("O")
                continue
            if pos >= pred.shape[1]:
                raise ConfigError(
                    f"first_index {pos} is beyond the {pred.shape[1]} positions of sequence {b}"
                )
            tags.append(labels[int(pred[b, pos])])
        out.append(tags)
    return out


def token_lengths(tokenizer: Any, examples: Sequence[Example], max_seq_len: int) -> np.ndarray:
    """Token counts of ``examples`` (truncated at ``max_seq_len``), for length-grouped batches."""
    sentences = [ex.text for ex in examples if isinstance(ex, SentenceExample)]
    words = [list(ex.tokens) for ex in examples if isinstance(ex, TokenExample)]
    if sentences:
        enc = tokenizer(sentences, truncation=True, max_length=max_seq_len)
    else:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_seq_len)
    return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)
