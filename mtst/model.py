"""The multi-task sentence transformer: one shared encoder, pooling, any number of task heads.

One encoder pass gives the embedding and every head's logits::

    model = MultiTaskModel.from_pretrained(tasks=[TaskSpec("intent", "sentence_classification", labels)])
    out = model(**model.tokenize(["Where is my card?"]))
    out.embedding        # (B, H), L2-normalized
    out.logits["intent"] # (B, L)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mtst.backbone import (
    DEFAULT_BACKBONE,
    load_encoder,
    load_tokenizer,
    resolve_backbone,
    sentence_transformers_max_len,
)
from mtst.checkpoint import CheckpointParts, read_parts, write_parts
from mtst.errors import CheckpointError, ConfigError, parse_enum
from mtst.heads import build_head
from mtst.pooling import Pooling, pool_and_normalize
from mtst.runtime.fsutil import atomic_directory
from mtst.tasks import TaskKind, TaskSpec

__all__ = ["MultiTaskModel", "MultiTaskOutput", "load_model", "save_model", "write_model_files"]

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class MultiTaskOutput:
    embedding: torch.Tensor  # (B, H) pooled, L2-normalized
    logits: dict[str, torch.Tensor]  # task -> (B, L) or (B, T, L)
    token_states: torch.Tensor  # (B, T, H) last hidden states


class MultiTaskModel(nn.Module):
    """Encoder + pooling + named task heads. Build it with :meth:`from_pretrained`."""

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        tasks: Sequence[TaskSpec] = (),
        *,
        pooling: Pooling | str = Pooling.MEAN,
        max_seq_len: int = 256,
        backbone: str = DEFAULT_BACKBONE,
    ) -> None:
        super().__init__()
        self.encoder: Any = encoder
        self.tokenizer = tokenizer
        self.pooling = parse_enum(Pooling, pooling, "pooling")
        limit = int(getattr(encoder.config, "max_position_embeddings", max_seq_len) or max_seq_len)
        if not 2 <= int(max_seq_len) <= limit:
            raise ConfigError(
                f"max_seq_len {max_seq_len!r}: expected 2..{limit} (the encoder's position limit)"
            )
        self.max_seq_len = int(max_seq_len)
        self.backbone = backbone
        self.tasks: dict[str, TaskSpec] = {}
        self.heads = nn.ModuleDict()
        for task in tasks:
            self.add_task(task)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        tasks: Sequence[TaskSpec] = (),
        pooling: Pooling | str | None = None,
        max_seq_len: int | None = None,
    ) -> MultiTaskModel:
        """An mtst checkpoint directory, or any Hugging Face encoder (default: all-MiniLM-L6-v2).

        From a checkpoint, ``tasks`` adds new heads beside the stored ones (a task with a stored name
        must have the same kind and labels).
        """
        if name_or_path is not None and (Path(name_or_path) / "mtst.json").is_file():
            model = load_model(Path(name_or_path))
            if pooling is not None and Pooling(pooling) is not model.pooling:
                raise ConfigError(
                    f"pooling {pooling!r}: the checkpoint {name_or_path} was trained with {model.pooling.value!r}"
                )
            if max_seq_len is not None:
                model.max_seq_len = int(max_seq_len)
            for task in tasks:
                model.add_task(task)
            return model
        path = resolve_backbone(name_or_path)
        encoder = load_encoder(path)
        tokenizer = load_tokenizer(path)
        if max_seq_len is None:
            max_seq_len = sentence_transformers_max_len(path) or min(
                512, int(getattr(encoder.config, "max_position_embeddings", 512))
            )
        name = DEFAULT_BACKBONE if name_or_path is None else str(name_or_path)
        return cls(
            encoder, tokenizer, tasks, pooling=pooling or Pooling.MEAN, max_seq_len=max_seq_len, backbone=name
        )

    def add_task(self, task: TaskSpec) -> None:
        """Add a head for ``task``; a task already present must match it exactly."""
        old = self.tasks.get(task.name)
        if old is not None:
            if (old.kind, old.labels) != (task.kind, task.labels):
                raise ConfigError(
                    f"task {task.name!r}: already present with kind {old.kind.value} and labels "
                    f"{list(old.labels)}; got kind {task.kind.value} and labels {list(task.labels)}"
                )
            return
        self.tasks[task.name] = task
        self.heads[task.name] = build_head(task, self.hidden_size)

    # ----------------------------------------------------------------- properties
    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Inputs the encoder takes, in graph order (``token_type_ids`` only where the encoder uses them)."""
        names = set(getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        if int(getattr(self.encoder.config, "type_vocab_size", 0) or 0) < 1:
            names.discard("token_type_ids")
        return tuple(n for n in MODEL_INPUTS if n in names or n in ("input_ids", "attention_mask"))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def task_list(self, kind: TaskKind | None = None) -> list[TaskSpec]:
        return [t for t in self.tasks.values() if kind is None or t.kind is kind]

    # ----------------------------------------------------------------- forward
    def encode_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder pass alone: token states (B, T, H) and the pooled, normalized embedding (B, H)."""
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self.input_names:
            kwargs["token_type_ids"] = token_type_ids
        states = self.encoder(**kwargs).last_hidden_state  # (B, T, H)
        return states, pool_and_normalize(states, attention_mask, self.pooling)

    def run_heads(
        self, embedding: torch.Tensor, token_states: torch.Tensor | None, tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Heads on precomputed encoder outputs (the frozen-backbone path)."""
        out: dict[str, torch.Tensor] = {}
        for name in self.tasks if tasks is None else tasks:
            task = self.tasks[name]
            if task.kind is TaskKind.SENTENCE:
                out[name] = self.heads[name](embedding)
            else:
                if token_states is None:
                    raise ValueError(f"task {name!r} is a token task and needs token states")
                out[name] = self.heads[name](token_states)
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        tasks: Iterable[str] | None = None,
    ) -> MultiTaskOutput:
        states, embedding = self.encode_tokens(input_ids, attention_mask, token_type_ids)
        return MultiTaskOutput(embedding, self.run_heads(embedding, states, tasks), states)

    # ----------------------------------------------------------------- text in, numbers out
    def tokenize(
        self, texts: Sequence[str], *, return_offsets: bool = False, is_split_into_words: bool = False
    ) -> dict[str, Any]:
        """Tokenize with dynamic padding and truncation at ``max_seq_len``; tensors on the model's device."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_seq_len,
            return_tensors="pt",
            return_offsets_mapping=return_offsets,
            is_split_into_words=is_split_into_words,
        )
        device = self.device
        batch = {k: v.to(device) for k, v in enc.items() if k in self.input_names}
        if return_offsets:
            batch["offset_mapping"] = enc["offset_mapping"]
        return batch

    @torch.inference_mode()
    def encode(self, sentences: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Fixed-length, L2-normalized sentence embeddings, float32 (N, H), in input order.

        Sentences are batched by length (less padding) and the order is restored afterwards.
        """
        if isinstance(sentences, str):
            raise TypeError("encode() takes a list of sentences, not one string")
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}]: expected str, got {type(s).__name__}")
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size!r}: expected >= 1")
        was_training = self.training
        self.eval()
        try:
            order = np.argsort([len(s) for s in sentences], kind="stable")
            out = np.zeros((len(sentences), self.hidden_size), dtype=np.float32)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenize([sentences[i] for i in idx])
                _, emb = self.encode_tokens(**batch)
                out[idx] = emb.float().cpu().numpy()
            return out
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write an mtst checkpoint directory atomically (see :mod:`mtst.checkpoint`)."""
        return save_model(self, Path(path), extra=extra)

    @classmethod
    def from_parts(cls, parts: CheckpointParts, *, where: str = "model.safetensors") -> MultiTaskModel:
        """The model a checkpoint describes, with its weights (eval mode); ``where`` names the weights."""
        meta = parts.meta
        model = cls(
            parts.encoder,
            parts.tokenizer,
            [TaskSpec.from_dict(t) for t in meta["tasks"]],
            pooling=meta["pooling"],
            max_seq_len=meta["max_seq_len"],
            backbone=meta.get("backbone", "unknown"),
        )
        missing, unexpected = model.load_state_dict(parts.weights, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{where}: weights do not fit the model described in mtst.json: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        model.eval()
        return model


# ----------------------------------------------------------------- checkpoints (the format: mtst.checkpoint)
def write_model_files(model: MultiTaskModel, directory: Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write the model's parts into an existing (temporary) directory."""
    meta = {
        "backbone": model.backbone,
        "pooling": model.pooling.value,
        "max_seq_len": model.max_seq_len,
        "embedding_dim": model.hidden_size,
        "input_names": list(model.input_names),
        "tasks": [t.to_dict() for t in model.tasks.values()],
    }
    write_parts(
        directory,
        weights=model.state_dict(),
        encoder_config=model.encoder.config,
        tokenizer=model.tokenizer,
        meta=meta,
        extra=extra,
    )


def save_model(model: MultiTaskModel, path: Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as a checkpoint at ``path`` (replacing an older one there, atomically)."""
    with atomic_directory(path, overwrite=True) as tmp:
        write_model_files(model, tmp, extra=extra)
    logger.info("saved checkpoint %s", path)
    return path


def load_model(path: Path) -> MultiTaskModel:
    """Rebuild a MultiTaskModel from a checkpoint directory, offline, weights-only."""
    path = Path(path)
    return MultiTaskModel.from_parts(read_parts(path), where=str(path / "model.safetensors"))
