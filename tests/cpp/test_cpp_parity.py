"""mtst-cpp-predict against the Python runtime on real text: every sentence of the bench corpus and the test
splits of all five data sets, on bundles written by mtst-export (real all-MiniLM-L6-v2), fp32 and int8,
single and split layouts.

Both sides read the same file one text a line in chunks of 256 (mtst-predict's chunking), so they batch
alike. Asserted: identical token ids, offsets and truncation flags; identical labels and entity spans; scores
and embeddings within 1e-5 (scores come from float32 softmaxes whose exp differs in the last bit between
numpy and libm).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cpp_tokenizer import assert_same, python_encodings
from texts import dataset_texts

from mtst.runtime.engine import Engine
from mtst.runtime.texts import read_sentences

pytestmark = pytest.mark.slow

_CHUNK = 256  # mtst-predict's texts per engine call
_TOL = 1e-5


@pytest.fixture(scope="module")
def real_texts(
    bench_corpus: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path]:
    texts = read_sentences(bench_corpus)
    sets = dataset_texts(data_root)
    assert {k: len(v) for k, v in sets.items()} == {
        "conll2003": 3453,
        "sst2": 1821,
        "banking77": 3080,
        "clinc150": 5500,
        "ag_news": 7600,
    }
    for v in sets.values():
        texts += v
    path = tmp_path_factory.mktemp("cpp-texts") / "texts.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return texts, path


def _python(bundle: Path, texts: list[str], precision: str) -> tuple[list[dict], np.ndarray]:
    engine = Engine.load(bundle, providers="cpu", precision=precision)
    preds = [
        p
        for s in range(0, len(texts), _CHUNK)
        for p in engine.predict(texts[s : s + _CHUNK], return_embedding=True)
    ]
    return [p.to_dict(embedding=False) for p in preds], np.stack([p.embedding for p in preds])


def _compare_heads(i: int, text: str, want: dict, got: dict) -> str | None:
    if list(want) != list(got):
        return f"{i} {text[:60]!r}: heads {list(want)} vs {list(got)}"
    for name, w in want.items():
        g = got[name]
        if "label" in w:
            if w["label"] != g["label"] or list(w["scores"]) != list(g["scores"]):
                return f"{i} {text[:60]!r}: {name} {w['label']} vs {g['label']}"
            diff = max(abs(w["scores"][k] - g["scores"][k]) for k in w["scores"])
            if diff > _TOL:
                return f"{i} {text[:60]!r}: {name} scores differ by {diff}"
        else:
            spans = [(e["text"], e["label"], e["start"], e["end"]) for e in w["entities"]]
            if spans != [(e["text"], e["label"], e["start"], e["end"]) for e in g["entities"]]:
                return f"{i} {text[:60]!r}: {name} entities {w['entities']} vs {g['entities']}"
            if any(
                abs(a["score"] - b["score"]) > _TOL for a, b in zip(w["entities"], g["entities"], strict=True)
            ):
                return f"{i} {text[:60]!r}: {name} entity scores differ"
    return None


@pytest.mark.parametrize("layout", ["single", "split"])
@pytest.mark.parametrize("precision", ["int8-static-cpu", "fp32"])
def test_cpp_predict_equals_python(
    cpp,
    minilm_bundles: dict[str, Path],
    real_texts: tuple[list[str], Path],
    layout: str,
    precision: str,
    tmp_path: Path,
) -> None:
    texts, path = real_texts
    bundle = minilm_bundles[layout]
    npy = tmp_path / "embeddings.npy"
    res = cpp.run(
        cpp.predict, bundle, "--file", path, "--precision", precision, "--embeddings-out", npy, "-v"
    )
    assert res.returncode == 0, res.stderr.decode()
    assert f"variant {precision}/{layout}" in res.stderr.decode()
    got = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    want, want_emb = _python(bundle, texts, precision)
    assert len(got) == len(want) == len(texts)

    problems = []
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if (w["text"], w["truncated"]) != (g["text"], g["truncated"]):
            problems.append(f"{i}: text or truncated flag differs: {w['text'][:60]!r} vs {g['text'][:60]!r}")
        elif problem := _compare_heads(i, texts[i], w["heads"], g["heads"]):
            problems.append(problem)
    assert not problems, f"{len(problems)} of {len(texts)} predictions differ; first: {problems[:5]}"
    assert sum(w["truncated"] for w in want) > 0  # long ag_news texts reach the truncation path
    assert sum(bool(e["entities"]) for w in want for e in w["heads"].values() if "entities" in e) > 1000

    emb = np.load(npy)
    assert emb.shape == want_emb.shape
    assert float(np.abs(emb - want_emb).max()) <= _TOL


def test_cpp_tokens_equal_python_on_real_text(
    cpp, minilm_bundles: dict[str, Path], real_texts, tmp_path: Path
) -> None:
    texts, path = real_texts
    bundle = minilm_bundles["split"]
    res = cpp.run(cpp.tokenize, bundle, "--file", path)
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    assert_same(texts, python_encodings(bundle, texts), got)
