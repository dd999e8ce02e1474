"""atheris fuzz target: manifest bytes (and a few file mutations) through the bundle loader and Engine.load.

Run by test_fuzz_bundle.py as ``python _bundle_fuzz.py BUNDLE [libFuzzer options] CORPUS...``; BUNDLE
is a real exported bundle this target copies once and then mutates. Each input is the bytes of
``manifest.json``; when its first byte is 0x01 and the rest parses as a JSON object, the sizes and
hashes of the files it lists are set to the real ones first, so inputs get past verification and reach the
graph/tokenizer checks and session creation. Anything but a ``BundleError`` is a finding (libFuzzer
writes it to the artifact prefix); every finding becomes a file in fuzz_corpus/, replayed by
``test_fuzz_corpus_replays_typed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

_STATE: dict[str, Any] = {}


def setup(bundle: Path) -> Path:
    """A private copy of ``bundle`` to fuzz in; returns its folder."""
    work = Path(tempfile.mkdtemp(prefix="mtst-fuzz-")) / "bundle"
    shutil.copytree(bundle, work)
    _STATE["root"] = work
    _STATE["real"] = {
        p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in work.iterdir()
        if p.is_file() and p.name != "manifest.json"
    }
    return work


def _fix_hashes(data: bytes) -> bytes:
    try:
        d = json.loads(data[1:].decode("utf-8"))
    except (ValueError, RecursionError):
        return data[1:]
    if isinstance(d, dict) and isinstance(d.get("files"), dict):
        for name in list(d["files"]):
            if name in _STATE["real"]:
                d["files"][name] = dict(_STATE["real"][name])
    return json.dumps(d).encode("utf-8")


def one_input(data: bytes) -> str:
    """Load the bundle with ``data`` as its manifest: "refused", "loaded", or raise (a finding)."""
    from mtst.errors import BundleError
    from mtst.runtime.engine import Engine

    root: Path = _STATE["root"]
    manifest = _fix_hashes(data) if data[:1] == b"\x01" else data
    path = root / "manifest.json"
    if path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(manifest)
    try:
        engine = Engine.load(root, providers=["cpu"])
    except BundleError:
        return "refused"
    engine.predict(["fuzz", ""])  # a loaded engine must answer
    return "loaded"


def main() -> None:
    import atheris

    with atheris.instrument_imports():
        import mtst.runtime.bundle
        import mtst.runtime.manifest
        import mtst.runtime.manifest_schema
        import mtst.runtime.onnx_refs  # noqa: F401
    setup(Path(sys.argv[1]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], lambda data: one_input(data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
