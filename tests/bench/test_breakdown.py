"""bench/breakdown.py on given batches: every stage of predict timed, the shares add up, the ops profiled."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtst.bench.breakdown import BatchProfile, profile_batches
from mtst.bench.engines import MtstSystem, load_mtst_systems, token_lengths
from mtst.runtime.batching import plan_batches
from mtst.runtime.providers import Provider


def _system(bundle: Path, *, threads: int) -> MtstSystem:
    """The split bundle's int8-static-cpu variant as the bench loads it, batches of 8."""
    (ms,) = load_mtst_systems(
        [bundle],
        provider=Provider.CPU,
        precisions=["int8-static-cpu"],
        threads=threads,
        spinning=False,
        batch_size=8,
    )
    return ms


def test_profile_batches_splits_predict(split_bundle: Path, bench_corpus: Path) -> None:
    ms = _system(split_bundle, threads=1)
    texts = bench_corpus.read_text(encoding="utf-8").splitlines()[:40]
    lengths, _ = token_lengths(ms.tokenizer, texts)
    batches = [[texts[i] for i in idx] for idx in plan_batches(lengths, max_batch=8).batches]
    prof = profile_batches(ms, batches, rounds=2)
    assert (prof.batches, prof.sentences) == (5, 40)
    # the split variant's three graphs each get their own stage
    stages = ["tokenize", "encoder", "heads", "token_heads", "decode", "glue"]
    assert list(prof.share) == stages and list(prof.ms) == [*stages, "predict"]
    assert all(prof.ms[s] > 0 for s in stages if s != "glue")
    assert sum(prof.ms[s] for s in stages) == pytest.approx(prof.ms["predict"])
    assert sum(prof.share.values()) == pytest.approx(1.0)  # type: ignore[arg-type]
    assert prof.sentences_per_s == pytest.approx(40 / (prof.ms["predict"] / 1e3))
    ops = prof.ops.by_op_type
    assert prof.ops.requests == 5 and ops == tuple(sorted(ops, key=lambda o: -o.ms))
    assert "MatMulIntegerToFloat" in {o.op for o in ops}
    assert BatchProfile.from_dict(prof.to_dict()) == prof
    with pytest.raises(ValueError, match="rounds 0"):
        profile_batches(ms, batches, rounds=0)


def test_given_batches_run_with_the_engines_token_bound(split_bundle: Path, bench_corpus: Path) -> None:
    # the same-batches scenario: one predict call per given batch, one call per thread at a time, each
    # call cut in runs of the engine's max_batch_tokens; the plain padded batches keep one run per batch
    ms = _system(split_bundle, threads=2)
    assert ms.given_engine is not None and ms.padded_engine is not None
    assert ms.engine.parallel_batches == 2 and ms.engine.max_batch_tokens == 256
    assert (ms.given_engine.parallel_batches, ms.given_engine.max_batch_tokens) == (1, 256)
    assert (ms.padded_engine.parallel_batches, ms.padded_engine.max_batch_tokens) == (1, None)
    texts = bench_corpus.read_text(encoding="utf-8").splitlines()[:64]
    lengths, _ = token_lengths(ms.tokenizer, texts)
    batches = [[texts[i] for i in idx] for idx in plan_batches(lengths, max_batch=32).batches]
    # int8-static-cpu answers do not depend on the batch: cut in runs or whole, the same labels
    for batch in batches:
        cut = ms.given_engine.predict(batch)
        whole = ms.padded_engine.predict(batch)
        assert [p.heads["intent"].label for p in cut] == [p.heads["intent"].label for p in whole]  # type: ignore[union-attr]
    ms.run_given(batches)
