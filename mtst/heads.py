"""Task heads: small modules on top of the shared encoder.

Sentence heads read the pooled, L2-normalized embedding (the same vector ``encode()`` returns, so a
head can run alone on cached embeddings). Token heads read the encoder's last hidden states.
"""

from __future__ import annotations

import torch
from torch import nn

from mtst.tasks import HeadConfig, TaskKind, TaskSpec

__all__ = ["SentenceHead", "TokenHead", "build_head"]


def _classifier(in_dim: int, num_labels: int, cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
    if cfg.hidden:
        layers += [nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
        in_dim = cfg.hidden
    layers.append(nn.Linear(in_dim, num_labels))
    return nn.Sequential(*layers)


class SentenceHead(nn.Module):
    """(B, H) embedding -> (B, L) logits.

    Unit-length inputs have tiny coordinates (about 1/sqrt(H)); a learned input scale, started at
    sqrt(H), lets the classifier start from the usual activation range instead of needing huge weights.
    """

    def __init__(self, hidden_size: int, num_labels: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(hidden_size) ** 0.5))
        self.net = _classifier(hidden_size, num_labels, cfg)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding * self.scale)


class TokenHead(nn.Module):
    """(B, T, H) token states -> (B, T, L) logits."""

    def __init__(self, hidden_size: int, num_labels: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.net = _classifier(hidden_size, num_labels, cfg)

    def forward(self, token_states: torch.Tensor) -> torch.Tensor:
        return self.net(token_states)


def build_head(task: TaskSpec, hidden_size: int) -> nn.Module:
    cls = SentenceHead if task.kind is TaskKind.SENTENCE else TokenHead
    return cls(hidden_size, task.num_labels, task.head)
