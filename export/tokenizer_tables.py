"""Per-code-point Unicode tables of the Hugging Face ``tokenizers`` library, for the C++ runtime.

The C++ runtime (``runtime/cpp``) tokenizes WordPiece (BERT-family) bundles itself. ICU or utf8proc
would give other answers on a few hundred code points: the Rust library mixes Unicode tables of
different ages (its NFD, its "non-spacing mark" test, its lowercase and its whitespace test each come
from another crate). So the export asks the installed ``tokenizers`` library itself, one code point at
a time, what each step of the BERT pipeline does, and writes the answers into the bundle
(``tokenizer.tables.json``, hashed in ``manifest.json`` like every file):

- ``clean_removed`` / ``clean_whitespace``: ``BertNormalizer(clean_text)`` drops the code point /
  turns it into a space;
- ``chinese``: ``handle_chinese_chars`` pads it with spaces;
- ``nfd``: its canonical decomposition (``NFD``), for the code points that decompose;
- ``ccc``: canonical combining classes as the library orders them (NFD reorders marks by class);
  written as ranks (1, 2, ...) that keep the library's order, probed pair by pair;
- ``nonspacing_mark``: what BertNormalizer's ``strip_accents`` removes after NFD (the ``StripAccents``
  normalizer removes more: spacing marks too);
- ``lowercase``: ``Lowercase`` (one code point may become several);
- ``split_whitespace`` / ``punctuation``: what ``BertPreTokenizer`` splits on / isolates;
- ``py_space``: Python's ``str.isspace`` (the runtime's pre-cut of very long texts uses it).

Sets are lists of inclusive ``[first, last]`` ranges; maps are ``[code point, [code points]]`` pairs.
The tables describe the library, not one tokenizer, so they are computed once per process. Which steps
a tokenizer applies (and its vocabulary) stays in ``tokenizer.json``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mtst.runtime.fsutil import atomic_write_text

__all__ = ["TABLES_FILE", "TABLES_FORMAT", "TABLES_VERSION", "build_tables", "unsupported", "write_tables"]

logger = logging.getLogger(__name__)

TABLES_FILE = "tokenizer.tables.json"
TABLES_FORMAT = "mtst-tokenizer-tables"
TABLES_VERSION = 1

_MAX_CP = 0x10FFFF
_PROBE_SEP = "\ue000"  # private use: no decomposition, case mapping or mark; ccc 0
_LOW_MARK, _HIGH_MARK = "\u0334", "\u0345"  # combining classes 1 and 240, the lowest and highest
_CHUNK = 4096  # probes per library call: long strings cost more per character


def _code_points() -> list[int]:
    return [c for c in range(_MAX_CP + 1) if not 0xD800 <= c <= 0xDFFF]


def _ranges(cps: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def _per_char(fn: Callable[[str], str], probes: Sequence[str], sep: str) -> list[str]:
    """``fn`` of every probe string, computed on joined strings of a few thousand probes (the probes
    must not interact across ``sep``, and ``fn`` must never write ``sep``); checked by piece count."""
    out: list[str] = []
    for i in range(0, len(probes), _CHUNK):
        part = probes[i : i + _CHUNK]
        pieces = fn(sep.join(part)).split(sep)
        if len(pieces) != len(part):  # pragma: no cover - would mean the library changed behaviour
            pieces = [fn(p) for p in part]
        out.extend(pieces)
    return out


def _string_map(fn: Callable[[str], str], chars: Sequence[str], sep: str) -> list[str]:
    """``fn`` of every single character, in the order of ``chars``."""
    out = _per_char(fn, [c if c != sep else "" for c in chars], sep)
    if sep in chars:
        out[chars.index(sep)] = fn(sep)
    return out


def _pre_tokenizer_classes(chars: Sequence[str]) -> tuple[list[bool], list[bool]]:
    """(whitespace, punctuation) flags of ``BertPreTokenizer``, probed as ``a c1 a c2 a ...``."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    space = [False] * len(chars)
    punct = [False] * len(chars)
    for i in range(0, len(chars), _CHUNK):
        part = ["b" if c == "a" else c for c in chars[i : i + _CHUNK]]  # "a" is the separator
        covered = [0] * (2 * len(part) + 1)  # 1: inside a longer piece, 2: a piece of its own
        for _, (start, end) in pre("a" + "a".join(part) + "a"):
            for j in range(start, end):
                covered[j] = 2 if end - start == 1 else 1
        for k in range(len(part)):
            space[i + k] = covered[2 * k + 1] == 0
            punct[i + k] = covered[2 * k + 1] == 2
    return space, punct


def _combining_classes(chars: Sequence[str], decomposed: Sequence[str]) -> dict[int, int]:
    """Ranks 1.. of the library's canonical combining classes (0 left out), in the library's order.

    NFD(x y) swaps two marks iff class(x) > class(y) > 0: a code point has a non-zero class iff it
    swaps with U+0345 (class 240) or U+0334 (class 1); the order comes from a sort with NFD as the
    comparison. Only code points NFD leaves alone are probed (the others never reach the reordering).
    """
    from tokenizers import normalizers

    nfd = normalizers.NFD().normalize_str
    probes = [
        c
        for c, d in zip(chars, decomposed, strict=True)
        if d == c and c not in (_PROBE_SEP, _LOW_MARK, _HIGH_MARK)
    ]
    after_high = _per_char(nfd, [_HIGH_MARK + c for c in probes], _PROBE_SEP)
    before_low = _per_char(nfd, [c + _LOW_MARK for c in probes], _PROBE_SEP)
    marks = {
        ord(c)
        for c, x, y in zip(probes, after_high, before_low, strict=True)
        if x != _HIGH_MARK + c or y != c + _LOW_MARK
    }
    marks |= {ord(_LOW_MARK), ord(_HIGH_MARK)}

    def cmp(a: int, b: int) -> int:
        if nfd(chr(a) + chr(b)) == chr(b) + chr(a):
            return 1
        if nfd(chr(b) + chr(a)) == chr(a) + chr(b):
            return -1
        return 0

    ordered = sorted(marks, key=functools.cmp_to_key(cmp))
    ranks: dict[int, int] = {}
    rank = 1
    for i, c in enumerate(ordered):
        if i and cmp(ordered[i - 1], c) != 0:
            rank += 1
        ranks[c] = rank
    return ranks


@functools.lru_cache(maxsize=1)
def build_tables() -> str:
    """The tables document as JSON text (computed once per process: a few seconds)."""
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers

    cps = _code_points()
    chars = [chr(c) for c in cps]
    bert = normalizers.BertNormalizer
    clean = bert(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    chinese = bert(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    cleaned = _string_map(clean.normalize_str, chars, "x")  # clean_text only drops or writes spaces
    padded = _string_map(chinese.normalize_str, chars, "x")  # handle_chinese_chars only adds spaces
    # strip_accents as BertNormalizer does it (NFD, then drop non-spacing marks); the StripAccents
    # normalizer drops spacing marks too
    strip = bert(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    decomposed = _string_map(normalizers.NFD().normalize_str, chars, _PROBE_SEP)
    stripped = _string_map(strip.normalize_str, chars, _PROBE_SEP)
    lowered = _string_map(normalizers.Lowercase().normalize_str, chars, _PROBE_SEP)
    space, punct = _pre_tokenizer_classes(chars)
    a = chars.index("a")  # the pre-tokenizer probe's separator, probed on its own
    pieces = pre_tokenizers.BertPreTokenizer().pre_tokenize_str("bab")
    space[a], punct[a] = not pieces, len(pieces) == 3
    ccc = _combining_classes(chars, decomposed)
    odd = [
        c
        for c, x, y in zip(chars, cleaned, padded, strict=True)
        if x not in ("", " ", c) or y not in (c, f" {c} ")
    ]
    if odd:  # pragma: no cover - would mean the library changed behaviour
        raise RuntimeError(
            f"tokenizers {tokenizers.__version__}: unexpected BertNormalizer output for {odd[:5]}"
        )

    def where(flags: Iterable[bool]) -> list[list[int]]:
        return _ranges(c for c, f in zip(cps, flags, strict=True) if f)

    def mapping(outputs: Sequence[str]) -> list[list[Any]]:
        return [[c, [ord(x) for x in o]] for c, ch, o in zip(cps, chars, outputs, strict=True) if o != ch]

    doc: dict[str, Any] = {
        "format": TABLES_FORMAT,
        "version": TABLES_VERSION,
        "tokenizers_version": tokenizers.__version__,
        "clean_removed": where(x == "" for x in cleaned),
        "clean_whitespace": where(x == " " for x in cleaned),
        "chinese": where(len(x) == 3 for x in padded),
        "nfd": mapping(decomposed),
        "ccc": [[c, ccc[c]] for c in sorted(ccc)],
        "nonspacing_mark": where(x == "" for x in stripped),
        "lowercase": mapping(lowered),
        "split_whitespace": where(space),
        "punctuation": where(punct),
        "py_space": where(c.isspace() for c in chars),
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def unsupported(tokenizer_json: dict[str, Any]) -> str | None:
    """Why the C++ runtime cannot run this tokenizer (``None`` when it can): it implements the BERT
    pipeline (BertNormalizer, BertPreTokenizer, WordPiece, [CLS] A [SEP]) and plain special tokens."""
    model = tokenizer_json.get("model") or {}
    norm = tokenizer_json.get("normalizer")
    pre = tokenizer_json.get("pre_tokenizer")
    post = tokenizer_json.get("post_processor")
    if model.get("type") != "WordPiece":
        return f"model {model.get('type')!r} (the C++ runtime implements WordPiece)"
    if norm is not None and norm.get("type") != "BertNormalizer":
        return f"normalizer {norm.get('type')!r} (the C++ runtime implements BertNormalizer)"
    if pre is None or pre.get("type") != "BertPreTokenizer":
        return f"pre_tokenizer {None if pre is None else pre.get('type')!r} (expected BertPreTokenizer)"
    if post is not None and post.get("type") not in ("TemplateProcessing", "BertProcessing"):
        return f"post_processor {post.get('type')!r} (expected TemplateProcessing or BertProcessing)"
    for tok in tokenizer_json.get("added_tokens") or []:
        if tok.get("normalized") or tok.get("single_word") or tok.get("lstrip") or tok.get("rstrip"):
            return f"added token {tok.get('content')!r} is normalized, single_word or stripped"
    return None


def write_tables(tokenizer_file: Path, out: Path) -> bool:
    """Write the tables beside a bundle's ``tokenizer.json`` when the C++ runtime can run it; returns
    whether it did (other tokenizers still make a valid bundle for the Python runtime)."""
    reason = unsupported(json.loads(Path(tokenizer_file).read_text(encoding="utf-8")))
    if reason is not None:
        logger.info("no C++ tokenizer tables for %s: %s", tokenizer_file, reason)
        return False
    atomic_write_text(out, build_tables())
    return True
