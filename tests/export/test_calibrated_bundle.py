"""Temperatures and thresholds: checkpoint -> export -> manifest -> runtime (fp32 and int8), abstention in
``Engine.predict`` and ``mtst-predict`` JSON, and ``mtst-eval`` on the tiny bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mtst.calibration import CalibrationReport, scaled_softmax

TEMPERATURE = {"intent": 2.0, "ner": 0.5}
THRESHOLD = {"intent": 0.34, "ner": 0.3}
TEXTS = [
    "hello there Anna",
    "thanks a lot for the help in Paris",
    "see you later Bob",
    "a cat sat on the mat",
    "good morning to you",
    "Mary Smith went to Rome today",
]


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with known temperatures and thresholds written the way training writes them."""
    from mtst.calibrate import write_calibration

    path = tmp_path_factory.mktemp("calibrated") / "ck"
    shutil.copytree(tiny_checkpoint, path)
    write_calibration(
        path,
        {n: CalibrationReport(n, TEMPERATURE[n], THRESHOLD[n], {"fitted_on": "test"}) for n in TEMPERATURE},
    )
    return path


@pytest.fixture(scope="module")
def calibrated_bundle(calibrated: Path, tmp_path_factory: pytest.TempPathFactory, bench_corpus: Path) -> Path:
    """fp32 and int8 (int8-static-cpu) variants, single layout."""
    from mtst.export import export_bundle

    out = tmp_path_factory.mktemp("calibrated-bundle") / "bundle"
    export_bundle(calibrated, out, quantize=["none", "int8"], parity_data=bench_corpus, accuracy_guard=False)
    return out


def test_checkpoint_carries_the_calibration(calibrated: Path) -> None:
    from mtst.model import load_model

    model = load_model(calibrated)
    for name in TEMPERATURE:
        assert (model.tasks[name].temperature, model.tasks[name].threshold) == (
            TEMPERATURE[name],
            THRESHOLD[name],
        )


def test_manifest_and_runtime_apply_the_calibration(calibrated_bundle: Path) -> None:
    from mtst.runtime import Engine
    from mtst.runtime.results import SentenceLabel, TokenEntities

    manifest = json.loads((calibrated_bundle / "manifest.json").read_text())
    heads = {h["name"]: h for h in manifest["heads"]}
    for name in TEMPERATURE:
        assert (heads[name]["temperature"], heads[name]["threshold"]) == (TEMPERATURE[name], THRESHOLD[name])
    assert "temperature" not in heads["embedding"]
    variants = [v["precision"] for v in manifest["variants"]]
    assert "fp32" in variants and "int8-static-cpu" in variants
    for precision in ("fp32", "int8-static-cpu"):
        engine = Engine.load(calibrated_bundle, providers=["cpu"], precision=precision)
        assert engine.heads["intent"].temperature == TEMPERATURE["intent"]
        assert engine.heads["ner"].threshold == THRESHOLD["ner"]
        preds = engine.predict(TEXTS, return_logits=True)
        for p in preds:
            intent = p.heads["intent"]
            assert isinstance(intent, SentenceLabel)
            assert p.logits is not None
            probs = scaled_softmax(p.logits["intent"][None, :], TEMPERATURE["intent"])[0]
            assert intent.score == pytest.approx(float(probs.max()), abs=1e-5)
            assert intent.abstained == (intent.score < THRESHOLD["intent"])
            assert intent.answer == (None if intent.abstained else intent.label)
            ner = p.heads["ner"]
            assert isinstance(ner, TokenEntities)
            assert all(e.score >= THRESHOLD["ner"] for e in ner.entities)
        # per-call overrides: a threshold of 1 abstains on everything, abstain=False on nothing
        assert all(p.heads["intent"].abstained for p in engine.predict(TEXTS, thresholds={"intent": 1.0}))  # type: ignore[union-attr]
        free = engine.predict(TEXTS, abstain=False)
        assert not any(p.heads["intent"].abstained for p in free)  # type: ignore[union-attr]
        kept = sum(len(p.heads["ner"].entities) for p in preds)  # type: ignore[union-attr]
        assert sum(len(p.heads["ner"].entities) for p in free) >= kept  # type: ignore[union-attr]
    # both variants agree on who abstains (int8-static-cpu keeps the heads in fp32)
    fp32 = Engine.load(calibrated_bundle, providers=["cpu"], precision="fp32").predict(TEXTS)
    int8 = Engine.load(calibrated_bundle, providers=["cpu"], precision="int8-static-cpu").predict(TEXTS)
    flips = sum(
        a.heads["intent"].abstained != b.heads["intent"].abstained for a, b in zip(fp32, int8, strict=True)
    )  # type: ignore[union-attr]
    assert flips <= 1


def test_unknown_threshold_head_is_refused(calibrated_bundle: Path) -> None:
    from mtst.errors import ConfigError
    from mtst.runtime import Engine

    engine = Engine.load(calibrated_bundle, providers=["cpu"], precision="fp32")
    with pytest.raises(ConfigError, match=r"thresholds: unknown head\(s\) \['intnet'\]"):
        engine.predict(TEXTS, thresholds={"intnet": 0.5})
    with pytest.raises(ValueError, match=r"thresholds\['intent'\]: expected a number in \[0, 1\], got 2"):
        engine.predict(TEXTS, thresholds={"intent": 2})


def test_mtst_predict_json_has_abstention_flags(calibrated_bundle: Path) -> None:
    from mtst.runtime.cli import main

    def run(*extra: str) -> list[dict]:
        result = CliRunner().invoke(main, [str(calibrated_bundle), *TEXTS[:3], "--precision", "fp32", *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    plain = run()
    assert all(isinstance(r["heads"]["intent"]["abstained"], bool) for r in plain)
    assert all(
        r["heads"]["intent"]["abstained"] == (r["heads"]["intent"]["score"] < THRESHOLD["intent"])
        for r in plain
    )
    assert all(r["heads"]["intent"]["abstained"] for r in run("--threshold", "intent=1"))
    assert not any(r["heads"]["intent"]["abstained"] for r in run("--no-abstain"))
    bad = CliRunner().invoke(main, [str(calibrated_bundle), "hi", "--threshold", "intent=high"])
    assert bad.exit_code != 0
    assert "'intent=high': expected HEAD=VALUE with VALUE in [0, 1]" in bad.output


# ---------------------------------------------------------------------------------------------- mtst-eval
def _eval_files(root: Path) -> None:
    """Labelled files in the tiny model's label sets: intent CSV, NER in CoNLL format under a suffix that
    says nothing, and out-of-domain lines."""
    rows = [
        ("hello there", "greet"),
        ("hi friend", "greet"),
        ("goodbye now", "bye"),
        ("see you later", "bye"),
        ("thanks a lot", "thanks"),
        ("many thanks", "thanks"),
    ]
    (root / "intent.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    sentences = [
        [("Anna", "B-PER"), ("went", "O"), ("to", "O"), ("Paris", "B-LOC")],
        [("Mary", "B-PER"), ("Smith", "I-PER"), ("sat", "O")],
        [("the", "O"), ("cat", "O"), ("in", "O"), ("Oslo", "B-LOC")],
    ]
    (root / "ner.annotated").write_text(
        "".join("".join(f"{t} X X {g}\n" for t, g in s) + "\n" for s in sentences)
    )
    (root / "news.txt").write_text("Stocks fell sharply on Monday.\nThe council met in the town hall.\n")


def _eval(*args: str) -> dict:
    from mtst.experiment.eval_cli import main

    result = CliRunner().invoke(main, [*args, "--report", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_mtst_eval_on_the_tiny_bundle(calibrated_bundle: Path, calibrated: Path, tmp_path: Path) -> None:
    from mtst.calibration import ece
    from mtst.runtime import Engine

    _eval_files(tmp_path)
    common = ["--data", "intent=intent.csv", "--data", "ner=ner.annotated", "--format", "ner=conll"]
    common += ["--ood", "intent=news.txt", "--ood", "*=news.txt", "--data-root", str(tmp_path)]
    report = _eval(str(calibrated_bundle), *common)
    assert set(report["variants"]) == {"fp32/single", "int8-static-cpu/single"}
    fp32 = report["variants"]["fp32/single"]
    assert fp32["thresholds"] == THRESHOLD
    intent, ner = fp32["heads"]["intent"], fp32["heads"]["ner"]
    assert intent["examples"] == 6 and ner["examples"] == 3
    # the numbers are those of the runtime's own answers
    engine = Engine.load(calibrated_bundle, providers=["cpu"], precision="fp32")
    texts = ["hello there", "hi friend", "goodbye now", "see you later", "thanks a lot", "many thanks"]
    gold = ["greet", "greet", "bye", "bye", "thanks", "thanks"]
    answers = [p.heads["intent"] for p in engine.predict(texts, abstain=False)]
    right = np.array([a.label == g for a, g in zip(answers, gold, strict=True)])  # type: ignore[union-attr]
    scores = np.array([a.score for a in answers])  # type: ignore[union-attr]
    assert intent["accuracy"] == pytest.approx(right.mean())
    assert intent["ece"] == pytest.approx(ece(scores, right))
    assert intent["coverage"] == pytest.approx((scores >= THRESHOLD["intent"]).mean())
    assert intent["accuracy_at_threshold"] == pytest.approx((right & (scores >= THRESHOLD["intent"])).mean())
    assert {"precision", "recall", "f1", "f1_all", "coverage"} <= set(ner)
    cross = fp32["cross"]
    assert set(cross["intent"]) == {"news.txt", "*=news.txt", "ner: ner.annotated"}
    assert set(cross["ner"]) == {"*=news.txt", "intent: intent.csv"}  # intent's OOD file is not ner's
    assert 0.0 <= cross["intent"]["news.txt"]["auroc"] <= 1.0
    assert "auroc" not in cross["ner"]["*=news.txt"]  # token heads: share declined only
    # a torch checkpoint gives the same arg-max metrics as the fp32 bundle
    torch_report = _eval("--checkpoint", str(calibrated), *common)
    assert torch_report["variants"]["torch"]["heads"]["intent"]["accuracy"] == intent["accuracy"]
    assert torch_report["variants"]["torch"]["heads"]["ner"]["f1_all"] == pytest.approx(ner["f1_all"])


def test_mtst_eval_table_and_errors(calibrated_bundle: Path, tmp_path: Path) -> None:
    from mtst.experiment.eval_cli import main

    _eval_files(tmp_path)
    runner = CliRunner()
    args = [str(calibrated_bundle), "--data-root", str(tmp_path), "--variant", "fp32/single", "--no-progress"]
    table = runner.invoke(main, [*args, "--data", "intent=intent.csv", "--threshold", "intent=0.9"])
    assert table.exit_code == 0, table.output
    assert "## fp32/single" in table.output and "| intent | intent.csv | 0.9000 |" in table.output
    cases = {
        "intnet=intent.csv": "--data 'intnet=intent.csv': no head 'intnet'; the heads are ['intent', 'ner']",
        "ner=ner.annotated": "ner.annotated",  # no --format: the suffix says nothing
        "intent": "--data 'intent': expected TASK=PATH or TASK=PATH#SPLIT",
    }
    for value, message in cases.items():
        bad = runner.invoke(main, [*args, "--data", value])
        assert bad.exit_code != 0 and message in bad.output, bad.output
    both = runner.invoke(main, [str(calibrated_bundle), "--checkpoint", str(calibrated_bundle)])
    assert "give a BUNDLE or --checkpoint CKPT (one of them)" in both.output


def test_mtst_eval_on_a_split_bundle(calibrated: Path, tmp_path: Path, bench_corpus: Path) -> None:
    """The split layout (encoder.onnx + heads.onnx) answers like the single one, thresholds included."""
    from mtst.export import export_bundle

    export_bundle(calibrated, tmp_path / "split", split=True, parity_data=bench_corpus, accuracy_guard=False)
    export_bundle(calibrated, tmp_path / "single", parity_data=bench_corpus, accuracy_guard=False)
    _eval_files(tmp_path)
    common = ["--data", "intent=intent.csv", "--ood", "*=news.txt", "--data-root", str(tmp_path)]
    split = _eval(str(tmp_path / "split"), *common)["variants"]
    single = _eval(str(tmp_path / "single"), *common)["variants"]
    assert set(split) == {"fp32/split"} and set(single) == {"fp32/single"}
    a, b = split["fp32/split"], single["fp32/single"]
    assert a["thresholds"] == b["thresholds"] == THRESHOLD
    for key in ("accuracy", "coverage", "ece"):
        assert a["heads"]["intent"][key] == pytest.approx(b["heads"]["intent"][key], abs=1e-6)
    assert a["cross"]["intent"]["*=news.txt"]["declined"] == b["cross"]["intent"]["*=news.txt"]["declined"]


@pytest.mark.slow
def test_mtst_eval_matches_the_training_metrics_on_a_real_bundle(
    trained_minilm_checkpoint: Path, tmp_path: Path, bench_corpus: Path, data_root: Path
) -> None:
    """Real MiniLM (Banking77 intents, CoNLL-2003 NER): mtst-eval of the fp32 bundle reports the numbers
    training's own evaluation (mtst.evaluation on the torch model) gives on the same test examples,
    within 0.1 point."""
    from mtst.checkpoint import read_meta
    from mtst.evaluation import evaluate_task, torch_logits_fn
    from mtst.experiment.predictors import HeadView
    from mtst.experiment.scoring import read_eval_files
    from mtst.export import export_bundle
    from mtst.model import load_model

    export_bundle(
        trained_minilm_checkpoint, tmp_path / "bundle", parity_data=bench_corpus, accuracy_guard=False
    )
    data = ["intent=banking77/test.csv", "ner=conll2003/test.txt"]
    args = ["--data", data[0], "--data", data[1], "--data-root", str(data_root), "--limit", "400"]
    report = _eval(str(tmp_path / "bundle"), *args)["variants"]["fp32/single"]["heads"]

    model = load_model(trained_minilm_checkpoint)
    views = {"intent": HeadView("sentence", (), 0.0), "ner": HeadView("token", (), 0.0)}
    training = read_meta(trained_minilm_checkpoint)["config"]
    files = read_eval_files(data, [], views, data_root=data_root, training_config=training, limit=400)
    for f in files:
        assert f.examples is not None and len(f.examples) == 400
        spec = model.tasks[f.task]
        own = evaluate_task(
            torch_logits_fn(model, f.task), model.tokenizer, spec, f.examples, max_seq_len=model.max_seq_len
        ).metrics
        got = report[f.task]
        if f.task == "intent":
            assert got["accuracy"] == pytest.approx(own["accuracy"], abs=0.001)
            assert got["macro_f1"] == pytest.approx(own["macro_f1"], abs=0.001)
            assert own["accuracy"] > 0.5  # a trained head, not a chance-level one
        else:
            assert got["f1_all"] == pytest.approx(own["f1"], abs=0.001)
            assert own["f1"] > 0.3


def test_abstention_report_renders_a_real_evaluation(calibrated_bundle: Path, tmp_path: Path) -> None:
    """docs/results.md's tables (mtst.experiment.abstain_report) from an mtst-eval report of the tiny bundle."""
    from mtst.experiment.abstain_report import write_markdown

    _eval_files(tmp_path)
    args = ["--data", "intent=intent.csv", "--data", "ner=ner.annotated", "--format", "ner=conll"]
    report = _eval(str(calibrated_bundle), *args, "--ood", "*=news.txt", "--data-root", str(tmp_path))
    calibration = {"intent": {"temperature": 2.0, "test": {"ece_before": 0.25}}}
    md = write_markdown(
        {"config": "tiny.yaml", "runs": {"tiny": {"eval": report, "calibration": calibration}}}
    )
    intent = report["variants"]["fp32/single"]["heads"]["intent"]
    declined = report["variants"]["fp32/single"]["cross"]["ner"]["*=news.txt"]["declined"]
    assert "## tiny (given; overrides none)" in md
    assert f"| intent | fp32/single | 2.000 | 0.340 | accuracy | {intent['accuracy']:.4f} |" in md
    assert f"| ner | fp32/single | *=news.txt | 2 | {100 * declined:.1f}% |" in md


def test_mtst_eval_of_a_bundle_imports_no_torch(calibrated_bundle: Path, tmp_path: Path) -> None:
    """A bundle is scored by the runtime alone: an edge device without torch can run mtst-eval."""
    import subprocess
    import sys

    _eval_files(tmp_path)
    code = (
        "import sys\n"
        "from mtst.experiment.eval_cli import main\n"
        f"main([{str(calibrated_bundle)!r}, '--data', 'intent=intent.csv', '--data-root', {str(tmp_path)!r},"
        " '--report', 'json', '--no-progress'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert '"fp32/single"' in done.stdout
