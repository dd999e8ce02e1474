"""fp16 overflow check: an fp16 variant against the fp32 one on real sentences, and the tensors that overflow.

fp16 holds magnitudes up to 65504; BERT's residual sums entering LayerNorm and the attention scores
entering softmax are where it runs out (DESIGN.md's traps), and the result is inf/nan or a silently
saturated value. fp16 exports keep LayerNorm in fp32, but the sums that feed it are computed in fp16.
:func:`check_fp16`:

- runs both variants through the engine (same sentences, same batches) and reports the largest
  absolute difference of the embedding and of every head's logits, and the smallest embedding cosine;
- runs the fp16 encoder graph once more with the inputs and outputs of its LayerNorm-family,
  Softmax and Attention nodes exposed as graph outputs (a fused Attention node keeps its softmax inside:
  its output is watched), and records per op type the largest finite
  magnitude, its headroom to 65504 and the count of non-finite values: ``overflow`` is set when any
  watched tensor or final output holds inf/nan, or a watched magnitude passes 65504. The last matters on
  CPU: ONNX Runtime's CPU provider has no fp16 kernel for most ops (Add, MatMul, ...) and runs them in
  fp32 behind inserted casts, so a residual sum of 80,000 stays finite there and becomes inf on a GPU.

It runs on any provider (CPU now; ONNX Runtime's CPU provider runs fp16 graphs, slowly: use a few
hundred sentences). ``mtst-fp16-check BUNDLE --data FILE`` prints the report as JSON.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import BundleError
from mtst.runtime import Engine
from mtst.runtime.bundle import load_bundle
from mtst.runtime.manifest import Layout, Precision
from mtst.runtime.providers import Provider, resolve_providers
from mtst.runtime.tokenize import TextTokenizer

__all__ = ["FP16_MAX", "WATCHED_OPS", "Fp16Check", "OpStats", "check_fp16", "op_stats"]

FP16_MAX = 65504.0
WATCHED_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
    "Softmax",
    "Attention",
    "MultiHeadAttention",
)


@dataclass(frozen=True, slots=True)
class OpStats:
    """The watched tensors around the nodes of one op type (data inputs and first output)."""

    nodes: int
    tensors: int
    max_abs: float  # largest finite magnitude
    nonfinite: int  # inf/nan values

    @property
    def headroom(self) -> float:
        """How many times the largest value fits under fp16's largest (65504); < 1 would have overflowed."""
        return FP16_MAX / self.max_abs if self.max_abs > 0 else float("inf")

    @property
    def overflows(self) -> bool:
        """inf/nan, or a value past fp16's range (finite only where the provider computed it in fp32)."""
        return self.nonfinite > 0 or self.max_abs > FP16_MAX


@dataclass(frozen=True, slots=True)
class Fp16Check:
    sentences: int
    provider: str
    embedding_max_abs_diff: float
    embedding_cos_min: float
    logits_max_abs_diff: dict[str, float]
    nonfinite_outputs: dict[str, int]  # final outputs of the fp16 variant with inf/nan values
    ops: dict[str, OpStats] = field(default_factory=dict)

    @property
    def overflow(self) -> bool:
        return any(self.nonfinite_outputs.values()) or any(s.overflows for s in self.ops.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overflow"] = self.overflow
        d["ops"] = {
            k: {**asdict(s), "headroom": s.headroom, "overflows": s.overflows} for k, s in self.ops.items()
        }
        return d


def _outputs(engine: Engine, texts: list[str]) -> dict[str, np.ndarray]:
    """The embedding and every head's logits, token heads' rows stacked over the texts' own tokens."""
    preds = engine.predict(texts, return_embedding=True, return_logits=True)
    out = {"embedding": np.stack([p.embedding for p in preds])}  # type: ignore[misc]
    for name in engine.heads:
        out[name] = np.concatenate([np.atleast_2d(p.logits[name]) for p in preds])  # type: ignore[index]
    return out


def _watched_graph(graph: Path, dst: Path) -> tuple[dict[str, str], dict[str, int]]:
    """``graph`` with the watched tensors as extra outputs, written to ``dst``: tensor -> op type, and
    the number of nodes of each watched op type."""
    import onnx

    model = onnx.load(str(graph))
    initializers = {i.name for i in model.graph.initializer}
    have = {o.name for o in model.graph.output}
    watched: dict[str, str] = {}
    nodes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in WATCHED_OPS:
            continue
        nodes[node.op_type] = nodes.get(node.op_type, 0) + 1
        if node.op_type == "EmbedLayerNormalization":  # its inputs are token ids, not activations
            data_inputs = []
        else:
            data_inputs = node.input[:2] if node.op_type.startswith("Skip") else node.input[:1]
        for name in [*data_inputs, node.output[0]]:
            if name and name not in initializers:
                watched.setdefault(name, node.op_type)
    # outputs without a type: ONNX Runtime infers them
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in watched if n not in have)
    onnx.save(model, str(dst))
    return watched, nodes


def op_stats(
    graph: Path, provider: Provider, batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, OpStats]:
    """Per watched op type of ``graph``: the largest finite magnitude and the inf/nan count of the watched
    tensors over the feeds ``batches``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mtst-fp16-check-") as work:
        dst = Path(work) / graph.name
        watched, nodes = _watched_graph(graph, dst)
        session = ort.InferenceSession(str(dst), providers=[provider.ort_name])
        names = list(watched)
        inputs = {i.name for i in session.get_inputs()}
        max_abs = dict.fromkeys(names, 0.0)
        nonfinite = dict.fromkeys(names, 0)
        for batch in batches:
            feeds = {k: v for k, v in batch.items() if k in inputs}
            for name, value in zip(names, session.run(names, feeds), strict=True):
                v = np.abs(np.asarray(value, dtype=np.float32))
                finite = np.isfinite(v)
                nonfinite[name] += int(v.size - finite.sum())
                if finite.any():
                    max_abs[name] = max(max_abs[name], float(v[finite].max()))
    stats: dict[str, OpStats] = {}
    for op, count in nodes.items():
        mine = [n for n in names if watched[n] == op]
        stats[op] = OpStats(
            nodes=count,
            tensors=len(mine),
            max_abs=max(max_abs[n] for n in mine),
            nonfinite=sum(nonfinite[n] for n in mine),
        )
    return stats


def _token_batches(tok: TextTokenizer, texts: list[str], size: int) -> Iterator[dict[str, np.ndarray]]:
    encs, _ = tok.encode(texts)
    for s in range(0, len(encs), size):
        yield tok.pad(encs[s : s + size])


def check_fp16(
    bundle: str | Path,
    sentences: Sequence[str],
    *,
    reference: str | Path | None = None,
    provider: Provider | str = Provider.CPU,
    batch_size: int = 16,
) -> Fp16Check:
    """The fp16 variant of ``bundle`` against the fp32 variant of ``reference`` (default: ``bundle``)."""
    plan = resolve_providers([provider])
    texts = list(sentences)
    common: dict[str, Any] = {"providers": [plan.primary], "batch_size": batch_size, "io_binding": False}
    fp16 = Engine.load(bundle, precision=Precision.FP16, **common)
    fp32 = Engine.load(reference or bundle, precision=Precision.FP32, **common)
    ours, ref = _outputs(fp16, texts), _outputs(fp32, texts)
    cos = (ours["embedding"] * ref["embedding"]).sum(1) / np.maximum(
        np.linalg.norm(ours["embedding"], axis=1) * np.linalg.norm(ref["embedding"], axis=1), 1e-12
    )
    heads = [h for h in fp16.heads if h in ref]
    variant = fp16.variant
    graph_name = variant.graphs["model" if variant.layout is Layout.SINGLE else "encoder"]
    b = load_bundle(bundle)
    m = b.manifest
    if not m.tokenizer:
        raise BundleError(f"{b.root}: a heads-only bundle has no fp16 encoder to check")
    tok = TextTokenizer.from_file(
        b.tokenizer_path, max_seq_len=m.max_seq_len, pad_token_id=m.pad_token_id, input_names=m.inputs
    )
    return Fp16Check(
        sentences=len(texts),
        provider=plan.primary.value,
        embedding_max_abs_diff=float(np.abs(ours["embedding"] - ref["embedding"]).max()),
        embedding_cos_min=float(cos.min()),
        logits_max_abs_diff={h: float(np.abs(ours[h] - ref[h]).max()) for h in heads},
        nonfinite_outputs={k: int((~np.isfinite(v)).sum()) for k, v in ours.items()},
        ops=op_stats(b.root / graph_name, plan.primary, _token_batches(tok, texts, batch_size)),
    )
