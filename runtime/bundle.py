"""Load a bundle folder and verify it before any ONNX Runtime session sees it.

Verification (on by default, the same for every entry point) checks, in this order:

1. ``manifest.json`` alone (no other file is opened before it passes): a regular file inside the
   bundle, under the size cap, strict JSON, every field checked (``mtst.runtime.manifest_schema``);
2. every file listed in ``files``: the name stays inside the bundle (relative, no ``..``, no symlink
   resolving outside), it is a regular file (a FIFO is never opened for reading), under its size cap,
   its size and sha256 are the ones listed;
3. every graph file: the external-data files it references (in initializers, node attributes,
   subgraphs and function attribute defaults) stay inside the bundle and are listed in ``files``;
4. no unlisted graph file (``*.onnx``) lies in the bundle folder.

Only ``manifest.json`` and the files it lists are ever opened. What was hashed is what the sessions
and the tokenizer are built from, so a file swapped after verification is never used: either bytes
kept from verification (the tokenizer; the graphs ``keep_graphs`` names, by default all) or read and
checked again when asked for (:meth:`Bundle.data`), or -- how an engine builds its sessions on Linux
(:meth:`Bundle.graph_source`) -- the graph's own open file, hashed, handed to ONNX Runtime by its
``/proc/self/fd`` path and checked unchanged (size, times, inode) after the session has read it. The
graphs not kept are released one by one as they are verified: a bundle of several variants costs the
memory of the one that runs, and that graph is never in memory twice while its session is built.
A mismatch
raises :class:`~mtst.errors.BundleError` naming the file and what differed. Hashing is the expensive
part at cold start (about 50 ms per 90 MB here), so hashes verified in this process are remembered, in
memory only, keyed by (real path, size, mtime_ns, ctime_ns, inode) as read from the open file before
*and* after reading it: a file changed in any way, even while it is read, is hashed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mtst.errors import BundleError
from mtst.runtime.manifest import MANIFEST_NAME, Layout, Manifest, Variant, sha256_file
from mtst.runtime.manifest_schema import BundleLimitError, Limits, open_regular, read_fd
from mtst.runtime.onnx_refs import ExternalRef, external_data_refs_fd, external_data_refs_in

__all__ = [
    "Bundle",
    "clear_hash_cache",
    "hash_file",
    "load_bundle",
    "verify_bundle",
]

logger = logging.getLogger(__name__)

_PROC_FD = Path("/proc/self/fd")  # Linux: each open file by number
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


def _key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle folder and its manifest. ``root`` is the resolved folder; paths come from :meth:`path`.

    A verified bundle holds the bytes of the graphs it was asked to keep, their external data and its
    tokenizer, as hashed (:meth:`data`, :meth:`external_data`) until :meth:`release` (the engine calls
    it once its sessions and tokenizer are built); other listed files are read and checked on demand.
    """

    root: Path
    manifest: Manifest
    verified: bool
    blobs: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    # graph file -> (location as written in the graph, file name in the bundle) of its external data
    externals: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, compare=False, repr=False)
    limits: Limits | None = field(default=None, compare=False, repr=False)
    # one flag, set by release(): a verified bundle then hands out no bytes (the frozen dataclass's
    # one piece of mutable state)
    _released: list[bool] = field(default_factory=list, compare=False, repr=False)

    def path(self, name: str) -> Path:
        return self.root / PurePosixPath(name)

    @property
    def tokenizer_path(self) -> Path:
        if not self.manifest.tokenizer:
            raise BundleError(f"{self.root / MANIFEST_NAME}: tokenizer: the bundle names no tokenizer file")
        return self.path(self.manifest.tokenizer)

    def data(self, name: str) -> bytes:
        """The verified bytes of the listed file ``name``: kept from verification, or read and checked
        against the manifest now (size, sha256, place) when it was not kept (an unverified bundle: read
        now, unchecked)."""
        blob = self.blobs.get(name)
        if blob is not None:
            return blob
        if not self.verified:
            return self.path(name).read_bytes()
        if self._released:
            raise BundleError(
                f"{self.root}: {name}: its verified bytes were released (load the bundle again)"
            )
        if name not in self.manifest.files:
            raise BundleError(f"{self.root}: {name}: not listed in {MANIFEST_NAME} files")
        data = _read_listed(self.root, name, self.manifest, self.limits or Limits.from_env(), keep=True)
        assert data is not None  # keep=True
        return data

    def external_data(self, graph: str) -> dict[str, bytes]:
        """The external-data files of ``graph`` by the location the graph names them with (verified bytes)."""
        return {loc: self.data(name) for loc, name in self.externals.get(graph, ())}

    @contextmanager
    def graph_source(self, name: str) -> Iterator[Path | bytes]:
        """What a session is built from for the listed graph ``name``, inside the ``with``.

        Its bytes when kept from verification, or for a graph with external data, or where open files
        have no path; else (Linux) the path of the graph's own open file, hashed and checked here and
        checked unchanged when the block ends: ONNX Runtime parses the file itself, so the graph is
        never held twice (the bytes, and ONNX Runtime's parsed copy) while the session is built. An
        unverified bundle: the file's path.
        """
        if not self.verified:
            yield self.path(name)
        elif name in self.blobs or self.externals.get(name) or not _PROC_FD.is_dir():
            yield self.data(name)
        elif self._released:
            raise BundleError(
                f"{self.root}: {name}: its verified bytes were released (load the bundle again)"
            )
        else:
            with _pinned(self.root, name, self.manifest, self.limits or Limits.from_env()) as path:
                yield path

    def release(self) -> None:
        """Drop the bytes kept for the sessions and the tokenizer (they hold their own copies); a verified
        bundle hands out no bytes after this."""
        self.blobs.clear()
        if not self._released:
            self._released.append(True)

    def variants(self, layout: Layout | None = None) -> list[Variant]:
        return [v for v in self.manifest.variants if layout is None or v.layout is layout]


def _inside(root: Path, path: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _cap(manifest: Manifest, name: str, limits: Limits) -> tuple[int, str]:
    graphs = {g for v in manifest.variants for g in v.graphs.values()}
    texts = {x for x in (manifest.tokenizer, manifest.parity, manifest.tokenizer_tables) if x}
    if name in graphs:
        return limits.graph_bytes, "graph_bytes"
    if name in texts:
        return limits.text_bytes, "text_bytes"
    return limits.data_bytes, "data_bytes"


def _open_listed(
    root: Path, name: str, manifest: Manifest, limits: Limits
) -> tuple[int, Path, os.stat_result]:
    """The listed file ``name`` opened for reading (fd, real path, fstat) once its place, kind, cap and
    size are checked."""
    entry = manifest.files[name]
    cap, cap_name = _cap(manifest, name, limits)
    if entry.bytes > cap:
        raise BundleLimitError(
            f"{root}: {MANIFEST_NAME}: files.{name}.bytes: {entry.bytes} bytes, over the cap of {cap} "
            f"(MTST_BUNDLE_MAX_{cap_name.upper()})"
        )
    path = root / PurePosixPath(name)
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:  # pragma: no cover - realpath(strict=False) rarely raises
        raise BundleError(f"{root}: {name}: cannot be resolved ({exc})") from None
    if not os.path.lexists(path):
        raise BundleError(f"{root}: {name}: listed in {MANIFEST_NAME} but missing")
    if not _inside(root, real):
        raise BundleError(
            f"{root}: {name}: resolves to {real}, outside the bundle (symlinks may not leave it)"
        )
    fd, st = open_regular(real, f"{root}: {name}")
    if st.st_size != entry.bytes:
        os.close(fd)
        raise BundleError(
            f"{root}: {name}: size mismatch: {MANIFEST_NAME} lists {entry.bytes} bytes, the file has "
            f"{st.st_size} (changed or truncated after export)"
        )
    return fd, real, st


def _check_sha(root: Path, name: str, manifest: Manifest, actual: str) -> None:
    expected = manifest.files[name].sha256
    if actual != expected.lower():
        raise BundleError(
            f"{root}: {name}: sha256 mismatch: expected {expected}, got {actual} (changed after export)"
        )


def _read_listed(root: Path, name: str, manifest: Manifest, limits: Limits, keep: bool) -> bytes | None:
    """Check the listed file ``name`` (place, kind, cap, size, sha256); its bytes when ``keep``."""
    fd, real, st = _open_listed(root, name, manifest, limits)
    try:
        data, actual = _hash_fd(fd, real, st, keep)
    finally:
        os.close(fd)
    if data is not None and len(data) != st.st_size:
        raise BundleError(f"{root}: {name}: size mismatch: changed while being read")
    _check_sha(root, name, manifest, actual)
    return data


@contextmanager
def _hashed_open(
    root: Path, name: str, manifest: Manifest, limits: Limits
) -> Iterator[tuple[int, Path, os.stat_result, str]]:
    """The listed file ``name`` open (fd, real path, fstat, sha256) once its place, kind, cap, size and
    sha256 are checked -- hashed as a stream, never held; closed when the block ends."""
    fd, real, st = _open_listed(root, name, manifest, limits)
    try:
        _, actual = _hash_fd(fd, real, st, keep=False)
        _check_sha(root, name, manifest, actual)
        yield fd, real, st, actual
    finally:
        os.close(fd)


@contextmanager
def _pinned(root: Path, name: str, manifest: Manifest, limits: Limits) -> Iterator[Path]:
    """A path naming the open, checked file ``name`` itself (``/proc/self/fd/N``: renaming or replacing
    the file in the folder does not change what it reads), valid inside the ``with``; when the block
    ends the file must be unchanged (size, mtime, ctime, inode -- any write moves ctime), or else hash
    to the same sha256 again, so what the block read is what was hashed."""
    with _hashed_open(root, name, manifest, limits) as (fd, real, st, actual):
        yield _PROC_FD / str(fd)
        after = os.fstat(fd)
        if _key(real, after) != _key(real, st):
            # the inode's ctime also moves when the file is unlinked or replaced in the folder, which
            # leaves its bytes alone: hash what the open file holds now
            _, now = _hash_fd(fd, real, after, keep=False)
            if now != actual:
                raise BundleError(
                    f"{root}: {name}: changed while ONNX Runtime read it (load the bundle again)"
                )


def _hash_fd(fd: int, real: Path, st: os.stat_result, keep: bool) -> tuple[bytes | None, str]:
    """(bytes when ``keep``, sha256) of the open file; the cache answers only if the file did not change
    between the two fstat calls around the read."""
    data: bytes | None = None
    if keep:
        data = read_fd(fd, st.st_size + 1)
    key = _key(real, st)
    if _key(real, os.fstat(fd)) == key:  # unchanged since it was opened (and read, when kept)
        with _hash_lock:
            cached = _hash_cache.get(key)
        if cached is not None:
            return data, cached
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
    else:
        h = hashlib.sha256()
        view = memoryview(bytearray(1 << 22))
        pos = 0  # from the start, whatever the file offset (a pinned file is hashed twice)
        while pos <= st.st_size and (n := os.preadv(fd, [view[: st.st_size + 1 - pos]], pos)):
            h.update(view[:n])
            pos += n
        digest = h.hexdigest()
    if _key(real, os.fstat(fd)) == key:
        with _hash_lock:
            _hash_cache[key] = digest
    return data, digest


def _graph_refs(
    root: Path, graph: str, manifest: Manifest, limits: Limits, keep: bool
) -> tuple[bytes | None, list[ExternalRef]]:
    """Check the listed graph ``graph`` like any file; its external-data references, and its bytes
    when ``keep`` (else its references are read from the file, its weights skipped, and the file must
    not change while they are)."""
    where = str(root / PurePosixPath(graph))
    if keep:
        data = _read_listed(root, graph, manifest, limits, keep=True)
        assert data is not None  # keep=True
        return data, external_data_refs_in(data, where)
    with _hashed_open(root, graph, manifest, limits) as (fd, real, st, _):
        refs = external_data_refs_fd(fd, st.st_size, where)
        if _key(real, os.fstat(fd)) != _key(real, st):
            raise BundleError(f"{root}: {graph}: changed while being verified (load the bundle again)")
    return None, refs


def _external_data(
    root: Path, manifest: Manifest, graph: str, refs: list[ExternalRef]
) -> tuple[tuple[str, str], ...]:
    base = PurePosixPath(graph).parent
    out: list[tuple[str, str]] = []
    for ref in refs:
        loc = ref.location
        where = f"{root}: {graph}: tensor {ref.tensor!r}: external data {loc!r}"
        p = PurePosixPath(loc)
        bad = p.is_absolute() or "\\" in loc or (loc[1:2] == ":") or ".." in p.parts or not loc
        if bad or any(ord(c) < 32 for c in loc):
            raise BundleError(f"{where} must be a relative path inside the bundle")
        name = str(base / p)
        if name not in manifest.files:
            raise BundleError(
                f"{where}: {name!r} is not listed in {MANIFEST_NAME} files (no sha256 to check it against)"
            )
        if (loc, name) not in out:
            out.append((loc, name))
    return tuple(out)


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


def _verify(
    root: Path, manifest: Manifest, limits: Limits, keep_graphs: Iterable[str] | None = None
) -> Bundle:
    """Steps 2-4 of the module docstring; the bundle holds the bytes of the graphs ``keep_graphs``
    names (all when None), their external data and the tokenizer."""
    graphs = sorted({g for v in manifest.variants for g in v.graphs.values()})
    kept_graphs = set(graphs) if keep_graphs is None else set(keep_graphs)
    blobs: dict[str, bytes] = {}
    externals: dict[str, tuple[tuple[str, str], ...]] = {}
    for graph in graphs:
        data, refs = _graph_refs(root, graph, manifest, limits, keep=graph in kept_graphs)
        externals[graph] = _external_data(root, manifest, graph, refs)
        if data is not None:
            blobs[graph] = data
    keep = {name for g in kept_graphs for _, name in externals.get(g, ())}
    if manifest.tokenizer:
        keep.add(manifest.tokenizer)
    for name in sorted(set(manifest.files) - set(graphs)):
        data = _read_listed(root, name, manifest, limits, keep=name in keep)
        if data is not None:
            blobs[name] = data
    unlisted = _unlisted_graphs(root, manifest)
    if unlisted:
        raise BundleError(
            f"{root}: graph files not listed in {MANIFEST_NAME}: {unlisted} (remove them or re-export)"
        )
    return Bundle(
        root=root, manifest=manifest, verified=True, blobs=blobs, externals=externals, limits=limits
    )


def verify_bundle(
    root: str | Path, manifest: Manifest | None = None, *, limits: Limits | None = None
) -> Manifest:
    """Verify the bundle folder ``root`` and return its manifest (raises BundleError).

    Steps 1-4 of the module docstring; step 1 (reading ``manifest.json``) is skipped when the parsed
    ``manifest`` is given.
    """
    root = _bundle_root(root)
    limits = limits or Limits.from_env()
    if manifest is None:
        manifest = Manifest.read(root, limits=limits)
    _verify(root, manifest, limits)
    return manifest


def load_bundle(
    path: str | Path,
    *,
    verify: bool = True,
    limits: Limits | None = None,
    keep_graphs: Iterable[str] | None = None,
) -> Bundle:
    """Read ``manifest.json`` of the bundle at ``path`` and (by default) verify the whole folder.

    ``limits``: the size caps (default: :meth:`Limits.from_env`). ``keep_graphs``: the graph files whose
    verified bytes the bundle keeps for sessions (None: all); every file is verified either way, and a
    graph not kept is read and checked again when asked for. An engine keeps none (``()``): each session
    reads its graph again, checked (:meth:`Bundle.graph_source`), so a bundle of several variants costs
    the memory of the one that runs.
    """
    root = _bundle_root(path)
    limits = limits or Limits.from_env()
    manifest = Manifest.read(root, limits=limits)
    if verify:
        return _verify(root, manifest, limits, keep_graphs)
    logger.warning("bundle %s: verification switched off (hashes and file names not checked)", root)
    return Bundle(root=root, manifest=manifest, verified=False)
