"""Carry big files to the GPU machine in parts: split here, join and sha256-check there.

A ``run`` call carries at most 64 MiB (work tree included), so the onnxruntime-gpu wheel (~250 MB)
and the real checkpoint (~90 MB) travel in parts of < 60 MiB over successive calls while the machine
stays warm (docs/gpu.md). Standard library only: it runs before anything is installed there.

    python scripts/carry.py split FILE [FILE...] --to .carry        # here: .carry/load00, load01, ...
    python scripts/carry.py join --from .carry /tmp/ortgpu --to DIR  # there: whole files, sha256 checked
    python scripts/carry.py farm SITE                                # mtst importable from this tree

``split`` cuts every file in parts ``NAME.partNN`` and writes ``NAME.sha256`` (the whole file's hash
and its part count), and deals them out into folders ``loadNN`` of at most ``--load-mib`` each: one
``run`` call carries one load folder. ``join`` finds every ``*.sha256`` under the ``--from`` folders,
joins the parts (from whichever folder holds each), and fails naming the file when a part is missing
or the hash differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

PART_BYTES = 58 * 2**20  # < 60 MiB: with the work tree (~3 MB) one load stays under a call's 64 MiB
_BLOCK = 2**22


class Loads:
    """Folders ``to/load00``, ``load01``, ... of at most ``load_bytes`` each, filled first-fit (split the
    biggest files first for the fewest loads)."""

    def __init__(self, to: Path, load_bytes: int) -> None:
        self.to, self.load_bytes = to, load_bytes
        self.used: list[int] = []

    def place(self, name: str, data: bytes) -> Path:
        index = next((i for i, u in enumerate(self.used) if u + len(data) <= self.load_bytes), len(self.used))
        if index == len(self.used):
            self.used.append(0)
        self.used[index] += len(data)
        folder = self.to / f"load{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return folder / name


def split(path: Path, loads: Loads, *, part_bytes: int = PART_BYTES) -> list[Path]:
    """``path`` in parts of ``part_bytes`` dealt into ``loads``, with ``NAME.sha256`` describing them."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    with path.open("rb") as src:
        while chunk := src.read(part_bytes):
            digest.update(chunk)
            chunks.append(chunk)
    meta = {
        "name": path.name,
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "parts": len(chunks),
    }
    parts = [loads.place(f"{path.name}.part{i:02d}", c) for i, c in enumerate(chunks)]
    loads.place(f"{path.name}.sha256", (json.dumps(meta) + "\n").encode())
    return parts


def _find(name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for hit in sorted(folder.rglob(name)) if folder.is_dir() else ():
            return hit
    return None


def join(folders: list[Path], to: Path) -> list[Path]:
    """Every file described by a ``*.sha256`` in ``folders``, joined under ``to`` and hash-checked."""
    to.mkdir(parents=True, exist_ok=True)
    metas = {p.name: p for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*.sha256"))}
    if not metas:
        raise SystemExit(f"carry: no *.sha256 in {[str(f) for f in folders]}: nothing was carried")
    done = []
    for meta_path in metas.values():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        out = to / meta["name"]
        digest = hashlib.sha256()
        with out.open("wb") as dst:
            for i in range(meta["parts"]):
                part = _find(f"{meta['name']}.part{i:02d}", folders)
                if part is None:
                    raise SystemExit(f"carry: {meta['name']}: part {i:02d} of {meta['parts']} is missing")
                with part.open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        dst.write(block)
        if digest.hexdigest() != meta["sha256"]:
            out.unlink()
            raise SystemExit(
                f"carry: {meta['name']}: sha256 {digest.hexdigest()} != {meta['sha256']} (a part is damaged)"
            )
        done.append(out)
    return done


def farm(site: Path, root: Path) -> Path:
    """``site/mtst``: the ``mtst`` package of the source tree ``root`` with its parts linked in, so that
    ``PYTHONPATH=site`` imports ``mtst.runtime``/``export``/``bench``/``experiment`` without installing."""
    pkg = site / "mtst"
    pkg.mkdir(parents=True, exist_ok=True)
    for item in (root / "mtst").iterdir():
        if item.name != "__pycache__":
            _link(pkg / item.name, item)
    for part in ("runtime", "export", "bench", "experiment"):
        if (root / part / "__init__.py").is_file():
            _link(pkg / part, root / part)
    return pkg


def _link(dst: Path, src: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.symlink_to(src.resolve())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--to", type=Path, required=True)
    s.add_argument("--part-mib", type=int, default=PART_BYTES // 2**20)
    s.add_argument("--load-mib", type=int, default=PART_BYTES // 2**20)
    j = sub.add_parser("join")
    j.add_argument("--from", dest="folders", nargs="+", type=Path, required=True)
    j.add_argument("--to", type=Path, required=True)
    f = sub.add_parser("farm")
    f.add_argument("site", type=Path)
    args = parser.parse_args(argv)
    if args.command == "split":
        loads = Loads(args.to, args.load_mib * 2**20)
        for path in sorted(args.files, key=lambda p: -p.stat().st_size):
            parts = split(path, loads, part_bytes=args.part_mib * 2**20)
            print(f"{path.name}: {len(parts)} part(s) in {sorted({p.parent.name for p in parts})}")
    elif args.command == "join":
        for path in join(args.folders, args.to):
            print(f"{path}: sha256 ok")
    else:
        print(farm(args.site, Path(__file__).resolve().parent.parent))


if __name__ == "__main__":
    sys.exit(main())
