"""Heads-only export: a ``heads`` layout bundle for the encoder of an existing bundle.

After heads are retrained on a frozen encoder, only ``heads.onnx`` (+ ``token_heads.onnx``) change:
a bundle of a few kilobytes that ``Engine.swap_heads`` takes. The checkpoint's encoder fingerprint
must equal the old bundle's ``encoder_sha256``. The bundle ends like every export, with
:func:`mtst.export.pipeline.finish` (parity, manifest, verification).
"""

from __future__ import annotations

from pathlib import Path

from mtst.errors import BundleError, ConfigError
from mtst.runtime.bundle import verify_bundle
from mtst.runtime.fsutil import atomic_directory
from mtst.runtime.manifest import Layout, Manifest, Precision, Variant
from mtst.tasks import TaskKind

from .bundle import ExportReport, build_provenance, draft_manifest, encoder_fingerprint, head_infos
from .graphs import head_graphs
from .onnx import DEFAULT_OPSET, check_opset
from .parity import trace_length
from .pipeline import check_out, finish
from .sentences import parity_sentences

__all__ = ["export_heads"]


def export_heads(
    checkpoint: str | Path,
    out: str | Path,
    *,
    encoder_from: str | Path,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    parity_check: bool = True,
    parity_data: str | Path | None = None,
) -> ExportReport:
    """A ``heads`` layout bundle (kilobytes) for the encoder of the bundle at ``encoder_from``.

    Refused unless the checkpoint's encoder weights hash to that bundle's ``encoder_sha256``: heads
    trained on a frozen backbone are only valid on that backbone.
    """
    from mtst.checkpoint import read_meta
    from mtst.model import load_model

    checkpoint, out, old_dir = Path(checkpoint), Path(out), Path(encoder_from)
    check_opset(opset)
    check_out(out, overwrite)
    old = verify_bundle(old_dir)
    meta = read_meta(checkpoint)
    fingerprint = _same_encoder(checkpoint, old_dir, old)
    model = load_model(checkpoint).eval()
    if model.pooling.value != old.pooling or model.hidden_size != old.embedding_dim:
        raise BundleError(
            f"{checkpoint}: pooling {model.pooling.value!r} / dim {model.hidden_size} differ from {old_dir}'s "
            f"{old.pooling!r} / {old.embedding_dim}"
        )
    if not model.task_list(TaskKind.SENTENCE):
        raise ConfigError(f"{checkpoint}: a heads-only bundle needs at least one sentence head (heads.onnx)")
    sentences = parity_sentences(meta, parity_data, required=parity_check)
    trace_len = trace_length(model.max_seq_len)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        graphs = head_graphs(model, tmp, opset=opset, trace_len=trace_len)
        variant = Variant(
            Precision.FP32,
            Layout.HEADS,
            graphs,
            opset,
            {"bytes": {g: (tmp / g).stat().st_size for g in graphs.values()}},
        )
        draft = draft_manifest(
            inputs=old.inputs,
            max_seq_len=old.max_seq_len,
            pooling=old.pooling,
            embedding_dim=old.embedding_dim,
            pad_token_id=old.pad_token_id,
            heads=head_infos(model.tasks.values(), with_embedding=False),
            encoder_sha256=fingerprint,
            provenance=build_provenance(
                meta,
                checkpoint,
                {
                    "layout": "heads",
                    "encoder_from": str(old_dir.resolve()),
                    "opset": opset,
                    "parity_check": parity_check,
                },
            ),
            tokenizer=False,
        )
        report = finish(
            tmp,
            out,
            model,
            [variant],
            draft,
            sentences=sentences,
            trace_len=trace_len,
            parity_check=parity_check,
            guard="off (heads-only: fp32 heads on the unchanged encoder)",
        )
    return report


def _same_encoder(checkpoint: Path, old_dir: Path, old: Manifest) -> str:
    """The checkpoint's encoder fingerprint, refused unless it is the one the old bundle was exported from."""
    fingerprint = encoder_fingerprint(checkpoint)
    if old.encoder_sha256 != fingerprint:
        raise BundleError(
            f"{checkpoint}: encoder weights hash to {fingerprint}, but {old_dir} was exported from encoder "
            f"{old.encoder_sha256}: heads trained on another encoder cannot run on it (export a full bundle)"
        )
    return fingerprint
