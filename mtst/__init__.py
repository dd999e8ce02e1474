"""mtst: multi-task sentence transformers on the edge.

This file stays light: ``import mtst.runtime`` runs it first, and edge devices have no torch.
Everything that needs torch is imported lazily, on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtst.errors import (
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    MtstError,
    ParityError,
    ProviderUnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MtstError",
    "MultiTaskModel",
    "ParityError",
    "ProviderUnavailableError",
    "TaskSpec",
    "__version__",
    "load_config",
]

# name -> module that defines it; imported on first use so that `import mtst` needs no torch.
_LAZY = {
    "MultiTaskModel": "mtst.model",
    "TaskSpec": "mtst.tasks",
    "load_config": "mtst.config",
}

if TYPE_CHECKING:  # pragma: no cover
    from mtst.config import load_config
    from mtst.model import MultiTaskModel
    from mtst.tasks import TaskSpec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mtst' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
