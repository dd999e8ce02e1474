"""Checkpoint -> bundle: ``export_bundle`` and the heads-only ``export_heads``.

Steps of :func:`export_bundle`, all inside a temporary sibling of ``out`` that is renamed into
place only at the end (``mtst.runtime.fsutil.atomic_directory``; a killed export leaves no bundle at
``out``):

1. ``tokenizer.json`` (truncation and padding off);
2. torch -> ONNX (TorchScript exporter, dynamic axes, traced at a shape no parity case uses);
3. fusion with ORT's transformer optimizer (unless ``optimize=False``);
4. one variant per precision; reduced precisions go through the accuracy guard, which may keep
   sensitive node groups in fp32 or refuse;
5. parity of the saved graphs against torch fp32 (``parity.json``), enforced unless
   ``parity_check=False``;
6. ``manifest.json`` with every file's sha256, then verification with the runtime's verifier.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError, ParityError
from mtst.runtime.fsutil import atomic_directory, atomic_write_json
from mtst.runtime.manifest import MANIFEST_NAME, Layout, Precision, Variant
from mtst.tasks import TaskKind

from .bundle import (
    PARITY_FILE,
    TOKENIZER_FILE,
    ExportReport,
    build_manifest,
    build_provenance,
    encoder_fingerprint,
    graph_file,
    guard_mode,
    head_infos,
    parse_precisions,
    share_modes,
    variant_report,
    verify_bundle,
    with_parity,
    write_tokenizer,
)
from .fusion import DEFAULT_OPT_LEVEL, encoder_geometry, fuse_graph
from .guard import (
    DEFAULT_EVAL_LIMIT,
    DEFAULT_MAX_METRIC_DROP,
    DEFAULT_MIN_LABEL_AGREEMENT,
    GuardResult,
    Scorer,
    evaluation_sets,
    guarded_build,
)
from .onnx import DEFAULT_OPSET, TRACE_BATCH, GraphKind, check_opset, export_graph
from .parity import (
    PARITY_BOUNDS,
    POOL_SIZE,
    build_cases,
    check_bounds,
    check_tokenizer,
    load_sentences,
    parity_document,
    run_parity,
    sentence_batches,
    trace_length,
)
from .quantize import (
    DEFAULT_FP32_GROUPS,
    GROUP_ORDER,
    STATES,
    available_groups,
    cpu_fp32_fallback_ops,
    quantize_graph,
    strip_outputs,
)
from .runners import OrtRunner, TorchRunner

__all__ = ["check_out", "default_sentence_file", "export_bundle"]

logger = logging.getLogger(__name__)

CALIBRATION_SENTENCES = 256


def default_sentence_file(meta: Mapping[str, Any] | None = None) -> Path | None:
    """The default sample of real sentences: ``$MTST_BENCH_CORPUS``, else ``bench/corpus-1000.txt``
    beside the data root (the checkpoint's ``data_root`` or ``$MTST_DATA_ROOT``)."""
    env = os.environ.get("MTST_BENCH_CORPUS")
    if env and Path(env).is_file():
        return Path(env)
    for root in ((meta or {}).get("data_root"), os.environ.get("MTST_DATA_ROOT")):
        if root:
            candidate = Path(root).expanduser().resolve().parent / "bench" / "corpus-1000.txt"
            if candidate.is_file():
                return candidate
    return None


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if out.exists() and not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not a bundle; refusing to replace it")


def _example_texts(examples: Iterable[Any]) -> list[str]:
    return [ex.text if hasattr(ex, "text") else " ".join(ex.tokens) for ex in examples]


def _spread(items: list[str], n: int) -> list[str]:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


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
    from mtst.checkpoint import read_meta
    from mtst.model import load_model

    checkpoint, out = Path(checkpoint), Path(out)
    precisions = parse_precisions(quantize)
    check_opset(opset)
    check_out(out, overwrite)
    if eval_limit is not None and eval_limit < 1:
        raise ConfigError(f"eval_limit {eval_limit!r}: expected a positive number of examples or None")
    calib_file = load_sentences(Path(calibration_data)) if calibration_data is not None else None
    meta = read_meta(checkpoint)
    model = load_model(checkpoint).eval()
    tasks = dict(model.tasks)
    if split and not model.task_list(TaskKind.SENTENCE):
        raise ConfigError(
            f"{checkpoint}: --split needs at least one sentence head (heads.onnx); this checkpoint has "
            f"{[f'{t.name} ({t.kind.value})' for t in tasks.values()] or 'no heads'}: export the single layout"
        )
    fingerprint = encoder_fingerprint(checkpoint)
    needs_guard = accuracy_guard and bool(tasks)
    eval_sets = evaluation_sets(meta, tasks, eval_data, limit=eval_limit) if needs_guard else {}

    # real sentences: parity pool, label-agreement fallback, calibration fallback
    sentence_file = Path(parity_data) if parity_data is not None else default_sentence_file(meta)
    if sentence_file is not None:
        pool = load_sentences(sentence_file, limit=POOL_SIZE)
    else:
        texts = [t for es in eval_sets.values() for t in _example_texts(es.examples)]
        pool = _spread(list(dict.fromkeys(texts)), POOL_SIZE)
        sentence_file = Path("<validation data>") if pool else None
    if not pool and (parity_check or Precision.INT8_STATIC in precisions or needs_guard):
        raise ConfigError(
            "no real sentences for parity/calibration: pass --parity-data FILE (one sentence a line) "
            "or set MTST_BENCH_CORPUS"
        )
    calibration = calib_file
    if calibration is None and Precision.INT8_STATIC in precisions:
        train_texts = _calibration_from_config(meta, tasks)
        calibration = train_texts or (
            load_sentences(sentence_file, limit=CALIBRATION_SENTENCES)
            if sentence_file and sentence_file.is_file()
            else pool
        )

    layout = Layout.SPLIT if split else Layout.SINGLE
    max_len = model.max_seq_len
    trace_len = trace_length(max_len)
    inputs = tuple(model.input_names)
    pad_id = int(model.tokenizer.pad_token_id or 0)
    has_token = bool(model.task_list(TaskKind.TOKEN))
    guard_results: dict[Precision, GuardResult] = {}

    with (
        tempfile.TemporaryDirectory(prefix="mtst-export-") as work_dir,
        atomic_directory(out, overwrite=overwrite) as tmp,
    ):
        work = Path(work_dir)
        tokenizer = write_tokenizer(model.tokenizer, tmp / TOKENIZER_FILE)
        _say(progress, "export: tokenizer written")

        # ---- torch -> ONNX (+ fusion). Encoder-side work graphs expose token_states for the quantizers.
        core_role = "encoder" if split else "model"
        plain = work / f"{core_role}.plain.onnx"
        export_graph(
            model,
            plain,
            GraphKind.ENCODER if split else GraphKind.SINGLE,
            opset=opset,
            trace_len=trace_len,
            expose_states=True,
        )
        fusions: dict[str, int] = {}
        fused = plain
        if optimize:
            heads_n, hidden = encoder_geometry(model.encoder.config)
            fused = work / f"{core_role}.fused.onnx"
            fusions = fuse_graph(plain, fused, num_heads=heads_n, hidden_size=hidden).fusions
        _say(progress, f"export: ONNX graph written, fusions {fusions or 'none'}")
        head_graphs: dict[str, str] = {}
        if split:
            for kind in (GraphKind.HEADS, GraphKind.TOKEN_HEADS):
                if kind is GraphKind.TOKEN_HEADS and not has_token:
                    continue
                name = graph_file(kind.value, Precision.FP32)
                export_graph(model, tmp / name, kind, opset=opset, trace_len=trace_len)
                head_graphs[kind.value] = name
        strip = [STATES] if (not split or not has_token) else []

        # ---- variants
        torch_ref = TorchRunner(model)
        scorer = None
        if needs_guard:
            agreement = sentence_batches(tokenizer, pool, max_seq_len=max_len, inputs=inputs, pad_id=pad_id)
            scorer = Scorer(
                reference=torch_ref,
                tokenizer=model.tokenizer,
                max_seq_len=max_len,
                eval_sets=eval_sets,
                agreement_batches=agreement,
                tasks=tasks,
                max_metric_drop=max_metric_drop,
                min_label_agreement=min_label_agreement,
            )
        calib_batches = (
            [
                b
                for b, _ in sentence_batches(
                    tokenizer, calibration, max_seq_len=max_len, inputs=inputs, pad_id=pad_id, batch_size=16
                )
            ]
            if calibration
            else []
        )
        work_graphs = _WorkGraphs(
            bundle=tmp,
            plain=plain,
            fused=fused,
            fusions=fusions,
            optimized=optimize,
            core_role=core_role,
            head_graphs=head_graphs,
            strip=tuple(strip),
            layout=layout,
            opset=opset,
            inputs=inputs,
            trace_len=trace_len,
        )
        variants: list[Variant] = []
        for precision in precisions:
            _say(progress, f"export: building {precision.value}" + (" and scoring it" if scorer else ""))
            variant, result = _make_variant(precision, work_graphs, scorer=scorer, calibration=calib_batches)
            variants.append(variant)
            if result is not None:
                guard_results[precision] = result

        # ---- parity on the saved graphs
        heads = [(t.name, t.kind.value) for t in tasks.values()]
        parity_results: dict[str, dict[str, Any]] = {}
        violations: list[str] = []
        if pool:
            cases = build_cases(tokenizer, pool, max_seq_len=max_len, inputs=inputs, pad_id=pad_id)
            candidates = {v.key: (v.precision, OrtRunner(tmp, v, inputs)) for v in variants}
            parity_results = run_parity(
                torch_ref, candidates, cases, heads, progress=_case_progress(progress)
            )
            violations += check_tokenizer(model.tokenizer, tokenizer, pool, max_len)
            for v in variants:
                violations += check_bounds(v.key, parity_results[v.key], PARITY_BOUNDS[v.precision])
            atomic_write_json(
                tmp / PARITY_FILE,
                parity_document(
                    pool,
                    sentence_file,
                    max_len,
                    (TRACE_BATCH, trace_len),
                    variants,
                    parity_results,
                    violations,
                    parity_check,
                ),
            )
            if violations and parity_check:
                raise ParityError(
                    f"{out}: exported graphs disagree with torch beyond the documented bounds "
                    f"(pass --no-parity-check to write the bundle anyway):\n  " + "\n  ".join(violations)
                )
            for msg in violations:
                logger.warning("parity (not enforced): %s", msg)
        variants = [with_parity(v, parity_results.get(v.key)) for v in variants]

        # ---- manifest last (it hashes every file), then the runtime's verifier
        manifest = build_manifest(
            tmp,
            inputs=inputs,
            max_seq_len=max_len,
            pooling=model.pooling.value,
            embedding_dim=model.hidden_size,
            pad_token_id=pad_id,
            heads=head_infos(tasks.values(), with_embedding=True),
            variants=variants,
            encoder_sha256=fingerprint,
            provenance=build_provenance(
                meta,
                checkpoint,
                {
                    "quantize": [p.value for p in precisions],
                    "layout": layout.value,
                    "optimize": optimize,
                    "opset": opset,
                    "parity_check": parity_check,
                    "accuracy_guard": accuracy_guard,
                    "max_metric_drop": max_metric_drop,
                    "eval_sets": {
                        k: {"source": v.source, "examples": len(v.examples)} for k, v in eval_sets.items()
                    },
                    "calibration": str(calibration_data) if calibration_data else None,
                },
            ),
        )
        (tmp / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        share_modes(tmp)
        verify_bundle(tmp)
        _say(progress, "export: bundle verified")

    report = ExportReport(
        bundle=out,
        encoder_sha256=fingerprint,
        variants=tuple(variant_report(v, guard_results.get(v.precision)) for v in variants),
        parity_checked=parity_check and bool(pool),
        parity_violations=tuple(violations),
        guard=guard_mode(needs_guard, eval_sets, tasks),
    )
    logger.info("wrote bundle %s (%s)", out, ", ".join(v.key for v in variants))
    return report


# ---------------------------------------------------------------------------------------------- helpers
@dataclass(frozen=True, slots=True)
class _WorkGraphs:
    """What every variant is made from: the exported (and fused) encoder-side graph and the head graphs."""

    bundle: Path  # the temporary bundle directory
    plain: Path  # exposes token_states
    fused: Path  # == plain without optimization
    fusions: dict[str, int]
    optimized: bool
    core_role: str  # "model" or "encoder"
    head_graphs: dict[str, str]  # split: role -> fp32 head graph file, shared by every variant
    strip: tuple[str, ...]  # work outputs to remove from the final graph
    layout: Layout
    opset: int
    inputs: tuple[str, ...]
    trace_len: int


def _make_variant(
    precision: Precision,
    g: _WorkGraphs,
    *,
    scorer: Scorer | None,
    calibration: list[dict[str, np.ndarray]],
) -> tuple[Variant, GuardResult | None]:
    """Write the graph of one precision into the bundle (through the accuracy guard when on)."""
    name = graph_file(g.core_role, precision)
    dst = g.bundle / name
    src = g.plain if precision is Precision.INT8_STATIC else g.fused
    graphs = {g.core_role: name, **g.head_graphs}
    made: dict[str, Any] = {}

    def build(groups: tuple[str, ...]) -> Path:
        if precision is Precision.FP32:
            shutil.copyfile(src, dst)
            made["options"], made["excluded"] = {}, ()
        else:
            res = quantize_graph(precision, src, dst, exclude_groups=groups, calibration=calibration)
            made["options"], made["excluded"] = res.options, res.excluded_nodes
        if g.strip:
            strip_outputs(dst, g.strip)
        return dst

    def runner(_: Path) -> OrtRunner:
        return OrtRunner(g.bundle, Variant(precision, g.layout, graphs, g.opset), g.inputs)

    result: GuardResult | None = None
    if scorer is not None:
        _, result = guarded_build(
            precision,
            build,
            runner,
            scorer,
            group_order=GROUP_ORDER if precision is not Precision.FP32 else (),
            available_groups=available_groups(src),
            start_groups=DEFAULT_FP32_GROUPS.get(precision, ()),
        )
        fp32_groups = result.chosen.excluded_groups
    else:
        fp32_groups = DEFAULT_FP32_GROUPS.get(precision, ())
        build(fp32_groups)
    static = precision is Precision.INT8_STATIC
    details: dict[str, Any] = {
        "fused": g.optimized and not static,
        "fusions": {} if static else g.fusions,
        "opt_level": DEFAULT_OPT_LEVEL if g.optimized else None,
        "quantization": made["options"],
        "fp32_groups": list(fp32_groups),
        "fp32_nodes": list(made["excluded"]),
        "bytes": {f: (g.bundle / f).stat().st_size for f in sorted(set(graphs.values()))},
        "trace_shape": [TRACE_BATCH, g.trace_len],
        "guard": result.to_dict() if result is not None else {"enabled": False},
    }
    if static:
        details["source_graph"] = "unfused (TensorRT fuses itself and does not read ORT contrib ops)"
    if precision is Precision.FP16:
        details["cpu_fp32_fallback_ops"] = cpu_fp32_fallback_ops(dst)
    return Variant(precision, g.layout, graphs, g.opset, details), result


def _say(progress: Callable[[str], None] | None, msg: str) -> None:
    logger.info(msg)
    if progress:
        progress(msg)


def _case_progress(progress: Callable[[str], None] | None) -> Callable[[str], None] | None:
    if progress is None:
        return None
    return lambda label: progress(f"parity: {label}")


def _calibration_from_config(meta: Mapping[str, Any], tasks: Mapping[str, Any]) -> list[str]:
    """Up to CALIBRATION_SENTENCES real training sentences of the checkpoint's tasks (none without a config)."""
    if not meta.get("config"):
        return []
    from mtst.config import config_from_dict
    from mtst.data import load_examples

    config = config_from_dict(meta["config"])
    data_root = meta.get("data_root") or config.data_root
    texts: list[str] = []
    per_task = max(1, CALIBRATION_SENTENCES // max(1, len(config.tasks)))
    for cfg in config.tasks:
        if cfg.name in tasks:
            examples = load_examples(cfg.train, cfg.kind, data_root=data_root)
            texts += _spread(_example_texts(examples), per_task)
    return texts
