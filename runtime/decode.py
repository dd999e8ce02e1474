"""From token-level tag predictions to entities with character offsets (BIO / IOB2).

Shared by the runtime and by training (``mtst`` may import ``mtst.runtime``). Labelling is
*first sub-token*: a word's tag is the tag predicted at its first sub-token, where words are the
tokenizer's pre-tokenizer words (``Encoding.word_ids``). Entities are runs of words ``B-X I-X ...``;
an ``I-X`` that does not continue an ``X`` entity starts one (the lenient reading conlleval and
seqeval's default mode use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Entity", "bio_spans", "decode_entities", "entities_from_words", "word_chars", "word_starts"]


@dataclass(frozen=True, slots=True)
class Entity:
    text: str
    label: str  # entity type, e.g. "PER"
    start: int  # character offsets into the input text, end exclusive
    end: int
    score: float  # mean probability of the predicted tag over the entity's words


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last+1) spans over a tag sequence, lenient IOB2."""
    spans: list[tuple[str, int, int]] = []
    cur: tuple[str, int] | None = None
    for i, tag in enumerate(tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (cur is None or cur[0] != tag[2:])):
            if cur is not None:
                spans.append((cur[0], cur[1], i))
            cur = (tag[2:], i)
        elif not tag.startswith("I-"):  # "O" or anything unknown closes the current entity
            if cur is not None:
                spans.append((cur[0], cur[1], i))
            cur = None
    if cur is not None:
        spans.append((cur[0], cur[1], len(tags)))
    return spans


def word_starts(word_ids: Sequence[int | None]) -> list[int]:
    """Index of the first sub-token of each word, in word order (special tokens have word id None)."""
    seen: dict[int, int] = {}
    for i, w in enumerate(word_ids):
        if w is not None and w not in seen:
            seen[w] = i
    return [seen[w] for w in sorted(seen)]


def word_chars(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character span of every word, in word order: its first sub-token's start to its last one's end.

    ``word_ids`` and ``offsets`` are per token (special tokens have word id None).
    """
    chars: dict[int, list[int]] = {}
    for i, w in enumerate(word_ids):
        if w is None:
            continue
        s, e = offsets[i]
        if w in chars:
            chars[w][1] = max(chars[w][1], e)
        else:
            chars[w] = [s, e]
    return [(chars[w][0], chars[w][1]) for w in sorted(chars)]


def decode_entities(
    text: str,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    tag_ids: Sequence[int],
    tag_scores: Sequence[float],
    labels: Sequence[str],
) -> list[Entity]:
    """Entities of one text.

    word_ids, offsets, tag_ids and tag_scores are per token (same length); offsets are character
    offsets into ``text``; ``tag_scores[i]`` is the probability of ``tag_ids[i]``.
    """
    firsts = word_starts(word_ids)
    tags = [labels[tag_ids[i]] for i in firsts]
    spans = bio_spans(tags)
    if not spans:
        return []
    scores = [float(tag_scores[i]) for i in firsts]
    return entities_from_words(text, word_chars(word_ids, offsets), tags, scores, spans=spans)


def entities_from_words(
    text: str,
    words: Sequence[tuple[int, int]],
    tags: Sequence[str],
    scores: Sequence[float],
    *,
    spans: Sequence[tuple[str, int, int]] | None = None,
    min_score: float = 0.0,
) -> list[Entity]:
    """Entities of one text from its words' character spans (:func:`word_chars`) and one tag (and its
    probability) per word, in word order.

    A word's tag is the tag at its first sub-token (see :func:`word_starts`); ``spans`` is
    ``bio_spans(tags)`` when the caller has it already. Entities scored below ``min_score`` (the mean
    probability of their words' tags) are left out.
    """
    out: list[Entity] = []
    for etype, a, b in bio_spans(tags) if spans is None else spans:
        score = sum(scores[a:b]) / (b - a)
        if score >= min_score:
            start, end = words[a][0], words[b - 1][1]
            out.append(Entity(text[start:end], etype, start, end, score))
    return out
