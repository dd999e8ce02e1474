"""Helpers of the bundle-loader reliability tests: an ``open`` recorder, bundle clones, mutations.

- :class:`OpenRecorder`: one ``sys.addaudithook`` for the whole session (hooks cannot be removed) that,
  while recording, keeps every path Python opens (``open``, ``os.open``: the ``open`` audit event).
  The runtime reads every bundle file in Python and hands bytes to ONNX Runtime and tokenizers, so
  these are all the files a load opens.
- :func:`clone`: a bundle copy whose big files are hard links (cheap); mutations replace files through
  :func:`put` (a new inode), so the original is never written through a link.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class OpenRecorder:
    """Paths opened by Python code while :meth:`recording` (installed once per process)."""

    _installed: OpenRecorder | None = None

    def __init__(self) -> None:
        self.paths: list[str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> OpenRecorder:
        if cls._installed is None:
            rec = cls()
            sys.addaudithook(rec._hook)
            cls._installed = rec
        return cls._installed

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or self.paths is None:
            return
        path = args[0]
        if isinstance(path, int):  # os.fdopen / open(fd): no new file
            return
        p = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else repr(path)
        with self._lock:
            if self.paths is not None:
                self.paths.append(p)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        paths: list[str] = []
        self.paths = paths
        try:
            yield paths
        finally:
            self.paths = None


def outside_opens(paths: list[str], bundle: Path) -> list[str]:
    """Opened paths that are not ``manifest.json`` or a file listed in the bundle's manifest (on disk)."""
    root = Path(os.path.realpath(bundle))
    listed: set[str] = set()
    path = bundle / MANIFEST
    try:
        if path.is_file() and path.stat().st_size < 1 << 20:  # never block on a FIFO, never read 200 MB
            listed = set(json.loads(path.read_text(encoding="utf-8")).get("files", {}))
    except Exception:
        listed = set()
    bad = []
    for p in paths:
        real = Path(os.path.realpath(p))
        try:
            rel = real.relative_to(root).as_posix()
        except ValueError:
            bad.append(p)
            continue
        given = Path(os.path.abspath(p))
        try:
            rel_given = given.relative_to(root).as_posix()
        except ValueError:
            rel_given = rel
        if rel != MANIFEST and rel not in listed and rel_given not in listed:
            bad.append(p)
    return bad


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(path: Path, data: bytes) -> None:
    """Replace ``path`` by a new file holding ``data`` (never writes through a hard link)."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.write_bytes(data)


def clone(src: Path, dst: Path) -> Path:
    """``dst``: the bundle ``src`` with hard-linked files and its own ``manifest.json``."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == MANIFEST:
            shutil.copyfile(p, dst / p.name)
        elif p.is_file():
            os.link(p, dst / p.name)
    return dst


def manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def write_manifest(bundle: Path, m: Any) -> None:
    put(bundle / MANIFEST, json.dumps(m).encode("utf-8"))


def edit(bundle: Path, fn: Callable[[dict[str, Any]], Any]) -> None:
    m = manifest(bundle)
    fn(m)
    write_manifest(bundle, m)


def relist(bundle: Path, name: str) -> None:
    """List ``name`` with its current sha256 and size (a file changed on purpose)."""
    data = (bundle / name).read_bytes()
    edit(bundle, lambda m: m["files"].__setitem__(name, {"sha256": sha(data), "bytes": len(data)}))


def replace_listed(bundle: Path, name: str, data: bytes) -> None:
    """Put ``data`` at ``name`` and list it with matching hash: only the content is wrong."""
    put(bundle / name, data)
    relist(bundle, name)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: str
    category: str
    result: str  # "refused" | "untyped" | "accepted"
    error: str
    seconds: float
    outside: tuple[str, ...]
    named: bool  # the message names the bundle folder or manifest.json
