"""Load a bundle folder and verify it before any ONNX Runtime session sees it.

Verification (on by default, the same for every entry point) checks, in this order:

1. ``manifest.json``: schema version in the supported range, fields well formed (``Manifest.read``);
2. every file listed in ``files``: the name stays inside the bundle (relative, no ``..``, no symlink
   resolving outside), it is a regular file, its size and sha256 are the ones listed;
3. every graph file: the external-data files it references stay inside the bundle and are listed in
   ``files`` (so they were hashed in step 2);
4. no unlisted graph file (``*.onnx``) lies in the bundle folder.

A mismatch raises :class:`~mtst.errors.BundleError` naming the file and what differed. Hashing is
the expensive part at cold start (about 50 ms per 90 MB here), so hashes that were verified in this
process are remembered, in memory only, keyed by (real path, size, mtime_ns, ctime_ns, inode): a
file changed in any way is hashed again.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mtst.errors import BundleError
from mtst.runtime.manifest import MANIFEST_NAME, Layout, Manifest, Variant, sha256_file
from mtst.runtime.onnx_refs import external_data_refs

__all__ = ["Bundle", "clear_hash_cache", "hash_file", "load_bundle", "verify_bundle"]

logger = logging.getLogger(__name__)

_hash_cache: dict[tuple[str, int, int, int, int], str] = {}
_hash_lock = threading.Lock()


def clear_hash_cache() -> None:
    """Forget every hash verified in this process (the next load hashes every file again)."""
    with _hash_lock:
        _hash_cache.clear()


def hash_file(path: Path, st: os.stat_result | None = None) -> str:
    """sha256 (hex) of ``path``, remembered for as long as the file's size, times and inode stay the same."""
    st = st or os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = sha256_file(path)
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle folder and its manifest. ``root`` is the resolved folder; paths come from :meth:`path`."""

    root: Path
    manifest: Manifest
    verified: bool

    def path(self, name: str) -> Path:
        return self.root / PurePosixPath(name)

    @property
    def tokenizer_path(self) -> Path:
        if not self.manifest.tokenizer:
            raise BundleError(f"{self.root / MANIFEST_NAME}: tokenizer: the bundle names no tokenizer file")
        return self.path(self.manifest.tokenizer)

    def variants(self, layout: Layout | None = None) -> list[Variant]:
        return [v for v in self.manifest.variants if layout is None or v.layout is layout]


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _check_listed_file(root: Path, name: str, expected_size: int, expected_sha: str) -> None:
    path = root / PurePosixPath(name)
    try:
        st = os.stat(path)  # follows symlinks: what ORT would read
    except FileNotFoundError:
        raise BundleError(f"{root}: {name}: listed in {MANIFEST_NAME} but missing") from None
    real = Path(os.path.realpath(path))
    if not _inside(root, real):
        raise BundleError(
            f"{root}: {name}: resolves to {real}, outside the bundle (symlinks may not leave it)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{root}: {name}: not a regular file")
    if st.st_size != expected_size:
        raise BundleError(
            f"{root}: {name}: size mismatch: {MANIFEST_NAME} lists {expected_size} bytes, the file has "
            f"{st.st_size} (changed or truncated after export)"
        )
    actual = hash_file(real, st)
    if actual != expected_sha.lower():
        raise BundleError(
            f"{root}: {name}: sha256 mismatch: expected {expected_sha}, got {actual} (changed after export)"
        )


def _check_external_data(root: Path, manifest: Manifest, graph: str) -> None:
    graph_path = root / PurePosixPath(graph)
    base = PurePosixPath(graph).parent
    for ref in external_data_refs(graph_path):
        loc = ref.location
        where = f"{root}: {graph}: tensor {ref.tensor!r}: external data {loc!r}"
        p = PurePosixPath(loc)
        if p.is_absolute() or "\\" in loc or (loc[1:2] == ":") or ".." in p.parts or not loc:
            raise BundleError(f"{where} must be a relative path inside the bundle")
        name = str(base / p)
        if name not in manifest.files:
            raise BundleError(
                f"{where}: {name!r} is not listed in {MANIFEST_NAME} files (no sha256 to check it against)"
            )


def _unlisted_graphs(root: Path, manifest: Manifest) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for fn in filenames:
            if fn.endswith(".onnx"):
                name = (rel / fn).as_posix()
                if name not in manifest.files:
                    found.append(name)
    return sorted(found)


def _bundle_root(path: str | Path) -> Path:
    given = Path(path)
    if not given.is_dir():
        raise BundleError(f"{given}: not a directory (a bundle is a folder holding {MANIFEST_NAME})")
    return Path(os.path.realpath(given))


def verify_bundle(root: str | Path, manifest: Manifest | None = None) -> Manifest:
    """Verify the bundle folder ``root`` and return its manifest (raises BundleError).

    Steps 1-4 of the module docstring; step 1 (reading ``manifest.json``) is skipped when the parsed
    ``manifest`` is given.
    """
    root = _bundle_root(root)
    if manifest is None:
        manifest = Manifest.read(root)
    for name, entry in manifest.files.items():
        _check_listed_file(root, name, entry.bytes, entry.sha256)
    graphs = sorted({g for v in manifest.variants for g in v.graphs.values()})
    for graph in graphs:
        _check_external_data(root, manifest, graph)
    unlisted = _unlisted_graphs(root, manifest)
    if unlisted:
        raise BundleError(
            f"{root}: graph files not listed in {MANIFEST_NAME}: {unlisted} (remove them or re-export)"
        )
    return manifest


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read ``manifest.json`` of the bundle at ``path`` and (by default) verify the whole folder."""
    root = _bundle_root(path)
    manifest = Manifest.read(root)
    if verify:
        verify_bundle(root, manifest)
    else:
        logger.warning("bundle %s: verification switched off (hashes and file names not checked)", root)
    return Bundle(root=root, manifest=manifest, verified=verify)
