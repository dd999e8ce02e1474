"""Units of mtst.bench that need no bundle: percentiles, interleaving, open loop, targets, data, fidelity."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mtst.bench import targets as tg
from mtst.bench.config import BenchConfig, Scenario, parse_scenarios
from mtst.bench.data import length_stats, load_bundle_sentences, load_sentences
from mtst.bench.fidelity import cosine_rows, label_agreement
from mtst.bench.peer_base import mean_pool
from mtst.bench.peer_worker import PeerProcess
from mtst.bench.peers import Peer, parse_compare
from mtst.bench.system import cpu_info
from mtst.bench.systems import Batching
from mtst.bench.throughput import corpus_batches
from mtst.bench.timing import Measured, interleaved, run_open_loop, summarize
from mtst.errors import ConfigError, DataError
from mtst.runtime.batching import padding_waste


# ---------------------------------------------------------------------------------------------- timing
def test_summarize_matches_numpy_percentiles() -> None:
    ns = np.arange(1, 1001) * 1_000_000  # 1 .. 1000 ms
    s = summarize(ns)
    assert s.n == 1000
    assert s.p50_ms == pytest.approx(np.percentile(np.arange(1, 1001), 50))
    assert s.p99_ms == pytest.approx(np.percentile(np.arange(1, 1001), 99))
    assert (s.min_ms, s.max_ms) == (1.0, 1000.0)
    with pytest.raises(ValueError, match="no latency samples"):
        summarize([])


def test_interleaved_rotates_systems_and_excludes_warmup() -> None:
    calls: list[tuple[str, int]] = []
    systems = {name: (lambda item, name=name: calls.append((name, item))) for name in ("a", "b", "c")}
    times = interleaved(systems, [0, 1, 2, 3], rounds=2, warmup=2)
    # warm-up: items 0 and 1 once per system; then 2 rounds x 4 items per system
    assert calls[:6] == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1)]
    assert {k: len(v) for k, v in times.items()} == {"a": 8, "b": 8, "c": 8}
    timed = calls[6:]
    firsts = [timed[i][0] for i in range(0, len(timed), 3)]
    assert firsts[:4] == ["a", "b", "c", "a"]  # the system going first rotates from item to item
    assert all(t > 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match="rounds 0"):
        interleaved(systems, [0], rounds=0)


def test_open_loop_counts_requests_and_failures() -> None:
    seen: list[str] = []

    def serve(item: str) -> None:
        seen.append(item)
        if item == "bad":
            raise RuntimeError("boom")

    run = run_open_loop(serve, ["a", "bad", "c"], rate=500.0, n=30)
    assert run.n == 30 and len(seen) == 30
    assert seen[:4] == ["a", "bad", "c", "a"]  # cycles through the items in order
    assert run.failed == 10
    assert run.latency.n == 30 and run.latency.min_ms >= 0
    assert run.achieved_rate > 0
    with pytest.raises(ValueError, match="rate > 0"):
        run_open_loop(serve, ["a"], rate=0, n=3)


# ---------------------------------------------------------------------------------------------- targets
def test_targets_pass_and_short_by() -> None:
    lat = tg.check("realtime_p50_vs_fastest_peer", "mtst int8", 0.66)
    assert lat.passed is False
    assert lat.short_by == pytest.approx(0.11)
    assert lat.short_by_relative == pytest.approx(0.2)
    assert lat.verdict() == "short by 0.11x (20%)"
    tput = tg.check("throughput_vs_fastest_peer", "mtst int8", 3.1)
    assert tput.passed is True and tput.short_by == 0.0 and tput.verdict() == "pass"
    low = tg.check("cos_min", "mtst int8", 0.95)
    assert low.passed is False and low.short_by == pytest.approx(0.04)
    missing = tg.check("heads_only_p99_us", "mtst fp32", None, note="needs a split bundle")
    assert missing.passed is None and missing.verdict() == "not measured (needs a split bundle)"
    d = lat.to_dict()
    assert d["target"] == "<= 0.55x" and d["value"] == 0.66 and d["passed"] is False
    json.dumps(d)


# ---------------------------------------------------------------------------------------------- data
def test_load_sentences_skips_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("Hello there.\n\n  Second one  \n", encoding="utf-8")
    ds = load_sentences(f)
    assert ds.sentences == ("Hello there.", "Second one")
    assert ds.head(1) == ("Hello there.",) and ds.head(0) == ds.sentences


def test_load_sentences_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: no such file \(--data expects"):
        load_sentences(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: no sentences"):
        load_sentences(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt: not UTF-8 text \(byte 3"):
        load_sentences(latin)


def test_bundle_sentences_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no parity report to take sentences from; pass --data FILE"):
        load_bundle_sentences(tmp_path, None)
    with pytest.raises(
        DataError, match=r"parity\.json: missing, so no sentences to benchmark on; pass --data"
    ):
        load_bundle_sentences(tmp_path, "parity.json")
    (tmp_path / "parity.json").write_text(json.dumps({"sentences": "one string"}))
    with pytest.raises(DataError, match="sentences: expected a list of strings, got str"):
        load_bundle_sentences(tmp_path, "parity.json")
    (tmp_path / "parity.json").write_text(json.dumps({"sentences": ["a b", "a b", " c "]}))
    assert load_bundle_sentences(tmp_path, "parity.json").sentences == ("a b", "c")


def test_length_stats() -> None:
    s = length_stats([3, 5, 10, 64], [False, False, False, True])
    assert (s.n, s.min, s.max, s.truncated) == (4, 3, 64, 1)
    assert s.mean == pytest.approx(20.5)


def test_cpu_info_reads_model_and_relevant_flags(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 avx512_vnni foo\n"
    )
    model, flags = cpu_info(f)
    assert model == "Test CPU 9000"
    assert flags == ("sse4_2", "avx", "avx2", "avx512_vnni")


# ---------------------------------------------------------------------------------------------- fidelity
def test_label_agreement_sentence_and_token_heads() -> None:
    assert label_agreement(["a", "b", "a", "c"], ["a", "b", "b", "c"]) == (0.75, 4)
    share, n = label_agreement([("O", "B-PER"), ("O",)], [("O", "I-PER"), ("O",)])
    assert (share, n) == (2 / 3, 3)
    with pytest.raises(ValueError, match="differ in length: 1 vs 2"):
        label_agreement(["a"], ["a", "b"])


def test_cosine_rows() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, np.sqrt(0.5)])
    with pytest.raises(ValueError, match="shapes differ"):
        cosine_rows(a, b[:1])


# ---------------------------------------------------------------------------------------------- batching
def test_corpus_batches_and_padding_waste() -> None:
    texts = ["a", "bbbbbbbb", "cc", "ddddddd"]
    lengths = np.array([3, 10, 4, 9])
    in_order = corpus_batches(Batching.IN_ORDER, lengths, texts, batch_size=2)
    assert [b.tolist() for b in in_order] == [[0, 1], [2, 3]]
    sorted_ = corpus_batches(Batching.LENGTH_SORTED, lengths, texts, batch_size=2)
    assert [b.tolist() for b in sorted_] == [[0, 2], [3, 1]]
    by_chars = corpus_batches(Batching.CHAR_SORTED, lengths, texts, batch_size=2)
    assert [b.tolist() for b in by_chars] == [[1, 3], [2, 0]]
    # in order: (10+10 + 9+9) positions for 3+10+4+9 real tokens; sorted: (4+4 + 10+10)
    assert padding_waste(lengths, in_order) == pytest.approx(1 - 26 / 38)
    assert padding_waste(lengths, sorted_) == pytest.approx(1 - 26 / 28)


# ---------------------------------------------------------------------------------------------- options
def test_parse_compare_and_scenarios() -> None:
    assert parse_compare("torch,optimum,st-onnx") == (
        Peer.TORCH,
        Peer.OPTIMUM_FP32,
        Peer.OPTIMUM_INT8,
        Peer.OPTIMUM_INT8_PER_TENSOR,
        Peer.ST_ONNX,
    )
    assert parse_compare(["all"]) == tuple(Peer)
    assert parse_compare(None) == ()
    with pytest.raises(ConfigError, match="--compare: unknown peer 'onnx-magic'"):
        parse_compare("torch,onnx-magic")
    assert parse_scenarios("all") == tuple(Scenario)
    assert parse_scenarios(["cold-start,realtime"]) == (Scenario.REALTIME, Scenario.COLD_START)
    with pytest.raises(ConfigError, match="--scenario: 'fast' is not one of"):
        parse_scenarios("fast")


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give at least one bundle"):
        BenchConfig(bundles=())
    with pytest.raises(ConfigError, match="threads: expected an integer >= 1, got 0"):
        BenchConfig(bundles=(tmp_path,), threads=0)
    with pytest.raises(ConfigError, match="--provider: 'tpu' is not one of"):
        BenchConfig(bundles=(tmp_path,), provider="tpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="p99-target-ms: expected a number > 0"):
        BenchConfig(bundles=(tmp_path,), p99_target_ms=0)


def test_interleaved_takes_the_time_a_call_measured_itself() -> None:
    """A peer in its own process returns Measured: its own figure counts, not the pipe's round trip."""
    systems = {"remote": lambda item: Measured(1_000 + item), "local": lambda item: None}
    times = interleaved(systems, [1, 2, 3], rounds=1)
    assert times["remote"] == [1_001, 1_002, 1_003]
    assert all(t > 0 for t in times["local"])


def test_mean_pool_counts_each_sentence_own_tokens() -> None:
    hidden = np.zeros((2, 3, 2), dtype=np.float32)
    hidden[0] = [[1, 0], [3, 0], [100, 100]]  # third position is padding for sentence 0
    hidden[1] = [[0, 1], [0, 1], [0, 1]]
    out = mean_pool(hidden, [2, 3])
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 1.0]])


def test_peer_process_answers_and_reports_child_errors() -> None:
    """The worker protocol end to end (this interpreter): a backend that fails to open is a clear error."""
    from mtst.errors import MtstError

    with pytest.raises(MtstError, match=r"^peer broken: KeyError: 'dir'$"):
        PeerProcess("broken", python=sys.executable, opener="mtst.bench.peer_ct2:open_ctranslate2", params={})
    proc = PeerProcess("calls", python=sys.executable, opener="", params={})
    try:
        assert proc.call("mtst.bench.peer_ct2:best_cpu_isa", {"flags": ["avx2", "sse4_2"]}) == "AVX2"
        with pytest.raises(MtstError, match="peer calls: RuntimeError: run_one: no backend opened"):
            proc.run_one("hello")
    finally:
        proc.close()
    assert proc._proc.poll() is not None  # closed: the child has exited
