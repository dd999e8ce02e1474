"""The manifest against the graphs it names: sizes that must agree before an engine answers anything.

ONNX Runtime reports each graph input's and output's shape (static dims as ints, dynamic ones as
names). Where a dim is static it must match the manifest: ``embedding`` has ``embedding_dim`` values
per row (as an encoder output and as a heads-graph input), a sentence head's output is
``[batch, len(labels)]``, a token head's ``[batch, sequence, len(labels)]``. A manifest with one label
too many, or the wrong ``embedding_dim``, is refused at load instead of failing every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtst.errors import BundleError
from mtst.runtime.manifest import MANIFEST_NAME, HeadKind, Manifest
from mtst.runtime.runners import EMBEDDING, TOKEN_STATES, Runner

__all__ = ["check_dims"]

_RANK = {HeadKind.SENTENCE: 2, HeadKind.TOKEN: 3}


def _expectations(manifest: Manifest) -> dict[str, tuple[int | None, int, str]]:
    """graph value name -> (rank or None, size of the last dim, the manifest field that says so)."""
    out: dict[str, tuple[int | None, int, str]] = {EMBEDDING: (2, manifest.embedding_dim, "embedding_dim")}
    for i, h in enumerate(manifest.heads):
        if h.kind in _RANK:
            out[h.output] = (_RANK[h.kind], len(h.labels), f"heads[{i}].labels ({h.name!r})")
    return out


def check_dims(runner: Runner, manifest: Manifest, root: Path) -> None:
    """BundleError naming the graph, the value and the manifest field when a static dim disagrees."""
    expected = _expectations(manifest)
    for graph in runner.graphs:
        values: list[Any] = [*graph.session.get_inputs(), *graph.session.get_outputs()]
        for value in values:
            if value.name not in expected or value.name == TOKEN_STATES:
                continue
            rank, size, where = expected[value.name]
            shape = value.shape
            if not isinstance(shape, list):
                continue
            try:
                name = graph.path.relative_to(root).as_posix()
            except ValueError:
                name = graph.path.name
            if rank is not None and len(shape) != rank:
                raise BundleError(
                    f"{root}: {name}: {value.name!r} has rank {len(shape)}, expected {rank} for {MANIFEST_NAME} {where}"
                )
            last = shape[-1]
            if isinstance(last, int) and last != size:
                raise BundleError(
                    f"{root}: {name}: {value.name!r} has {last} values per row, but {MANIFEST_NAME} {where} "
                    f"says {size}"
                )
