"""Sentences per second of a corpus on a local Ray cluster (1, 2, … actors) against the local Engine.

::

    python -m mtst.bench.ray_throughput BUNDLE --data corpus.txt --actors 1 --actors 2 --rounds 2 -o ray.json

The corpus (one sentence a line) is read once, written to a scratch .txt file for Ray's read tasks,
and run (1) through ``Engine.predict`` in this process, the way ``mtst-predict --file`` runs it (ONNX
Runtime's threads) and as ``mtst-bench`` runs it ("1x2": ``intra_op_threads=1, parallel_batches=2``), (2)
through :func:`mtst.runtime.ray.predict_dataset` on a local cluster started here, for each actor count.
A Ray round is timed from building the dataset to its last row on the driver: it includes each
actor's start (process, bundle load) and Ray's scheduling, which is what a user waits for. Rounds
alternate between the systems; the best round counts (on a shared machine the others measure the
neighbours). Ray rows also give the rate after the first batch reached the driver (actors loaded and
running); it is an upper bound, since batches finished before that count as instant.
After timing, every Ray row is checked against the local Engine's answer (labels, entity spans), and
the agreement is reported per head (labels; entity spans scored 0.5 or more): fp32 agrees exactly;
dynamic int8 quantizes each batch's activations with that batch's range, so a near-tie may flip where
Ray batches differently (as it does when the local engine is called in other chunks).
Needs ``mtst[ray]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def _answers(table: Any, heads: list[str]) -> dict[str, list[Any]]:
    """Per head, per row: the label of a sentence head; the (label, start, end) spans of a token head's
    entities scored 0.5 or more (the README's threshold: lower ones are near-uniform guesses)."""
    out = {}
    for h in heads:
        values = table.column(h).to_pylist()
        if values and isinstance(values[0], list):
            values = [
                tuple((e["label"], e["start"], e["end"]) for e in v if e["score"] >= 0.5) for v in values
            ]
        out[h] = values
    return out


def _agreement(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> dict[str, float]:
    """Per head, the share of rows with equal answers."""
    return {h: sum(x == y for x, y in zip(a[h], b[h], strict=True)) / len(a[h]) for h in a}


def _ray_round(
    corpus: Path, bundle: Path, actors: int, *, rows_per_batch: int, precision: str | None
) -> tuple[float, float, float, Any]:
    """One Ray pass: seconds in all, seconds to the first batch, sentences/s after it, the rows."""
    import pyarrow as pa

    from mtst.runtime.ray import predict_dataset, read_corpus

    t0 = time.perf_counter()
    ds = predict_dataset(
        read_corpus(corpus, rows_per_block=rows_per_batch),
        bundle,
        actors=actors,
        rows_per_batch=rows_per_batch,
        providers="cpu",
        precision=precision,
    )
    batches: list[Any] = []
    first = 0.0
    for b in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if not batches:
            first = time.perf_counter()
        batches.append(b)
    end = time.perf_counter()
    table = pa.concat_tables(batches)
    # after the first batch: actors up and running (what a long corpus sees)
    return end - t0, first - t0, (table.num_rows - batches[0].num_rows) / (end - first), table


def _systems(
    texts: list[str],
    seconds: dict[str, list[float]],
    to_first: dict[str, list[float]],
    steady: dict[str, list[float]],
    ray_tables: dict[str, Any],
    local: dict[str, list[Any]],
) -> dict[str, Any]:
    """Per system: sentences/s (best round), every round; for Ray also the start and the agreement."""
    out: dict[str, Any] = {}
    for name, secs in seconds.items():
        entry: dict[str, Any] = {"sentences_per_s": len(texts) / min(secs), "rounds_s": secs}
        if name in ray_tables:
            entry["first_batch_s"] = to_first[name]
            entry["steady_sentences_per_s"] = max(steady[name])
            table = ray_tables[name]
            if table.column("text").to_pylist() != texts:  # lost, doubled or reordered rows
                raise RuntimeError(f"{name}: the rows are not the corpus in input order")
            entry["agreement_with_local"] = _agreement(_answers(table, list(local)), local)
        out[name] = entry
    return out


def measure(
    bundle: Path,
    texts: list[str],
    *,
    actors: list[int],
    rounds: int,
    rows_per_batch: int = 256,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run the comparison; a JSON-ready dict of sentences/s per system and the Ray-vs-local agreement."""
    import ray

    from mtst.runtime.columns import predictions_table
    from mtst.runtime.engine import Engine

    engine = Engine.load(bundle, providers="cpu", precision=precision)  # mtst-predict's settings
    tuned = Engine.load(  # mtst-bench's settings
        bundle, providers="cpu", precision=precision, intra_op_threads=1, parallel_batches=2
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not Ray Data's INFO lines per run
    heads = list(engine.heads)
    engine.predict(texts[:64])  # warm-up: first-run allocations out of the timing
    tuned.predict(texts[:64])
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, max(actors) + 1),  # +1: the read tasks
            object_store_memory=256 * 2**20,
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            seconds: dict[str, list[float]] = {
                "local Engine": [],
                "local Engine 1x2": [],
                **{f"ray {n} actor(s)": [] for n in actors},
            }
            steady: dict[str, list[float]] = {f"ray {n} actor(s)": [] for n in actors}
            to_first: dict[str, list[float]] = {f"ray {n} actor(s)": [] for n in actors}
            ray_tables: dict[str, Any] = {}
            local_preds = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                local_preds = engine.predict(texts)
                seconds["local Engine"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tuned.predict(texts)
                seconds["local Engine 1x2"].append(time.perf_counter() - t0)
                for n in actors:
                    total_s, first, rate, table = _ray_round(
                        corpus, bundle, n, rows_per_batch=rows_per_batch, precision=precision
                    )
                    seconds[f"ray {n} actor(s)"].append(total_s)
                    to_first[f"ray {n} actor(s)"].append(first)
                    steady[f"ray {n} actor(s)"].append(rate)
                    ray_tables[f"ray {n} actor(s)"] = table
        finally:
            ray.shutdown()
    infos = list(engine.heads.values())
    local = _answers(predictions_table(local_preds, infos), heads)
    # control: the local engine itself, called in Ray's chunks of rows_per_batch texts
    chunked = [
        p for s in range(0, len(texts), rows_per_batch) for p in engine.predict(texts[s : s + rows_per_batch])
    ]
    mine = _answers(predictions_table(chunked, infos), heads)
    result: dict[str, Any] = {
        "bundle": str(bundle),
        "variant": engine.variant.key,
        "sentences": len(texts),
        "rounds": rounds,
        "rows_per_batch": rows_per_batch,
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),  # 1, 5, 15 min: how busy the machine was
        "local_in_chunks_agreement": _agreement(mine, local),
    }
    result["systems"] = _systems(texts, seconds, to_first, steady, ray_tables, local)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="corpus: one sentence a line")
    ap.add_argument("--repeat", type=int, default=1, help="run the corpus this many times over")
    ap.add_argument("--actors", type=int, action="append", help="actor counts (repeat; default 1 and 2)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows-per-batch", type=int, default=256)
    ap.add_argument("--precision", default=None, help="bundle variant (default: the CPU's choice, int8)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="write the JSON here too")
    args = ap.parse_args(argv)
    from mtst.runtime.texts import read_sentences

    texts = read_sentences(args.data) * args.repeat
    result = measure(
        args.bundle,
        texts,
        actors=args.actors or [1, 2],
        rounds=args.rounds,
        rows_per_batch=args.rows_per_batch,
        precision=args.precision,
    )
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(f"{len(texts)} sentences, {result['variant']}, best of {args.rounds} rounds:")
    chunks = ", ".join(f"{h} {v:.4f}" for h, v in result["local_in_chunks_agreement"].items())
    print(f"  (the local Engine in chunks of {args.rows_per_batch} texts agrees with one call: {chunks})")
    for name, e in result["systems"].items():
        agree = (
            f" ({e['steady_sentences_per_s']:.0f}/s after the first batch, which took "
            f"{min(e['first_batch_s']):.1f} s); agreement with local "
            + ", ".join(f"{h} {v:.4f}" for h, v in e["agreement_with_local"].items())
            if "agreement_with_local" in e
            else ""
        )
        print(f"  {name:<16} {e['sentences_per_s']:8.0f} sentences/s{agree}")


if __name__ == "__main__":  # pragma: no cover
    main()
