"""Bundle parts: precisions, file names, the encoder fingerprint, the tokenizer file, the manifest and
the export report.

The orchestration (checkpoint -> graphs -> variants -> guard -> parity -> bundle) lives in
:mod:`mtst.export.pipeline`; this module holds the pieces it writes with. Verification is the
runtime's own (:func:`mtst.runtime.bundle.verify_bundle`), so export and runtime can never disagree on
what a valid bundle is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtst.errors import CheckpointError, ConfigError
from mtst.runtime.bundle import hash_file
from mtst.runtime.manifest import (
    MANIFEST_NAME,
    PRECISION_ALIASES,
    SCHEMA_VERSION,
    FileEntry,
    HeadInfo,
    HeadKind,
    Layout,
    Manifest,
    Precision,
    Variant,
)
from mtst.tasks import TaskKind

from .tokenizer_tables import TABLES_FILE, write_tables

if TYPE_CHECKING:  # pragma: no cover
    from .guard import GuardResult

__all__ = [
    "ExportReport",
    "VariantReport",
    "build_provenance",
    "bundle_tokenizer",
    "draft_manifest",
    "encoder_fingerprint",
    "graph_file",
    "guard_mode",
    "parse_precisions",
    "variant_report",
    "with_files",
    "with_parity",
    "write_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"
PARITY_FILE = "parity.json"
_SUFFIX = {
    Precision.FP32: "",
    Precision.INT8_DYNAMIC: ".int8",
    Precision.INT8_STATIC: ".int8-static",
    Precision.INT8_STATIC_CPU: ".int8-static-cpu",
    Precision.FP16: ".fp16",
}


def parse_precisions(values: str | Precision | Iterable[str | Precision] | None) -> tuple[Precision, ...]:
    """``--quantize`` values (one or several; see ``PRECISION_ALIASES``, where ``none`` is the fp32
    graph) -> distinct precisions in the order given."""
    if values is None:
        return (Precision.FP32,)
    items = [values] if isinstance(values, (str, Precision)) else list(values)
    if not items:
        return (Precision.FP32,)
    out: list[Precision] = []
    for v in items:
        key = v.value if isinstance(v, Precision) else str(v).strip().lower()
        if key not in PRECISION_ALIASES:
            raise ConfigError(f"quantize {v!r}: expected one of {', '.join(PRECISION_ALIASES)}")
        if PRECISION_ALIASES[key] not in out:
            out.append(PRECISION_ALIASES[key])
    return tuple(out)


def graph_file(role: str, precision: Precision) -> str:
    """File name of a graph: ``model.onnx``, ``model.int8.onnx``, ``encoder.fp16.onnx``; head graphs
    (always fp32) are ``heads.onnx`` / ``token_heads.onnx``."""
    if role in ("heads", "token_heads"):
        return f"{role}.onnx"
    return f"{role}{_SUFFIX[precision]}.onnx"


def encoder_fingerprint(checkpoint: Path) -> str:
    """sha256 over the encoder weights of a checkpoint, independent of precision and graph layout.

    Hashes, for every ``encoder.*`` tensor of ``model.safetensors`` in name order: the name, dtype,
    shape and raw bytes (read straight from the safetensors file, no framework needed).
    """
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint is incomplete (model.safetensors is missing)")
    h = hashlib.sha256(b"mtst-encoder-v1\0")
    with open(path, "rb") as f:
        try:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        except (struct.error, ValueError) as exc:
            raise CheckpointError(f"{path}: not a safetensors file ({exc})") from None
        base = 8 + size
        names = sorted(k for k in header if k.startswith("encoder."))
        if not names:
            raise CheckpointError(f"{path}: no encoder.* tensors (not an mtst checkpoint?)")
        for name in names:
            entry = header[name]
            start, end = entry["data_offsets"]
            h.update(f"{name}\0{entry['dtype']}\0{entry['shape']}\0{end - start}\0".encode())
            f.seek(base + start)
            left = end - start
            while left:
                block = f.read(min(left, 1 << 22))
                if not block:
                    raise CheckpointError(f"{path}: tensor {name!r} is truncated")
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def bundle_tokenizer(hf_tokenizer: Any) -> Any:
    """The checkpoint's fast tokenizer as a ``tokenizers.Tokenizer`` with truncation and padding
    switched off (the packaged MiniLM file pads every input to 128)."""
    from tokenizers import Tokenizer

    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("export needs a fast (Rust) tokenizer in the checkpoint; this one is slow only")
    tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def write_tokenizer(hf_tokenizer: Any, path: Path) -> None:
    """:func:`bundle_tokenizer` saved as ``tokenizer.json``, with the C++ runtime's tables beside it."""
    bundle_tokenizer(hf_tokenizer).save(str(path))
    write_tables(path, path.parent / TABLES_FILE)  # for the C++ runtime (WordPiece tokenizers only)


def head_infos(tasks: Iterable[Any], *, with_embedding: bool) -> tuple[HeadInfo, ...]:
    heads = [HeadInfo("embedding", HeadKind.EMBEDDING, "embedding", ())] if with_embedding else []
    for t in tasks:
        token = t.kind is TaskKind.TOKEN
        # the checkpoint's calibration (mtst.calibrate; 1.0 / 0.0 when it has none)
        calibration = {"temperature": float(t.temperature), "threshold": float(t.threshold)}
        heads.append(
            HeadInfo(
                t.name,
                HeadKind(t.kind.value),
                t.name,
                tuple(t.labels),
                "IOB2" if token else None,
                **calibration,
            )
        )
    return tuple(heads)


def file_entries(root: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file under ``root`` except the manifest itself.

    Hashed through the runtime's remembered hashes (keyed by real path, size, times and inode), so
    that verifying the unchanged bundle afterwards does not hash any file again.
    """
    real_root = Path(os.path.realpath(root))
    out: dict[str, FileEntry] = {}
    for p in sorted(real_root.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            st = p.stat()
            out[p.relative_to(real_root).as_posix()] = FileEntry(hash_file(p, st), st.st_size)
    return out


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    import mtst

    return {
        "mtst": mtst.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
    }


def draft_manifest(
    *,
    inputs: Sequence[str],
    max_seq_len: int,
    pooling: str,
    embedding_dim: int,
    pad_token_id: int,
    heads: tuple[HeadInfo, ...],
    encoder_sha256: str,
    provenance: dict[str, Any],
    tokenizer: bool = True,
) -> Manifest:
    """The manifest without its variants and files (:func:`with_files` adds them at the end)."""
    import mtst

    return Manifest(
        schema_version=SCHEMA_VERSION,
        mtst_version=mtst.__version__,
        inputs=tuple(inputs),
        max_seq_len=max_seq_len,
        pooling=pooling,
        embedding_dim=embedding_dim,
        tokenizer=TOKENIZER_FILE if tokenizer else "",
        pad_token_id=pad_token_id,
        heads=heads,
        variants=(),
        files={},
        encoder_sha256=encoder_sha256,
        provenance=provenance,
    )


def with_files(draft: Manifest, root: Path, variants: Sequence[Variant]) -> Manifest:
    """``draft`` with ``variants`` and the files now in ``root`` (call it last: it hashes them)."""
    return dataclasses.replace(
        draft,
        variants=tuple(variants),
        files=file_entries(root),
        parity=PARITY_FILE if (root / PARITY_FILE).is_file() else None,
        tokenizer_tables=TABLES_FILE if draft.tokenizer and (root / TABLES_FILE).is_file() else None,
    )


def share_modes(root: Path) -> None:
    """Bundles are read by other users and services: plain umask permissions, not the 0600/0700 of the
    temporary files and directory they were written through."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for p in root.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def now_utc() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True, slots=True)
class VariantReport:
    precision: Precision
    layout: Layout
    graphs: dict[str, str]
    bytes: dict[str, int]  # graph file -> size
    fusions: dict[str, int]
    fp32_groups: tuple[str, ...]  # sensitive node groups the guard kept in fp32
    metrics: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # task -> {metric, torch, value, agree}
    parity: dict[str, Any] = field(default_factory=dict)  # embedding + per-head summary

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


@dataclass(frozen=True, slots=True)
class ExportReport:
    bundle: Path
    encoder_sha256: str
    variants: tuple[VariantReport, ...]
    parity_checked: bool
    parity_violations: tuple[str, ...]
    guard: str  # "metrics", "agreement", "mixed" or "off"

    def summary(self) -> str:
        """A plain-text table for the CLI."""
        lines = [f"bundle {self.bundle}  (encoder {self.encoder_sha256[:16]}…)"]
        for v in self.variants:
            fus = ", ".join(f"{k}×{n}" for k, n in v.fusions.items()) or "none"
            lines.append(
                f"  {v.precision.value}/{v.layout.value}: {v.total_bytes / 1e6:.1f} MB "
                f"({', '.join(f'{k} {n / 1e6:.2f} MB' for k, n in v.bytes.items())}); fusions: {fus}; "
                f"fp32 groups: {', '.join(v.fp32_groups) or 'none'}"
            )
            emb = v.parity.get("embedding")
            if emb:
                lines.append(
                    f"    parity: embedding cos min {emb['cos_min']:.5f} mean {emb['cos_mean']:.5f} "
                    f"max|diff| {emb['max_abs_diff']:.2e}"
                )
            for name, h in v.parity.get("heads", {}).items():
                whole, every = h["label_agreement"], h["label_agreement_all_rows"]
                lines.append(
                    f"    parity {name}: max|diff| {h['max_abs_diff']:.3g}, label agreement "
                    f"{'n/a' if whole is None else f'{whole:.4f}'} on whole sentences ({h['labels_compared']}), "
                    f"{'n/a' if every is None else f'{every:.4f}'} on all rows ({h['labels_compared_all_rows']})"
                )
            for task, m in v.metrics.items():
                lines.append(
                    f"    {task}: {m['metric']} {m['value']:.4f} (torch fp32 {m['torch_fp32']:.4f}), "
                    f"labels equal to fp32 {m['label_agreement']:.4f}"
                )
        if self.parity_violations:
            lines.append(f"  parity violations ({'checked' if self.parity_checked else 'NOT enforced'}):")
            lines.extend(f"    {v}" for v in self.parity_violations)
        lines.append(f"  accuracy guard: {self.guard}")
        return "\n".join(lines)


def with_parity(v: Variant, result: dict[str, Any] | None) -> Variant:
    if result is None:
        return v
    summary = {k: result[k] for k in ("embedding", "heads") if k in result}
    return Variant(v.precision, v.layout, v.graphs, v.opset, {**v.details, "parity": summary})


def variant_report(v: Variant, guard: GuardResult | None) -> VariantReport:
    metrics: dict[str, dict[str, Any]] = {}
    if guard is not None:
        for s in guard.chosen.scores:
            metrics[s.task] = {
                "metric": s.metric,
                "torch_fp32": s.reference,
                "value": s.value,
                "label_agreement": s.agreement,
                "examples": s.examples,
            }
    return VariantReport(
        precision=v.precision,
        layout=v.layout,
        graphs=dict(v.graphs),
        bytes=dict(v.details.get("bytes", {})),
        fusions=dict(v.details.get("fusions", {})),
        fp32_groups=tuple(v.details.get("fp32_groups", ())),
        metrics=metrics,
        parity=dict(v.details.get("parity", {})),
    )


def guard_mode(
    enabled: bool, eval_sets: Mapping[str, Any], tasks: Mapping[str, Any], given: Iterable[str] = ()
) -> str:
    """What the guard judged by; ``given``: tasks whose data came from ``--eval-data`` files (which may
    be any split: the summary calls only the checkpoint's own validation splits validation data)."""
    if not enabled:
        return "off"
    if not eval_sets:
        return "label agreement on real sentences (no validation data)"
    files = sorted(set(eval_sets) & set(given))
    own = sorted(set(eval_sets) - set(files))
    if not files:
        data = "validation data"
    elif not own:
        data = "--eval-data files"
    else:
        data = f"validation data for {own}, --eval-data files for {files}"
    if len(eval_sets) == len(tasks):
        return f"metrics ({data})"
    return (
        f"metrics for {sorted(eval_sets)} ({data}), label agreement for {sorted(set(tasks) - set(eval_sets))}"
    )


def build_provenance(meta: Mapping[str, Any], checkpoint: Path, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "base_encoder": meta.get("backbone"),
        "checkpoint": {
            "path": str(checkpoint.resolve()),
            "run_id": meta.get("run_id"),
            "step": meta.get("step"),
            "metrics": meta.get("metrics"),
        },
        "exported_at": now_utc(),
        "versions": versions(),
        "export_options": options,
        "training_config": meta.get("config"),
    }
