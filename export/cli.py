"""``mtst-export``: click options -> :func:`mtst.export.export_bundle` (or ``export_heads``) -> report."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from mtst.errors import MtstError
from mtst.runtime.manifest import PRECISION_ALIASES

from .guard import DEFAULT_EVAL_LIMIT, DEFAULT_MAX_METRIC_DROP, DEFAULT_MIN_LABEL_AGREEMENT
from .onnx import DEFAULT_OPSET
from .triton_cli import triton_export, triton_options

__all__ = ["main"]


def _path_option(*decls: str, **kwargs: Any) -> Any:
    """A click option that takes a file or folder path (as a ``Path``)."""
    return click.option(*decls, type=click.Path(path_type=Path), **kwargs)


@contextlib.contextmanager
def _log_to_stderr(verbose: int) -> Iterator[None]:
    """mtst's log lines on stderr (-v: info, -vv: debug) for the duration of the command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    mtst_logger = logging.getLogger("mtst")
    mtst_logger.addHandler(handler)
    # some ONNX Runtime tools call logging.basicConfig(): keep our lines from printing twice
    propagate, mtst_logger.propagate = mtst_logger.propagate, False
    mtst_logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        mtst_logger.removeHandler(handler)
        mtst_logger.propagate = propagate


@contextlib.contextmanager
def _progress_line(*, disable: bool) -> Iterator[Callable[[str], None]]:
    """A one-line progress display on stderr (off when stderr is not a terminal); yields its setter."""
    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", disable=disable or not sys.stderr.isatty())

    def progress(msg: str) -> None:
        bar.set_description_str(msg)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def _eval_data(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        task, sep, path = v.partition("=")
        if not sep or not task or not path:
            raise click.BadParameter(f"{v!r}: expected TASK=FILE", param_hint="--eval-data")
        if task in out:
            raise click.BadParameter(f"task {task!r} given twice", param_hint="--eval-data")
        out[task] = path
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@_path_option("-o", "--out", "out", required=True, help="Bundle directory (or Triton repository) to write.")
@click.option(
    "--quantize",
    "quantize",
    multiple=True,
    metavar="|".join(k for k in PRECISION_ALIASES if k not in ("fp32", "int8-dynamic")),
    help="Precision of a variant; repeat for several variants in one bundle (default: none = fp32).",
)
@click.option(
    "--split", is_flag=True, help="encoder.onnx + heads.onnx (+ token_heads.onnx) instead of model.onnx."
)
@click.option("--no-optimize", is_flag=True, help="Skip ONNX Runtime's transformer fusions.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True)
@_path_option(
    "--calibration-data",
    help="int8-static / int8-static-cpu calibration sentences, one a line (default: the tasks' training "
    "sentences).",
)
@_path_option(
    "--parity-data",
    help="Real sentences for parity, one a line (default: $MTST_BENCH_CORPUS or bench/corpus-1000.txt "
    "beside the data root).",
)
@click.option(
    "--eval-data", multiple=True, metavar="TASK=FILE", help="Validation data of a task for the guard."
)
@click.option(
    "--eval-limit",
    type=int,
    default=DEFAULT_EVAL_LIMIT,
    show_default=True,
    help="Validation examples per task the guard scores (seeded sample).",
)
@click.option(
    "--max-metric-drop",
    type=float,
    default=DEFAULT_MAX_METRIC_DROP,
    show_default=True,
    help="Largest drop of any task's metric vs torch fp32 before the guard keeps node groups in fp32 "
    "(or refuses the variant).",
)
@click.option(
    "--min-label-agreement",
    type=float,
    default=DEFAULT_MIN_LABEL_AGREEMENT,
    show_default=True,
    help="Guard threshold for tasks without validation data.",
)
@_path_option(
    "--trt-profiles-from",
    help="Real sentences, one a line: TensorRT shape profiles from their token lengths, into the manifest.",
)
@click.option("--no-accuracy-guard", is_flag=True, help="Do not score variants on validation data.")
@click.option("--no-parity-check", is_flag=True, help="Write the bundle even if parity bounds are exceeded.")
@click.option("--heads-only", is_flag=True, help="Write only the heads (needs --encoder-from).")
@_path_option("--encoder-from", help="Bundle whose encoder the heads are for.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option(
    "--no-progress", is_flag=True, help="No progress line (it is off anyway when stderr is not a terminal)."
)
@click.option("-v", "--verbose", count=True, help="-v: steps and guard attempts, -vv: debug.")
@triton_options
def main(
    checkpoint: Path | None,
    out: Path,
    quantize: tuple[str, ...],
    split: bool,
    no_optimize: bool,
    opset: int,
    calibration_data: Path | None,
    parity_data: Path | None,
    eval_data: tuple[str, ...],
    eval_limit: int,
    max_metric_drop: float,
    min_label_agreement: float,
    no_accuracy_guard: bool,
    no_parity_check: bool,
    heads_only: bool,
    trt_profiles_from: Path | None,
    encoder_from: Path | None,
    overwrite: bool,
    no_progress: bool,
    verbose: int,
    **triton: Any,
) -> None:
    """Export the mtst checkpoint CHECKPOINT as an ONNX bundle (or a Triton repository: --format triton)."""
    from . import export_bundle, export_heads

    if trt_profiles_from is not None and (heads_only or triton["fmt"] == "triton"):
        raise click.UsageError(
            "--trt-profiles-from needs a bundle with an encoder (not --heads-only or triton)"
        )

    with _log_to_stderr(verbose), _progress_line(disable=no_progress) as progress:
        try:
            bundle_options: dict[str, Any] = dict(
                quantize=quantize or ("none",),
                split=split,
                optimize=not no_optimize,
                opset=opset,
                overwrite=overwrite,
                parity_check=not no_parity_check,
                parity_data=parity_data,
                calibration_data=calibration_data,
                eval_data=_eval_data(eval_data),
                eval_limit=eval_limit,
                accuracy_guard=not no_accuracy_guard,
                max_metric_drop=max_metric_drop,
                min_label_agreement=min_label_agreement,
                progress=progress,
            )
            if triton["fmt"] == "triton" or triton["from_bundle"] is not None:
                report = triton_export(checkpoint, out, triton, heads_only=heads_only, **bundle_options)
            elif checkpoint is None:
                raise click.UsageError("Missing argument 'CHECKPOINT'.")
            elif heads_only != (encoder_from is not None):
                raise click.UsageError("--heads-only and --encoder-from go together")
            elif heads_only:
                if quantize or split or eval_data or calibration_data:
                    raise click.UsageError(
                        "--heads-only writes fp32 heads only: drop --quantize/--split/--eval-data"
                    )
                report = export_heads(
                    checkpoint,
                    out,
                    encoder_from=encoder_from,  # type: ignore[arg-type]
                    opset=opset,
                    overwrite=overwrite,
                    parity_check=not no_parity_check,
                    parity_data=parity_data,
                )
            else:
                report = export_bundle(checkpoint, out, **bundle_options)
            profiles = _trt_profiles(out, trt_profiles_from)
        except MtstError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(report.summary())
    if profiles:
        click.echo(profiles)


def _trt_profiles(out: Path, sentences: Path | None) -> str:
    """--trt-profiles-from: the profiles written into the bundle's manifest, as one line."""
    if sentences is None:
        return ""
    from .trt_profiles import add_trt_profiles

    p = add_trt_profiles(out, sentences)
    shapes = "; ".join(f"min {x.min} opt {x.opt} max {x.max}" for x in p.profiles)
    return f"trt_profiles from {p.sentences} sentences (lengths {p.length_quantiles}): {shapes}"
