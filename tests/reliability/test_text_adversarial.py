"""Adversarial text: a fixed corpus of 1,000+ hostile inputs in 19 categories, generated here, through
``predict`` / ``embed`` / ``predict_from_embeddings`` of engines on a real exported bundle (split and
single graph). Every call runs with a time bound and ends in one of two ways: a right-shaped, finite,
in-order answer, or a typed error (TypeError / ValueError / an MtstError) that names the item. No
tokenizers PanicException, no other exception, no hang.

Each case says what it expects (``None``: an answer; else the error type and a pattern its message
must match, naming the item's index), so a wrong error counts as much as a wrong answer.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fixtures_text import Hang, answers_match, bounded, single_bundle, text_bundle, text_checkpoint  # noqa: F401

from mtst.errors import MtstError
from mtst.runtime.engine import Engine
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities

CALL_LIMIT_S = 60.0  # one call; generous: the machine is shared (the slowest call is printed)
MB = 1 << 20
INTENT = ("greet", "bye", "thanks")
NER_TYPES = {"PER", "LOC"}


@dataclass(frozen=True)
class Case:
    category: str
    call: str  # "texts" (predict + embed), "predict" (with options), "pfe" (predict_from_embeddings)
    payload: Any
    options: tuple[tuple[str, Any], ...] = ()
    error: tuple[type[BaseException], str] | None = None  # expected: (type, message pattern)


def _bad_item(index: int, what: str = "") -> tuple[type[BaseException], str]:
    return (TypeError if what == "type" else ValueError, rf"texts\[{index}\]:")


def _texts(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(category: str, text: str) -> None:
        if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            cases.append(Case(category, "texts", [text], error=_bad_item(0)))
        else:
            cases.append(Case(category, "texts", [text]))

    add("empty", "")
    spaces = " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2001\u2005\u200a\u2028\u2029\u202f\u205f\u3000\u0085"
    for _ in range(40):
        add("whitespace", "".join(rng.choice(spaces) for _ in range(rng.randint(1, 50))))
    for cp in [*range(0, 32), 127, *range(0x80, 0xA0)]:
        add("control", chr(cp))
        add("control", f"Send {chr(cp)} money to Anna{chr(cp)}in Paris")
    for s in ["\x00", "a\x00b", "\x00" * 1000, "Paris\x00London", "\x00[CLS]\x00"]:
        add("nul", s)
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    for ch in bidi:
        add("bidi", ch)
        add("bidi", f"pay {ch}Anna{ch} in Berlin")
        add("bidi", f"\u202e{ch}مرحبا بالعالم Paris")
    zero_width = "\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad\u034f"
    for ch in zero_width:
        add("zero-width", ch)
        add("zero-width", ch.join("Transfer money to Anna"))
        add("zero-width", ch * 10_000)
    for cp in (0xD800, 0xDBFF, 0xDC00, 0xDFFF):
        for where in ("{c}", "abc{c}", "{c}abc", "a{c}b c", "😀{c}"):
            add("surrogate", where.format(c=chr(cp)))
    add("surrogate", "\udc00\ud800")  # a reversed pair
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪", "🏳️‍🌈", "1️⃣", "🧑🏿‍🚀", "❤️", "🤷‍♀️", "🫠"]
    for _ in range(100):
        n = rng.randint(1, 40)
        add("emoji", " ".join("".join(rng.choices(emoji, k=rng.randint(1, 4))) for _ in range(n)))
    cjk_ranges = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x20000, 0x2A6DF)]
    for i in range(100):
        lo, hi = cjk_ranges[i % len(cjk_ranges)]
        add("cjk", "".join(chr(rng.randint(lo, hi)) for _ in range(rng.choice([1, 5, 30, 200, 5000]))))
    for k in (1, 2, 5, 20, 100, 500, 2000):
        for base in ("e", "Anna", "中", " "):
            add("combining", base + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(k)))
    for _ in range(32):
        add("combining", "".join(c + chr(rng.randint(0x300, 0x36F)) * 3 for c in "Zalgo in Paris"))
    specials = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[cls]", "##ing", "<s>", "</s>", "<pad>",
                "<unk>", "<|endoftext|>", "<mask>", "[SEP][SEP]"]  # fmt: skip
    for sp in specials:
        add("special-tokens", sp)
        add("special-tokens", f"{sp} Anna {sp} lives in Rome {sp}")
        add("special-tokens", sp * 300)
    for _ in range(20):
        add("special-tokens", " ".join(rng.choices(specials, k=rng.randint(2, 80))))
    for cp in (0xFFFE, 0xFFFF, 0x10FFFF, 0xE000, 0xF0000, 0xFFFD, 0x1FFFE, 0xFDD0):
        add("noncharacter", chr(cp))
        add("noncharacter", f"Anna{chr(cp)}Paris {chr(cp) * 50}")
    scripts = ["Здравствуйте, Анна", "שלום עולם", "مرحبا يا آنا في باريس", "नमस्ते दुनिया", "สวัสดีชาวโลก",
               "𝐀𝐧𝐧𝐚 𝐢𝐧 𝐏𝐚𝐫𝐢𝐬", "Ａｎｎａ　ｉｎ　Ｐａｒｉｓ", "Ἀθῆναι", "ﬁnance ﬂow", "İstanbul ıi"]  # fmt: skip
    for _ in range(100):
        add("mixed-scripts", " ".join(rng.choices(scripts, k=rng.randint(1, 6))))
    for _ in range(200):  # anything but surrogates, all planes
        chars = []
        for _ in range(rng.randint(1, 60)):
            cp = rng.randint(0, 0x10FFFF)
            chars.append(chr(cp if not 0xD800 <= cp <= 0xDFFF else cp + 0x800))
        add("random-unicode", "".join(chars))
    for s in ["a" * MB, "." * MB, "中" * MB, "hello world " * (MB // 12), "\u200b" * MB, "😀" * (MB // 2)]:
        add("1MB", s)
    for _ in range(14):
        add("long", " ".join(rng.choice(["Anna", "Paris", "money", "!", "##", "中"]) for _ in range(5_000)))
    return cases


def _structural(rng: random.Random, dim: int) -> list[Case]:
    cases: list[Case] = []
    bad_items: list[Any] = [None, 1, 1.5, math.nan, b"text", bytearray(b"x"), ["x"], ("x",), {"x"},
                            {"a": 1}, object(), True, np.int64(3), np.bytes_(b"x"), np.array(["x"])]  # fmt: skip
    for item in bad_items:
        for at in (0, 3):
            texts: list[Any] = ["fine text"] * 5
            texts[at] = item
            cases.append(
                Case("wrong-types", "texts", texts, error=(TypeError, rf"texts\[{at}\]: expected str"))
            )
    for container in ["one string", b"bytes", None, 5, 2.5, object()]:
        cases.append(
            Case("wrong-types", "texts", container, error=(TypeError, r"texts: expected a list of str"))
        )
    cases.append(Case("wrong-types", "texts", ("a tuple", "of texts")))
    cases.append(Case("wrong-types", "texts", {"dict keys": 0, "of texts": 1}.keys()))
    cases.append(Case("wrong-types", "texts", np.array(["numpy", "strings"])))
    base = [f"sentence {i} about Anna in Paris" for i in range(10_000)]
    cases.append(Case("10k-list", "texts", list(base)))
    for at, item, err in [(4096, None, "type"), (5000, 7, "type"), (9999, b"x", "type"),
                          (4097, "bad \udc80", ""), (8191, "\ud800", ""), (0, None, "type")]:  # fmt: skip
        texts = list(base)
        texts[at] = item
        cases.append(Case("10k-list", "texts", texts, error=_bad_item(at, err)))
    unknown = (ValueError, r"heads: unknown head")  # ConfigError is a ValueError
    for heads, err in [("nope", unknown), (["intent", "nope"], unknown), ("embedding", unknown),
                       ([3], (TypeError, r"heads\[0\]")), ([None], (TypeError, r"heads\[0\]")),
                       (b"intent", (TypeError, r"heads\[0\]")), (["intent", 3.0], (TypeError, r"heads\[1\]")),
                       (["ner"], None), ([], None), (("intent", "intent"), None), ("intent", None),
                       ({"ner", "intent"}, None), ("", unknown), (["INTENT"], unknown)]:  # fmt: skip
        cases.append(Case("heads", "predict", ["Anna flew to Paris"], (("heads", heads),), err))
    score_err = (ValueError, r"min_entity_score")
    for score, err in [(math.nan, score_err), (-0.1, score_err), (1.1, score_err), (True, score_err),
                       ("0.5", score_err), (None, score_err), (math.inf, score_err), (0.5, None), (1, None)]:  # fmt: skip
        cases.append(Case("options", "predict", ["Anna flew to Paris"], (("min_entity_score", score),), err))
    cases += _embeddings(rng, dim)
    return cases


def _embeddings(rng: random.Random, dim: int) -> list[Case]:
    def unit(n: int) -> np.ndarray:
        x = np.random.default_rng(rng.randint(0, 2**32)).normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    row = lambda i: (ValueError, rf"embeddings\[{i}\]")  # noqa: E731
    shape = (ValueError, r"embeddings: expected shape")
    dtype = (TypeError, r"embeddings: expected a float array")
    cases = [Case("bad-embeddings", "pfe", unit(4)), Case("bad-embeddings", "pfe", unit(1)[0])]
    for value in (np.nan, np.inf, -np.inf, 3e38, -3e38):
        for at in (0, 2, 4999):
            x = unit(5000)
            x[at, rng.randrange(dim)] = value
            cases.append(Case("bad-embeddings", "pfe", x, error=row(at)))
    for value in (1e30, 1e10, 1e-40, 0.0):  # finite, odd: an answer (or a row error if it overflows)
        x = unit(3)
        x[1] = value
        cases.append(
            Case("bad-embeddings", "pfe", x, error=(ValueError, r"embeddings\[1\]") if value > 1e35 else None)
        )
    x = unit(3).astype(np.float64)
    x[2, 0] = 1e300  # beyond float32
    cases.append(Case("bad-embeddings", "pfe", x, error=row(2)))
    for n in (0, 1, dim - 1, dim + 1, 2 * dim):
        cases.append(Case("bad-embeddings", "pfe", np.zeros((3, n), np.float32), error=shape))
    cases += [
        Case("bad-embeddings", "pfe", np.zeros((2, 3, dim), np.float32), error=shape),
        Case("bad-embeddings", "pfe", np.float32(1.0), error=shape),
        Case("bad-embeddings", "pfe", 1.0, error=shape),
        Case("bad-embeddings", "pfe", np.zeros((0, dim), np.float32)),
        Case("bad-embeddings", "pfe", np.zeros((0,), np.float32), error=shape),
        Case("bad-embeddings", "pfe", unit(2).tolist()),
        Case("bad-embeddings", "pfe", [[0.1] * dim, [0.2]], error=dtype),
        Case("bad-embeddings", "pfe", None, error=dtype),
        Case("bad-embeddings", "pfe", "embedding", error=dtype),
        Case("bad-embeddings", "pfe", unit(3).astype(np.float16)),
        Case("bad-embeddings", "pfe", unit(3).astype(">f4")),
        Case("bad-embeddings", "pfe", np.ones((3, dim), np.int64)),
        Case("bad-embeddings", "pfe", np.asfortranarray(unit(5))),
        Case("bad-embeddings", "pfe", unit(dim).T),  # a transposed (non-contiguous) view
        Case("bad-embeddings", "pfe", unit(10)[::2]),  # a strided view
        Case("bad-embeddings", "pfe", np.ones((3, dim), bool), error=dtype),
        Case("bad-embeddings", "pfe", np.ones((3, dim), complex), error=dtype),
        Case("bad-embeddings", "pfe", np.full((3, dim), "x"), error=dtype),
        Case("bad-embeddings", "pfe", np.zeros((3, dim), "datetime64[s]"), error=dtype),
        Case("bad-embeddings", "pfe", np.zeros((3, dim), object), error=dtype),
        Case("bad-embeddings", "pfe", unit(10_000)),
        Case("bad-embeddings", "pfe", unit(2), (("heads", "ner"),), (ValueError, r"token heads")),
        Case("bad-embeddings", "pfe", unit(2), (("heads", "nope"),), (ValueError, r"unknown head")),
        Case("bad-embeddings", "pfe", unit(2), (("heads", []),)),
    ]
    return cases


def corpus(dim: int) -> list[Case]:
    rng = random.Random(1234)
    return _texts(rng) + _structural(rng, dim)


# ---------------------------------------------------------------------------- checking answers


def _check_prediction(p: Prediction, text: str, heads: list[str]) -> None:
    assert p.text == text, "answers out of order"
    assert list(p.heads) == heads, (list(p.heads), heads)
    assert isinstance(p.truncated, bool)
    for name, r in p.heads.items():
        if name == "intent":
            assert isinstance(r, SentenceLabel)
            values = list(r.scores.values())
            assert list(r.scores) == list(INTENT)
            assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values), values
            assert math.isclose(sum(values), 1.0, abs_tol=1e-5), values
            assert r.label in INTENT and r.score == r.scores[r.label] == max(values)
        else:
            assert isinstance(r, TokenEntities)
            last = 0
            for e in r.entities:
                assert last <= e.start < e.end <= len(text), (e, len(text))
                assert text[e.start : e.end] == e.text and e.label in NER_TYPES
                assert math.isfinite(e.score) and 0.0 <= e.score <= 1.0
                last = e.end
    if p.embedding is not None:
        assert p.embedding.shape == (32,) and np.isfinite(p.embedding).all()
        assert abs(float(np.linalg.norm(p.embedding)) - 1.0) < 1e-4


def _check_embed(emb: np.ndarray, n: int) -> None:
    assert emb.shape == (n, 32) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def _check_pfe(res: list[dict[str, SentenceLabel]], n: int, heads: list[str]) -> None:
    assert len(res) == n
    for r in res:
        assert list(r) == heads
        for lab in r.values():
            vals = list(lab.scores.values())
            assert all(math.isfinite(v) for v in vals) and math.isclose(sum(vals), 1.0, abs_tol=1e-5)
            assert lab.score == max(vals)


class Tally:
    """Calls and their outcomes; ``wrong`` lists every deviation from what a case expects."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.slowest = (0.0, "")

    def call(self, case: Case, what: str, fn: Callable[[], Any], check: Callable[[Any], None]) -> Any:
        tag = f"{case.category}/{what} {str(case.payload)[:60]!r}"
        try:
            result, error, took = bounded(fn, CALL_LIMIT_S)
        except Hang:
            self.outcomes["hang"] += 1
            self.wrong.append(f"hang: {tag}")
            return None
        if took > self.slowest[0]:
            self.slowest = (took, tag)
        if error is not None:
            name = type(error).__name__
            if name == "PanicException":
                self.outcomes["panic"] += 1
                self.wrong.append(f"tokenizers panic: {tag}: {error}")
            elif not isinstance(error, (TypeError, ValueError, MtstError)):
                self.outcomes["untyped"] += 1
                self.wrong.append(f"untyped {name}: {tag}: {error}")
            elif case.error is None:
                self.outcomes["unexpected error"] += 1
                self.wrong.append(f"error on good input: {tag}: {name}: {error}")
            elif not isinstance(error, case.error[0]) or not re.search(case.error[1], str(error)):
                self.outcomes["wrong error"] += 1
                self.wrong.append(f"wrong error: {tag}: {name}: {error} (expected {case.error})")
            else:
                self.outcomes["typed error"] += 1
            return None
        if case.error is not None:
            self.outcomes["answer to bad input"] += 1
            self.wrong.append(f"answered, expected {case.error}: {tag}")
            return None
        try:
            check(result)
        except AssertionError as exc:
            self.outcomes["wrong answer"] += 1
            self.wrong.append(f"wrong answer: {tag}: {exc}")
            return None
        self.outcomes["answer"] += 1
        return result


def _run_case(engine: Engine, case: Case, tally: Tally, *, embed: bool) -> list[Prediction] | None:
    opts = dict(case.options)
    if case.call == "pfe":
        heads = opts.get("heads")
        names = ["intent"] if heads is None else ([heads] if isinstance(heads, str) else list(heads))
        n = 0 if case.error else (len(case.payload) if np.ndim(case.payload) == 2 else 1)
        tally.call(
            case,
            "pfe",
            lambda: engine.predict_from_embeddings(case.payload, **opts),
            lambda r: _check_pfe(r, n, names),
        )
        return None
    payload = case.payload
    texts = list(payload) if case.error is None else []
    heads = opts.get("heads")
    names = (
        ["intent", "ner"]
        if heads is None
        else list(dict.fromkeys([heads] if isinstance(heads, str) else heads))
    )

    def check(preds: list[Prediction]) -> None:
        assert len(preds) == len(texts), (len(preds), len(texts))
        for p, t in zip(preds, texts, strict=True):
            _check_prediction(p, t, names)

    preds = tally.call(case, "predict", lambda: engine.predict(payload, return_embedding=True, **opts), check)
    if embed and case.call == "texts":
        tally.call(case, "embed", lambda: engine.embed(payload), lambda e: _check_embed(e, len(texts)))
    return preds  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def engines(text_bundle: Path, single_bundle: Path) -> dict[str, Engine]:
    return {
        "split": Engine.load(text_bundle, providers="cpu", precision="fp32"),
        "single": Engine.load(single_bundle, providers="cpu"),
    }


def test_adversarial_corpus(engines: dict[str, Engine]) -> None:
    """Every case on the split engine (predict + embed + predict_from_embeddings); every text case on
    the single-graph engine too; and the one-text cases again inside batches of 16, whose answers must
    be those of each text alone (nothing mis-ordered or mixed up between items)."""
    split, single = engines["split"], engines["single"]
    cases = corpus(split.embedding_dim)
    categories = Counter(c.category for c in cases)
    assert len(cases) >= 1000 and len(categories) >= 10, categories
    tally = Tally()
    alone: list[tuple[str, Prediction]] = []
    for case in cases:
        preds = _run_case(split, case, tally, embed=True)
        if case.call == "texts" and case.category not in ("10k-list", "1MB"):
            _run_case(single, case, tally, embed=False)
        if preds is not None and len(preds) == 1 and case.call == "texts":
            alone.append((case.category, preds[0]))
    # the one-text answers again, in shuffled batches of 16: each must equal its answer alone
    random.Random(5).shuffle(alone)
    for s in range(0, len(alone), 16):
        group = alone[s : s + 16]
        batch_case = Case("batched", "texts", [p.text for _, p in group])

        def same(preds: list[Prediction], group: list[tuple[str, Prediction]] = group) -> None:
            for got, (_, want) in zip(preds, group, strict=True):
                _check_prediction(got, want.text, ["intent", "ner"])
                differs = answers_match(got, want)
                assert differs is None, differs

        tally.call(
            batch_case, "predict", lambda c=batch_case: split.predict(c.payload, return_embedding=True), same
        )
    calls = sum(tally.outcomes.values())
    print(
        f"\nadversarial text: {len(cases)} cases in {len(categories)} categories, {calls} calls: "
        f"{dict(tally.outcomes)}; slowest call {tally.slowest[0]:.2f} s ({tally.slowest[1][:50]})"
    )
    print("  per category:", dict(categories))
    assert not tally.wrong, "\n".join(tally.wrong[:30])
