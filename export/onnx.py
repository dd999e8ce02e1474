"""torch -> ONNX: the multi-task model as graphs with dynamic ``batch`` and ``sequence`` axes.

Graphs (``GraphKind``), with the I/O names of the bundle contract (docs/architecture.md, Contract 3):

- ``single``: ``input_ids``, ``attention_mask`` [, ``token_type_ids``] -> ``embedding`` + one output
  per head, named like the head;
- ``encoder``: the same inputs -> ``embedding`` [+ ``token_states`` when a token head exists];
- ``heads``: ``embedding`` -> the sentence heads; ``token_heads``: ``token_states`` -> the token heads.

The TorchScript exporter (``dynamo=False``) is used on purpose: with torch 2.13 ONNX Runtime's
transformer optimizer fuses Attention and EmbedLayerNormalization only on its graphs (see DESIGN.md,
known traps). The tracing input has batch :data:`TRACE_BATCH` and a length chosen by the caller so
that parity checks run at shapes the tracer never saw.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtst.errors import ConfigError, ParityError
from mtst.tasks import TaskKind

__all__ = [
    "DEFAULT_OPSET",
    "OPSET_RANGE",
    "TRACE_BATCH",
    "GraphKind",
    "check_opset",
    "export_graph",
    "graph_io",
]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# The TorchScript exporter of torch 2.13 writes opsets 7..20; below 14 ORT's BERT fusions do not
# all apply (and LayerNormalization is a single op only from 17 on).
OPSET_RANGE = (14, 20)
TRACE_BATCH = 2  # parity runs at batch sizes 1, 7 and 32
EMBEDDING = "embedding"
TOKEN_STATES = "token_states"


class GraphKind(str, Enum):
    SINGLE = "single"
    ENCODER = "encoder"
    HEADS = "heads"
    TOKEN_HEADS = "token_heads"


def check_opset(opset: int) -> int:
    lo, hi = OPSET_RANGE
    if isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi:
        raise ConfigError(f"opset {opset!r}: expected an integer in {lo}..{hi} (TorchScript exporter)")
    return opset


def _head_names(model: Any, kind: TaskKind | None) -> list[str]:
    return [t.name for t in model.task_list(kind)]


def graph_io(model: Any, kind: GraphKind) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(inputs, outputs) of a graph of ``kind`` for ``model``, in graph order."""
    has_token_head = bool(model.task_list(TaskKind.TOKEN))
    if kind is GraphKind.SINGLE:
        return tuple(model.input_names), (EMBEDDING, *_head_names(model, None))
    if kind is GraphKind.ENCODER:
        return tuple(model.input_names), (EMBEDDING, TOKEN_STATES) if has_token_head else (EMBEDDING,)
    if kind is GraphKind.HEADS:
        return (EMBEDDING,), tuple(_head_names(model, TaskKind.SENTENCE))
    return (TOKEN_STATES,), tuple(_head_names(model, TaskKind.TOKEN))


class _Graph(nn.Module):
    """Wraps the model so that the traced outputs are exactly the contract's outputs, in order."""

    def __init__(self, model: Any, kind: GraphKind, *, expose_states: bool = False) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.input_names, self.output_names = graph_io(model, kind)
        if (
            expose_states
            and kind in (GraphKind.SINGLE, GraphKind.ENCODER)
            and TOKEN_STATES not in self.output_names
        ):
            self.output_names = (*self.output_names, TOKEN_STATES)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.kind is GraphKind.HEADS:
            out = self.model.run_heads(inputs[0], None, self.output_names)
            return tuple(out[n] for n in self.output_names)
        if self.kind is GraphKind.TOKEN_HEADS:
            out = self.model.run_heads(None, inputs[0], self.output_names)
            return tuple(out[n] for n in self.output_names)
        feeds = dict(zip(self.input_names, inputs, strict=True))
        states, embedding = self.model.encode_tokens(**feeds)  # (B, T, H), (B, H)
        extra = (states,) if TOKEN_STATES in self.output_names else ()
        if self.kind is GraphKind.ENCODER:
            return (embedding, *extra)
        heads = [n for n in self.output_names[1:] if n != TOKEN_STATES]
        logits = self.model.run_heads(embedding, states, heads)
        return (embedding, *(logits[n] for n in heads), *extra)


def _trace_inputs(model: Any, kind: GraphKind, trace_len: int) -> tuple[torch.Tensor, ...]:
    """Deterministic tracing input (batch TRACE_BATCH, length ``trace_len``); row 1 carries padding."""
    gen = torch.Generator().manual_seed(0)
    hidden = model.hidden_size
    if kind is GraphKind.HEADS:
        emb = torch.randn(TRACE_BATCH, hidden, generator=gen)
        return (emb / emb.norm(dim=-1, keepdim=True),)
    if kind is GraphKind.TOKEN_HEADS:
        return (torch.randn(TRACE_BATCH, trace_len, hidden, generator=gen),)
    vocab = int(model.encoder.config.vocab_size)
    low = min(1000, vocab // 2)
    ids = torch.randint(low, vocab, (TRACE_BATCH, trace_len), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, max(1, trace_len // 2) :] = 0  # a padded row, so that the mask path is traced as a mask
    tok = model.tokenizer
    if getattr(tok, "cls_token_id", None) is not None:
        ids[:, 0] = tok.cls_token_id
    ids[mask == 0] = int(tok.pad_token_id or 0)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(feeds[n] for n in model.input_names)


def _dynamic_axes(inputs: Sequence[str], outputs: Sequence[str], model: Any) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    token_outputs = {TOKEN_STATES, *_head_names(model, TaskKind.TOKEN)}
    for name in (*inputs, *outputs):
        if name == EMBEDDING or (name in outputs and name not in token_outputs):
            axes[name] = {0: "batch"}
        else:  # token-level tensors: input ids/masks, token states, token-head logits
            axes[name] = {0: "batch", 1: "sequence"}
    return axes


def _all_eval(module: nn.Module) -> list[str]:
    return [name or "<root>" for name, m in module.named_modules() if m.training]


def export_graph(
    model: Any, path: Path, kind: GraphKind, *, opset: int, trace_len: int, expose_states: bool = False
) -> None:
    """Export one graph of ``model`` (a MultiTaskModel) to ``path`` (I/O names: :func:`graph_io`).

    ``expose_states`` adds the ``token_states`` output to a single/encoder graph: a *work* graph whose
    quantizers must tell the encoder from the heads (:func:`mtst.export.quantize.strip_outputs`
    removes it again where the contract has no such output).

    The model is put in ``eval()`` (dropout off) and checked to still be there after the export:
    ``torch.onnx.export`` restores the wrapper's training flag afterwards, and a reference left in
    training mode would make every parity check meaningless.
    """
    check_opset(opset)
    wrapper = _Graph(model, kind, expose_states=expose_states).eval()
    inputs, outputs = wrapper.input_names, wrapper.output_names
    if not outputs:
        raise ConfigError(f"graph {kind.value!r}: the model has no head for it (tasks: {list(model.tasks)})")
    args = _trace_inputs(model, kind, trace_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, and the tracer warns about
        # Python-level shape arithmetic; neither changes the graph (parity checks it).
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=_dynamic_axes(inputs, outputs, model),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    still_training = _all_eval(wrapper)
    if still_training:
        raise ParityError(f"after export, modules are in training mode (dropout on): {still_training[:5]}")
    logger.info("exported %s graph to %s (opset %d)", kind.value, path, opset)
