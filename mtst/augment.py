"""Training-time augmentation of examples, for the small task of an imbalanced mix.

An augmenter maps one example to a new one, drawing every random choice from the ``rng`` it is
given, so a run with the same seed sees the same augmented data. The trainer applies it only to the
tasks whose config asks for it.

Sentence tasks (words = whitespace-separated):

- ``token_dropout`` (``p=0.1``): drop each word with probability ``p``, never every word.
- ``word_swap`` (``n=1``): swap ``n`` random pairs of words (adjacent or not).

Token tasks (tags rebuilt in IOB2 after every change):

- ``mention_replacement`` (``p=0.5``): replace each entity mention, with probability ``p``, by another
  mention of the same type seen in the training set (it may have another length).
- ``segment_shuffle`` (``p=0.5``): split the sentence into segments of one label (each entity
  mention, each run of ``O`` tokens) and shuffle the tokens inside each segment with probability
  ``p`` (the "shuffle within segments" of Dai & Adel, 2020).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mtst.data.sources import Example, SentenceExample, TokenExample
from mtst.errors import ConfigError, DataError
from mtst.runtime.decode import bio_spans

__all__ = [
    "AUGMENTERS",
    "Augmenter",
    "MentionReplacement",
    "SegmentShuffle",
    "TokenDropout",
    "WordSwap",
    "build_augmenter",
    "tags_from_spans",
]


class Augmenter(Protocol):
    def __call__(self, example: Example, rng: random.Random) -> Example: ...


def _sentence(example: Example, name: str) -> SentenceExample:
    if not isinstance(example, SentenceExample):
        raise DataError(
            f"{example.where}: augmentation {name!r} works on sentence examples, got a token example"
        )
    return example


def _token(example: Example, name: str) -> TokenExample:
    if not isinstance(example, TokenExample):
        raise DataError(
            f"{example.where}: augmentation {name!r} works on token examples, got a sentence example"
        )
    return example


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"augmentation {name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def tags_from_spans(length: int, spans: Sequence[tuple[str, int, int]]) -> tuple[str, ...]:
    """IOB2 tags of a sentence of ``length`` tokens with entity ``spans`` (type, start, end)."""
    tags = ["O"] * length
    for etype, start, end in spans:
        tags[start] = "B-" + etype
        for i in range(start + 1, end):
            tags[i] = "I-" + etype
    return tuple(tags)


# --------------------------------------------------------------------------- sentence tasks
@dataclass(frozen=True)
class TokenDropout:
    p: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _probability("token_dropout.p", self.p))

    def __call__(self, example: Example, rng: random.Random) -> Example:
        ex = _sentence(example, "token_dropout")
        words = ex.text.split()
        keep = [w for w in words if rng.random() >= self.p]
        if not keep:  # never drop every word: keep one at random
            keep = [words[rng.randrange(len(words))]]
        return SentenceExample(" ".join(keep), ex.label, ex.where)


@dataclass(frozen=True)
class WordSwap:
    n: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"augmentation word_swap.n: expected an integer >= 1, got {self.n!r}")

    def __call__(self, example: Example, rng: random.Random) -> Example:
        ex = _sentence(example, "word_swap")
        words = ex.text.split()
        if len(words) < 2:
            return ex
        for _ in range(self.n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
        return SentenceExample(" ".join(words), ex.label, ex.where)


# --------------------------------------------------------------------------- token tasks
@dataclass(frozen=True)
class MentionReplacement:
    bank: Mapping[str, tuple[tuple[str, ...], ...]]  # entity type -> distinct mentions, first-seen order
    p: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _probability("mention_replacement.p", self.p))

    @classmethod
    def from_examples(cls, examples: Sequence[Example], *, p: float = 0.5) -> MentionReplacement:
        bank: dict[str, dict[tuple[str, ...], None]] = {}
        for example in examples:
            ex = _token(example, "mention_replacement")
            for etype, start, end in bio_spans(ex.tags):
                bank.setdefault(etype, {})[ex.tokens[start:end]] = None
        if not bank:
            raise DataError("augmentation mention_replacement: the training examples hold no entity mention")
        return cls({t: tuple(m) for t, m in sorted(bank.items())}, p)

    def __call__(self, example: Example, rng: random.Random) -> Example:
        ex = _token(example, "mention_replacement")
        spans = bio_spans(ex.tags)
        if not spans:
            return ex
        tokens: list[str] = []
        new_spans: list[tuple[str, int, int]] = []
        cursor = 0
        for etype, start, end in spans:
            tokens.extend(ex.tokens[cursor:start])
            mention = ex.tokens[start:end]
            candidates = self.bank.get(etype, ())
            if candidates and rng.random() < self.p:
                pick = rng.randrange(len(candidates))
                if candidates[pick] == mention and len(candidates) > 1:  # prefer a different mention
                    pick = (pick + 1 + rng.randrange(len(candidates) - 1)) % len(candidates)
                mention = candidates[pick]
            new_spans.append((etype, len(tokens), len(tokens) + len(mention)))
            tokens.extend(mention)
            cursor = end
        tokens.extend(ex.tokens[cursor:])
        return TokenExample(tuple(tokens), tags_from_spans(len(tokens), new_spans), ex.where)


@dataclass(frozen=True)
class SegmentShuffle:
    p: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _probability("segment_shuffle.p", self.p))

    def __call__(self, example: Example, rng: random.Random) -> Example:
        ex = _token(example, "segment_shuffle")
        spans = bio_spans(ex.tags)
        # segments: every mention, and every maximal run of O tokens between them
        segments: list[tuple[int, int]] = []
        cursor = 0
        for _, start, end in spans:
            if cursor < start:
                segments.append((cursor, start))
            segments.append((start, end))
            cursor = end
        if cursor < len(ex.tokens):
            segments.append((cursor, len(ex.tokens)))
        tokens = list(ex.tokens)
        for start, end in segments:
            if end - start > 1 and rng.random() < self.p:
                piece = tokens[start:end]
                rng.shuffle(piece)
                tokens[start:end] = piece
        return TokenExample(tuple(tokens), tags_from_spans(len(tokens), spans), ex.where)


# --------------------------------------------------------------------------- registry
def _token_dropout(train: Sequence[Example], **options: Any) -> Augmenter:
    return TokenDropout(**options)


def _word_swap(train: Sequence[Example], **options: Any) -> Augmenter:
    return WordSwap(**options)


def _mention_replacement(train: Sequence[Example], **options: Any) -> Augmenter:
    return MentionReplacement.from_examples(train, **options)


def _segment_shuffle(train: Sequence[Example], **options: Any) -> Augmenter:
    return SegmentShuffle(**options)


# name -> (builder, example type it works on, option names)
AUGMENTERS: dict[str, tuple[Callable[..., Augmenter], type, tuple[str, ...]]] = {
    "token_dropout": (_token_dropout, SentenceExample, ("p",)),
    "word_swap": (_word_swap, SentenceExample, ("n",)),
    "mention_replacement": (_mention_replacement, TokenExample, ("p",)),
    "segment_shuffle": (_segment_shuffle, TokenExample, ("p",)),
}


def build_augmenter(name: str, train_examples: Sequence[Example], **options: Any) -> Augmenter:
    """The augmenter called ``name``, built on the task's training examples (mention banks)."""
    if name not in AUGMENTERS:
        raise ConfigError(f"augmentation {name!r} is not one of {sorted(AUGMENTERS)}")
    builder, example_type, option_names = AUGMENTERS[name]
    unknown = sorted(set(options) - set(option_names))
    if unknown:
        raise ConfigError(
            f"augmentation {name!r}: unknown option(s) {unknown}; it takes {list(option_names)}"
        )
    wrong = next((ex for ex in train_examples if not isinstance(ex, example_type)), None)
    if wrong is not None:
        kind = "sentence" if example_type is SentenceExample else "token"
        raise ConfigError(f"augmentation {name!r} is for {kind} tasks; {wrong.where or 'the data'} is not")
    return builder(train_examples, **options)
