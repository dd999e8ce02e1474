"""The ``--format triton`` options of ``mtst-export`` (kept beside cli.py, which applies them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["triton_export", "triton_options"]


def triton_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--format triton and its settings (docs/deploy.md); main() gets them as ``**triton``."""
    for option in reversed(
        [
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["bundle", "triton"]),
                default="bundle",
                show_default=True,
                help="bundle: an mtst bundle; triton: a Triton model repository (docs/deploy.md).",
            ),
            click.option(
                "--from-bundle",
                type=click.Path(path_type=Path),
                help="--format triton: write the repository for this bundle (instead of CHECKPOINT).",
            ),
            click.option("--name", default="mtst", show_default=True, help="--format triton: model name."),
            click.option(
                "--triton-device",
                type=click.Choice(["cpu", "gpu"]),
                default="cpu",
                show_default=True,
                help="--format triton: instance_group kind.",
            ),
            click.option(
                "--triton-instances",
                type=int,
                default=1,
                show_default=True,
                help="--format triton: instances (per GPU).",
            ),
            click.option(
                "--max-batch-size", type=int, default=64, show_default=True, help="--format triton."
            ),
            click.option(
                "--queue-delay-us",
                type=int,
                default=1000,
                show_default=True,
                help="--format triton: dynamic batching queue delay.",
            ),
            click.option("--no-dynamic-batching", is_flag=True, help="--format triton."),
            click.option(
                "--tensorrt",
                is_flag=True,
                help="--format triton: TensorRT accelerator (fp16, engine cache) on <name>_onnx (GPU).",
            ),
            click.option(
                "--triton-param",
                multiple=True,
                metavar="KEY=VALUE",
                help="--format triton: a parameter of the text model's config.pbtxt, e.g. "
                "min_entity_score=0.5 or intra_op_threads=1 (docs/deploy.md lists them).",
            ),
        ]
    ):
        f = option(f)
    return f


def _key_values(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{v!r}: expected KEY=VALUE", param_hint="--triton-param")
        out[key.strip()] = value.strip()
    return out


def triton_export(
    checkpoint: Path | None, out: Path, triton: dict[str, Any], *, heads_only: bool, **bundle_options: Any
) -> Any:
    """Checks of the --format triton options, then the repository (from --from-bundle or CHECKPOINT)."""
    from .triton import TritonOptions, export_triton, export_triton_from_checkpoint

    from_bundle = triton["from_bundle"]
    if triton["fmt"] != "triton":
        raise click.UsageError("--from-bundle writes a Triton repository: add --format triton")
    if (checkpoint is None) == (from_bundle is None):
        raise click.UsageError("--format triton: give either CHECKPOINT or --from-bundle BUNDLE")
    changed = [k for k in ("split", "eval_data", "calibration_data") if bundle_options[k]]
    if bundle_options["quantize"] != ("none",):
        changed.append("quantize")
    if heads_only or (from_bundle is not None and changed):
        raise click.UsageError(
            "--format triton: --heads-only does not apply, nor do --quantize/--split/--eval-data/"
            "--calibration-data with --from-bundle (the bundle is already exported)"
        )
    options = TritonOptions(
        name=triton["name"],
        device=triton["triton_device"],
        instances=triton["triton_instances"],
        max_batch_size=triton["max_batch_size"],
        dynamic_batching=not triton["no_dynamic_batching"],
        queue_delay_us=triton["queue_delay_us"],
        tensorrt=triton["tensorrt"],
        text_parameters=_key_values(triton["triton_param"]),
    )
    overwrite = bundle_options.pop("overwrite")
    if checkpoint is None:
        return export_triton(from_bundle, out, options=options, overwrite=overwrite)
    return export_triton_from_checkpoint(
        checkpoint, out, options=options, bundle_options=bundle_options, overwrite=overwrite
    )
