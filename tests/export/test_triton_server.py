"""A real Triton server (nvidia-pytriton's tritonserver 2.51, Python backend, CPU, loopback) serving the
repository of a real MiniLM bundle: the corpus concurrently over HTTP and gRPC equals the local Engine,
the ensemble path (tokenizer step from the server, ONNX graph on onnxruntime) equals it too, and a
tampered repository never becomes ready. The server environment comes from $MTST_TRITON_ENV (.ci/run)."""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonkit import assert_ensemble_matches, assert_served_equal, need, run_ensemble

from mtst.errors import ConfigError
from mtst.export.triton import TritonOptions, export_triton
from mtst.export.triton_server import LocalTritonServer, ServerEnvironment
from mtst.runtime import Engine
from mtst.runtime.texts import read_sentences

pytestmark = pytest.mark.slow

NAME = "mtst"
CHUNKS = (1, 3, 8, 2, 5, 1, 16, 4, 7)  # texts per request, in turn
IN_FLIGHT = 8


@pytest.fixture(scope="session")  # session scope: set up (or skipped) before the slow session fixtures
def server_env() -> ServerEnvironment:
    try:
        return ServerEnvironment.find()
    except ConfigError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Triton server test: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def repo(
    trained_minilm_checkpoint: Path, bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from mtst.export import export_bundle

    work = tmp_path_factory.mktemp("triton-minilm")
    export_bundle(trained_minilm_checkpoint, work / "bundle", parity_data=bench_corpus, accuracy_guard=False)
    export_triton(work / "bundle", work / "repo", options=TritonOptions(name=NAME, max_batch_size=32))
    return work / "repo"


@pytest.fixture(scope="module")
def corpus(bench_corpus: Path) -> list[str]:
    texts = read_sentences(bench_corpus)
    assert len(texts) >= 500
    return texts


def _spans(n: int) -> list[tuple[int, int]]:
    out, start, k = [], 0, 0
    while start < n:
        end = min(n, start + CHUNKS[k % len(CHUNKS)])
        out.append((start, end))
        start, k = end, k + 1
    return out


def _column(texts: list[str]) -> np.ndarray:
    return np.array([[t.encode("utf-8")] for t in texts], dtype=object)


def _outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    return {n: result.as_numpy(n) for n in names}


def _http_round(url: str, texts: list[str], spans: list[tuple[int, int]], names: list[str]) -> list[Any]:
    http = need("tritonclient.http")
    client = http.InferenceServerClient(url, concurrency=IN_FLIGHT)
    try:
        pending = []
        for a, b in spans:
            inp = http.InferInput("text", [b - a, 1], "BYTES")
            inp.set_data_from_numpy(_column(texts[a:b]))
            pending.append(client.async_infer(NAME, [inp]))
        return [_outputs(p.get_result(), names) for p in pending]
    finally:
        client.close()


def _grpc_round(url: str, texts: list[str], spans: list[tuple[int, int]], names: list[str]) -> list[Any]:
    grpc = need("tritonclient.grpc")
    client = grpc.InferenceServerClient(url)
    slots = threading.Semaphore(IN_FLIGHT)
    done = threading.Event()
    results: list[Any] = [None] * len(spans)
    left = [len(spans)]
    lock = threading.Lock()

    def finish(i: int, result: Any, error: Any) -> None:
        results[i] = error if error is not None else _outputs(result, names)
        slots.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    try:
        for i, (a, b) in enumerate(spans):
            slots.acquire()
            inp = grpc.InferInput("text", [b - a, 1], "BYTES")
            inp.set_data_from_numpy(_column(texts[a:b]))
            client.async_infer(NAME, [inp], functools.partial(finish, i))
        assert done.wait(300), "gRPC answers did not all arrive within 300 s"
    finally:
        client.close()
    errors = [r for r in results if not isinstance(r, dict)]
    assert not errors, errors[:3]
    return results


def test_served_answers_equal_the_local_engine(
    server_env: ServerEnvironment, repo: Path, corpus: list[str], tmp_path: Path
) -> None:
    engine = Engine.load(repo / NAME / "1" / "bundle", providers="cpu")
    local = engine.predict(corpus, return_embedding=True)
    spans = _spans(len(corpus))
    names = ["embedding", "truncated", "intent_label", "intent_score", "intent_scores", "ner_entities"]
    server = LocalTritonServer(
        repo, models=[NAME, f"{NAME}_tokenizer"], environment=server_env, log_dir=tmp_path
    )
    with server:
        server.wait_ready(timeout_s=180)
        assert server.process is not None
        group = server.process.pid
        for answers in (
            _http_round(server.http_url, corpus, spans, names),
            _grpc_round(server.grpc_url, corpus, spans, names),
        ):
            assert len(answers) == len(spans)
            for (a, b), served in zip(spans, answers, strict=True):
                assert_served_equal(local[a:b], served)

        http = need("tritonclient.http")
        client = http.InferenceServerClient(server.http_url)
        # requests were joined by the dynamic batcher: fewer executions than requests
        stats = client.get_inference_statistics(NAME)["model_stats"][0]
        assert stats["inference_count"] == 2 * len(corpus)
        assert stats["execution_count"] < 2 * len(spans), stats["execution_count"]

        # only the outputs asked for; a bad request gets an error and the server goes on
        inp = http.InferInput("text", [2, 1], "BYTES")
        inp.set_data_from_numpy(_column(corpus[:2]))
        result = client.infer(NAME, [inp], outputs=[http.InferRequestedOutput("intent_label")])
        assert [o["name"] for o in result.get_response()["outputs"]] == ["intent_label"]
        bad = http.InferInput("text", [1, 1], "BYTES")
        bad.set_data_from_numpy(np.array([[b"\xff broken"]], dtype=object))
        with pytest.raises(Exception, match=r"text\[0\]: not valid UTF-8"):
            client.infer(NAME, [bad])
        assert client.is_model_ready(NAME)

        # the ensemble path: the server's tokenizer step, then <name>_onnx's graph on onnxruntime
        texts = corpus[:64]

        def served_tokenizer(batch: list[str]) -> dict[str, np.ndarray]:
            inp = http.InferInput("text", [len(batch), 1], "BYTES")
            inp.set_data_from_numpy(_column(batch))
            r = client.infer(f"{NAME}_tokenizer", [inp])
            return {o["name"]: r.as_numpy(o["name"]) for o in r.get_response()["outputs"]}

        for start in range(0, len(texts), 32):  # requests of at most max_batch_size texts
            part = texts[start : start + 32]
            assert_ensemble_matches(engine, part, run_ensemble(repo, NAME, part, served_tokenizer))
        client.close()
    assert server.process is None
    with pytest.raises(ProcessLookupError):  # the server and its stub processes are gone
        os.killpg(group, 0)


def test_tampered_repository_never_becomes_ready(
    server_env: ServerEnvironment, repo: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "repo"
    shutil.copytree(repo / NAME, bad / NAME)
    graph = bad / NAME / "1" / "bundle" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the sha256 can tell
    graph.write_bytes(bytes(data))
    server = LocalTritonServer(bad, models=[NAME], environment=server_env, log_dir=tmp_path / "log")
    seen_ready = False
    with server:
        assert server.process is not None
        deadline = time.monotonic() + 120
        while server.process.poll() is None and time.monotonic() < deadline:
            seen_ready = seen_ready or server.is_ready() or server.is_ready(NAME)
            time.sleep(0.2)
        code = server.process.poll()
        log = server.log(tail=100_000)
    assert not seen_ready
    assert code not in (None, 0), log[-3000:]
    assert "model.onnx: sha256 mismatch" in log
    assert server.process is None
