"""Graph fusion with ONNX Runtime's transformer optimizer.

The optimizer rewrites BERT-family subgraphs into ORT contrib ops (Attention,
EmbedLayerNormalization, BiasGelu, ...). The number of attention heads and the hidden size come from
the encoder's config, never from a default: a wrong value silently gives a wrong Attention op.

The residual adds stay plain ``Add`` + ``LayerNormalization`` by default (``skip_layer_norm=False``):
ONNX Runtime's CPU kernel for the fused SkipLayerNormalization is slow in onnxruntime 1.32 (see
``mtst.runtime.providers.CPU_DISABLED_OPTIMIZERS``, which also keeps ORT from fusing them again when
a CPU session loads the graph); CUDA sessions fuse them at load time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError

__all__ = ["DEFAULT_OPT_LEVEL", "FusionResult", "encoder_geometry", "fuse_graph"]

logger = logging.getLogger(__name__)

# 1 = ORT's basic, provider-independent rewrites (constant folding, redundant nodes) before the
# fusions; higher levels bake CPU-specific layouts into the file.
DEFAULT_OPT_LEVEL = 1


@dataclass(frozen=True, slots=True)
class FusionResult:
    path: Path
    fusions: dict[str, int]  # fused op type -> count (only those applied)
    num_heads: int
    hidden_size: int
    opt_level: int


def encoder_geometry(config: Any) -> tuple[int, int]:
    """(num_attention_heads, hidden_size) of a Hugging Face encoder config (BERT, DistilBERT, ...)."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if not heads or not hidden:
        raise ConfigError(
            f"encoder config ({getattr(config, 'model_type', '?')}): cannot read num_attention_heads "
            f"and hidden_size (got {heads!r}, {hidden!r}); export with --no-optimize"
        )
    if int(hidden) % int(heads):
        raise ConfigError(f"encoder config: hidden_size {hidden} is not a multiple of num_heads {heads}")
    return int(heads), int(hidden)


def fuse_graph(
    src: Path,
    dst: Path,
    *,
    num_heads: int,
    hidden_size: int,
    opt_level: int = DEFAULT_OPT_LEVEL,
    skip_layer_norm: bool = False,
) -> FusionResult:
    """Run the transformer optimizer on ``src`` and save the fused graph to ``dst``.

    ``skip_layer_norm=True`` also fuses the residual adds into SkipLayerNormalization.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    if opt_level not in (0, 1):
        raise ConfigError(f"opt_level {opt_level!r}: expected 0 or 1 (portable across providers)")
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = skip_layer_norm
    options.enable_bias_skip_layer_norm = skip_layer_norm
    optimized = optimize_model(
        str(src),
        model_type="bert",  # ORT's BERT fusions cover the BERT family (RoBERTa, MiniLM, ...)
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=opt_level,
        optimization_options=options,
    )
    fusions = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(dst))
    logger.info("fused %s: %s", src.name, fusions or "nothing")
    return FusionResult(dst, fusions, num_heads, hidden_size, opt_level)
