"""Bundle verification: schema, hashes, sizes, names, symlinks, external data, unlisted graphs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mtst.errors import BundleError
from mtst.runtime.bundle import clear_hash_cache, hash_file, load_bundle
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import sha256_file
from mtst.runtime.onnx_refs import external_data_refs, external_data_refs_fd


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _write_manifest(bundle: Path, m: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(m))


def _relist(bundle: Path, name: str) -> None:
    """Update the manifest entry of ``name`` after the test changed the file on purpose."""
    m = _manifest(bundle)
    p = bundle / name
    m["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    _write_manifest(bundle, m)


def test_good_bundle_loads(fresh_single: Path) -> None:
    b = load_bundle(fresh_single)
    assert b.verified
    assert b.manifest.variants[0].graphs == {"model": "model.onnx"}
    assert set(b.manifest.files) == {"model.onnx", "tokenizer.json"}


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"not a directory"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"manifest.json: missing \(not an mtst bundle"):
        load_bundle(tmp_path)


def test_tampered_file_names_file_and_both_hashes(fresh_single: Path) -> None:
    path = fresh_single / "tokenizer.json"
    expected = _manifest(fresh_single)["files"]["tokenizer.json"]["sha256"]
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01  # same size, one bit flipped
    path.write_bytes(bytes(data))
    actual = sha256_file(path)
    with pytest.raises(
        BundleError, match=f"tokenizer.json: sha256 mismatch: expected {expected}, got {actual}"
    ):
        load_bundle(fresh_single)
    with pytest.raises(BundleError, match=r"tokenizer.json: sha256 mismatch"):
        Engine.load(fresh_single, providers="cpu")


def test_truncated_file_is_a_size_mismatch(fresh_single: Path) -> None:
    path = fresh_single / "model.onnx"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        BundleError,
        match=f"model.onnx: size mismatch: manifest.json lists {size} bytes, the file has {size - 100}",
    ):
        load_bundle(fresh_single)


def test_missing_file(fresh_single: Path) -> None:
    (fresh_single / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer.json: listed in manifest.json but missing"):
        Engine.load(fresh_single, providers="cpu")


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unsupported_schema_version(fresh_single: Path, version: int) -> None:
    m = _manifest(fresh_single)
    m["schema_version"] = version
    _write_manifest(fresh_single, m)
    with pytest.raises(
        BundleError, match=rf"schema_version {version} is not supported; this runtime reads 1\.\.1"
    ):
        Engine.load(fresh_single, providers="cpu")


def test_invalid_manifest_json(fresh_single: Path) -> None:
    (fresh_single / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest.json: invalid JSON"):
        load_bundle(fresh_single)


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside.onnx", "a/../../b.onnx", "C:/x.onnx", "a\\b.onnx"]
)
def test_names_must_stay_inside(fresh_single: Path, name: str) -> None:
    m = _manifest(fresh_single)
    m["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    _write_manifest(fresh_single, m)
    with pytest.raises(BundleError, match=r"must be a relative path inside the bundle"):
        load_bundle(fresh_single)


def test_graph_name_must_stay_inside(fresh_single: Path) -> None:
    m = _manifest(fresh_single)
    m["variants"][0]["graphs"]["model"] = "../model.onnx"
    _write_manifest(fresh_single, m)
    with pytest.raises(
        BundleError, match=r"variants\[0\]\.graphs\.model: '\.\./model\.onnx' must be a relative path"
    ):
        load_bundle(fresh_single)


def test_symlink_leading_out_is_refused(fresh_single: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((fresh_single / "tokenizer.json").read_bytes())  # identical bytes: hash would match
    (fresh_single / "tokenizer.json").unlink()
    os.symlink(outside, fresh_single / "tokenizer.json")
    with pytest.raises(
        BundleError, match=r"tokenizer.json: resolves to .*elsewhere.json, outside the bundle"
    ):
        load_bundle(fresh_single)


def test_symlink_inside_is_fine(fresh_single: Path) -> None:
    (fresh_single / "sub").mkdir()
    (fresh_single / "tokenizer.json").rename(fresh_single / "sub" / "tok.json")
    os.symlink("sub/tok.json", fresh_single / "tokenizer.json")
    load_bundle(fresh_single)


def test_unlisted_graph_file_is_refused(fresh_single: Path) -> None:
    (fresh_single / "extra.onnx").write_bytes((fresh_single / "model.onnx").read_bytes())
    with pytest.raises(BundleError, match=r"graph files not listed in manifest.json: \['extra.onnx'\]"):
        load_bundle(fresh_single)


def test_graph_used_but_not_listed(fresh_single: Path) -> None:
    m = _manifest(fresh_single)
    del m["files"]["model.onnx"]
    _write_manifest(fresh_single, m)
    with pytest.raises(BundleError, match=r"'model.onnx' is used but not listed in files"):
        load_bundle(fresh_single)


def test_verify_false_skips_hashes_but_warns(fresh_single: Path, caplog: pytest.LogCaptureFixture) -> None:
    (fresh_single / "tokenizer.json").write_bytes((fresh_single / "tokenizer.json").read_bytes() + b" ")
    b = load_bundle(fresh_single, verify=False)
    assert not b.verified
    assert "verification switched off" in caplog.text


def test_hash_cache_sees_changes(tmp_path: Path) -> None:
    clear_hash_cache()
    p = tmp_path / "f.bin"
    p.write_bytes(b"a" * 1000)
    first = hash_file(p)
    assert hash_file(p) == first
    p.write_bytes(b"b" * 1000)  # same size, new content (ctime/mtime change)
    assert hash_file(p) == sha256_file(p) != first


def test_cached_hash_still_catches_tampering_after_load(fresh_single: Path) -> None:
    load_bundle(fresh_single)  # hashes now cached
    p = fresh_single / "tokenizer.json"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"tokenizer.json: sha256 mismatch"):
        load_bundle(fresh_single)


# ---------------------------------------------------------------------------- external data


def _save_external(model_dir: Path, location: str, *, data_file: Path) -> Path:
    """A MatMul graph whose weight lives in ``data_file``, referenced as ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = numpy_helper.from_array(w, "W")
    data_file.write_bytes(w.tobytes())
    set_external_data(t, location=location)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [t],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = model_dir / "model.onnx"
    onnx.save(model, path)
    return path


def _add_external_bundle(bundle: Path, location: str, data_file: Path) -> None:
    _save_external(bundle, location, data_file=data_file)
    m = _manifest(bundle)
    m["files"].pop("model.onnx")
    _write_manifest(bundle, m)
    _relist(bundle, "model.onnx")


def test_external_data_inside_and_listed_is_accepted(fresh_single: Path) -> None:
    _add_external_bundle(fresh_single, "weights.bin", fresh_single / "weights.bin")
    with pytest.raises(
        BundleError, match=r"external data 'weights.bin': 'weights.bin' is not listed in manifest.json files"
    ):
        load_bundle(fresh_single)
    _relist(fresh_single, "weights.bin")
    load_bundle(fresh_single)


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_external_data_outside_is_refused_by_us_and_by_ort(fresh_single: Path, where: str) -> None:
    outside = fresh_single.parent / "outside.bin"
    location = "../outside.bin" if where == "parent" else str(outside)
    _add_external_bundle(fresh_single, location, outside)
    with pytest.raises(
        BundleError,
        match=rf"tensor 'W': external data '{location}' must be a relative path inside the bundle",
    ):
        load_bundle(fresh_single)
    # ORT 1.32 refuses it on its own too (defence in depth: we do not rely on it)
    with pytest.raises(Exception, match=r"External data path validation failed"):
        ort.InferenceSession(str(fresh_single / "model.onnx"), providers=["CPUExecutionProvider"])


def test_external_data_through_symlink_out_is_refused(fresh_single: Path) -> None:
    outside = fresh_single.parent / "outside.bin"
    _add_external_bundle(fresh_single, "weights.bin", outside)
    os.symlink(outside, fresh_single / "weights.bin")
    _relist(fresh_single, "weights.bin")
    with pytest.raises(BundleError, match=r"weights.bin: resolves to .*outside.bin, outside the bundle"):
        load_bundle(fresh_single)
    with pytest.raises(Exception, match=r"escapes model directory"):
        ort.InferenceSession(str(fresh_single / "model.onnx"), providers=["CPUExecutionProvider"])


def _refs(path: Path, reader: str) -> list:
    """The external-data references of ``path``: mapped whole, or read by pread with payloads skipped."""
    if reader == "mapped":
        return external_data_refs(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        return external_data_refs_fd(fd, os.fstat(fd).st_size, str(path))
    finally:
        os.close(fd)


@pytest.mark.parametrize("reader", ["mapped", "pread"])
def test_onnx_refs_agree_with_onnx(tmp_path: Path, toy, reader: str) -> None:
    """Our wire-format reader finds the same external tensors as onnx's own loader."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = toy.graphs("single")["model"]
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    expected = sorted(
        (t.name, {e.key: e.value for e in t.external_data}["location"])
        for t in _get_all_tensors(onnx.load(path, load_external_data=False))
        if uses_external_data(t)
    )
    got = sorted((r.tensor, r.location) for r in _refs(path, reader))
    assert got == expected and len(got) >= 4
    inline = tmp_path / "inline.onnx"
    onnx.save(toy.graphs("single")["model"], inline)
    assert _refs(inline, reader) == []


@pytest.mark.parametrize("reader", ["mapped", "pread"])
def test_onnx_refs_in_subgraphs_and_attributes(tmp_path: Path, reader: str) -> None:
    """Tensors inside node attributes (Constant) and If-branches are found too."""
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(np.ones((2,), np.float32), "c")
    const.data_location = TensorProto.EXTERNAL
    const.ClearField("float_data")
    const.external_data.add(key="location", value="c.bin")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=const)],
        "b",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    p = tmp_path / "if.onnx"
    p.write_bytes(helper.make_model(g).SerializeToString())
    assert [(r.tensor, r.location) for r in _refs(p, reader)] == [("c", "c.bin"), ("c", "c.bin")]


@pytest.mark.parametrize("reader", ["mapped", "pread"])
def test_onnx_refs_malformed(tmp_path: Path, reader: str) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x3a\xff\xff\xff\xff\x0f garbage")  # field 7, absurd length
    with pytest.raises(
        BundleError, match=r"bad.onnx: not a valid ONNX model \(field 7 at byte \d+ runs past"
    ):
        _refs(p, reader)
    p.write_bytes(b"")
    with pytest.raises(BundleError, match=r"bad.onnx: empty file, expected an ONNX model"):
        _refs(p, reader)
