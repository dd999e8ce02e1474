"""Texts for the C++ parity tests: random strings that stress a tokenizer, and the real data sets."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

# (first, last) code point ranges, by what they stress
_ACCENTED = [(0x00C0, 0x024F), (0x1E00, 0x1EFF)]  # precomposed Latin: NFD + strip accents + case
_MARKS = [(0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)]
# marks the library reorders but does not strip (spacing marks with a combining class, marks newer than its
# "non-spacing" table), Tibetan vowels that decompose into marks, and the two ends of the class range
_ODD_MARKS = [
    0x0334,
    0x0345,
    0x0F71,
    0x0F72,
    0x0F73,
    0x0F74,
    0x0F75,
    0x0F80,
    0x0F81,
    0x1B44,
    0x1BAA,
    0x302E,
    0x302F,
    0x1D165,
    0x1D166,
    0x1D16D,
    0x1D16E,
    0x08D4,
    0x08E1,
    0x1DFB,
    0x1E944,
    0x1E94A,
    0xA953,
    0x0903,
    0x0344,
]
_SCRIPTS = [
    (0x0370, 0x03FF),
    (0x0400, 0x04FF),
    (0x0530, 0x058F),
    (0x0590, 0x05FF),
    (0x0600, 0x06FF),
    (0x0900, 0x097F),
    (0x0E00, 0x0E7F),
    (0x0F00, 0x0FFF),
    (0x10A0, 0x10FF),
    (0x1E900, 0x1E95F),
]
_CJK = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2F800, 0x2FA1F),
    (0x3040, 0x30FF),
    (0xAC00, 0xD7A3),
    (0x1100, 0x11FF),
    (0xFF00, 0xFFEF),
    (0x3000, 0x303F),
]
_EMOJI = [(0x1F300, 0x1FAFF), (0x1F1E6, 0x1F1FF), (0x1F3FB, 0x1F3FF), (0x2600, 0x27BF)]
_CONTROLS = [(0x0000, 0x001F), (0x007F, 0x009F)]
_SPECIAL = [
    0x00AD,
    0x200B,
    0x200C,
    0x200D,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    0x2060,
    0xFEFF,
    0xFFFD,
    0xFE0F,
    0xE000,
    0xF8FF,
    0xFFF9,
    0x180E,
    0x061C,
    0x0130,
    0x1E9E,
    0x03A3,
    0x01C5,
    0x2126,
    0x212A,
    0x212B,
    0xFB01,
    0x0149,
    0x1F88,
    0x10FFFD,
    0xE0041,
]
_SPACES = [
    0x09,
    0x0A,
    0x0B,
    0x0C,
    0x0D,
    0x20,
    0x85,
    0xA0,
    0x1680,
    0x2000,
    0x2007,
    0x200A,
    0x202F,
    0x205F,
    0x3000,
]
_TOKENS = ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[CL", "MASK]", "[mask]"]
_ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-_/\\@#$%&*+=<>[]{}|~^`"


def _pick(rng: random.Random, ranges: list[tuple[int, int]]) -> str:
    lo, hi = rng.choice(ranges)
    return chr(rng.randint(lo, hi))


def _any_code_point(rng: random.Random) -> str:
    while True:
        c = rng.randint(0, 0x10FFFF) if rng.random() < 0.5 else rng.randint(0, 0xFFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def _piece(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.22:
        return rng.choice(_ASCII)
    if r < 0.34:
        return _pick(rng, _ACCENTED)
    if r < 0.46:
        return _pick(rng, _MARKS)
    if r < 0.52:
        return chr(rng.choice(_ODD_MARKS))
    if r < 0.60:
        return _pick(rng, _SCRIPTS)
    if r < 0.70:
        return _pick(rng, _CJK)
    if r < 0.77:
        return _pick(rng, _EMOJI)
    if r < 0.82:
        return _pick(rng, _CONTROLS)
    if r < 0.87:
        return chr(rng.choice(_SPECIAL))
    if r < 0.93:
        return chr(rng.choice(_SPACES))
    if r < 0.96:
        return rng.choice(_TOKENS)
    return _any_code_point(rng)


def random_strings(n: int, *, seed: int = 0) -> list[str]:
    """``n`` strings heavy in accents, combining marks, CJK, emoji, controls and odd code points; a few
    long ones (truncation), long words (over 100 characters) and very long texts (the runtime's pre-cut)."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        kind = i % 50
        if kind == 0:  # one long word: WordPiece's max_input_chars_per_word
            out.append("".join(rng.choice("abcdé") for _ in range(rng.randint(95, 130))))
        elif kind == 1:  # long enough to truncate
            out.append(" ".join("".join(_piece(rng) for _ in range(rng.randint(1, 8))) for _ in range(300)))
        elif kind == 2 and i % 1000 == 2:  # very long: the pre-cut at whitespace
            words = ["".join(_piece(rng) for _ in range(rng.randint(1, 6))) for _ in range(1500)]
            out.append(rng.choice([" ", "\u3000", "\n", "\u00a0"]).join(words))
        else:
            out.append("".join(_piece(rng) for _ in range(rng.randint(0, 40))))
    return out


def write_jsonl(texts: list[str], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- real data
def _one_line(text: str) -> str:
    # mtst-predict reads one text a line: inner line breaks become spaces
    return text.replace("\r", " ").replace("\n", " ")


def dataset_texts(data_root: Path) -> dict[str, list[str]]:
    """The test split of every data set under ``data_root`` (SOURCE.md of each gives the format)."""
    from mtst.data import DataSource, load_examples

    out: dict[str, list[str]] = {}
    conll = load_examples(DataSource("conll2003/test.txt"), "token_classification", data_root=data_root)
    out["conll2003"] = [" ".join(ex.tokens) for ex in conll]
    with (data_root / "sst2" / "test.tsv").open(encoding="utf-8") as f:  # unlabeled: index <tab> sentence
        out["sst2"] = [line.rstrip("\n").split("\t", 1)[1] for line in list(f)[1:]]
    banking = load_examples(
        DataSource("banking77/test.csv", label_column="category"),
        "sentence_classification",
        data_root=data_root,
    )
    out["banking77"] = [ex.text for ex in banking]
    clinc = json.loads((data_root / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    out["clinc150"] = [text for key in ("test", "oos_test") for text, _ in clinc[key]]
    with (data_root / "ag_news" / "test.csv").open(encoding="utf-8", newline="") as f:
        out["ag_news"] = [f"{title}. {body}".replace("\\n", " ") for _, title, body in csv.reader(f)]
    return {k: [_one_line(t) for t in v] for k, v in out.items()}
