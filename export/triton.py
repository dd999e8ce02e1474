"""Bundle (or checkpoint) -> Triton Inference Server model repository (``mtst-export --format triton``).

::

    REPO/
      mtst-triton.json                 # what was written, from which bundle, with which options
      <name>/                          # Python backend: raw strings in, per-head answers out
        config.pbtxt                   #   dynamic batching, instance group, engine settings
        1/model.py                     #   adapter to mtst.runtime.triton_io.TextModel
        1/bundle/                      #   the bundle, verified (sha256) when the model loads
      <name>_onnx/                     # ONNX Runtime backend: the bundle's single-layout graph
        config.pbtxt                   #   onnxruntime_onnx, dims -1, optional TensorRT (fp16, cache)
        1/model.onnx
      <name>_tokenizer/                # Python backend: texts -> graph inputs (ensemble step 1)
        config.pbtxt
        1/model.py, 1/tokenizer.json
      <name>_ensemble/                 # text -> <name>_tokenizer -> <name>_onnx -> logits
        config.pbtxt
        1/

The whole repository is written into a temporary sibling of ``REPO`` and renamed into place at
the end, like a bundle. The ``_onnx``, ``_tokenizer`` and ``_ensemble`` models need a bundle with a
single-layout variant (a split-only bundle gets the Python-backend model alone, with a note).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mtst.errors import ConfigError
from mtst.runtime.bundle import Bundle, hash_file, load_bundle
from mtst.runtime.engine import choose_variant
from mtst.runtime.fsutil import atomic_directory, atomic_write_json, atomic_write_text
from mtst.runtime.manifest import MANIFEST_NAME, parse_precision
from mtst.runtime.providers import Provider
from mtst.runtime.triton_io import (
    TEXT,
    TEXT_MODEL_PARAMETERS,
    TensorSpec,
    text_model_outputs,
)

from .bundle import ExportReport, now_utc
from .pbtxt import to_pbtxt
from .triton_config import Device, TritonOptions, model_config, model_file, parameters, tensor
from .triton_onnx import onnx_variant, write_onnx_path

__all__ = [
    "REPOSITORY_FILE",
    "Device",
    "TritonOptions",
    "TritonReport",
    "export_triton",
    "export_triton_from_checkpoint",
]

logger = logging.getLogger(__name__)

REPOSITORY_FILE = "mtst-triton.json"


@dataclass(frozen=True, slots=True)
class TritonReport:
    repository: Path
    models: dict[str, str]  # model name -> role (text, onnx, tokenizer, ensemble)
    bundle_variants: tuple[str, ...]
    onnx_variant: str | None
    notes: tuple[str, ...] = ()
    bundle_report: ExportReport | None = None  # when the bundle was exported from a checkpoint first

    def summary(self) -> str:
        lines = [self.bundle_report.summary(), ""] if self.bundle_report else []
        lines.append(f"triton repository {self.repository}")
        for model, role in self.models.items():
            detail = {
                "text": f"python backend, strings in; bundle variants {', '.join(self.bundle_variants)}",
                "onnx": f"onnxruntime_onnx, {self.onnx_variant}",
                "tokenizer": "python backend, ensemble step 1",
                "ensemble": f"text -> {self._role('tokenizer')} -> {self._role('onnx')}",
            }[role]
            lines.append(f"  {model}/  ({detail})")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _role(self, role: str) -> str:
        return next(m for m, r in self.models.items() if r == role)


# ---------------------------------------------------------------------------------------------- entry points
def check_repository_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if out.exists() and not (out / REPOSITORY_FILE).is_file() and any(out.iterdir()):
        raise ConfigError(
            f"{out}: exists and is not a repository written by mtst-export; refusing to replace it"
        )


def export_triton(
    bundle: str | Path,
    out: str | Path,
    *,
    options: TritonOptions | None = None,
    overwrite: bool = False,
) -> TritonReport:
    """Write the Triton model repository for the bundle at ``bundle`` to ``out`` (module docstring)."""
    opts = options or TritonOptions()
    out = Path(out)
    check_repository_out(out, overwrite)
    b = load_bundle(bundle, verify=True)
    single = onnx_variant(b, opts.onnx_precision)
    notes: list[str] = []
    models: dict[str, str] = {opts.name: "text"}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        copied = _copy_bundle(b, tmp / opts.name / "1" / "bundle")
        _write_text_model(tmp / opts.name, copied, opts)
        if single is None:
            notes.append(
                f"{b.root}: no single-layout variant (it has {[v.key for v in b.manifest.variants]}): "
                f"no {opts.name}_onnx / _tokenizer / _ensemble models (export without --split for them)"
            )
        else:
            notes += write_onnx_path(b, single, tmp, opts)
            models.update(
                {
                    f"{opts.name}_onnx": "onnx",
                    f"{opts.name}_tokenizer": "tokenizer",
                    f"{opts.name}_ensemble": "ensemble",
                }
            )
        atomic_write_json(
            tmp / REPOSITORY_FILE,
            {
                "format": "mtst-triton-repository",
                "format_version": 1,
                "models": models,
                "bundle": {
                    "source": str(b.root),
                    "encoder_sha256": b.manifest.encoder_sha256,
                    "variants": [v.key for v in b.manifest.variants],
                    "mtst_version": b.manifest.mtst_version,
                },
                "onnx_variant": single.key if single else None,
                "options": opts.to_dict(),
                "created": now_utc(),
            },
        )
    for n in notes:
        logger.warning("%s", n)
    logger.info("wrote triton repository %s (%s)", out, ", ".join(models))
    return TritonReport(
        repository=out,
        models=models,
        bundle_variants=tuple(v.key for v in b.manifest.variants),
        onnx_variant=single.key if single else None,
        notes=tuple(notes),
    )


def export_triton_from_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    options: TritonOptions | None = None,
    bundle_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> TritonReport:
    """Export ``checkpoint`` as a bundle (``export_bundle(**bundle_options)``, in a temporary folder),
    then write the repository from it."""
    from .pipeline import export_bundle

    out = Path(out)
    check_repository_out(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="mtst-triton-") as work:
        bundle_report = export_bundle(checkpoint, Path(work) / "bundle", **dict(bundle_options or {}))
        report = export_triton(Path(work) / "bundle", out, options=options, overwrite=overwrite)
    return dataclasses.replace(report, bundle_report=bundle_report)


# ---------------------------------------------------------------------------------------------- writers
def _copy_bundle(b: Bundle, dest: Path) -> Bundle:
    """The bundle's listed files and manifest, copied and verified again at ``dest``."""
    for name in [MANIFEST_NAME, *b.manifest.files]:
        target = dest / PurePosixPath(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(b.path(name), target)
    return load_bundle(dest, verify=True)


def _write_text_model(model_dir: Path, b: Bundle, opts: TritonOptions) -> None:
    params = {k: v for k, v in TEXT_MODEL_PARAMETERS.items() if k != "manifest_sha256"}
    params["providers"] = "cuda,cpu" if opts.device is Device.GPU else "cpu"
    params.update(opts.text_parameters)
    params["manifest_sha256"] = hash_file(b.root / MANIFEST_NAME)
    if params["precision"]:  # fail here, not when the server loads the model
        choose_variant(b, Provider.CPU, precision=parse_precision(params["precision"], "precision"))
    config = model_config(
        model_dir.name,
        opts,
        backend="python",
        max_batch_size=opts.max_batch_size,
        input=[tensor(TensorSpec(TEXT, "TYPE_STRING", (1,)))],
        output=[tensor(s) for s in text_model_outputs(b.manifest)],
    )
    config["parameters"] = parameters(params)
    atomic_write_text(model_dir / "config.pbtxt", to_pbtxt(config))
    atomic_write_text(model_dir / "1" / "model.py", model_file("text"))
