"""bench/cpp_compare.py end to end on the toy bundle (a short run: the figures are not checked, the answers are)."""

from __future__ import annotations

from pathlib import Path

from mtst.bench.cpp_compare import compare, summary


def test_cpp_compare_measures_both_runtimes(cpp, toy_cpp_bundle: Path, bench_corpus: Path) -> None:
    build = cpp.predict.parents[2]
    report = compare(toy_cpp_bundle, build, bench_corpus, sentences=8, rounds=1, corpus_rounds=1, warmup=2)
    assert report["variant"] == "fp32/single"
    assert report["labels_equal"] == f"{report['corpus_sentences']}/{report['corpus_sentences']}"
    assert report["batch1_ms"]["cpp"]["n"] == report["batch1_ms"]["python"]["n"] == 8
    assert report["process"]["cpp"]["peak_rss_kb"] > 0 and report["process"]["python"]["peak_rss_kb"] > 0
    assert set(report["sizes_bytes"]["cpp"]) == {
        "libmtst_runtime.so",
        "mtst-cpp-predict",
        "libonnxruntime.so",
    }
    assert "batch-1 p50 ms: C++" in summary(report)


def test_cold_start_of_the_cpp_runtime(cpp, toy_cpp_bundle: Path, tmp_path: Path) -> None:
    """mtst-bench --cpp-build: the C++ app as a cold-start system, its phases from its own -v report."""
    import pytest

    from mtst.bench.coldstart import cpp_spec, find_cpp_app, run_cold_starts
    from mtst.errors import MtstError

    build = cpp.predict.parents[2]
    app = find_cpp_app(build)
    assert app == cpp.predict
    spec = cpp_spec("mtst fp32 (C++ runtime)", app, toy_cpp_bundle, "Where is my card?", precision="fp32")
    (cs,) = run_cold_starts([spec], runs=2, warmup=1).values()
    assert cs.runs == 2 and len(cs.totals_s) == 2
    # spawn -> main -> loaded -> answered, each phase inside the total the parent measured
    assert cs.interpreter_s >= 0 and cs.load_s > 0 and cs.first_answer_s >= 0 and cs.import_s == 0
    assert cs.interpreter_s + cs.load_s + cs.first_answer_s <= cs.total_s + 1e-3
    assert 5 < cs.peak_rss_mb < 2000 and not cs.torch_loaded
    assert cs.extra == {"program": "mtst-cpp-predict"}
    with pytest.raises(MtstError, match=r"--cpp-build .*: no mtst-cpp-predict in it"):
        find_cpp_app(tmp_path)
    bad = cpp_spec("bad", app, tmp_path, "hi", precision=None)  # not a bundle: the app fails, we say so
    with pytest.raises(MtstError, match=r"cold start of bad: .*mtst-cpp-predict failed"):
        run_cold_starts([bad], runs=1, warmup=0)
