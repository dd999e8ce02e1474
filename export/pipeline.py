"""Checkpoint -> bundle: ``export_bundle``, and the finish step it shares with ``export_heads``.

:func:`export_bundle` runs four named steps, all inside a temporary sibling of ``out`` that is renamed
into place only at the end (``mtst.runtime.fsutil.atomic_directory``; a killed export leaves no bundle
at ``out``):

1. **sentences** (:func:`mtst.export.sentences.export_sentences`): real sentences for parity, for
   the guard's label agreement and for int8-static calibration;
2. **graphs** (:func:`mtst.export.graphs.work_graphs`): ``tokenizer.json`` (truncation and padding
   off), torch -> ONNX (TorchScript exporter, dynamic axes, traced at a shape no parity case uses),
   fusion with ORT's transformer optimizer (unless ``optimize=False``);
3. **one variant** per precision (:func:`mtst.export.graphs.make_variant`); reduced precisions go
   through the accuracy guard, which may keep sensitive node groups in fp32 or refuse;
4. **finish** (:func:`finish`, also the end of :func:`mtst.export.export_heads`): parity of the saved
   graphs against torch fp32 (``parity.json``), enforced unless ``parity_check=False``;
   ``manifest.json`` with every file's sha256; then the runtime's verification, which reuses those
   hashes instead of hashing every file again.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, ParityError
from mtst.runtime.bundle import verify_bundle
from mtst.runtime.fsutil import atomic_directory, atomic_write_json
from mtst.runtime.manifest import MANIFEST_NAME, Layout, Manifest, Precision, Variant
from mtst.runtime.tokenize import TextTokenizer
from mtst.tasks import TaskKind

from .bundle import (
    PARITY_FILE,
    TOKENIZER_FILE,
    ExportReport,
    build_provenance,
    bundle_tokenizer,
    draft_manifest,
    encoder_fingerprint,
    guard_mode,
    head_infos,
    parse_precisions,
    share_modes,
    variant_report,
    with_files,
    with_parity,
    write_tokenizer,
)
from .graphs import WorkGraphs, make_variant, work_graphs
from .guard import (
    DEFAULT_EVAL_LIMIT,
    DEFAULT_MAX_METRIC_DROP,
    DEFAULT_MIN_LABEL_AGREEMENT,
    EvalSet,
    GuardOptions,
    GuardResult,
    Outputs,
    Scorer,
    evaluation_sets,
)
from .onnx import DEFAULT_OPSET, TRACE_BATCH, check_opset
from .parity import (
    PARITY_BOUNDS,
    build_cases,
    check_bounds,
    check_tokenizer,
    load_sentences,
    parity_document,
    run_parity,
    sentence_batches,
    trace_length,
)
from .runners import OrtRunner, TorchRunner
from .sentences import ExportSentences, export_sentences

__all__ = ["check_out", "export_bundle", "finish"]

logger = logging.getLogger(__name__)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if out.exists() and not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not a bundle; refusing to replace it")


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    quantize: str | Precision | Iterable[str | Precision] = "none",
    split: bool = False,
    optimize: bool = True,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    parity_check: bool = True,
    parity_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    eval_data: Mapping[str, str | Path] | None = None,
    eval_limit: int | None = DEFAULT_EVAL_LIMIT,
    accuracy_guard: bool = True,
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP,
    min_label_agreement: float = DEFAULT_MIN_LABEL_AGREEMENT,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export the mtst checkpoint at ``checkpoint`` as a bundle at ``out`` (see the module docstring).

    ``quantize``: ``none``/``fp32``, ``int8`` (dynamic, per-channel), ``int8-static`` (QDQ) or
    ``fp16``, or several of them -> one variant each. ``split``: ``encoder.onnx`` + ``heads.onnx``
    (+ ``token_heads.onnx``) instead of one ``model.onnx``.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    precisions = parse_precisions(quantize)
    check_opset(opset)
    check_out(out, overwrite)
    guard = GuardOptions(accuracy_guard, max_metric_drop, min_label_agreement, eval_data, eval_limit)
    calib_file = load_sentences(Path(calibration_data)) if calibration_data is not None else None
    meta, model = _load(checkpoint, split=split)
    tasks = dict(model.tasks)
    fingerprint = encoder_fingerprint(checkpoint)
    needs_guard = guard.enabled and bool(tasks)
    eval_sets = evaluation_sets(meta, tasks, guard) if needs_guard else {}
    sentences = export_sentences(
        meta, tasks, eval_sets, precisions, parity_data, calib_file, required=parity_check or needs_guard
    )
    trace_len = trace_length(model.max_seq_len)
    options = {
        "quantize": [p.value for p in precisions],
        "layout": (Layout.SPLIT if split else Layout.SINGLE).value,
        "optimize": optimize,
        "opset": opset,
        "parity_check": parity_check,
        "accuracy_guard": guard.enabled,
        "max_metric_drop": guard.max_metric_drop,
        "eval_sets": {k: {"source": v.source, "examples": len(v.examples)} for k, v in eval_sets.items()},
        "calibration": str(calibration_data) if calibration_data else None,
    }
    with (
        tempfile.TemporaryDirectory(prefix="mtst-export-") as work_dir,
        atomic_directory(out, overwrite=overwrite) as tmp,
    ):
        write_tokenizer(model.tokenizer, tmp / TOKENIZER_FILE)
        _say(progress, "export: tokenizer written")
        graphs = work_graphs(
            model, Path(work_dir), tmp, split=split, optimize=optimize, opset=opset, trace_len=trace_len
        )
        _say(progress, f"export: ONNX graph written, fusions {graphs.fusions or 'none'}")
        variants, guard_results = _variants(
            model, graphs, precisions, sentences, eval_sets, guard if needs_guard else None, progress
        )
        draft = _draft(model, meta, checkpoint, fingerprint, options)
        report = finish(
            tmp,
            out,
            model,
            variants,
            draft,
            sentences=sentences,
            trace_len=trace_len,
            parity_check=parity_check,
            guard=guard_mode(needs_guard, eval_sets, tasks, given=guard.eval_data or {}),
            guard_results=guard_results,
            progress=progress,
        )
    logger.info("wrote bundle %s (%s)", out, ", ".join(v.key for v in variants))
    return report


# ---------------------------------------------------------------------------------------------- steps
def _load(checkpoint: Path, *, split: bool) -> tuple[dict[str, Any], Any]:
    """The checkpoint's metadata and model (eval mode); a split export needs a sentence head."""
    from mtst.checkpoint import read_meta
    from mtst.model import load_model

    meta = read_meta(checkpoint)
    model = load_model(checkpoint).eval()
    if split and not model.task_list(TaskKind.SENTENCE):
        raise ConfigError(
            f"{checkpoint}: --split needs at least one sentence head (heads.onnx); this checkpoint has "
            f"{[f'{t.name} ({t.kind.value})' for t in model.tasks.values()] or 'no heads'}: "
            "export the single layout"
        )
    return meta, model


def _variants(
    model: Any,
    graphs: WorkGraphs,
    precisions: Sequence[Precision],
    sentences: ExportSentences,
    eval_sets: Mapping[str, EvalSet],
    guard: GuardOptions | None,
    progress: Callable[[str], None] | None,
) -> tuple[list[Variant], dict[Precision, GuardResult]]:
    """The variant step once per precision, through the accuracy guard unless ``guard`` is None; returns
    the variants and the guard's results by precision.

    Calibration batches and the guard's label-agreement batches (tasks without validation data) are
    the real sentences tokenized by the runtime's own tokenizer on the bundle's ``tokenizer.json``.
    """
    tokenizer = TextTokenizer.from_file(
        graphs.bundle / TOKENIZER_FILE,
        max_seq_len=model.max_seq_len,
        pad_token_id=_pad_id(model),
        input_names=graphs.inputs,
    )
    scorer = None
    if guard is not None:
        scorer = Scorer(
            reference=TorchRunner(model),
            tokenizer=model.tokenizer,
            max_seq_len=model.max_seq_len,
            eval_sets=eval_sets,
            agreement_batches=sentence_batches(tokenizer, sentences.pool),
            tasks=dict(model.tasks),
            options=guard,
        )
    calibration = [b for b, _ in sentence_batches(tokenizer, sentences.calibration, batch_size=16)]
    variants: list[Variant] = []
    results: dict[Precision, GuardResult] = {}
    for precision in precisions:
        _say(progress, f"export: building {precision.value}" + (" and scoring it" if scorer else ""))
        variant, result = make_variant(precision, graphs, scorer=scorer, calibration=calibration)
        variants.append(variant)
        if result is not None:
            results[precision] = result
    return variants, results


def finish(
    bundle: Path,
    out: Path,
    model: Any,
    variants: Sequence[Variant],
    draft: Manifest,
    *,
    sentences: ExportSentences,
    trace_len: int,
    parity_check: bool,
    guard: str,
    guard_results: Mapping[Precision, GuardResult] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """The finish step of every export, in the temporary bundle directory ``bundle`` (renamed to ``out``
    by the caller): parity of the saved graphs against torch fp32 (``parity.json``; violations raise
    ParityError unless ``parity_check`` is off), ``manifest.json`` (``draft`` with the variants and every
    file's sha256), then the runtime's verification of the whole folder."""
    results: dict[str, dict[str, Any]] = {}
    violations: list[str] = []
    if sentences.pool:
        results, violations = _parity(
            bundle, model, variants, draft, sentences, trace_len, parity_check, progress
        )
        if violations and parity_check:
            raise ParityError(
                f"{out}: exported graphs disagree with torch beyond the documented bounds "
                f"(pass --no-parity-check to write the bundle anyway):\n  " + "\n  ".join(violations)
            )
        for msg in violations:
            logger.warning("parity (not enforced): %s", msg)
    variants = [with_parity(v, results.get(v.key)) for v in variants]
    # modes before hashing: a file changed in any way afterwards (chmod too) would be hashed again
    share_modes(bundle)
    manifest = with_files(draft, bundle, variants)
    (bundle / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    verify_bundle(bundle)  # the runtime's checks of the written manifest, with the hashes just computed
    _say(progress, "export: bundle verified")
    guard_results = guard_results or {}
    return ExportReport(
        bundle=out,
        encoder_sha256=draft.encoder_sha256 or "",
        variants=tuple(variant_report(v, guard_results.get(v.precision)) for v in variants),
        parity_checked=parity_check and bool(sentences.pool),
        parity_violations=tuple(violations),
        guard=guard,
    )


def _parity(
    bundle: Path,
    model: Any,
    variants: Sequence[Variant],
    draft: Manifest,
    sentences: ExportSentences,
    trace_len: int,
    enforced: bool,
    progress: Callable[[str], None] | None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every variant against torch fp32 on cases built from the pool, written to ``parity.json``;
    returns (results by variant key, violations)."""
    from tokenizers import Tokenizer

    # the bundle's own tokenizer.json; a heads-only bundle has none (the encoder's bundle has it)
    if draft.tokenizer:
        tokenizer = Tokenizer.from_file(str(bundle / draft.tokenizer))
    else:
        tokenizer = bundle_tokenizer(model.tokenizer)
    max_len, inputs, pool = model.max_seq_len, tuple(model.input_names), sentences.pool
    cases = build_cases(tokenizer, pool, max_seq_len=max_len, inputs=inputs, pad_id=_pad_id(model))
    reference = TorchRunner(model)
    candidates = {v.key: (v.precision, _candidate(bundle, v, inputs, reference)) for v in variants}
    heads = [(t.name, t.kind.value) for t in model.tasks.values()]
    embedding = any(v.layout is not Layout.HEADS for v in variants)
    results = run_parity(
        reference, candidates, cases, heads, embedding=embedding, progress=_case_progress(progress)
    )
    violations = check_tokenizer(model.tokenizer, tokenizer, pool, max_len) if draft.tokenizer else []
    for v in variants:
        violations += check_bounds(v.key, results[v.key], PARITY_BOUNDS[v.precision])
    document = parity_document(
        pool, sentences.source, max_len, (TRACE_BATCH, trace_len), variants, results, violations, enforced
    )
    atomic_write_json(bundle / PARITY_FILE, document)
    return results, violations


# ---------------------------------------------------------------------------------------------- helpers
def _candidate(bundle: Path, variant: Variant, inputs: tuple[str, ...], reference: Outputs) -> Outputs:
    """A variant on ONNX Runtime; a heads-only variant runs on the reference's embeddings and token states."""
    runner = OrtRunner(bundle, variant, inputs)
    if variant.layout is not Layout.HEADS:
        return runner
    return lambda feeds: runner.run_heads(reference(feeds))


def _draft(
    model: Any, meta: Mapping[str, Any], checkpoint: Path, fingerprint: str, options: dict[str, Any]
) -> Manifest:
    """The manifest of a full export, less its variants and files."""
    return draft_manifest(
        inputs=tuple(model.input_names),
        max_seq_len=model.max_seq_len,
        pooling=model.pooling.value,
        embedding_dim=model.hidden_size,
        pad_token_id=_pad_id(model),
        heads=head_infos(model.tasks.values(), with_embedding=True),
        encoder_sha256=fingerprint,
        provenance=build_provenance(meta, checkpoint, options),
    )


def _pad_id(model: Any) -> int:
    return int(model.tokenizer.pad_token_id or 0)


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    logger.info(msg)
    if progress:
        progress(msg)


def _case_progress(progress: Callable[[str], None] | None) -> Callable[[str], None] | None:
    if progress is None:
        return None
    return lambda label: progress(f"parity: {label}")
