"""Closed-loop load on the Triton Python-backend model vs the local Engine, on the same sentences.

::

    python -m mtst.bench.triton_load BUNDLE --data corpus-1000.txt --out bench-out/triton

For each setting of the Triton model (dynamic batching on, off) a real ``tritonserver`` (the one
nvidia-pytriton ships, on loopback; see ``mtst.export.triton_server``) serves a repository written by
``export_triton``; N client threads (N = 1, 8, 32), each with its own gRPC connection, send one
sentence a request and send the next one when the answer arrives (closed loop). The local Engine
gets the same loop with N threads calling ``predict([sentence])``. After timing, every answer's label
(of the first sentence head) is compared with the Engine's answer for that sentence alone: with fp32
they must all be equal (exit code 1 otherwise); dynamically quantized int8 computes its activation
scales per batch, so its labels can change with the batch a sentence is served in, and the agreement
is only reported. Writes ``triton_load.json`` and ``triton_load.md``.

The clients run on the same machine as the server: on a small CPU they take cores from it, which the
report states next to the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.runtime import Engine
from mtst.runtime.texts import read_sentences

__all__ = ["closed_loop", "main", "run"]

logger = logging.getLogger(__name__)

MODEL = "mtst"


def closed_loop(
    call: Callable[[int, str], str], sentences: Sequence[str], *, concurrency: int, requests: int
) -> dict[str, Any]:
    """``requests`` calls of ``call(worker, sentence)`` from ``concurrency`` threads, each sending its
    next sentence when its previous answer is back. Returns latency percentiles (ms), throughput
    (requests/s over the wall time of the loop) and the answers by sentence index."""
    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    answers: dict[int, str] = {}
    errors: list[str] = []

    def worker(w: int) -> None:
        while True:
            with lock:
                i = next_index[0]
                if i >= requests:
                    return
                next_index[0] += 1
            text = sentences[i % len(sentences)]
            t0 = time.perf_counter_ns()
            try:
                label = call(w, text)
            except Exception as exc:  # recorded and reported: a benchmark must not hide failures
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = (time.perf_counter_ns() - t0) / 1e6
            with lock:
                latencies.append(dt)
                answers[i % len(sentences)] = label

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors[:5],
        "n_errors": len(errors),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "mean_ms": float(lat.mean()) if lat.size else float("nan"),
        "answers": answers,
    }


def _grpc_caller(url: str, head: str, concurrency: int) -> Callable[[int, str], str]:
    import tritonclient.grpc as grpc

    clients = [grpc.InferenceServerClient(url) for _ in range(concurrency)]
    wanted = [grpc.InferRequestedOutput(f"{head}_label")]

    def call(worker: int, text: str) -> str:
        inp = grpc.InferInput("text", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=object))
        result = clients[worker].infer(MODEL, [inp], outputs=wanted)
        return str(result.as_numpy(f"{head}_label")[0, 0].decode("utf-8"))

    return call


def _engine_caller(engine: Engine, head: str) -> Callable[[int, str], str]:
    def call(worker: int, text: str) -> str:
        result = engine.predict([text], heads=[head])[0].heads[head]
        return str(getattr(result, "label", ""))

    return call


def _check(cell: dict[str, Any], reference: dict[str, str], sentences: Sequence[str]) -> dict[str, Any]:
    answers = cell.pop("answers")
    wrong = [i for i, label in answers.items() if label != reference[sentences[i]]]
    cell["labels_checked"] = len(answers)
    cell["labels_differing"] = len(wrong)
    return cell


def run(
    bundle: Path,
    sentences: Sequence[str],
    *,
    concurrency: Sequence[int] = (1, 8, 32),
    requests: int = 600,
    warmup: int = 30,
    queue_delay_us: int = 1000,
    precision: str | None = None,
) -> dict[str, Any]:
    """The whole measurement (see the module docstring); a JSON-ready dict."""
    from mtst.export.triton import TritonOptions, export_triton
    from mtst.export.triton_server import LocalTritonServer

    engine = Engine.load(bundle, providers="cpu", precision=precision)
    head = next(n for n, h in engine.heads.items() if h.kind.value == "sentence_classification")
    local = _engine_caller(engine, head)
    reference = {s: local(0, s) for s in dict.fromkeys(sentences)}  # one sentence at a time, as sent
    results: dict[str, Any] = {"local engine": []}
    for c in concurrency:
        closed_loop(local, sentences, concurrency=c, requests=warmup)
        results["local engine"].append(
            _check(closed_loop(local, sentences, concurrency=c, requests=requests), reference, sentences)
        )
        logger.info("local engine, %d concurrent: %s", c, results["local engine"][-1])
    with tempfile.TemporaryDirectory(prefix="mtst-triton-load-") as work:
        for batching in (True, False):
            key = f"triton, dynamic batching {'on' if batching else 'off'}"
            repo = Path(work) / ("on" if batching else "off")
            export_triton(
                bundle,
                repo,
                options=TritonOptions(
                    name=MODEL,
                    dynamic_batching=batching,
                    queue_delay_us=queue_delay_us,
                    text_parameters={"precision": engine.variant.precision.value},
                ),
            )
            results[key] = []
            with LocalTritonServer(repo, models=[MODEL]) as server:
                server.wait_ready(timeout_s=180)
                call = _grpc_caller(server.grpc_url, head, max(concurrency))
                for c in concurrency:
                    closed_loop(call, sentences, concurrency=c, requests=warmup)
                    cell = closed_loop(call, sentences, concurrency=c, requests=requests)
                    results[key].append(_check(cell, reference, sentences))
                    logger.info("%s, %d concurrent: %s", key, c, results[key][-1])
    return {
        "bundle": str(bundle),
        "variant": engine.variant.key,
        "sentences": len(sentences),
        "requests_per_cell": requests,
        "warmup_per_cell": warmup,
        "queue_delay_us": queue_delay_us,
        "head_checked": head,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "client": "gRPC (tritonclient), one connection per client thread, same machine as the server",
        "results": results,
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Closed loop, one sentence a request, {doc['requests_per_cell']} requests a cell after "
        f"{doc['warmup_per_cell']} warm-up requests; bundle variant {doc['variant']}, "
        f"{doc['machine']['cpus']} CPUs; {doc['client']}. Labels: the {doc['head_checked']} head's, "
        f"compared with the Engine's answer for each sentence alone.",
        "",
        "| system | concurrent | throughput (req/s) | p50 (ms) | p99 (ms) | labels equal to the Engine |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, cells in doc["results"].items():
        for c in cells:
            same = c["labels_checked"] - c["labels_differing"]
            lines.append(
                f"| {system} | {c['concurrency']} | {c['throughput_rps']:.1f} | {c['p50_ms']:.1f} | "
                f"{c['p99_ms']:.1f} | {same}/{c['labels_checked']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtst.bench.triton_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="Sentences, one a line.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for triton_load.json / .md.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--queue-delay-us", type=int, default=1000)
    parser.add_argument("--precision", help="Bundle variant to run (default: the Engine's choice for CPU).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    doc = run(
        args.bundle,
        read_sentences(args.data),
        concurrency=args.concurrency,
        requests=args.requests,
        warmup=args.warmup,
        queue_delay_us=args.queue_delay_us,
        precision=args.precision,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triton_load.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (args.out / "triton_load.md").write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    cells = [c for cs in doc["results"].values() for c in cs]
    errors = sum(c["n_errors"] for c in cells)
    differing = sum(c["labels_differing"] for c in cells) if doc["variant"].startswith("fp32") else 0
    return 1 if errors or differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
