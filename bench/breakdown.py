"""Where the time of one mtst request goes: tokenization, graph, the rest; and the graph's ops.

Batch 1 over the realtime sentences, interleaved per sentence:

- ``tokenize``: the bundle's tokenizer (encode + pad), as the engine does it;
- ``graph``: the variant's graph(s) alone in ONNX Runtime sessions opened with the engine's settings
  (every output fetched);
- ``end_to_end``: ``engine.predict([text])``; ``decode_and_overhead`` is its median minus the two
  medians above (decoding, result objects, Python glue).

The op profile comes from ONNX Runtime's own profiler (``enable_profiling``) on the same graph: the
time of every node, summed by op type (MatMulInteger, Attention, SkipLayerNormalization, ...).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mtst.runtime.manifest import Layout
from mtst.runtime.providers import CPU_DISABLED_OPTIMIZERS, Provider

from .engines import MtstSystem
from .timing import interleaved, summarize

__all__ = ["OpProfile", "OpTime", "RequestProfile", "op_profile", "profile_request"]


def _sessions(ms: MtstSystem, *, profile_dir: Path | None = None) -> dict[str, ort.InferenceSession]:
    engine = ms.engine
    out: dict[str, ort.InferenceSession] = {}
    for role, name in engine.variant.graphs.items():
        so = engine.settings.session_options()
        if role in ("heads", "token_heads"):
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
        if profile_dir is not None:
            so.enable_profiling = True
            so.profile_file_prefix = str(profile_dir / role)
        providers = [p.ort_name for p in engine.active_providers] or ["CPUExecutionProvider"]
        cpu = not engine.active_providers or engine.active_providers[0] is Provider.CPU
        out[role] = ort.InferenceSession(
            str(engine.bundle.path(name)),
            so,
            providers=providers,
            disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS) if cpu else None,  # as the engine's sessions
        )
    return out


def _graph_call(
    ms: MtstSystem, sessions: dict[str, ort.InferenceSession]
) -> Callable[[dict[str, np.ndarray]], Any]:
    layout = ms.engine.variant.layout
    if layout is Layout.SINGLE:
        model = sessions["model"]
        return lambda feeds: model.run(None, feeds)
    encoder = sessions["encoder"]
    heads = sessions.get("heads")
    token_heads = sessions.get("token_heads")
    enc_outputs = [o.name for o in encoder.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> Any:
        outs = dict(zip(enc_outputs, encoder.run(None, feeds), strict=True))
        if heads is not None:
            heads.run(None, {"embedding": outs["embedding"]})
        if token_heads is not None and "token_states" in outs:
            token_heads.run(None, {"token_states": outs["token_states"]})
        return outs

    return run


@dataclass(frozen=True, slots=True)
class OpTime:
    op: str  # ONNX op type
    ms: float  # summed over the profiled requests
    share: float  # of the graph time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OpProfile:
    requests: int
    total_ms: float
    by_op_type: tuple[OpTime, ...]  # largest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "total_ms": self.total_ms,
            "by_op_type": [o.to_dict() for o in self.by_op_type],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpProfile:
        return cls(d["requests"], d["total_ms"], tuple(OpTime(**o) for o in d["by_op_type"]))


@dataclass(frozen=True, slots=True)
class RequestProfile:
    """Median ms per stage of a batch-1 request (tokenize, graph, decode_and_overhead, end_to_end)."""

    p50_ms: dict[str, float]
    share: dict[str, float | None]  # of end_to_end, per stage but end_to_end
    ops: OpProfile

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": dict(self.p50_ms), "share": dict(self.share), "ops": self.ops.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestProfile:
        return cls(dict(d["p50_ms"]), dict(d["share"]), OpProfile.from_dict(d["ops"]))


def profile_request(ms: MtstSystem, sentences: Sequence[str], *, rounds: int, warmup: int) -> RequestProfile:
    """Median ms per stage of a batch-1 request, and the share of each stage."""
    tok = ms.tokenizer
    sessions = _sessions(ms)
    graph = _graph_call(ms, sessions)
    feeds_of = {}
    for s in sentences:
        encs, _ = tok.encode([s])
        feeds_of[s] = tok.pad(encs)

    def tokenize(text: str) -> None:
        encs, _ = tok.encode([text])
        tok.pad(encs)

    gc.collect()
    times = interleaved(
        {
            "tokenize": tokenize,
            "graph": lambda text: graph(feeds_of[text]),
            "end_to_end": lambda text: ms.engine.predict([text]),
        },
        list(sentences),
        rounds=rounds,
        warmup=warmup,
    )
    p50 = {k: summarize(v).p50_ms for k, v in times.items()}
    rest = p50["end_to_end"] - p50["tokenize"] - p50["graph"]
    stages = {"tokenize": p50["tokenize"], "graph": p50["graph"], "decode_and_overhead": rest}
    total = p50["end_to_end"]
    return RequestProfile(
        p50_ms=stages | {"end_to_end": total},
        share={k: (v / total if total > 0 else None) for k, v in stages.items()},
        ops=op_profile(ms, sentences),
    )


def op_profile(ms: MtstSystem, sentences: Sequence[str], *, top: int = 12) -> OpProfile:
    """ONNX Runtime's profiler on the variant's graph(s), batch 1: time per op type, largest first."""
    tok = ms.tokenizer
    with tempfile.TemporaryDirectory(prefix="mtst-bench-prof-") as tmp:
        sessions = _sessions(ms, profile_dir=Path(tmp))
        graph = _graph_call(ms, sessions)
        for s in sentences:
            encs, _ = tok.encode([s])
            graph(tok.pad(encs))
        by_op: dict[str, float] = defaultdict(float)
        for sess in sessions.values():
            path = sess.end_profiling()
            with contextlib.suppress(OSError, json.JSONDecodeError):
                events = json.loads(Path(path).read_text())
                for ev in events:
                    if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
                        by_op[str(ev.get("args", {}).get("op_name", "?"))] += float(ev.get("dur", 0))
            with contextlib.suppress(OSError):
                os.unlink(path)
    total = sum(by_op.values())
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    return OpProfile(
        requests=len(sentences),
        total_ms=total / 1e3,
        by_op_type=tuple(OpTime(op, us / 1e3, us / total if total else 0.0) for op, us in ranked[:top]),
    )
