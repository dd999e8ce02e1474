"""Layering rules of DESIGN.md §1, read from the code's imports (module level and inside functions).

- ``runtime/`` imports, of mtst, only ``mtst.errors`` and its own modules (and never torch: a subprocess
  test imports it and looks);
- ``mtst/`` (the training core) never imports export, bench or experiment;
- ``export/`` never imports bench or experiment;
- ``bench/`` imports mtst and export only inside functions (optional imports), never experiment;
- no import cycle between mtst modules (any part, ``if TYPE_CHECKING`` imports included).

:func:`layer_violations` does the reading; a test feeds it a small tree that breaks every rule once.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder -> import name; every part's modules are read
PARTS = {
    "mtst": "mtst",
    "runtime": "mtst.runtime",
    "export": "mtst.export",
    "bench": "mtst.bench",
    "experiment": "mtst.experiment",
}
# part -> parts it may import from (module level); bench may import more inside functions
ALLOWED = {
    "mtst.runtime": {"mtst.runtime"},  # + mtst.errors, below
    "mtst": {"mtst", "mtst.runtime"},
    "mtst.export": {"mtst.export", "mtst", "mtst.runtime"},
    "mtst.bench": {"mtst.bench", "mtst.runtime"},
    "mtst.experiment": set(PARTS.values()),
}
OPTIONAL = {"mtst.bench": {"mtst", "mtst.export"}}  # allowed inside functions only
RUNTIME_MAY_TAKE = {"mtst.errors"}  # torch-free and imports nothing: every part may take it


@dataclass(frozen=True)
class Import:
    source: str  # module that imports
    target: str  # the mtst module it imports (the longest name that is a module of the tree)
    in_function: bool
    line: int


def modules(root: Path) -> dict[str, Path]:
    """Import name -> file, for every ``.py`` of the parts under ``root``."""
    out: dict[str, Path] = {}
    for folder, package in PARTS.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            name = ".".join([package, *rel.parts]).removesuffix(".__init__")
            out[name] = path
    return out


def _part(module: str) -> str:
    return max((p for p in PARTS.values() if module == p or module.startswith(p + ".")), key=len)


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the tree (None: not mtst)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports(root: Path) -> Iterator[Import]:
    """Every import of an mtst module in the tree, with where it stands."""
    known = modules(root)
    for source, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = source if path.name == "__init__.py" else source.rsplit(".", 1)[0]
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(node) for f in functions for node in ast.walk(f) if node is not f}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                target = _resolve(name, known)
                if target is not None and target != source:
                    yield Import(source, target, id(node) in inside, node.lineno)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_violations(root: Path) -> list[str]:
    """One line per import against the layers, and one per import cycle, in the tree under ``root``."""
    out: list[str] = []
    edges: dict[str, set[str]] = {}
    for imp in imports(root):
        src, dst = _part(imp.source), _part(imp.target)
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        if imp.target in RUNTIME_MAY_TAKE:
            pass
        elif src == "mtst.runtime" and dst == "mtst":
            out.append(f"{where} (the runtime may take only {sorted(RUNTIME_MAY_TAKE)} of mtst)")
        elif dst not in ALLOWED[src]:
            if dst not in OPTIONAL.get(src, set()):
                out.append(f"{where} ({src} must not import {dst})")
            elif not imp.in_function:
                out.append(f"{where} at module level ({dst} is optional there: import it inside a function)")
        if imp.target not in PARTS.values():  # `import mtst.x` runs the package __init__: not an edge
            edges.setdefault(imp.source, set()).add(imp.target)
    out += [f"import cycle: {' <-> '.join(c)}" for c in _cycles(edges)]
    return out


def test_the_code_keeps_the_layers() -> None:
    assert layer_violations(REPO) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_every_rule_reports_a_tree_that_breaks_it(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "mtst/__init__.py": "",
            "mtst/errors.py": "",
            "mtst/config.py": "",
            "mtst/model.py": "",
            "mtst/a.py": "from mtst.export.onnx import export\n",  # the core importing a layer above
            "mtst/b.py": "def f():\n    from .c import g\n",  # b <-> c, inside functions
            "mtst/c.py": "from mtst.b import f\n",
            "runtime/__init__.py": "from mtst.errors import MtstError\n",  # allowed
            "runtime/engine.py": "from mtst.config import TrainConfig\n",
            "export/__init__.py": "",
            "export/onnx.py": "def go():\n    import mtst.experiment.run\n",
            "bench/__init__.py": "",
            "bench/peers.py": "import mtst.errors, mtst.model\n\ndef ok():\n    from mtst.config import C\n",
            "experiment/__init__.py": "",
            "experiment/run.py": "import mtst.bench.peers, mtst.config\n",  # allowed
        },
    )
    assert layer_violations(root) == [
        "mtst.a:1 imports mtst.export.onnx (mtst must not import mtst.export)",
        "mtst.runtime.engine:1 imports mtst.config (the runtime may take only ['mtst.errors'] of mtst)",
        "mtst.export.onnx:2 imports mtst.experiment.run (mtst.export must not import mtst.experiment)",
        "mtst.bench.peers:1 imports mtst.model at module level (mtst is optional there: import it inside a function)",
        "import cycle: mtst.b <-> mtst.c",
    ]


@pytest.mark.parametrize(
    "module",
    ["mtst", "mtst.runtime", "mtst.runtime.manifest", "mtst.runtime.decode", "mtst.runtime.triton_io"],
)
def test_import_does_not_pull_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'onnx', 'safetensors') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} pulled in {out.stdout.strip()}"
