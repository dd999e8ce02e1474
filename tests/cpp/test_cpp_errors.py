"""Bundles the runtimes must refuse: the C++ runtime says word for word what the Python runtime says."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mtst.errors import BundleError
from mtst.runtime.bundle import clear_hash_cache, load_bundle


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        edit(m)
        (bundle / "manifest.json").write_text(json.dumps(m), encoding="utf-8")

    return apply


def _tamper(bundle: Path) -> None:
    data = bytearray((bundle / "tokenizer.json").read_bytes())
    data[10] ^= 1
    (bundle / "tokenizer.json").write_bytes(bytes(data))


def _symlink_out(bundle: Path) -> None:
    outside = bundle.parent / "outside.json"
    shutil.move(bundle / "tokenizer.json", outside)
    os.symlink(outside, bundle / "tokenizer.json")


def _set_graph(name: str) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m["variants"][0]["graphs"]["model"] = name

    return edit


CASES: dict[str, Callable[[Path], None]] = {
    "tampered": _tamper,
    "truncated": lambda b: (b / "tokenizer.json").write_bytes((b / "tokenizer.json").read_bytes()[:-5]),
    "missing": lambda b: (b / "tokenizer.json").unlink(),
    "symlink-out": _symlink_out,
    "unlisted-graph": lambda b: shutil.copy(b / "model.onnx", b / "extra.onnx"),
    "no-manifest": lambda b: (b / "manifest.json").unlink(),
    "not-json": lambda b: (b / "manifest.json").write_text("[1, 2]", encoding="utf-8"),
    "manifest-cap": lambda b: (b / "manifest.json").write_bytes(
        (b / "manifest.json").read_bytes() + b" " * (1 << 20)
    ),
    "traversal": _edit_manifest(_set_graph("../model.onnx")),
    "absolute": _edit_manifest(_set_graph("/tmp/model.onnx")),
    "schema": _edit_manifest(lambda m: m.update(schema_version=7)),
    "missing-field": _edit_manifest(lambda m: m.pop("embedding_dim")),
    "wrong-type": _edit_manifest(lambda m: m.update(max_seq_len="32")),
    "bad-layout": _edit_manifest(lambda m: m["variants"][0].update(layout="sideways")),
    "bad-roles": _edit_manifest(lambda m: m["variants"][0].update(graphs={"encoder": "model.onnx"})),
    "one-label": _edit_manifest(lambda m: m["heads"][0].update(labels=["only"])),
    "duplicate-heads": _edit_manifest(lambda m: m["heads"].append(dict(m["heads"][0]))),
    "unlisted-tables": _edit_manifest(lambda m: m["files"].pop("tokenizer.tables.json")),
    "files-entry": _edit_manifest(lambda m: m["files"].update({"model.onnx": "x"})),
    # calibration fields (runtime/manifest_schema.py HEAD_FIELDS)
    "temperature-zero": _edit_manifest(lambda m: m["heads"][0].update(temperature=0)),
    "temperature-negative": _edit_manifest(lambda m: m["heads"][1].update(temperature=-1.5)),
    "temperature-str": _edit_manifest(lambda m: m["heads"][0].update(temperature="2")),
    "temperature-bool": _edit_manifest(lambda m: m["heads"][0].update(temperature=True)),
    "temperature-null": _edit_manifest(lambda m: m["heads"][1].update(temperature=None)),
    "threshold-high": _edit_manifest(lambda m: m["heads"][0].update(threshold=1.5)),
    "threshold-negative": _edit_manifest(lambda m: m["heads"][1].update(threshold=-1e-07)),
    "threshold-list": _edit_manifest(lambda m: m["heads"][0].update(threshold=[0.5])),
    "temperature-overflow": lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json")
        .read_text(encoding="utf-8")
        .replace('"output": "intent",', '"output": "intent", "temperature": 1e400,'),
        encoding="utf-8",
    ),
    "threshold-after-good-temperature": _edit_manifest(
        lambda m: m["heads"][1].update(temperature=2.0, threshold=2)
    ),
    "bad-graph": lambda b: (
        (b / "model.onnx").write_bytes(b"\x3a\x7f")
        or _edit_manifest(lambda m: m["files"]["model.onnx"].update(bytes=2, sha256=_sha(b"\x3a\x7f")))(b)
    ),
}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpp_refuses_a_bundle_with_the_python_message(
    cpp, toy_cpp_bundle: Path, tmp_path: Path, case: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(toy_cpp_bundle, bundle)
    CASES[case](bundle)
    clear_hash_cache()
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    res = cpp.run(cpp.tokenize, bundle, "x")
    assert res.returncode == 1
    assert res.stderr.decode("utf-8").strip() == f"Error: {info.value}"


def test_cpp_refuses_a_bundle_without_tables(cpp, toy_cpp_bundle: Path, tmp_path: Path) -> None:
    """Bundles exported before the C++ runtime still load in Python; the C++ runtime says what to do."""
    bundle = tmp_path / "old"
    shutil.copytree(toy_cpp_bundle, bundle)
    (bundle / "tokenizer.tables.json").unlink()
    _edit_manifest(lambda m: (m.pop("tokenizer_tables"), m["files"].pop("tokenizer.tables.json")))(bundle)
    assert load_bundle(bundle).manifest.tokenizer_tables is None
    res = cpp.run(cpp.predict, bundle, "x")
    assert res.returncode == 1
    assert res.stderr.decode().strip() == (
        f"Error: {bundle.resolve()}/manifest.json: tokenizer_tables: the bundle has no tokenizer tables, which the C++ "
        "runtime needs (export it again with this mtst: mtst-export writes tokenizer.tables.json for WordPiece "
        "tokenizers)"
    )


def test_invalid_utf8_line_is_named_as_mtst_predict_names_it(
    cpp, toy_cpp_bundle: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from mtst.runtime.cli import main

    src = tmp_path / "texts.txt"
    src.write_bytes(b"\xef\xbb\xbffine\r\nalso fine\nbad \xe4\xbd\n")
    res = cpp.run(cpp.predict, toy_cpp_bundle, "--file", src)
    py = CliRunner().invoke(main, [str(toy_cpp_bundle), "--file", str(src)])
    assert res.returncode == py.exit_code == 1
    assert (
        res.stderr.decode().strip()
        == py.output.strip().splitlines()[-1]
        == (f"Error: {src}:3: not valid UTF-8 (invalid continuation byte at byte 4)")
    )
    assert res.stdout.decode() == ""  # the error comes while the first chunk is read, as in Python
