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
