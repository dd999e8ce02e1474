"""The GPU check's measurements (run by scripts/gpu-check.sh; docs/gpu.md): mtst on CUDA beside torch.

Systems, all on the same weights and sentences, measured interleaved (each sentence or round runs
every system in turn, so drifting clocks hit them alike):

- ``mtst-fp16-iobind`` / ``mtst-fp16-plain``: the bundle's fp16 variant, IO binding on / off;
- ``mtst-fp32``: the fp32 variant;
- ``torch-fp16``: the checkpoint's MultiTaskModel in torch eager, fp16 on the GPU;
- ``torch-compile``: the same model through ``torch.compile`` (``--dry-run``: backend "eager", no
  inductor build on a CI machine).

Scenarios: batch 1 end to end (p50/p90/p99 ms), throughput over the corpus in the same length-sorted
batches (GPU batch tokens, sentences/s), cold start of a fresh process (import, session creation and
first answer), fidelity of fp16 vs torch fp32 (cosine, label agreement), and the fp16 overflow check
(``mtst.bench.fp16``) on the GPU. Writes report.json, report.md and PNGs to ``--out``.
"""

from __future__ import annotations

# torch first: onnxruntime-gpu finds the CUDA 13 libraries torch's wheels brought (issue 16)
import torch  # isort: skip

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mtst.bench.engines import _head_labels
from mtst.bench.fidelity import cosine_rows, label_agreement
from mtst.bench.fp16 import check_fp16
from mtst.bench.reference import TorchReference
from mtst.runtime import Engine
from mtst.runtime.batching import plan_batches
from mtst.runtime.texts import read_sentences
from mtst.runtime.tokenize import TextTokenizer
from mtst.runtime.trt import gpu_name

BATCH_SIZE = 128  # the GPU batch bound; AUTO_BATCH_TOKENS (4096 padded tokens) closes batches first
COLD_START = """
import json, sys, time
t0 = time.perf_counter()
import onnxruntime as ort  # torch-free: the CUDA libraries come from LD_LIBRARY_PATH (gpu-check.sh)
from mtst.runtime import Engine
t1 = time.perf_counter()
e = Engine.load(sys.argv[1], providers=[sys.argv[2]], precision="fp16")
t2 = time.perf_counter()
e.predict(["The first answer after loading."])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_answer_s": t3 - t2, "total_s": t3 - t0}))
"""


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "available_providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_driver_name": gpu_name(),
    }
    for mod in ("transformers", "onnx", "tokenizers", "numpy"):
        out[mod] = __import__(mod).__version__
    return out


class TorchSystem:
    """The checkpoint's model in torch on ``device``: the same tokenizer, one forward, outputs on the host."""

    def __init__(self, checkpoint: Path, device: str, dtype: Any, *, compile_backend: str | None) -> None:
        from mtst.model import MultiTaskModel

        self.model = MultiTaskModel.from_pretrained(checkpoint).eval().to(device=device, dtype=dtype)
        self.forward = self.model
        if compile_backend is not None:
            self.forward = torch.compile(self.model, backend=compile_backend, dynamic=True)
        self.device = device

    def run(self, texts: list[str]) -> None:
        batch = self.model.tokenize(texts)
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in self.model.input_names}
        with torch.inference_mode():
            out = self.forward(**inputs)
            out.embedding.float().cpu()
            for lg in out.logits.values():
                lg.argmax(-1).cpu()


def load_systems(args: argparse.Namespace) -> dict[str, Callable[[list[str]], Any]]:
    provider = args.provider
    common: dict[str, Any] = {"providers": [provider], "batch_size": BATCH_SIZE}
    engines = {
        "mtst-fp16-iobind": Engine.load(args.bundle, precision="fp16", io_binding=True, **common),
        "mtst-fp16-plain": Engine.load(args.bundle, precision="fp16", io_binding=False, **common),
        "mtst-fp32": Engine.load(args.bundle, precision="fp32", **common),
    }
    for name, e in engines.items():
        if provider == "cuda" and e.active_providers[0].value != "cuda":
            raise SystemExit(f"{name}: CUDA NOT ACTIVE (runs {e.active_providers})")
    systems: dict[str, Callable[[list[str]], Any]] = {n: e.predict for n, e in engines.items()}
    device = "cuda" if provider == "cuda" else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32  # CPU torch has few fp16 kernels
    tag = "fp16" if device == "cuda" else "fp32"
    systems[f"torch-{tag}"] = TorchSystem(args.checkpoint, device, dtype, compile_backend=None).run
    backend = "eager" if args.dry_run else "inductor"
    systems["torch-compile"] = TorchSystem(args.checkpoint, device, dtype, compile_backend=backend).run
    return systems


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def realtime(systems: dict[str, Callable[[list[str]], Any]], texts: list[str], warmup: int) -> dict[str, Any]:
    """Batch 1, one sentence at a time, every system in turn per sentence."""
    times: dict[str, list[float]] = {n: [] for n in systems}
    for i, text in enumerate(texts[:warmup] + texts):
        for name, run in systems.items():
            t0 = time.perf_counter()
            run([text])
            _sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {
        n: {f"p{q}_ms": float(np.percentile(t, q) * 1e3) for q in (50, 90, 99)} | {"n": len(t)}
        for n, t in times.items()
    }


def throughput(
    systems: dict[str, Callable[[list[str]], Any]], corpus: list[str], tok: TextTokenizer, rounds: int
) -> dict[str, Any]:
    """Sentences/s over the corpus in the same length-sorted batches (GPU batch tokens) for every system;
    mtst engines get each batch as one request."""
    lengths = [len(e) for e in tok.encode(corpus)[0]]
    plan = plan_batches(lengths, max_batch=BATCH_SIZE, max_tokens=4096)
    batches = [[corpus[i] for i in idx.tolist()] for idx in plan.batches]
    secs: dict[str, list[float]] = {n: [] for n in systems}
    for r in range(rounds + 1):  # round 0 warms up (torch.compile traces every new shape here)
        for name, run in systems.items():
            t0 = time.perf_counter()
            for b in batches:
                run(b)
            _sync()
            if r > 0:
                secs[name].append(time.perf_counter() - t0)
    return {
        n: {"sentences_per_s": len(corpus) / float(np.median(s)), "batches": len(batches), "rounds": rounds}
        for n, s in secs.items()
    }


def cold_start(bundle: Path, provider: str, runs: int) -> dict[str, Any]:
    """A fresh process: import (and CUDA library preload), Engine.load with session creation, first answer."""
    results = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", COLD_START, str(bundle), provider],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"cold start failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: float(np.median([r[k] for r in results])) for k in results[0]} | {"runs": runs}


def fidelity(bundle: Path, checkpoint: Path, provider: str, texts: list[str]) -> dict[str, Any]:
    """fp16 variant (IO binding as loaded by default) vs the checkpoint in torch fp32 (CPU, the reference)."""
    engine = Engine.load(bundle, providers=[provider], precision="fp16")
    ref = TorchReference(checkpoint, threads=4)
    tok = engine._tokenizer
    assert tok is not None
    cos = cosine_rows(engine.embed(texts), ref.embed(texts))
    ours, theirs = _head_labels(engine, tok, texts), ref.labels(texts)
    agree = {h: label_agreement(ours[h], theirs[h])[0] for h in theirs if h in ours}
    return {
        "n": len(texts),
        "cos_min": float(cos.min()),
        "cos_mean": float(cos.mean()),
        "label_agreement": agree,
    }


def mtst_bench(bundle: Path, provider: str, out: Path, dry_run: bool) -> dict[str, Any]:
    """``mtst-bench --provider PROVIDER`` itself, as a user runs it (its own report under ``out``)."""
    cmd = [
        sys.executable,
        "-c",
        "import torch, sys; from mtst.bench.cli import main; sys.argv[0] = 'mtst-bench'; main()",
    ]
    cmd += [
        str(bundle),
        "--provider",
        provider,
        "--precision",
        "fp16",
        "--scenario",
        "realtime,throughput,cold-start",
    ]
    cmd += [
        "--no-open-loop",
        "--no-profile",
        "--no-progress",
        "--batch-size",
        str(BATCH_SIZE),
        "-o",
        str(out),
    ]
    if dry_run:  # every scenario, a few sentences each
        cmd += ["--sentences", "6", "--warmup", "1", "--rounds", "1", "--corpus-sentences", "24"]
        cmd += ["--corpus-rounds", "1", "--cold-start-runs", "1"]
    else:
        cmd += ["--sentences", "128", "--rounds", "1", "--corpus-rounds", "2"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mtst-bench failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return {
        "command": " ".join(cmd[3:]),
        "seconds": time.perf_counter() - t0,
        "report": str(out / "report.json"),
    }


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    """mtst fp16 (IO binding) against each torch system and against itself without IO binding."""
    rt, tp = report["realtime"], report["throughput"]
    ours = "mtst-fp16-iobind"
    out: dict[str, Any] = {
        "io_binding_p50_gain": rt["mtst-fp16-plain"]["p50_ms"] / rt[ours]["p50_ms"],
        "io_binding_throughput_gain": tp[ours]["sentences_per_s"] / tp["mtst-fp16-plain"]["sentences_per_s"],
    }
    for peer in (n for n in rt if n.startswith("torch")):
        out[f"p50_speedup_vs_{peer}"] = rt[peer]["p50_ms"] / rt[ours]["p50_ms"]
        out[f"p99_speedup_vs_{peer}"] = rt[peer]["p99_ms"] / rt[ours]["p99_ms"]
        out[f"throughput_ratio_vs_{peer}"] = tp[ours]["sentences_per_s"] / tp[peer]["sentences_per_s"]
    return out


def markdown(report: dict[str, Any]) -> str:
    v = report["versions"]
    lines = [
        f"# GPU check{' (dry run, CPU: numbers not for reporting)' if report['dry_run'] else ''}",
        "",
        f"GPU: {v['gpu']} (driver: {v['gpu_driver_name']}); provider {report['provider']}; "
        f"onnxruntime {v['onnxruntime']}, torch {v['torch']} (CUDA {v['torch_cuda']}), Python {v['python']}.",
        f"Available providers: {', '.join(v['available_providers'])}.",
        "",
        "| system | p50 ms | p90 ms | p99 ms | sentences/s (corpus) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in report["realtime"].items():
        tp = report["throughput"][name]["sentences_per_s"]
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {tp:,.0f} |")
    lines += ["", "Ratios (mtst fp16 with IO binding vs ...):", ""]
    lines += [f"- {k}: {x:.2f}" for k, x in report["ratios"].items()]
    cs, fid, f16 = report["cold_start"], report["fidelity"], report["fp16_check"]
    lines += [
        "",
        f"Cold start (fresh process, median of {cs['runs']}): import {cs['import_s']:.2f} s, Engine.load "
        f"{cs['load_s']:.2f} s, first answer {cs['first_answer_s']:.3f} s, total {cs['total_s']:.2f} s.",
        f"Fidelity fp16 vs torch fp32 ({fid['n']} sentences): cosine min {fid['cos_min']:.5f}, mean "
        f"{fid['cos_mean']:.5f}; label agreement {json.dumps(fid['label_agreement'])}.",
        f"fp16 overflow check on {f16['provider']} ({f16['sentences']} sentences): embedding max |diff| "
        f"{f16['embedding_max_abs_diff']:.2e}, logits max |diff| {json.dumps(f16['logits_max_abs_diff'])}, "
        f"overflow: {f16['overflow']}.",
        f"mtst-bench: `{report['mtst_bench']['command']}` -> {report['mtst_bench']['report']}.",
    ]
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = list(report["realtime"])
    files = []
    for fname, key, values in (
        (
            "latency.png",
            "batch-1 latency, ms (p50 bar, p99 tick)",
            [report["realtime"][n]["p50_ms"] for n in names],
        ),
        (
            "throughput.png",
            "corpus throughput, sentences/s",
            [report["throughput"][n]["sentences_per_s"] for n in names],
        ),
    ):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh(names, values)
        if fname == "latency.png":
            ax.plot([report["realtime"][n]["p99_ms"] for n in names], names, "k|", markersize=14)
        ax.set_title(key)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files.append(fname)
    return files


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="mtst on a GPU beside torch (scripts/gpu-check.sh runs this)")
    p.add_argument("--bundle", type=Path, required=True, help="Bundle with fp16 and fp32 variants.")
    p.add_argument("--checkpoint", type=Path, required=True, help="The checkpoint the bundle came from.")
    p.add_argument("--data", type=Path, required=True, help="Sentences, one a line.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--sentences", type=int, default=300, help="Batch-1 and fidelity sentences.")
    p.add_argument("--corpus", type=int, default=1000, help="Throughput sentences.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=10, help="Batch-1 requests per system before timing.")
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--dry-run", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dry_run": args.dry_run, "provider": args.provider, "versions": versions()}
    print(json.dumps(report["versions"], indent=2), flush=True)
    if args.provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("CUDA NOT ACTIVE: CUDAExecutionProvider is not in get_available_providers()")
    texts = read_sentences(args.data, limit=args.sentences)
    corpus = read_sentences(args.data, limit=args.corpus)
    systems = load_systems(args)
    m = Engine.load(args.bundle, providers=[args.provider], precision="fp16")
    assert m._tokenizer is not None
    print(f"systems loaded: {time.perf_counter() - t_start:.1f} s", flush=True)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("realtime", lambda: realtime(systems, texts, warmup=args.warmup)),
        ("throughput", lambda: throughput(systems, corpus, m._tokenizer, args.rounds)),  # type: ignore[arg-type]
        ("cold_start", lambda: cold_start(args.bundle, args.provider, args.cold_runs)),
        ("fidelity", lambda: fidelity(args.bundle, args.checkpoint, args.provider, texts)),
        ("fp16_check", lambda: check_fp16(args.bundle, texts, provider=args.provider).to_dict()),
        ("mtst_bench", lambda: mtst_bench(args.bundle, args.provider, args.out / "mtst-bench", args.dry_run)),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        report[name] = step()
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["ratios"] = ratios(report)
    report["plots"] = plots(report, args.out)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
