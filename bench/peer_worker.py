"""A peer in a process of its own: another interpreter (a peer that cannot share mtst's environment) or
other environment variables (a CPU instruction set forced before the library loads).

The parent starts ``python -m mtst.bench.peer_worker`` and speaks JSON lines with it. The child opens
the peer's backend (``"module:function"``, called with the peer's parameters; it returns an object with
``embed(texts)`` and ``facts``), then answers ``run_one`` / ``run_corpus`` / ``run_batches`` with the
nanoseconds it measured itself -- the pipe is not counted: :func:`~mtst.bench.timing.interleaved` takes
the child's :class:`~mtst.bench.timing.Measured` -- and ``embed`` with the embeddings. ``call`` runs one
function there and returns its JSON result (a peer's export, in the interpreter that has its library).

The child writes its answers to a private copy of its stdout; the libraries' own prints go to stderr,
which the parent keeps in a file and quotes when the child fails.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["PeerProcess", "call_in", "main"]

_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _array_out(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def _array_in(d: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.float32).reshape(d["shape"]).copy()


# ---------------------------------------------------------------------------------------------- parent
class PeerProcess:
    """One child process serving one backend; ``close()`` (or garbage collection) ends it."""

    def __init__(
        self,
        name: str,
        *,
        python: str,
        opener: str,
        params: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        timeout_s: float = 1800.0,
    ) -> None:
        from mtst.errors import MtstError

        self.name = name
        self.python = python
        self._error = MtstError
        self._log = tempfile.NamedTemporaryFile(prefix="mtst-peer-", suffix=".log", delete=False)  # noqa: SIM115
        self._timeout_s = timeout_s
        self._proc = subprocess.Popen(
            [python, "-m", "mtst.bench.peer_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **_OFFLINE, **(env or {})},
        )
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._log.name)
        self.facts: dict[str, Any] = {}
        if opener:
            self.facts = self._ask({"op": "open", "opener": opener, "params": dict(params)})["facts"]

    def _ask(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(msg) + "\n").encode("utf-8"))
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = b""
        if not line:
            proc.wait(timeout=30)
            raise self._error(
                f"peer {self.name}: its process ({self.python}) ended (exit {proc.returncode}):\n{self._tail()}"
            )
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise self._error(f"peer {self.name}: {reply['error']}")
        return reply

    def _tail(self, lines: int = 8) -> str:
        text = Path(self._log.name).read_text(encoding="utf-8", errors="replace").strip()
        return "\n".join(text.splitlines()[-lines:])

    def run_one(self, text: str) -> Any:
        from .timing import Measured

        return Measured(self._ask({"op": "run_one", "text": text})["ns"])

    def run_corpus(self, texts: Sequence[str]) -> Any:
        from .timing import Measured

        return Measured(self._ask({"op": "run_corpus", "texts": list(texts)})["ns"])

    def run_batches(self, batches: Sequence[Sequence[str]]) -> Any:
        from .timing import Measured

        return Measured(self._ask({"op": "run_batches", "batches": [list(b) for b in batches]})["ns"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _array_in(self._ask({"op": "embed", "texts": list(texts)}))

    def call(self, target: str, params: Mapping[str, Any]) -> Any:
        return self._ask({"op": "call", "fn": target, "params": dict(params)})["result"]

    def close(self) -> None:
        self._finalizer()


def _stop(proc: subprocess.Popen[bytes], log: str) -> None:
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    Path(log).unlink(missing_ok=True)


def call_in(python: str, target: str, params: Mapping[str, Any], *, name: str) -> Any:
    """Run ``target(**params)`` once in a fresh process of ``python``; its JSON result."""
    proc = PeerProcess(name, python=python, opener="", params={})
    try:
        return proc.call(target, params)
    finally:
        proc.close()


# ---------------------------------------------------------------------------------------------- child
class _Served:
    def __init__(self, backend: Any, batch_size: int) -> None:
        self.backend = backend
        self.batch_size = batch_size

    def run_one(self, text: str) -> Any:
        return self.backend.embed([text])

    def run_corpus(self, texts: Sequence[str]) -> None:
        for i in range(0, len(texts), self.batch_size):
            self.backend.embed(texts[i : i + self.batch_size])

    def run_batches(self, batches: Sequence[Sequence[str]]) -> None:
        for b in batches:
            self.backend.embed(b)


def _timed(fn: Any, *args: Any) -> dict[str, int]:
    t0 = time.perf_counter_ns()
    fn(*args)
    return {"ns": time.perf_counter_ns() - t0}


def _answer(served: _Served | None, msg: Mapping[str, Any]) -> tuple[_Served | None, dict[str, Any]]:
    op = msg["op"]
    if op == "open":
        params = dict(msg["params"])
        backend = _resolve(msg["opener"])(**params)
        return _Served(backend, int(params.get("batch_size", 32))), {"facts": dict(backend.facts)}
    if op == "call":
        return served, {"result": _resolve(msg["fn"])(**msg["params"])}
    if served is None:
        raise RuntimeError(f"{op}: no backend opened")
    if op == "run_one":
        return served, _timed(served.run_one, msg["text"])
    if op == "run_corpus":
        return served, _timed(served.run_corpus, msg["texts"])
    if op == "run_batches":
        return served, _timed(served.run_batches, msg["batches"])
    if op == "embed":
        return served, _array_out(served.backend.embed(msg["texts"]))
    raise ValueError(f"unknown op {op!r}")


def main(stdin: IO[str] | None = None) -> None:
    """The child's loop: one JSON request a line in, one JSON answer a line out."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")  # answers only
    os.dup2(2, 1)  # whatever the libraries print goes to stderr
    sys.stdout = sys.stderr
    served: _Served | None = None
    for line in stdin or sys.stdin:
        if not line.strip():
            continue
        try:
            served, reply = _answer(served, json.loads(line))
        except Exception as exc:  # reported to the parent, which raises it with the peer's name
            first = str(exc).splitlines()[0] if str(exc) else ""
            reply = {"error": f"{type(exc).__name__}: {first}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
