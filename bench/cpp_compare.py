"""The C++ runtime against the Python runtime on one bundle, measured in one run.

``python -m mtst.bench.cpp_compare BUNDLE [--cpp-build build] [--out report.json]``

- batch-1 latency (p50/p99): one sentence a call, both engines in this process (the C++ one through
  libmtst_runtime's C API with ctypes), interleaved sentence by sentence with the order rotated, so that
  the machine's drifts hit both alike; the C++ call includes writing its JSON answer;
- corpus throughput: the whole corpus in one call, interleaved pass by pass;
- peak RSS and load time of a process that loads the bundle and answers the corpus: ``mtst-cpp-predict``
  vs a Python process running ``mtst.runtime.Engine`` (VmHWM, each process its own);
- sizes on disk: the C++ deployable (libmtst_runtime, mtst-cpp-predict, libonnxruntime) vs the Python
  packages the runtime imports.

Both engines run the variant picked for CPU (int8 when the bundle has it), one intra-op thread and one
batch per core (mtst-bench's CPU setting). After timing, the answers are checked to agree (labels).
The shared machine makes absolute figures unreliable: read the ratios.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from mtst.bench.timing import interleaved, summarize
from mtst.runtime.texts import read_sentences

__all__ = ["CEngine", "compare", "main"]

_REPO = Path(__file__).resolve().parents[1]


class CEngine:
    """libmtst_runtime's C API (mtst.h) through ctypes."""

    def __init__(self, library: Path, bundle: Path, options: dict[str, Any]) -> None:
        lib = ctypes.CDLL(str(library))
        lib.mtst_engine_load.restype = ctypes.c_void_p
        lib.mtst_engine_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.mtst_predict_json.restype = ctypes.c_int
        lib.mtst_predict_json.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        lib.mtst_engine_info_json.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        lib.mtst_engine_free.argtypes = [ctypes.c_void_p]
        lib.mtst_free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        err = ctypes.c_void_p()
        self._engine = lib.mtst_engine_load(
            str(bundle).encode(), json.dumps(options).encode(), ctypes.byref(err)
        )
        if not self._engine:
            raise RuntimeError(self._take(err))

    def _take(self, p: ctypes.c_void_p) -> str:
        text = ctypes.string_at(p.value).decode("utf-8") if p.value else ""
        self._lib.mtst_free(p)
        return text

    def predict_json(self, texts: list[str]) -> str:
        data = [t.encode("utf-8") for t in texts]
        arr = (ctypes.c_char_p * len(data))(*data)
        lengths = (ctypes.c_size_t * len(data))(*(len(d) for d in data))
        out, err = ctypes.c_void_p(), ctypes.c_void_p()
        if self._lib.mtst_predict_json(
            self._engine, arr, lengths, len(data), None, ctypes.byref(out), ctypes.byref(err)
        ):
            raise RuntimeError(self._take(err))
        return self._take(out)

    def info(self) -> dict[str, Any]:
        out, err = ctypes.c_void_p(), ctypes.c_void_p()
        if self._lib.mtst_engine_info_json(self._engine, ctypes.byref(out), ctypes.byref(err)):
            raise RuntimeError(self._take(err))
        return dict(json.loads(self._take(out)))

    def close(self) -> None:
        self._lib.mtst_engine_free(self._engine)


# a Python process that loads the bundle and answers the corpus, reporting its own peak RSS
_PY_CHILD = r"""
import json, sys, time
t0 = time.time()
from mtst.runtime.engine import Engine
from mtst.runtime.texts import read_sentences
args = json.loads(sys.argv[1])
engine = Engine.load(args["bundle"], providers="cpu", **args["options"])
t_load = time.time() - t0
engine.predict(read_sentences(args["corpus"]))
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
print(json.dumps({"peak_rss_kb": peak, "load_s": t_load, "total_s": time.time() - t0}))
"""


def _python_process(bundle: Path, corpus: Path, options: dict[str, Any]) -> dict[str, Any]:
    args = json.dumps({"bundle": str(bundle), "corpus": str(corpus), "options": options})
    res = subprocess.run([sys.executable, "-c", _PY_CHILD, args], capture_output=True, text=True, check=True)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _cpp_process(app: Path, bundle: Path, corpus: Path, threads: int, batches: int) -> dict[str, Any]:
    t0 = time.time()
    cmd = [str(app), str(bundle), "--file", str(corpus), "--provider", "cpu", "--threads", str(threads)]
    res = subprocess.run(
        [*cmd, "--parallel-batches", str(batches), "-v"], capture_output=True, text=True, check=True
    )
    total = time.time() - t0
    peak = next(int(line.split()[2]) for line in res.stderr.splitlines() if line.startswith("peak RSS"))
    return {"peak_rss_kb": peak, "total_s": total}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _python_sizes() -> dict[str, int]:
    import numpy
    import onnxruntime
    import tokenizers

    out = {m.__name__: _size(Path(str(m.__file__)).parent) for m in (onnxruntime, tokenizers, numpy)}
    libs = Path(str(numpy.__file__)).parent.parent / "numpy.libs"
    if libs.is_dir():
        out["numpy.libs"] = _size(libs)
    out["mtst.runtime"] = _size(_REPO / "runtime") - _size(_REPO / "runtime" / "cpp")
    return out


def _timings(
    py: Any,
    cpp: CEngine,
    texts: list[str],
    sample: list[str],
    *,
    rounds: int,
    corpus_rounds: int,
    warmup: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Batch-1 latency statistics and corpus passes per second, both engines interleaved."""
    one = interleaved(
        {"python": lambda t: py.predict([t]), "cpp": lambda t: cpp.predict_json([t])},
        sample,
        rounds=rounds,
        warmup=warmup,
    )
    whole = interleaved(
        {"python": lambda ts: py.predict(ts), "cpp": lambda ts: cpp.predict_json(ts)},
        [texts] * corpus_rounds,
        warmup=1,
    )
    lat = {k: dict(summarize(v).to_dict()) for k, v in one.items()}
    return lat, {k: [len(texts) / (ns / 1e9) for ns in v] for k, v in whole.items()}


def _agreement(py: Any, cpp: CEngine, texts: list[str]) -> str:
    """How many texts get the same labels and entity spans from both engines (checked after timing)."""

    def answers(heads: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v.get("label", [(e["label"], e["start"], e["end"]) for e in v.get("entities", [])])
            for k, v in heads.items()
        }

    want = [p.to_dict(embedding=False) for p in py.predict(texts)]
    got = json.loads(cpp.predict_json(texts))
    same = sum(answers(w["heads"]) == answers(g["heads"]) for w, g in zip(want, got, strict=True))
    return f"{same}/{len(texts)}"


def compare(
    bundle: Path,
    cpp_build: Path,
    corpus: Path,
    *,
    sentences: int = 300,
    rounds: int = 3,
    corpus_rounds: int = 5,
    warmup: int = 20,
) -> dict[str, Any]:
    """Run every measurement (module docstring) and return the report."""
    from mtst.runtime.engine import Engine

    library = (cpp_build / "runtime" / "cpp" / "libmtst_runtime.so").resolve()
    app = cpp_build / "runtime" / "cpp" / "mtst-cpp-predict"
    cores = os.cpu_count() or 1
    options = {"intra_op_threads": 1, "inter_op_threads": 1, "parallel_batches": cores}
    texts = read_sentences(corpus)
    sample = read_sentences(corpus, limit=sentences)

    py = Engine.load(bundle, providers="cpu", **options)
    cpp = CEngine(library, bundle, {"providers": ["cpu"], **options})
    info = cpp.info()
    if info["variant"] != py.variant.key:
        raise RuntimeError(
            f"the engines picked different variants: C++ {info['variant']}, Python {py.variant.key}"
        )

    lat, tput = _timings(py, cpp, texts, sample, rounds=rounds, corpus_rounds=corpus_rounds, warmup=warmup)
    same = _agreement(py, cpp, texts)
    cpp.close()

    median = {k: sorted(v)[len(v) // 2] for k, v in tput.items()}
    proc_cpp = _cpp_process(app, bundle, corpus, 1, cores)
    proc_py = _python_process(bundle, corpus, options)
    cpp_sizes = {
        "libmtst_runtime.so": library.stat().st_size,
        "mtst-cpp-predict": app.stat().st_size,
        "libonnxruntime.so": (cpp_build / "_deps" / "onnxruntime" / "lib" / "libonnxruntime.so.1")
        .resolve()
        .stat()
        .st_size,
    }
    py_sizes = _python_sizes()
    return {
        "bundle": str(bundle),
        "variant": info["variant"],
        "onnxruntime": info["onnxruntime"],
        "corpus": str(corpus),
        "corpus_sentences": len(texts),
        "settings": options
        | {"cores": cores, "sentences": len(sample), "rounds": rounds, "corpus_rounds": corpus_rounds},
        "batch1_ms": lat,
        "batch1_p50_ratio_cpp_over_python": lat["cpp"]["p50_ms"] / lat["python"]["p50_ms"],
        "batch1_p99_ratio_cpp_over_python": lat["cpp"]["p99_ms"] / lat["python"]["p99_ms"],
        "throughput_sentences_per_s": {"runs": tput, "median": median},
        "throughput_ratio_cpp_over_python": median["cpp"] / median["python"],
        "process": {"cpp": proc_cpp, "python": proc_py},
        "rss_ratio_cpp_over_python": proc_cpp["peak_rss_kb"] / proc_py["peak_rss_kb"],
        "sizes_bytes": {"cpp": cpp_sizes, "python": py_sizes},
        "size_ratio_cpp_over_python": sum(cpp_sizes.values()) / sum(py_sizes.values()),
        "labels_equal": same,
    }


def summary(r: dict[str, Any]) -> str:
    lat, tp, pr = r["batch1_ms"], r["throughput_sentences_per_s"]["median"], r["process"]
    mb = 1 / (1024 * 1024)
    return "\n".join(
        [
            f"{r['variant']} on onnxruntime {r['onnxruntime']}, {r['settings']}",
            f"batch-1 p50 ms: C++ {lat['cpp']['p50_ms']:.2f}, Python {lat['python']['p50_ms']:.2f} "
            f"(ratio {r['batch1_p50_ratio_cpp_over_python']:.2f}); p99 ms: C++ {lat['cpp']['p99_ms']:.2f}, "
            f"Python {lat['python']['p99_ms']:.2f} (ratio {r['batch1_p99_ratio_cpp_over_python']:.2f})",
            f"corpus sentences/s: C++ {tp['cpp']:.0f}, Python {tp['python']:.0f} "
            f"(ratio {r['throughput_ratio_cpp_over_python']:.2f})",
            f"peak RSS MB: C++ {pr['cpp']['peak_rss_kb'] / 1024:.0f}, Python {pr['python']['peak_rss_kb'] / 1024:.0f} "
            f"(ratio {r['rss_ratio_cpp_over_python']:.2f})",
            f"on disk MB: C++ {sum(r['sizes_bytes']['cpp'].values()) * mb:.1f} {r['sizes_bytes']['cpp']}, "
            f"Python packages {sum(r['sizes_bytes']['python'].values()) * mb:.1f}",
            f"labels and entity spans equal: {r['labels_equal']}",
        ]
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--cpp-build", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("build")
)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Sentences, one a line (default: bench/corpus-1000.txt beside $MTST_DATA_ROOT).",
)
@click.option("--sentences", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--corpus-rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the report as JSON."
)
def main(
    bundle: Path,
    cpp_build: Path,
    corpus: Path | None,
    sentences: int,
    rounds: int,
    corpus_rounds: int,
    out: Path | None,
) -> None:
    """Compare the C++ runtime with the Python runtime on BUNDLE (latency, throughput, RSS, size)."""
    if corpus is None:
        root = os.environ.get("MTST_DATA_ROOT")
        candidate = Path(root).resolve().parent / "bench" / "corpus-1000.txt" if root else None
        if candidate is None or not candidate.is_file():
            raise click.UsageError("no corpus: pass --corpus or set MTST_DATA_ROOT")
        corpus = candidate
    report = compare(
        bundle, cpp_build, corpus, sentences=sentences, rounds=rounds, corpus_rounds=corpus_rounds
    )
    report["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    click.echo(summary(report))


if __name__ == "__main__":  # pragma: no cover
    main()
