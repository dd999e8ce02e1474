"""Task specifications: what a head predicts and with which labels.

Torch-free on purpose: configs, checkpoints and the export manifest all describe tasks with these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mtst.errors import ConfigError, parse_enum

__all__ = ["RESERVED_NAMES", "HeadConfig", "TaskKind", "TaskSpec"]

# Names that would collide with graph inputs/outputs of the exported model.
RESERVED_NAMES = frozenset({"embedding", "token_states", "input_ids", "attention_mask", "token_type_ids"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class TaskKind(str, Enum):
    SENTENCE = "sentence_classification"
    TOKEN = "token_classification"


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a task head: dropout, then an optional hidden layer, then the classifier."""

    hidden: int = 0  # 0 = a single linear layer
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, int) or self.hidden < 0:
            raise ConfigError(f"head.hidden: expected an integer >= 0, got {self.hidden!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"head.dropout: expected a value in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class TaskSpec:
    """A named task on the shared encoder.

    ``labels`` are in index order: logit ``i`` of the head scores ``labels[i]``. For token tasks the
    labels are BIO tags (IOB2), ``O`` included. ``temperature`` and ``threshold`` are the head's
    calibration (:mod:`mtst.calibration`: scores are ``softmax(logits / temperature)``; a sentence
    head abstains below ``threshold``, a token head drops entities scored below it); 1.0 and 0.0
    until :mod:`mtst.calibrate` fits them.
    """

    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    head: HeadConfig = field(default_factory=HeadConfig)
    temperature: float = 1.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(
                f"task name {self.name!r}: expected lower-case letters, digits and '_', starting with a letter"
            )
        if self.name in RESERVED_NAMES:
            raise ConfigError(f"task name {self.name!r} is reserved (it names a graph input or output)")
        object.__setattr__(
            self, "kind", parse_enum(TaskKind, self.kind, f"task {self.name!r}: kind", sep=" ")
        )
        labels = tuple(str(label) for label in self.labels)
        object.__setattr__(self, "labels", labels)
        if len(labels) < 2:
            raise ConfigError(f"task {self.name!r}: needs at least 2 labels, got {list(labels)}")
        if len(set(labels)) != len(labels):
            dupes = sorted({label for label in labels if labels.count(label) > 1})
            raise ConfigError(f"task {self.name!r}: duplicate labels {dupes}")
        if self.kind is TaskKind.TOKEN:
            if "O" not in labels:
                raise ConfigError(
                    f"task {self.name!r}: a token task needs the outside label 'O' in {list(labels)}"
                )
            bad = [t for t in labels if t != "O" and not re.match(r"^[BI]-.+$", t)]
            if bad:
                raise ConfigError(
                    f"task {self.name!r}: token labels must be 'O', 'B-TYPE' or 'I-TYPE', got {bad}"
                )
        if isinstance(self.head, dict):
            object.__setattr__(self, "head", HeadConfig(**self.head))
        t, thr = self.temperature, self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < t < float("inf"):
            raise ConfigError(f"task {self.name!r}: temperature must be a number > 0, got {t!r}")
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not 0.0 <= thr <= 1.0:
            raise ConfigError(f"task {self.name!r}: threshold must be a number in [0, 1], got {thr!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Entity types of a token task, in first-seen label order (``B-PER`` -> ``PER``)."""
        seen: dict[str, None] = {}
        for tag in self.labels:
            if tag != "O":
                seen.setdefault(tag[2:], None)
        return tuple(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "labels": list(self.labels),
            "head": {"hidden": self.head.hidden, "dropout": self.head.dropout},
            **self.calibration(),
        }

    def calibration(self) -> dict[str, float]:
        """``{"temperature", "threshold"}`` when fitted (either differs from 1.0 / 0.0), else ``{}``."""
        if self.temperature == 1.0 and self.threshold == 0.0:
            return {}
        return {"temperature": float(self.temperature), "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        try:
            return cls(
                name=data["name"],
                kind=data["kind"],
                labels=tuple(data["labels"]),
                head=HeadConfig(**data.get("head", {})),
                temperature=data.get("temperature", 1.0),
                threshold=data.get("threshold", 0.0),
            )
        except KeyError as exc:
            raise ConfigError(f"task entry {data!r}: missing field {exc.args[0]!r}") from None
