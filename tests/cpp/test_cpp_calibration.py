"""Calibrated bundles: mtst-cpp-predict applies each head's temperature and threshold as mtst-predict does.

The toy bundle's manifest gets a temperature per head (intent sharpened, NER flattened) and thresholds cut
between two of Python's own calibrated scores (so a last-bit difference of a float32 softmax cannot flip a
flag): some sentences abstain and some answer, some entities are dropped and some kept. Both programs read
the same file; compared: labels, abstained flags, the kept entities, scores within 1e-5, and the JSON keys in
Python's order -- with the manifest's thresholds, with ``--threshold`` overrides, ``--no-abstain`` and
``--min-entity-score`` (a token head keeps entities scored at least the larger of the two).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import TEXTS

from mtst.runtime.cli import main
from mtst.runtime.engine import Engine
from mtst.runtime.texts import read_sentences

_TOL = 1e-5
_TEMPERATURE = {"intent": 0.7, "ner": 2.5}  # one sharpened, one flattened


def _cut(scores: list[float], q: float) -> float:
    """A threshold near the q-quantile of ``scores``, halfway between two of them at least 1e-4 apart
    (the nearest such gap to the quantile, above or below it)."""
    s = sorted(scores)
    start = int(q * (len(s) - 1))
    for i in sorted(range(len(s) - 1), key=lambda i: abs(i - start)):
        if s[i + 1] - s[i] > 1e-4:
            return round((s[i] + s[i + 1]) / 2, 6)
    raise AssertionError(f"no gap between the scores: {s[:5]}...")


def _write_calibration(bundle: Path, values: dict[str, dict[str, float]]) -> None:
    """Calibration into manifest.json (not itself hashed: files lists every other file's sha256)."""
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    for h in m["heads"]:
        h.update(values.get(h["name"], {}))
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2), encoding="utf-8")


class Calibrated:
    def __init__(self, bundle: Path, texts_file: Path, cuts: dict[str, list[float]]) -> None:
        self.bundle, self.texts_file, self.cuts = bundle, texts_file, cuts


@pytest.fixture(scope="module")
def calibrated(
    toy_cpp_bundle: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Calibrated:
    root = tmp_path_factory.mktemp("cpp-calibrated")
    texts = [t for t in TEXTS if "\n" not in t] + read_sentences(bench_corpus)[:400]
    texts_file = root / "texts.txt"
    texts_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    bundle = root / "bundle"
    shutil.copytree(toy_cpp_bundle, bundle)
    _write_calibration(bundle, {k: {"temperature": t} for k, t in _TEMPERATURE.items()})
    preds = Engine.load(bundle, providers="cpu").predict(texts)
    intent = [p.heads["intent"].score for p in preds]  # type: ignore[union-attr]
    entities = [e.score for p in preds for e in p.heads["ner"].entities]  # type: ignore[union-attr]
    plain = Engine.load(toy_cpp_bundle, providers="cpu").predict(texts)
    assert max(abs(a - p.heads["intent"].score) for a, p in zip(intent, plain, strict=True)) > 0.01  # type: ignore[union-attr]
    assert len(entities) > 50
    cuts = {
        "intent": [_cut(intent, q) for q in (0.25, 0.5, 0.75)],
        "ner": [_cut(entities, q) for q in (0.25, 0.5, 0.75)],
    }
    _write_calibration(
        bundle, {"intent": {"threshold": cuts["intent"][1]}, "ner": {"threshold": cuts["ner"][1]}}
    )
    return Calibrated(bundle, texts_file, cuts)


def _python_json(bundle: Path, args: list[str]) -> list[dict]:
    res = CliRunner().invoke(main, [str(bundle), *args, "--format", "json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def _compare(want: list[dict], got: list[dict]) -> list[str]:
    problems = []
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        for name, wh in w["heads"].items():
            gh = g["heads"][name]
            if list(wh) != list(gh):
                problems.append(f"{i} {name}: keys {list(wh)} vs {list(gh)}")
            elif "label" in wh:
                if (wh["label"], wh["abstained"]) != (gh["label"], gh["abstained"]):
                    problems.append(
                        f"{i} {name}: {wh['label'], wh['abstained']} vs {gh['label'], gh['abstained']}"
                    )
                elif max(abs(wh["scores"][k] - gh["scores"][k]) for k in wh["scores"]) > _TOL:
                    problems.append(f"{i} {name}: scores {wh['scores']} vs {gh['scores']}")
            else:
                spans = [(e["text"], e["label"], e["start"], e["end"]) for e in wh["entities"]]
                if spans != [(e["text"], e["label"], e["start"], e["end"]) for e in gh["entities"]]:
                    problems.append(f"{i} {name}: entities {wh['entities']} vs {gh['entities']}")
                elif any(
                    abs(a["score"] - b["score"]) > _TOL
                    for a, b in zip(wh["entities"], gh["entities"], strict=True)
                ):
                    problems.append(f"{i} {name}: entity scores {wh['entities']} vs {gh['entities']}")
    return problems


# options of both programs, from the cuts (thresholds between Python's own calibrated scores)
OPTIONS: dict[str, Callable[[dict[str, list[float]]], list[str]]] = {
    "manifest": lambda c: [],
    "no-abstain": lambda c: ["--no-abstain"],
    "overrides": lambda c: ["--threshold", f"intent={c['intent'][2]}", "--threshold", f"ner = {c['ner'][0]}"],
    "override-one": lambda c: ["--threshold", f"intent={c['intent'][0]}"],
    "min-entity-score-above": lambda c: ["--min-entity-score", str(c["ner"][2])],
    "min-entity-score-below": lambda c: ["--min-entity-score", str(c["ner"][0])],
    "no-abstain-min-entity-score": lambda c: ["--no-abstain", "--min-entity-score", str(c["ner"][2])],
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_cpp_calibrated_predictions_equal_python(cpp, calibrated: Calibrated, case: str) -> None:
    args = OPTIONS[case](calibrated.cuts)
    res = cpp.run(cpp.predict, calibrated.bundle, "--file", calibrated.texts_file, *args)
    assert res.returncode == 0, res.stderr.decode()
    got = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    want = _python_json(calibrated.bundle, ["--file", str(calibrated.texts_file), *args])
    assert len(got) == len(want) > 400
    problems = _compare(want, got)
    assert not problems, f"{len(problems)} of {len(want)} differ; first: {problems[:5]}"
    assert list(got[0]["heads"]["intent"]) == ["label", "score", "abstained", "scores"]
    flags = [w["heads"]["intent"]["abstained"] for w in want]
    n_entities = sum(len(w["heads"]["ner"]["entities"]) for w in want)
    if case.startswith("no-abstain"):
        assert not any(flags)
    else:  # the thresholds split the texts: the test sees both answers
        assert any(flags) and not all(flags)
    assert n_entities > 0


def test_thresholds_and_min_entity_score_drop_what_they_should(cpp, calibrated: Calibrated) -> None:
    """The kept entities shrink as the threshold rises (the C++ program's own answers, one per option)."""

    def count(*args: str) -> tuple[int, int]:
        res = cpp.run(cpp.predict, calibrated.bundle, "--file", calibrated.texts_file, *args)
        assert res.returncode == 0, res.stderr.decode()
        preds = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
        return (
            sum(p["heads"]["intent"]["abstained"] for p in preds),
            sum(len(p["heads"]["ner"]["entities"]) for p in preds),
        )

    ner = calibrated.cuts["ner"]
    off, low, mid, high = (
        count("--no-abstain"),
        count("--threshold", f"ner={ner[0]}"),
        count(),
        count("--min-entity-score", str(ner[2])),
    )
    assert off[1] > low[1] > mid[1] > high[1] > 0
    assert off[0] == 0 < mid[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--threshold", "intent=2"],
            "Invalid value for --threshold: 'intent=2': expected HEAD=VALUE with VALUE in [0, 1]",
        ),
        (
            ["--threshold", "intent"],
            "Invalid value for --threshold: 'intent': expected HEAD=VALUE with VALUE in [0, 1]",
        ),
        (
            ["--threshold", "=0.5"],
            "Invalid value for --threshold: '=0.5': expected HEAD=VALUE with VALUE in [0, 1]",
        ),
        (
            ["--threshold", "intent=x"],
            "Invalid value for --threshold: 'intent=x': expected HEAD=VALUE with VALUE in [0, 1]",
        ),
        (
            ["--threshold", "intent=0.1", "--threshold", " intent=0.2"],
            "Invalid value for --threshold: head 'intent' given twice",
        ),
    ],
)
def test_bad_threshold_option_is_refused_as_mtst_predict_refuses_it(
    cpp, calibrated: Calibrated, args: list[str], message: str
) -> None:
    res = cpp.run(cpp.predict, calibrated.bundle, *args, "hello")
    py = CliRunner().invoke(main, [str(calibrated.bundle), *args, "hello"])
    assert res.returncode == py.exit_code == 2
    assert (
        res.stderr.decode().strip().splitlines()[-1]
        == py.output.strip().splitlines()[-1]
        == f"Error: {message}"
    )


def test_threshold_for_an_unknown_head_is_named(cpp, calibrated: Calibrated) -> None:
    args = ["--threshold", "sentiment=0.5", "--threshold", "embedding=0.1", "hello"]
    res = cpp.run(cpp.predict, calibrated.bundle, *args)
    py = CliRunner().invoke(main, [str(calibrated.bundle), *args])
    assert res.returncode == py.exit_code == 1
    assert (
        res.stderr.decode().strip()
        == py.output.strip().splitlines()[-1]
        == "Error: thresholds: unknown head(s) ['embedding', 'sentiment']; the heads are ['intent', 'ner']"
    )


def test_cpp_serving_writes_nothing_under_home(cpp, toy_cpp_bundle: Path, tmp_path: Path) -> None:
    """ONNX Runtime's telemetry (device id, offline event store under the user's cache) stays off in the
    C++ runtime too (providers.cpp sets ORT_DISABLE_TELEMETRY before the Ort::Env): HOME stays empty."""
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    res = subprocess.run(
        [str(cpp.predict), str(toy_cpp_bundle), "Book a table in Paris for two.", "thanks"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert len(res.stdout.decode().splitlines()) == 2
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8-static-cpu", "fp32"])
def test_cpp_calibrated_real_bundle_equals_python(
    cpp, minilm_bundles: dict[str, Path], bench_corpus: Path, data_root: Path, tmp_path: Path, precision: str
) -> None:
    """A real all-MiniLM-L6-v2 bundle (split) with calibrated heads, on real sentences: CoNLL-2003 test
    sentences (entities) and the bench corpus, thresholds cut at the median of Python's calibrated scores."""
    from texts import dataset_texts

    texts = read_sentences(bench_corpus) + dataset_texts(data_root)["conll2003"]
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    bundle = tmp_path / "bundle"
    shutil.copytree(minilm_bundles["split"], bundle)
    # the widened random heads are over-confident (most scores ~1.0): temperatures > 1 spread them
    temperature = {"intent": 6.0, "sentiment": 4.0, "ner": 2.0}
    _write_calibration(bundle, {k: {"temperature": t} for k, t in temperature.items()})
    plain = _python_json(bundle, ["--file", str(texts_file), "--precision", precision])
    cuts = {name: _cut([p["heads"][name]["score"] for p in plain], 0.5) for name in ("intent", "sentiment")}
    cuts["ner"] = _cut([e["score"] for p in plain for e in p["heads"]["ner"]["entities"]], 0.5)
    _write_calibration(bundle, {k: {"threshold": v} for k, v in cuts.items()})
    for args in ([], ["--threshold", f"sentiment={cuts['sentiment']}", "--no-abstain"]):
        argv = ["--file", str(texts_file), "--precision", precision, *args]
        res = cpp.run(cpp.predict, bundle, *argv)
        assert res.returncode == 0, res.stderr.decode()
        got = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
        want = _python_json(bundle, argv)
        assert len(got) == len(want) == len(texts)
        problems = _compare(want, got)
        assert not problems, f"{args}: {len(problems)} of {len(want)} differ; first: {problems[:5]}"
        flags = [w["heads"]["intent"]["abstained"] for w in want]
        assert (any(flags) and not all(flags)) if not args else not any(flags)
