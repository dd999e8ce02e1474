"""The one exception family of mtst.

Every message names the file, line or field, the value, and what was expected. The runtime
(``mtst.runtime``) raises these too, so this module imports nothing beyond the standard library.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingExtraError",
    "MtstError",
    "ParityError",
    "ProviderUnavailableError",
    "parse_enum",
]

E = TypeVar("E", bound=Enum)


class MtstError(Exception):
    """Base class of every error mtst raises on purpose."""


class ConfigError(MtstError, ValueError):
    """A run config, CLI option or argument is invalid (names the field and the value)."""


class DataError(MtstError, ValueError):
    """A data file is missing, empty or malformed (names the file, line and value)."""


class CheckpointError(MtstError):
    """A checkpoint directory is missing, incomplete or inconsistent."""


class BundleError(MtstError):
    """A bundle is missing a file, fails verification or does not fit the request."""


class ParityError(MtstError):
    """An exported graph disagrees with the torch model beyond the documented bounds."""


class ProviderUnavailableError(MtstError):
    """An ONNX Runtime execution provider the caller required cannot be used."""


class MissingExtraError(MtstError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module: str, extra: str, what: str) -> object:
    """Import ``module`` or raise MissingExtraError naming the extra to install.

    >>> require("torch", "train", "training")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(f"{what} needs {module}: pip install 'mtst[{extra}]'") from exc


def parse_enum(
    cls: type[E],
    value: object,
    where: str,
    *,
    error: type[MtstError] = ConfigError,
    hint: str = "",
    sep: str = ": ",
) -> E:
    """``cls(value)``, or ``error`` naming the place, the value and the allowed values.

    >>> parse_enum(Pooling, "avg", "pooling")  # doctest: +SKIP
    ConfigError: pooling: 'avg' is not one of ['mean', 'cls', 'max']
    >>> parse_enum(TaskKind, "regression", "task kind", sep=" ")  # doctest: +SKIP
    ConfigError: task kind 'regression' is not one of ['sentence_classification', 'token_classification']
    """
    try:
        return cls(value)
    except ValueError:
        raise error(f"{where}{sep}{value!r} is not one of {[m.value for m in cls]}{hint}") from None
