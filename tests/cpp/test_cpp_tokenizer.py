"""The C++ tokenizer against the Hugging Face tokenizer of the Python runtime: identical ids, offsets, word
ids and truncation flags, on random strings built to break tokenizers and on real sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from texts import random_strings, write_jsonl

from mtst.runtime.manifest import Manifest
from mtst.runtime.tokenize import TextTokenizer


def python_encodings(bundle: Path, texts: list[str]) -> list[dict]:
    m = Manifest.read(bundle)
    tok = TextTokenizer.from_file(
        bundle / m.tokenizer, max_seq_len=m.max_seq_len, pad_token_id=m.pad_token_id, input_names=m.inputs
    )
    out = []
    for s in range(0, len(texts), 512):
        encs, truncated = tok.encode(texts[s : s + 512])
        out += [
            {
                "ids": e.ids,
                "offsets": [list(o) for o in e.offsets],
                "word_ids": e.word_ids,
                "truncated": bool(t),
            }
            for e, t in zip(encs, truncated, strict=True)
        ]
    return out


def cpp_encodings(cpp, bundle: Path, texts: list[str], tmp_path: Path) -> list[dict]:
    src = write_jsonl(texts, tmp_path / "texts.jsonl")
    res = cpp.run(cpp.tokenize, bundle, "--jsonl", "--file", src)
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode("utf-8").splitlines()
    assert len(lines) == len(texts)
    return [json.loads(line) for line in lines]


def assert_same(texts: list[str], want: list[dict], got: list[dict]) -> None:
    bad = [
        (i, texts[i][:80], {k: (w[k], g[k]) for k in w if w[k] != g[k]})
        for i, (w, g) in enumerate(zip(want, got, strict=True))
        if any(w[k] != g[k] for k in w)
    ]
    assert not bad, f"{len(bad)} of {len(texts)} texts differ; first: {bad[:3]}"


def test_random_strings_tokenize_as_hugging_face(cpp, toy_cpp_bundle: Path, tmp_path: Path) -> None:
    """20,000 strings heavy in accents, combining marks, CJK, emoji and controls (max_seq_len 32: many
    truncate, some take the pre-cut of very long texts)."""
    texts = random_strings(20_000, seed=1)
    want = python_encodings(toy_cpp_bundle, texts)
    assert sum(w["truncated"] for w in want) > 400  # the truncation path is exercised
    assert_same(texts, want, cpp_encodings(cpp, toy_cpp_bundle, texts, tmp_path))


def test_every_code_point_alone_and_in_pairs(cpp, toy_cpp_bundle: Path, tmp_path: Path) -> None:
    """Each code point on its own, and behind a letter, an accent and a mark (NFD reordering)."""
    cps = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [" ".join(cps[i : i + 24]) for i in range(0, len(cps), 24)]
    texts += ["a" + c + "\u0301" + c + "é" + c + "\u1b44" for c in cps[::7]]
    assert_same(
        texts, python_encodings(toy_cpp_bundle, texts), cpp_encodings(cpp, toy_cpp_bundle, texts, tmp_path)
    )


@pytest.mark.slow
def test_random_strings_on_exported_minilm(cpp, minilm_bundles: dict[str, Path], tmp_path: Path) -> None:
    """The same on a bundle written by mtst-export (max_seq_len 128)."""
    texts = random_strings(20_000, seed=2)
    bundle = minilm_bundles["single"]
    assert_same(texts, python_encodings(bundle, texts), cpp_encodings(cpp, bundle, texts, tmp_path))
