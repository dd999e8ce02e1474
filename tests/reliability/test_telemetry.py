"""The runtime does not phone home: ONNX Runtime telemetry off, and no network call while serving.

Two independent checks: an audit hook on Python's socket events (``socket.__new__``,
``socket.getaddrinfo``, ``socket.connect``...) around load and serving in this process, and, where
``strace`` exists and may trace, a child process that loads a bundle and serves requests for a few
seconds under ``strace -f -e trace=network``: not one socket of the internet families may be opened
(the telemetry that was seen did DNS lookups every few seconds while serving).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from mtst.runtime.engine import Engine

_events: list[str] | None = None
_lock = threading.Lock()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _events is not None and event.startswith("socket."):
        with _lock:
            _events.append(f"{event} {args!r:.120}")


_installed = False


def test_runtime_switches_ort_telemetry_off() -> None:
    import mtst.runtime.providers as providers

    assert hasattr(ort, "disable_telemetry_events"), "onnxruntime offers no switch: check .ci/constraints.txt"
    source = Path(providers.__file__).read_text()
    assert "disable_telemetry_events" in source  # called at import of the runtime (every entry point)


def test_no_python_level_network_call_while_loading_and_serving(rel_bundle: Path) -> None:
    global _events, _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    _events = []
    try:
        engine = Engine.load(rel_bundle, providers=["cpu"])
        for _ in range(50):
            engine.predict(["Book a table in Paris.", "thanks"])
            engine.embed(["hello"])
    finally:
        seen, _events = _events, None
    assert seen == []


_SERVE = textwrap.dedent(
    """
    import sys, time
    from mtst.runtime.engine import Engine
    engine = Engine.load(sys.argv[1], providers=["cpu"])
    end = time.monotonic() + float(sys.argv[2])
    n = 0
    while time.monotonic() < end:
        engine.predict(["Book a table in Paris for two.", "thanks"])
        n += 1
    print("served", n)
    """
)


def test_no_network_syscall_while_serving_under_strace(rel_bundle: Path, tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace) -- the audit-hook test still ran")
    probe = subprocess.run([strace, "-f", "-o", os.devnull, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here ({probe.stderr.decode().strip()[:200]})")
    log = tmp_path / "strace.log"
    seconds = os.environ.get("MTST_TELEMETRY_SECONDS", "6")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    res = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=network",
            "-o",
            str(log),
            sys.executable,
            "-c",
            _SERVE,
            str(rel_bundle),
            seconds,
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert re.search(rb"served [1-9]", res.stdout)
    calls = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r"AF_INET6?\b|connect\(|sendto\(|getaddrinfo", line)
    ]
    assert calls == [], "\n".join(calls[:20])


_WRITE_NOTHING = textwrap.dedent(
    """
    import sys
    from mtst.runtime.engine import Engine
    engine = Engine.load(sys.argv[1], providers=["cpu"])
    engine.predict(["Book a table in Paris for two.", "thanks"])
    print("served")
    """
)


def test_no_device_id_or_event_store_is_written(rel_bundle: Path, tmp_path: Path) -> None:
    """ONNX Runtime keeps a device id and an offline event store under the user's cache unless it is
    told at start-up: importing the runtime, loading and serving leaves that cache empty."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    res = subprocess.run(
        [sys.executable, "-c", _WRITE_NOTHING, str(rel_bundle)], capture_output=True, env=env, timeout=300
    )
    assert res.returncode == 0 and b"served" in res.stdout, res.stderr.decode()[-2000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert written == []
