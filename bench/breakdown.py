"""Where the time of one mtst request goes: tokenization, graph, the rest; and the graph's ops.

Batch 1 over the realtime sentences, interleaved per sentence:

- ``tokenize``: the bundle's tokenizer (encode + pad), as the engine does it;
- ``graph``: the variant's graph(s) alone in ONNX Runtime sessions opened with the engine's settings
  (every output fetched);
- ``end_to_end``: ``engine.predict([text])``; ``decode_and_overhead`` is its median minus the two
  medians above (decoding, result objects, Python glue).

The op profile comes from ONNX Runtime's own profiler (``enable_profiling``) on the same graph: the
time of every node, summed by op type (MatMulInteger, Attention, SkipLayerNormalization, ...).

:func:`profile_batches` does the same for given batches (the throughput scenario's token-sorted
batches of 32), one batch per ``predict`` call as ``MtstSystem.run_given`` runs them (each batch in the
engine's runs of at most ``max_batch_tokens`` padded tokens), stage by stage: ``tokenize`` (encode +
pad), each graph of the variant (``encoder``/``model``, ``heads``, ``token_heads``), ``decode``
(sentence heads' softmax and labels, token heads' entities) and ``glue`` (``predict`` minus the
stages: batching, result objects, Python around them).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mtst.runtime.batching import plan_batches
from mtst.runtime.manifest import HeadKind, Layout
from mtst.runtime.providers import CPU_DISABLED_OPTIMIZERS, Provider
from mtst.runtime.results import decode_sentence, head_decodings, token_sink

from .engines import MtstSystem
from .timing import interleaved, summarize

__all__ = [
    "BatchProfile",
    "OpProfile",
    "OpTime",
    "RequestProfile",
    "op_profile",
    "profile_batches",
    "profile_request",
]


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


def op_profile(
    ms: MtstSystem, sentences: Sequence[str], *, top: int = 12, batches: Sequence[Sequence[str]] = ()
) -> OpProfile:
    """ONNX Runtime's profiler on the variant's graph(s): time per op type, largest first.

    Each of ``sentences`` runs alone (batch 1), then each of ``batches`` as one batch.
    """
    tok = ms.tokenizer
    groups = [[s] for s in sentences] + [list(b) for b in batches]
    with tempfile.TemporaryDirectory(prefix="mtst-bench-prof-") as tmp:
        sessions = _sessions(ms, profile_dir=Path(tmp))
        graph = _graph_call(ms, sessions)
        for group in groups:
            encs, _ = tok.encode(group)
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
        requests=len(groups),
        total_ms=total / 1e3,
        by_op_type=tuple(OpTime(op, us / 1e3, us / total if total else 0.0) for op, us in ranked[:top]),
    )


@dataclass(frozen=True, slots=True)
class BatchProfile:
    """Where ``predict`` spends its time on given batches: ms per stage summed over the batches (each
    stage's median over the rounds), the share of each stage of ``predict``, and the graphs' op profile."""

    batches: int
    sentences: int
    ms: dict[str, float]  # tokenize, one entry per graph role, decode, glue, and predict (the total)
    share: dict[str, float | None]  # of predict, per stage but predict
    ops: OpProfile

    @property
    def sentences_per_s(self) -> float:
        """One thread's rate: the sentences over the summed ``predict`` time."""
        total = self.ms["predict"]
        return self.sentences / (total / 1e3) if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "sentences": self.sentences,
            "ms": dict(self.ms),
            "share": dict(self.share),
            "ops": self.ops.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BatchProfile:
        return cls(
            d["batches"], d["sentences"], dict(d["ms"]), dict(d["share"]), OpProfile.from_dict(d["ops"])
        )


def _each(calls: Sequence[Callable[[], Any]]) -> None:
    for call in calls:
        call()


def _batch_stages(
    ms: MtstSystem, sessions: dict[str, ort.InferenceSession], texts: list[str]
) -> dict[str, Callable[[], Any]]:
    """One callable per stage of ``predict(texts)`` (all heads), each on inputs the stage before made,
    in the runs the engine cuts the batch into (at most its ``max_batch_tokens`` padded tokens)."""
    tok = ms.tokenizer
    engine = ms.given_engine or ms.padded_engine or ms.engine
    heads = list(engine.heads.values())
    decodings = head_decodings(heads)
    encs, _ = tok.encode(texts)
    lengths = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
    plan = plan_batches(lengths, max_batch=engine.batch_size, max_tokens=engine.max_batch_tokens)
    runs = [(idx, [encs[i] for i in idx.tolist()]) for idx in plan.batches]

    def tokenize() -> None:
        got, _ = tok.encode(texts)
        for idx, _ in runs:
            tok.pad([got[i] for i in idx.tolist()])

    stages: dict[str, Callable[[], Any]] = {"tokenize": tokenize}
    first = "model" if "model" in sessions else "encoder"
    values: list[dict[str, np.ndarray]] = [{} for _ in runs]
    for role in (first, "heads", "token_heads"):
        sess = sessions.get(role)
        if sess is None:
            continue
        names = [o.name for o in sess.get_outputs()]
        calls = []
        for (_, run_encs), vals in zip(runs, values, strict=True):
            source = tok.pad(run_encs) if role == first else vals
            inputs = {i.name: source[i.name] for i in sess.get_inputs()}
            vals.update(zip(names, sess.run(names, inputs), strict=True))
            calls.append(functools.partial(sess.run, None, inputs))
        stages[role] = functools.partial(_each, calls)
    sentence = [h for h in heads if h.kind is HeadKind.SENTENCE]
    token = [h for h in heads if h.kind is HeadKind.TOKEN]

    def decode() -> None:
        sink = token_sink(texts, token, [{} for _ in texts], None, decodings)
        for (idx, run_encs), vals in zip(runs, values, strict=True):
            for h in sentence:
                decode_sentence(vals[h.output], h.labels, decodings[h.name])
            if sink is not None:
                sink(idx, run_encs, [vals[h.output] for h in token])

    stages["decode"] = decode
    stages["predict"] = lambda: engine.predict(texts)
    return stages


def profile_batches(
    ms: MtstSystem, batches: Sequence[Sequence[str]], *, rounds: int, warmup: int = 1
) -> BatchProfile:
    """Stage by stage, where ``predict`` spends its time on ``batches`` (each one ``predict`` call, as
    ``MtstSystem.run_given`` runs them), on one thread; the stages of a batch run back to back in a
    rotating order, and each stage's time is its median over ``rounds`` summed over the batches."""
    if rounds < 1:
        raise ValueError(f"rounds {rounds!r}: expected >= 1")
    sessions = _sessions(ms)
    per_batch = [_batch_stages(ms, sessions, list(b)) for b in batches]
    names = list(per_batch[0]) if per_batch else ["predict"]
    for stages in per_batch[:warmup]:
        for fn in stages.values():
            fn()
    gc.collect()
    times = {n: [[0] * len(per_batch) for _ in range(rounds)] for n in names}
    k = 0
    for r in range(rounds):
        for b, stages in enumerate(per_batch):
            shift = k % len(names)
            for n in names[shift:] + names[:shift]:
                t0 = time.perf_counter_ns()
                stages[n]()
                times[n][r][b] = time.perf_counter_ns() - t0
            k += 1
    ms_of = {
        n: float(np.median(np.asarray(t, dtype=np.float64), axis=0).sum()) / 1e6 for n, t in times.items()
    }
    total = ms_of.pop("predict")
    ms_of["glue"] = total - sum(ms_of.values())
    return BatchProfile(
        batches=len(per_batch),
        sentences=sum(len(b) for b in batches),
        ms=ms_of | {"predict": total},
        share={k: (v / total if total > 0 else None) for k, v in ms_of.items()},
        ops=op_profile(ms, (), batches=batches),
    )
