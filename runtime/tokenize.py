"""Text in, int64 arrays out: the bundle's fast tokenizer with truncation and per-batch padding.

The bundle's ``tokenizer.json`` has truncation and padding switched off (contract 3); here truncation
is set at the manifest's ``max_seq_len`` and each batch is padded to its own longest item with
``pad_token_id`` (dynamic padding), so a batch of short texts costs short sequences.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from mtst.errors import BundleError

__all__ = ["TextTokenizer", "check_texts"]

# A text is cut (at whitespace) before tokenization once it is this many characters per allowed
# token long: tokenizing a 1 MB string whole takes ~0.5 s and keeps ~900 overflow encodings, only to
# drop them. When the cut text does not fill max_seq_len the whole text is tokenized after all.
_CHARS_PER_TOKEN_BOUND = 32

# Encoded once at load: a tokenizer that parses but cannot encode (no unknown token in its vocabulary,
# a broken normalizer) is refused then, not on every request. Accents, CJK, a symbol and an emoji that
# few vocabularies hold, a combining mark, and a text longer than any max_seq_len.
_PROBES = (
    "Probe: Hello, world! 123 na\u00efve caf\u00e9 \u2013 \u6771\u4eac \u2603 \U0001f642 e\u0301",
    "word " * 600,
)
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def check_texts(texts: Any, *, argument: str = "texts") -> list[str]:
    """``texts`` as a list of str; TypeError for one string, a non-iterable or a non-str item (named by index)."""
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(
            f"{argument}: expected a list of str, got one {type(texts).__name__}; wrap it in a list: [text]"
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"{argument}: expected a list of str, got {type(texts).__name__}")
    out = texts if isinstance(texts, list) else list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{argument}[{i}]: expected str, got {type(t).__name__} ({t!r:.60})")
        # isascii() is O(1) (CPython keeps the flag); only other text is checked for lone surrogates,
        # here, where the index is the caller's (the tokenizer sees chunks and cache misses)
        if not t.isascii():
            problem = _unicode_problem(t)
            if problem:
                raise ValueError(f"{argument}[{i}]: {problem}")
    return out


def _unicode_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = text[exc.start]
        return (
            f"unpaired surrogate U+{ord(ch):04X} at character {exc.start} "
            f"({unicodedata.category(ch)}); decode your input with errors='replace' or fix its encoding"
        )
    return None


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` set up for one bundle. Thread-safe once built (read-only use)."""

    def __init__(
        self, tokenizer: Tokenizer, *, max_seq_len: int, pad_token_id: int, input_names: Sequence[str]
    ) -> None:
        if max_seq_len < 2:
            raise BundleError(f"manifest.json: max_seq_len: expected >= 2, got {max_seq_len}")
        unknown = [n for n in input_names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown or not {"input_ids", "attention_mask"} <= set(input_names):
            raise BundleError(
                f"manifest.json: inputs: {list(input_names)}; expected input_ids, attention_mask "
                f"(and token_type_ids)"
            )
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_len)
        self._tok = tokenizer
        self.max_seq_len = max_seq_len
        self.pad_token_id = pad_token_id
        self.input_names = tuple(input_names)
        self._cut_at = max_seq_len * _CHARS_PER_TOKEN_BOUND

    @classmethod
    def from_file(
        cls, path: Path, *, max_seq_len: int, pad_token_id: int, input_names: Sequence[str]
    ) -> TextTokenizer:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return cls.from_bytes(
            data, str(path), max_seq_len=max_seq_len, pad_token_id=pad_token_id, input_names=input_names
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, where: str, *, max_seq_len: int, pad_token_id: int, input_names: Sequence[str]
    ) -> TextTokenizer:
        """The tokenizer whose ``tokenizer.json`` bytes are ``data`` (``where``: its name in errors),
        checked by encoding probe texts and against the manifest's ``pad_token_id``."""
        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BundleError(f"{where}: not UTF-8 text ({exc})") from None
        except BaseException as exc:  # tokenizers: a bare Exception (serde's message), or a Rust panic
            if isinstance(exc, _FATAL):
                raise
            raise BundleError(f"{where}: not a Hugging Face tokenizers file ({exc})") from None
        self = cls(tok, max_seq_len=max_seq_len, pad_token_id=pad_token_id, input_names=input_names)
        self._probe(where)
        return self

    def _probe(self, where: str) -> None:
        # the id range: the model's vocabulary and the added tokens (get_vocab_size(True) would copy
        # the whole vocabulary into a map just to count it: 12 ms of a cold start for BERT's 30k)
        added = self._tok.get_added_tokens_decoder()
        vocab = max(self._tok.get_vocab_size(with_added_tokens=False), max(added, default=-1) + 1)
        if not 0 <= self.pad_token_id < vocab:
            raise BundleError(
                f"manifest.json: pad_token_id: {self.pad_token_id} is not in the vocabulary of {where} "
                f"({vocab} tokens)"
            )
        try:
            encs, _ = self.encode(list(_PROBES))
        except BaseException as exc:
            if isinstance(exc, _FATAL):
                raise
            raise BundleError(
                f"{where}: the tokenizer cannot encode a probe text ({type(exc).__name__}: {exc})"
            ) from None
        for e in encs:
            if not e.ids or not 0 < len(e.ids) <= self.max_seq_len or not all(0 <= i < vocab for i in e.ids):
                raise BundleError(
                    f"{where}: the tokenizer encodes a probe text to {len(e.ids)} ids outside its own "
                    f"vocabulary or the manifest's max_seq_len {self.max_seq_len}"
                )

    # ------------------------------------------------------------------ encoding
    def _cut(self, text: str) -> tuple[str, int]:
        """A prefix of an over-long text that should still overflow max_seq_len, and the character
        position the kept tokens must end by for the prefix to stand for the whole text.

        The cut falls at whitespace where the window has some (no word is split: any kept token will
        do). A text without whitespace there (a run of punctuation, CJK, one huge "word") is cut
        anyway: splitting a word changes only that word's tokens, so the cut stands when every kept
        token ends well before it (half the prefix); otherwise the whole text is tokenized.
        """
        if len(text) <= self._cut_at:
            return text, len(text)
        half = self._cut_at // 2
        window = text[half : self._cut_at]
        for i in range(len(window) - 1, -1, -1):
            if window[i].isspace():
                return text[: half + i], half + i
        return text[: self._cut_at], half

    def encode(self, texts: list[str]) -> tuple[list[Encoding], np.ndarray]:
        """Encodings of checked texts (see :func:`check_texts`) and their ``truncated`` flags (bool array).

        ValueError names the first item that is not valid Unicode (unpaired surrogates).
        """
        cuts = [self._cut(t) for t in texts]
        cut = [c for c, _ in cuts]
        try:
            if len(cut) == 1:  # encode_batch's thread pool costs ~15 us more for one text (batch-1 latency)
                encs = [self._tok.encode(cut[0], add_special_tokens=True)]
            else:
                encs = self._tok.encode_batch(cut, add_special_tokens=True)
        except Exception:
            for i, t in enumerate(texts):
                problem = _unicode_problem(t)
                if problem:
                    raise ValueError(f"texts[{i}]: {problem}") from None
            raise
        truncated = np.fromiter((len(e.overflowing) > 0 for e in encs), dtype=bool, count=len(encs))
        for i, (t, (c, stand)) in enumerate(zip(texts, cuts, strict=True)):
            if len(c) == len(t):
                continue
            # the cut stands if the prefix overflows and its kept tokens end by ``stand``
            if truncated[i] and max((end for _, end in encs[i].offsets), default=0) <= stand:
                continue
            encs[i] = self._tok.encode(t, add_special_tokens=True)
            truncated[i] = len(encs[i].overflowing) > 0
        return encs, truncated

    def pad(self, encodings: Sequence[Encoding]) -> dict[str, np.ndarray]:
        """int64 ``[batch, longest]`` arrays for the manifest's inputs, padded with ``pad_token_id``."""
        n = len(encodings)
        types_wanted = "token_type_ids" in self.input_names
        if n == 1:  # batch-1 requests (real-time serving): no padding, one conversion per input
            e = encodings[0]
            ids = np.array([e.ids], dtype=np.int64)  # (1, T)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if types_wanted:
                feeds["token_type_ids"] = np.array([e.type_ids], dtype=np.int64)
            return {name: feeds[name] for name in self.input_names}
        # len(e) is the token count; e.ids builds a new Python list on every access
        lengths = [len(e) for e in encodings]
        longest = max(lengths, default=0)
        ids = np.full((n, longest), self.pad_token_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((n, longest), dtype=np.int64)
        types = np.zeros((n, longest), dtype=np.int64) if types_wanted else None
        for i, (e, k) in enumerate(zip(encodings, lengths, strict=True)):
            ids[i, :k] = e.ids
            mask[i, :k] = 1
            if types is not None:
                types[i, :k] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            feeds["token_type_ids"] = types
        return {name: feeds[name] for name in self.input_names}
