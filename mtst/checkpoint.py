"""mtst checkpoints: a directory of named parts, no pickle anywhere.

::

    ckpt/
      mtst.json           # format version, backbone, pooling, max_seq_len, tasks + labels, config, provenance
      model.safetensors   # every weight of MultiTaskModel (encoder.* and heads.*)
      encoder/config.json # the Hugging Face config of the encoder (rebuilt with from_config)
      tokenizer/          # tokenizer.json and friends (save_pretrained)

This module is the format: it writes and reads the parts and knows nothing of the model class, which
builds itself from them (:func:`mtst.model.load_model`, :meth:`MultiTaskModel.save_pretrained`; the
model imports this module, never the other way). Training adds its resumable state beside these
(see :mod:`mtst.train_state`). Every directory is written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtst.errors import CheckpointError

if TYPE_CHECKING:  # read_meta stays torch-free
    import torch
    from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointParts",
    "read_meta",
    "read_parts",
    "write_parts",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mtst-checkpoint"
CHECKPOINT_VERSION = 1
META = "mtst.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class CheckpointParts:
    """What a checkpoint directory holds, read back: the model is built from these."""

    meta: dict[str, Any]
    encoder: nn.Module  # from its config, weights not loaded yet
    tokenizer: Any  # a transformers fast tokenizer
    weights: dict[str, torch.Tensor]


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import mtst

    return {"mtst": mtst.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_parts(
    directory: Path,
    *,
    weights: Mapping[str, torch.Tensor],
    encoder_config: Any,
    tokenizer: Any,
    meta: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a model's parts into an existing (temporary) directory.

    ``mtst.json`` = format and version, ``meta`` (what the model says of itself), library versions,
    then ``extra`` (training config, metrics, provenance)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    encoder_config.save_pretrained(str(directory / "encoder"))
    tokenizer.save_pretrained(str(directory / "tokenizer"))
    full = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        **meta,
        "versions": _versions(),
        **(extra or {}),
    }
    (directory / META).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n")


def read_meta(path: Path) -> dict[str, Any]:
    """mtst.json of a checkpoint, checked for format and version."""
    path = Path(path)
    meta_file = path / META
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not meta_file.is_file():
        raise CheckpointError(f"{path}: not an mtst checkpoint ({META} is missing)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_file}: invalid JSON ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{meta_file}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{meta_file}: format_version {meta.get('format_version')!r}, this mtst reads {CHECKPOINT_VERSION}"
        )
    for part in (WEIGHTS, "encoder/config.json", "tokenizer"):
        if not (path / part).exists():
            raise CheckpointError(f"{path}: checkpoint is incomplete ({part} is missing)")
    return meta


def read_parts(path: Path) -> CheckpointParts:
    """The parts of a checkpoint, offline, weights-only (the encoder built from its config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    meta = read_meta(path)
    config = AutoConfig.from_pretrained(str(path / "encoder"))
    encoder = (
        AutoModel.from_config(config, add_pooling_layer=False)
        if config.model_type == "bert"
        else (AutoModel.from_config(config))
    )
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"), use_fast=True)
    try:
        weights = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / WEIGHTS}: cannot read weights ({exc})") from None
    return CheckpointParts(meta, encoder, tokenizer, weights)
