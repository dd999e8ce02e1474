"""mtst checkpoints: a directory of named parts, no pickle anywhere.

::

    ckpt/
      mtst.json           # format version, backbone, pooling, max_seq_len, tasks + labels, config, provenance
      model.safetensors   # every weight of MultiTaskModel (encoder.* and heads.*)
      encoder/config.json # the Hugging Face config of the encoder (rebuilt with from_config)
      tokenizer/          # tokenizer.json and friends (save_pretrained)

Training adds its resumable state beside these (see :mod:`mtst.train_state`). Every directory is
written into a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mtst.errors import CheckpointError
from mtst.runtime.fsutil import atomic_directory

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_model",
    "read_meta",
    "save_model",
    "write_model_files",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mtst-checkpoint"
CHECKPOINT_VERSION = 1
META = "mtst.json"
WEIGHTS = "model.safetensors"


def _versions() -> dict[str, str]:
    import torch
    import transformers

    import mtst

    return {"mtst": mtst.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


def write_model_files(model: Any, directory: Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write the model's parts into an existing (temporary) directory."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    model.encoder.config.save_pretrained(str(directory / "encoder"))
    model.tokenizer.save_pretrained(str(directory / "tokenizer"))
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "backbone": model.backbone,
        "pooling": model.pooling.value,
        "max_seq_len": model.max_seq_len,
        "embedding_dim": model.hidden_size,
        "input_names": list(model.input_names),
        "tasks": [t.to_dict() for t in model.tasks.values()],
        "versions": _versions(),
        **(extra or {}),
    }
    (directory / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def save_model(model: Any, path: Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as a checkpoint at ``path`` (replacing an older one there, atomically)."""
    with atomic_directory(path, overwrite=True) as tmp:
        write_model_files(model, tmp, extra=extra)
    logger.info("saved checkpoint %s", path)
    return path


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


def load_model(path: Path) -> Any:
    """Rebuild a MultiTaskModel from a checkpoint directory, offline, weights-only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec

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
    model = MultiTaskModel(
        encoder,
        tokenizer,
        [TaskSpec.from_dict(t) for t in meta["tasks"]],
        pooling=meta["pooling"],
        max_seq_len=meta["max_seq_len"],
        backbone=meta.get("backbone", "unknown"),
    )
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / WEIGHTS}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path / WEIGHTS}: weights do not fit the model described in {META}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.eval()
    return model
