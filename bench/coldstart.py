"""Cold start: a fresh Python process imports, loads (and, for mtst, verifies) and answers one sentence.

Each run is a new interpreter (``sys.executable``). The parent notes the wall-clock time just before
spawning; the child notes the time after its imports, after loading and after the first answer, and
its own peak RSS, native libraries included: ``VmHWM`` from ``/proc/self/status`` on Linux (not
``ru_maxrss``, which Linux carries over ``exec`` from the forking parent: a child of a big benchmark
process would report the parent's size), ``resource.getrusage`` elsewhere. Times are wall clock
(``time.time``), comparable across the two processes.

The file cache is warm after the first run of a system (one warm-up run per system is not recorded),
so these are *process-cold, disk-warm* figures: what an edge app pays on every restart. Compiled
bytecode is warm too, as for any installed package (pip writes it at install time): the children
write and read it under one temporary ``PYTHONPYCACHEPREFIX`` even where ``PYTHONDONTWRITEBYTECODE``
is set (this machine sets it), or an editable checkout would compile every module of its own on
every start (about 50 ms for mtst.runtime here) while peers installed from wheels would not.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import MtstError

__all__ = ["ColdStart", "ColdStartSpec", "cpp_spec", "find_cpp_app", "mtst_spec", "run_cold_starts"]

logger = logging.getLogger(__name__)

# One child script for every system: the parts differ only in what is imported, loaded and asked.
_CHILD = r"""
import json, sys, time
t_start = time.time()
args = json.loads(sys.argv[1])
ns = {"args": args}
exec(args["imports"], ns)
t_import = time.time()
exec(args["load"], ns)
t_load = time.time()
exec(args["first"], ns)
t_first = time.time()
peak_kb = None
try:  # VmHWM: this process's own high-water mark (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as f:
        peak_kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    import resource
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
print("MTST_BENCH_COLD " + json.dumps({
    "t_start": t_start, "t_import": t_import, "t_load": t_load, "t_first": t_first,
    "peak_rss_kb": peak_kb, "torch_loaded": "torch" in sys.modules, "extra": ns.get("extra", {}),
}), flush=True)
"""


@dataclass(frozen=True, slots=True)
class ColdStartSpec:
    """What one system's child process runs (Python source, executed in order; ``args`` holds ``params``),
    or a native program (``command``) that reports its own phases (:func:`cpp_spec`).

    mtst's is :func:`mtst_spec`; each peer writes its own (:meth:`mtst.bench.peers.PeerKind.cold_start`).
    """

    name: str
    imports: str
    load: str
    first: str
    params: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)  # set for the child (e.g. a forced CPU ISA)
    python: str | None = None  # the child's interpreter (a peer in another environment); None: this one
    command: tuple[str, ...] = ()  # a native program instead of Python (the fields above then unused)


def mtst_spec(
    name: str,
    bundle: Path,
    sentence: str,
    *,
    precision: str | None,
    provider: str,
    threads: dict[str, int],
    spinning: bool,
) -> ColdStartSpec:
    """``threads``: the engine's thread options (see :func:`mtst.bench.engines.engine_threads`)."""
    return ColdStartSpec(
        name=name,
        imports="from mtst.runtime import Engine",
        load=(
            "engine = Engine.load(args['bundle'], providers=[args['provider']], spinning=args['spinning'], "
            "precision=args['precision'], **args['threads'])\n"
            "extra = {'active_providers': list(engine.active_providers)}"
        ),
        first="engine.predict([args['sentence']])",
        params={
            "bundle": str(bundle),
            "sentence": sentence,
            "precision": precision,
            "provider": provider,
            "threads": threads,
            "spinning": spinning,
        },
    )


def cpp_spec(name: str, app: Path, bundle: Path, sentence: str, *, precision: str | None) -> ColdStartSpec:
    """The C++ runtime's command-line app answering ``sentence``: one intra-op thread (as the Python
    engine's CPU setting), ``-v`` for its own report of peak RSS and phase times (wall clock)."""
    cmd = [str(app), str(bundle), sentence, "--provider", "cpu", "--threads", "1", "-v"]
    if precision:
        cmd += ["--precision", precision]
    return ColdStartSpec(name=name, imports="", load="", first="", params={}, command=tuple(cmd))


def find_cpp_app(build: Path) -> Path:
    """``mtst-cpp-predict`` in the CMake build folder (or install prefix) ``build``."""
    for rel in ("runtime/cpp/mtst-cpp-predict", "mtst-cpp-predict", "bin/mtst-cpp-predict"):
        if (build / rel).is_file():
            return build / rel
    raise MtstError(f"--cpp-build {build}: no mtst-cpp-predict in it (build the C++ runtime: README, C++)")


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Medians over ``runs`` fresh processes (seconds; MB)."""

    name: str
    runs: int
    total_s: float  # spawn -> first answer
    interpreter_s: float  # spawn -> first line of the script (Python start-up, site-packages)
    import_s: float
    load_s: float  # load (mtst: verify every sha256 + create the session)
    first_answer_s: float
    peak_rss_mb: float
    torch_loaded: bool
    totals_s: tuple[float, ...]  # every run, for spread
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.runs,
            "total_s": self.total_s,
            "interpreter_s": self.interpreter_s,
            "import_s": self.import_s,
            "load_s": self.load_s,
            "first_answer_s": self.first_answer_s,
            "peak_rss_mb": self.peak_rss_mb,
            "torch_loaded": self.torch_loaded,
            "totals_s": list(self.totals_s),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColdStart:
        return cls(**{**d, "totals_s": tuple(d["totals_s"]), "extra": d.get("extra", {})})


def _child_env(extra: dict[str, str], pycache: str | None = None) -> dict[str, str]:
    env = dict(os.environ) | extra
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.setdefault("PYTHONWARNINGS", "ignore")
    if pycache is not None:  # bytecode as an installed package has it (module docstring)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def run_child(spec: ColdStartSpec, *, timeout_s: float = 300.0, pycache: str | None = None) -> dict[str, Any]:
    """One fresh process; returns its phase times (absolute) and peak RSS, plus ``t_spawn``.

    ``pycache``: the folder the child keeps compiled bytecode in (None: as the environment says)."""
    if spec.command:
        return _run_native(spec, timeout_s)
    args = {"imports": spec.imports, "load": spec.load, "first": spec.first, **spec.params}
    t_spawn = time.time()
    proc = subprocess.run(
        [spec.python or sys.executable, "-c", _CHILD, json.dumps(args)],
        capture_output=True,
        text=True,
        env=_child_env(spec.env, pycache),
        timeout=timeout_s,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("MTST_BENCH_COLD ")), None)
    if proc.returncode != 0 or line is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise MtstError(
            f"cold start of {spec.name}: the child process failed (exit {proc.returncode}):\n{tail}"
        )
    out: dict[str, Any] = json.loads(line.removeprefix("MTST_BENCH_COLD "))
    out["t_spawn"] = t_spawn
    return out


def _run_native(spec: ColdStartSpec, timeout_s: float) -> dict[str, Any]:
    """A native program's run: its ``-v`` report (``peak RSS N kB``; ``times: started T loaded T
    answered T``, wall clock) read from its stderr."""
    t_spawn = time.time()
    proc = subprocess.run(
        list(spec.command),
        capture_output=True,
        text=True,
        env=_child_env(spec.env),
        timeout=timeout_s,
        check=False,
    )
    lines = proc.stderr.splitlines()
    peak = next((x.split()[2] for x in lines if x.startswith("peak RSS ")), None)
    times = next((x.split() for x in lines if x.startswith("times: ")), None)
    if proc.returncode != 0 or peak is None or times is None or len(times) != 7:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise MtstError(
            f"cold start of {spec.name}: {spec.command[0]} failed or did not report its times "
            f"(exit {proc.returncode}):\n{tail}"
        )
    started, loaded, answered = float(times[2]), float(times[4]), float(times[6])
    return {
        "t_spawn": t_spawn,
        "t_start": started,
        "t_import": started,
        "t_load": loaded,
        "t_first": answered,
        "peak_rss_kb": int(peak),
        "torch_loaded": False,
        "extra": {"program": Path(spec.command[0]).name},
    }


def run_cold_starts(
    specs: Sequence[ColdStartSpec],
    *,
    runs: int = 3,
    warmup: int = 1,
    on_run: Callable[[], None] | None = None,
) -> dict[str, ColdStart]:
    """Interleaved: run k of every system before run k+1 of any. Failed systems raise MtstError."""
    if runs < 1:
        raise ValueError(f"cold start runs {runs!r}: expected >= 1")
    samples: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    with tempfile.TemporaryDirectory(prefix="mtst-coldstart-pycache-") as pycache:
        for k in range(warmup + runs):
            for spec in specs:
                sample = run_child(spec, pycache=pycache)
                if k >= warmup:
                    samples[spec.name].append(sample)
                if on_run is not None:
                    on_run()
    out: dict[str, ColdStart] = {}
    for name, rows in samples.items():

        def med(key_a: str, key_b: str, rows: list[dict[str, Any]] = rows) -> float:
            return float(np.median([r[key_b] - r[key_a] for r in rows]))

        totals = tuple(r["t_first"] - r["t_spawn"] for r in rows)
        out[name] = ColdStart(
            name=name,
            runs=len(rows),
            total_s=float(np.median(totals)),
            interpreter_s=med("t_spawn", "t_start"),
            import_s=med("t_start", "t_import"),
            load_s=med("t_import", "t_load"),
            first_answer_s=med("t_load", "t_first"),
            peak_rss_mb=float(np.median([r["peak_rss_kb"] / 1024 for r in rows])),
            torch_loaded=any(r["torch_loaded"] for r in rows),
            totals_s=totals,
            extra=rows[-1].get("extra", {}),
        )
    return out
