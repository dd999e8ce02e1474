"""Heads-only export: a ``heads`` layout bundle for the encoder of an existing bundle.

After heads are retrained on a frozen encoder, only ``heads.onnx`` (+ ``token_heads.onnx``) change:
a bundle of a few kilobytes that ``Engine.swap_heads`` takes. The checkpoint's encoder fingerprint
must equal the old bundle's ``encoder_sha256``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import BundleError, ConfigError, ParityError
from mtst.runtime.fsutil import atomic_directory, atomic_write_json
from mtst.runtime.manifest import MANIFEST_NAME, Layout, Precision, Variant
from mtst.tasks import TaskKind

from .bundle import (
    PARITY_FILE,
    ExportReport,
    build_manifest,
    build_provenance,
    encoder_fingerprint,
    graph_file,
    head_infos,
    share_modes,
    variant_report,
    verify_bundle,
    with_parity,
)
from .onnx import DEFAULT_OPSET, TRACE_BATCH, GraphKind, check_opset, export_graph
from .parity import (
    PARITY_BOUNDS,
    POOL_SIZE,
    build_cases,
    check_bounds,
    load_sentences,
    parity_document,
    run_parity,
    trace_length,
)
from .pipeline import check_out, default_sentence_file
from .runners import OrtRunner, TorchRunner

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
    fingerprint = encoder_fingerprint(checkpoint)
    if old.encoder_sha256 != fingerprint:
        raise BundleError(
            f"{checkpoint}: encoder weights hash to {fingerprint}, but {old_dir} was exported from encoder "
            f"{old.encoder_sha256}: heads trained on another encoder cannot run on it (export a full bundle)"
        )
    model = load_model(checkpoint).eval()
    if model.pooling.value != old.pooling or model.hidden_size != old.embedding_dim:
        raise BundleError(
            f"{checkpoint}: pooling {model.pooling.value!r} / dim {model.hidden_size} differ from {old_dir}'s "
            f"{old.pooling!r} / {old.embedding_dim}"
        )
    if not model.task_list(TaskKind.SENTENCE):
        raise ConfigError(f"{checkpoint}: a heads-only bundle needs at least one sentence head (heads.onnx)")
    tasks = dict(model.tasks)
    sentence_file = Path(parity_data) if parity_data is not None else default_sentence_file(meta)
    if sentence_file is None and parity_check:
        raise ConfigError("no real sentences for parity: pass --parity-data FILE (one sentence a line)")
    pool = load_sentences(sentence_file, limit=POOL_SIZE) if sentence_file is not None else []
    trace_len = trace_length(model.max_seq_len)
    violations: list[str] = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        graphs = {"heads": graph_file("heads", Precision.FP32)}
        export_graph(model, tmp / graphs["heads"], GraphKind.HEADS, opset=opset, trace_len=trace_len)
        if model.task_list(TaskKind.TOKEN):
            graphs["token_heads"] = graph_file("token_heads", Precision.FP32)
            export_graph(
                model, tmp / graphs["token_heads"], GraphKind.TOKEN_HEADS, opset=opset, trace_len=trace_len
            )
        variant = Variant(
            Precision.FP32,
            Layout.HEADS,
            graphs,
            opset,
            {"bytes": {g: (tmp / g).stat().st_size for g in graphs.values()}},
        )
        results: dict[str, dict[str, Any]] = {}
        if pool:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
            tokenizer.no_padding()
            tokenizer.no_truncation()
            inputs = tuple(model.input_names)
            cases = build_cases(
                tokenizer,
                pool,
                max_seq_len=model.max_seq_len,
                inputs=inputs,
                pad_id=int(model.tokenizer.pad_token_id or 0),
            )
            torch_ref = TorchRunner(model)
            ort_heads = OrtRunner(tmp, variant, inputs)

            def candidate(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                return ort_heads.run_heads(torch_ref(feeds))

            heads = [(t.name, t.kind.value) for t in tasks.values()]
            results = run_parity(
                torch_ref, {variant.key: (Precision.FP32, candidate)}, cases, heads, embedding=False
            )
            violations = check_bounds(variant.key, results[variant.key], PARITY_BOUNDS[Precision.FP32])
            atomic_write_json(
                tmp / PARITY_FILE,
                parity_document(
                    pool,
                    sentence_file,
                    model.max_seq_len,
                    (TRACE_BATCH, trace_len),
                    [variant],
                    results,
                    violations,
                    parity_check,
                ),
            )
            if violations and parity_check:
                raise ParityError(f"{out}: heads disagree with torch:\n  " + "\n  ".join(violations))
        variant = with_parity(variant, results.get(variant.key))
        manifest = build_manifest(
            tmp,
            inputs=old.inputs,
            max_seq_len=old.max_seq_len,
            pooling=old.pooling,
            embedding_dim=old.embedding_dim,
            pad_token_id=old.pad_token_id,
            heads=head_infos(tasks.values(), with_embedding=False),
            variants=[variant],
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
        (tmp / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        share_modes(tmp)
        verify_bundle(tmp)
    return ExportReport(
        bundle=out,
        encoder_sha256=fingerprint,
        variants=(variant_report(variant, None),),
        parity_checked=parity_check and bool(pool),
        parity_violations=tuple(violations),
        guard="off (heads-only: fp32 heads on the unchanged encoder)",
    )
