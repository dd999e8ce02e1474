"""Parity: the exported graphs against the torch fp32 model, on real sentences, at untraced shapes.

Shapes: batch sizes :data:`BATCH_SIZES` (1, 7, 32) times four lengths (:func:`parity_lengths`):

- ``1``: a sequence axis of length 1 -- each row is the *first word-piece of a real sentence alone*,
  without ``[CLS]``/``[SEP]`` (so rows differ and token heads have one real token to compare);
- ``short`` (16 tokens, fewer for small ``max_seq_len``), ``long`` (``max_seq_len // 2``, at most 96)
  and ``max`` (``max_seq_len``): even rows are real text (sentences joined until long enough) cut
  to exactly that length, odd rows are one real sentence, truncated there or padded -- so every
  batch but batch 1 mixes full rows and padding, like the runtime's dynamic padding.

The tracing input (batch 2, :func:`trace_length`) never equals any of these. Figures per head:
maximum absolute logit difference, label agreement (argmax; token heads on real tokens only, i.e.
neither padding nor special tokens) on the rows that are one whole real sentence (bounded) and on all
rows (reported), and for the embedding cosine min/mean and max abs difference.
:data:`PARITY_BOUNDS` are the limits per precision; :func:`check_bounds` lists the violations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import DataError
from mtst.runtime.manifest import Precision, Variant
from mtst.runtime.texts import read_sentences
from mtst.runtime.tokenize import TextTokenizer

__all__ = [
    "BATCH_SIZES",
    "PARITY_BOUNDS",
    "POOL_SIZE",
    "ParityBounds",
    "ParityCase",
    "build_cases",
    "check_bounds",
    "check_tokenizer",
    "compare_outputs",
    "load_sentences",
    "parity_document",
    "parity_lengths",
    "run_parity",
    "sentence_batches",
    "trace_length",
]

logger = logging.getLogger(__name__)

BATCH_SIZES = (1, 7, 32)
POOL_SIZE = 64  # real sentences kept in parity.json for bench/predict to reuse
_TRACE_CANDIDATES = (19, 23, 29, 31, 37, 41, 43, 47, 5, 7, 11, 13, 3)


@dataclass(frozen=True, slots=True)
class ParityBounds:
    """Limits for one precision. ``logits_max_abs`` is relative: |diff| <= bound * max(1, max|torch logit|)."""

    embedding_cos_min: float  # every row, every shape
    embedding_cos_mean: float  # over all rows of all shapes
    label_agreement: float | None  # per head, over all compared labels of all shapes; None = reported only
    logits_max_abs: float | None  # per head and shape; None = reported only


# fp32: ORT's fused kernels reorder float sums, nothing more: labels must agree and logits match.
# Reduced precisions: embedding cosine limits that a correct export of all-MiniLM-L6-v2 stays inside
# (measured: int8-dynamic min 0.977, int8-static min 0.96, fp16 min 0.99999 -- see README, Export) and a
# broken graph does not (int8-static with the FFN output quantized: min 0.70). Label agreement is
# bounded on the rows that are one whole real sentence; over all rows it is only reported: single
# word-pieces and texts cut mid-sentence leave heads on near-ties (the real multitask checkpoint in
# int8-static: 72.5% of intent labels equal over all parity rows, 99% on its validation data).
# The reduced-precision limits are floors against broken graphs; the accuracy guard judges accuracy.
PARITY_BOUNDS: dict[Precision, ParityBounds] = {
    Precision.FP32: ParityBounds(0.9999, 0.99999, 0.99, 1e-3),
    Precision.FP16: ParityBounds(0.995, 0.999, 0.97, None),
    Precision.INT8_DYNAMIC: ParityBounds(0.96, 0.985, 0.80, None),
    Precision.INT8_STATIC_CPU: ParityBounds(0.96, 0.985, 0.80, None),
    Precision.INT8_STATIC: ParityBounds(0.93, 0.97, 0.75, None),
}


def load_sentences(path: Path, *, limit: int | None = None) -> list[str]:
    """Real sentences from a text file, one a line (blank lines skipped, duplicates dropped).

    With ``limit``, that many lines spread evenly over the file.
    """
    return read_sentences(
        path,
        dedupe=True,
        limit=limit,
        not_found="sentence file not found (one real sentence a line)",
        empty="no sentences (the file is empty or blank; expected one sentence a line)",
    )


def parity_lengths(max_seq_len: int) -> dict[str, int]:
    """Sequence lengths of the parity cases, by name (``1``, ``short``, ``long``, ``max``)."""
    short = max(2, min(16, max_seq_len // 4))
    long = max(short + 1, min(96, max_seq_len // 2))
    out: dict[str, int] = {}
    for name, value in (("1", 1), ("short", short), ("long", long), ("max", max_seq_len)):
        if value <= max_seq_len and value not in out.values():
            out[name] = value
    return out


def trace_length(max_seq_len: int) -> int:
    """A tracing length that no parity case uses."""
    used = set(parity_lengths(max_seq_len).values())
    for n in _TRACE_CANDIDATES:
        if n <= max_seq_len and n not in used:
            return n
    return max(2, max_seq_len - 1)


@dataclass(frozen=True, slots=True)
class ParityCase:
    batch_size: int
    length_name: str
    feeds: dict[str, np.ndarray]  # int64 (B, T)
    real: np.ndarray  # bool (B, T): real word-pieces (not padding, not special tokens)
    whole: np.ndarray  # bool (B,): the row is one whole real sentence (not cut, joined or a lone piece)

    @property
    def label(self) -> str:
        return f"b{self.batch_size}/{self.length_name}"


def build_cases(
    tokenizer: Any, sentences: Sequence[str], *, max_seq_len: int, inputs: Sequence[str], pad_id: int
) -> list[ParityCase]:
    """Parity batches from real sentences with the bundle's tokenizer (a ``tokenizers.Tokenizer``)."""
    if not sentences:
        raise DataError("parity needs at least one real sentence")
    tok = tokenizer
    cases: list[ParityCase] = []
    offset = 0
    for length_name, length in parity_lengths(max_seq_len).items():
        for batch in BATCH_SIZES:
            rows: list[tuple[list[int], list[int], list[int]]] = []  # ids, type ids, special mask
            whole = np.zeros(batch, dtype=bool)
            for r in range(batch):
                start = (offset + r) % len(sentences)
                if length == 1:
                    enc = tok.encode(sentences[start])
                    first = next(
                        (i for i, s in zip(enc.ids, enc.special_tokens_mask, strict=True) if not s),
                        enc.ids[0],
                    )
                    rows.append(([first], [0], [0]))
                    continue
                tok.enable_truncation(max_length=length)
                if r % 2 == 0:  # real text cut to exactly `length`
                    parts, i = [], start
                    while True:
                        parts.append(sentences[i % len(sentences)])
                        enc = tok.encode(" ".join(parts))
                        if len(enc.ids) >= length or len(parts) > 4 * length:
                            break
                        i += 1
                else:  # one sentence, padded (or truncated) to `length`
                    enc = tok.encode(sentences[start])
                    whole[r] = not enc.overflowing
                tok.no_truncation()
                rows.append((list(enc.ids), list(enc.type_ids), list(enc.special_tokens_mask)))
            offset += batch
            width = max(len(ids) for ids, _, _ in rows)
            ids = np.full((batch, width), pad_id, dtype=np.int64)
            types = np.zeros((batch, width), dtype=np.int64)
            mask = np.zeros((batch, width), dtype=np.int64)
            real = np.zeros((batch, width), dtype=bool)
            for b, (row_ids, row_types, special) in enumerate(rows):
                n = len(row_ids)
                ids[b, :n], types[b, :n], mask[b, :n] = row_ids, row_types, 1
                real[b, :n] = ~np.asarray(special, dtype=bool)
            all_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds = {k: all_feeds[k] for k in inputs}
            cases.append(ParityCase(batch, length_name, feeds, real, whole))
    return cases


# ---------------------------------------------------------------------------------------------- comparison
@dataclass(frozen=True, slots=True)
class HeadStats:
    max_abs_diff: float
    scale: float  # max(1, max |torch logit|)
    agree: int  # all rows
    compared: int
    agree_whole: int  # rows that are one whole real sentence
    compared_whole: int


def compare_outputs(
    ref: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    heads: Sequence[tuple[str, str]],
    real: np.ndarray,
    whole: np.ndarray | None = None,
    *,
    embedding: bool = True,
) -> dict[str, Any]:
    """Figures for one batch. ``heads`` = (name, kind) pairs; kind ``token_classification`` or not.

    ``whole`` (B,) marks rows that are whole real sentences: label agreement is also counted on them alone.
    """
    whole = np.ones(real.shape[0], dtype=bool) if whole is None else whole
    out: dict[str, Any] = {}
    if embedding:
        a, b = ref["embedding"].astype(np.float64), got["embedding"].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        out["embedding"] = {"cos": cos, "max_abs_diff": float(np.abs(a - b).max())}
    for name, kind in heads:
        r, g = ref[name].astype(np.float64), got[name].astype(np.float64)
        if kind == "token_classification":
            keep = real & whole[:, None]
            r, g, in_whole = r[real], g[real], keep[real]  # (N_real_tokens, L)
        else:
            in_whole = whole
        same = r.argmax(-1) == g.argmax(-1)
        stats = HeadStats(
            max_abs_diff=float(np.abs(r - g).max()) if r.size else 0.0,
            scale=float(max(1.0, np.abs(r).max())) if r.size else 1.0,
            agree=int(same.sum()),
            compared=int(r.shape[0]),
            agree_whole=int(same[in_whole].sum()),
            compared_whole=int(in_whole.sum()),
        )
        out[name] = stats
    return out


def run_parity(
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    candidates: Mapping[str, tuple[Precision, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]],
    cases: Sequence[ParityCase],
    heads: Sequence[tuple[str, str]],
    *,
    embedding: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every case through the reference and each candidate; per-candidate summaries (JSON-ready)."""
    per: dict[str, dict[str, Any]] = {key: {"cases": []} for key in candidates}
    cos_all: dict[str, list[np.ndarray]] = {key: [] for key in candidates}
    head_tot: dict[str, dict[str, list[float]]] = {key: {} for key in candidates}
    for case in cases:
        ref = reference(case.feeds)
        for key, (_, run) in candidates.items():
            stats = compare_outputs(ref, run(case.feeds), heads, case.real, case.whole, embedding=embedding)
            row: dict[str, Any] = {"case": case.label, "shape": list(case.feeds["input_ids"].shape)}
            if embedding:
                cos = stats["embedding"]["cos"]
                cos_all[key].append(cos)
                row["embedding"] = {
                    "cos_min": float(cos.min()),
                    "cos_mean": float(cos.mean()),
                    "max_abs_diff": stats["embedding"]["max_abs_diff"],
                }
            for name, _ in heads:
                h: HeadStats = stats[name]
                row[name] = {
                    "max_abs_diff": h.max_abs_diff,
                    "relative_max_abs_diff": h.max_abs_diff / h.scale,
                    "label_agreement": h.agree_whole / h.compared_whole if h.compared_whole else None,
                    "labels_compared": h.compared_whole,
                    "label_agreement_all_rows": h.agree / h.compared if h.compared else None,
                    "labels_compared_all_rows": h.compared,
                }
                tot = head_tot[key].setdefault(name, [0.0] * 6)
                tot[0] = max(tot[0], h.max_abs_diff)
                tot[1] = max(tot[1], h.max_abs_diff / h.scale)
                tot[2] += h.agree_whole
                tot[3] += h.compared_whole
                tot[4] += h.agree
                tot[5] += h.compared
            per[key]["cases"].append(row)
        if progress:
            progress(case.label)
    for key, (precision, _) in candidates.items():
        summary: dict[str, Any] = {"precision": precision.value}
        if embedding:
            cos = np.concatenate(cos_all[key])
            summary["embedding"] = {
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                "max_abs_diff": max(r["embedding"]["max_abs_diff"] for r in per[key]["cases"]),
                "rows": int(cos.size),
            }
        summary["heads"] = {
            name: {
                "max_abs_diff": t[0],
                "relative_max_abs_diff": t[1],
                "label_agreement": t[2] / t[3] if t[3] else None,
                "labels_compared": int(t[3]),
                "label_agreement_all_rows": t[4] / t[5] if t[5] else None,
                "labels_compared_all_rows": int(t[5]),
            }
            for name, t in head_tot[key].items()
        }
        per[key] = {**summary, "cases": per[key]["cases"]}
    return per


def check_bounds(key: str, result: Mapping[str, Any], bounds: ParityBounds) -> list[str]:
    """Violations of ``bounds`` in one candidate's result (empty = within bounds)."""
    bad: list[str] = []
    emb = result.get("embedding")
    if emb is not None:
        for row in result["cases"]:
            if row["embedding"]["cos_min"] < bounds.embedding_cos_min:
                bad.append(
                    f"{key} {row['case']}: embedding cosine min {row['embedding']['cos_min']:.5f} "
                    f"< {bounds.embedding_cos_min}"
                )
        if emb["cos_mean"] < bounds.embedding_cos_mean:
            bad.append(f"{key}: embedding cosine mean {emb['cos_mean']:.5f} < {bounds.embedding_cos_mean}")
    for name, head in result["heads"].items():
        agreement = head["label_agreement"]
        if (
            agreement is not None
            and bounds.label_agreement is not None
            and agreement < bounds.label_agreement
        ):
            bad.append(
                f"{key} head {name!r}: label agreement on whole sentences {agreement:.4f} "
                f"< {bounds.label_agreement}"
            )
        if bounds.logits_max_abs is not None:
            for row in result["cases"]:
                rel = row[name]["relative_max_abs_diff"]
                if rel > bounds.logits_max_abs:
                    bad.append(
                        f"{key} {row['case']} head {name!r}: max abs logit diff {row[name]['max_abs_diff']:.3g} "
                        f"({rel:.3g} of the logit scale) > {bounds.logits_max_abs}"
                    )
    return bad


def bounds_dict(precision: Precision) -> dict[str, Any]:
    return asdict(PARITY_BOUNDS[precision])


def sentence_batches(
    tokenizer: TextTokenizer, sentences: Sequence[str], *, batch_size: int = 32
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Real sentences as the runtime feeds them (its own tokenizer: truncated at ``max_seq_len``, padded
    per batch).

    Returns (feeds, real) pairs; ``real`` marks word-pieces that are neither padding nor special.
    """
    encodings, _ = tokenizer.encode(list(sentences))
    out = []
    for start in range(0, len(encodings), batch_size):
        chunk = encodings[start : start + batch_size]
        feeds = tokenizer.pad(chunk)
        real = np.zeros(feeds["input_ids"].shape, dtype=bool)
        for b, e in enumerate(chunk):
            real[b, : len(e)] = ~np.asarray(e.special_tokens_mask, dtype=bool)
        out.append((feeds, real))
    return out


def check_tokenizer(
    hf_tokenizer: Any, bundle_tokenizer: Any, sentences: list[str], max_len: int
) -> list[str]:
    """The bundle's tokenizer.json must give the ids the torch model was fed."""
    want = hf_tokenizer(sentences, truncation=True, max_length=max_len)["input_ids"]
    bundle_tokenizer.enable_truncation(max_length=max_len)
    try:
        got = [e.ids for e in bundle_tokenizer.encode_batch(sentences)]
    finally:
        bundle_tokenizer.no_truncation()
    bad = [i for i, (a, b) in enumerate(zip(want, got, strict=True)) if list(a) != list(b)]
    if bad:
        return [
            f"tokenizer.json: ids differ from the checkpoint tokenizer's on {len(bad)} of "
            f"{len(sentences)} sentences (first: {sentences[bad[0]]!r})"
        ]
    return []


LENGTH_DOC = (
    "'1': the first word-piece of a real sentence alone (no special tokens); short/long/max: even rows "
    "are real text cut to exactly that many tokens, odd rows one real sentence truncated or padded"
)


def parity_document(
    pool: list[str],
    source: Path | None,
    max_len: int,
    trace_shape: tuple[int, int],
    variants: Sequence[Variant],
    results: dict[str, dict[str, Any]],
    violations: list[str],
    enforced: bool,
) -> dict[str, Any]:
    return {
        "format": "mtst-parity",
        "format_version": 1,
        "reference": "torch fp32 (eval mode)",
        "source": str(source) if source else None,
        "sentences": pool,
        "batch_sizes": list(BATCH_SIZES),
        "lengths": parity_lengths(max_len),
        "length_definitions": LENGTH_DOC,
        "trace_shape": list(trace_shape),
        "bounds": {v.key: asdict(PARITY_BOUNDS[v.precision]) for v in variants},
        "variants": results,
        "violations": violations,
        "enforced": enforced,
    }
