"""Bundle loader guarantees one by one: caps at the cap and one past it, what is opened, bytes used.

The corpus (test_bundle_corpus.py) tries hundreds of broken bundles; these tests pin each rule with
its exact message, on a clone of a real exported bundle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _bundle_fixtures import MANIFEST, OpenRecorder, edit, manifest, outside_opens, put, relist, sha

from mtst.errors import BundleError
from mtst.runtime.bundle import clear_hash_cache, load_bundle
from mtst.runtime.engine import Engine
from mtst.runtime.manifest import Manifest
from mtst.runtime.manifest_schema import BundleLimitError, Limits, ManifestError
from mtst.runtime.onnx_refs import external_data_refs_in
from mtst.runtime.providers import SessionSettings, resolve_providers
from mtst.runtime.variants import Sessions, open_variant

TEXTS = ["Book a table in Paris for two.", "thanks a lot", "Where is my card?"]


def _limits(**kw: int) -> Limits:
    return dataclasses.replace(Limits(), **kw)


# ---------------------------------------------------------------------------- caps: at the cap, cap + 1


def test_manifest_cap_holds_at_the_cap_and_refuses_one_byte_more(bundle_copy: Path) -> None:
    text = (bundle_copy / MANIFEST).read_bytes()
    cap = len(text) + 100
    put(bundle_copy / MANIFEST, text + b" " * 100)  # exactly the cap
    load_bundle(bundle_copy, limits=_limits(manifest_bytes=cap))
    put(bundle_copy / MANIFEST, text + b" " * 101)
    with pytest.raises(BundleLimitError, match=rf"manifest.json: {cap + 1} bytes, over the cap of {cap}"):
        load_bundle(bundle_copy, limits=_limits(manifest_bytes=cap))


def test_manifest_cap_from_the_environment(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = (bundle_copy / MANIFEST).stat().st_size
    monkeypatch.setenv("MTST_BUNDLE_MAX_MANIFEST_BYTES", str(size))
    load_bundle(bundle_copy)
    monkeypatch.setenv("MTST_BUNDLE_MAX_MANIFEST_BYTES", str(size - 1))
    with pytest.raises(BundleLimitError, match=r"over the cap .*MTST_BUNDLE_MAX_MANIFEST_BYTES"):
        load_bundle(bundle_copy)
    monkeypatch.setenv("MTST_BUNDLE_MAX_MANIFEST_BYTES", "lots")
    with pytest.raises(
        BundleLimitError, match=r"MTST_BUNDLE_MAX_MANIFEST_BYTES: expected a positive integer, got 'lots'"
    ):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(("cap", "name"), [("graph_bytes", "model.onnx"), ("text_bytes", "tokenizer.json")])
def test_file_caps_hold_at_the_cap_and_refuse_one_byte_more(bundle_copy: Path, cap: str, name: str) -> None:
    size = (bundle_copy / name).stat().st_size
    load_bundle(bundle_copy, limits=_limits(**{cap: size}))
    with pytest.raises(
        BundleLimitError,
        match=rf"manifest.json: files.{name}.bytes: {size} bytes, over the cap of {size - 1} \(MTST_BUNDLE_MAX_{cap.upper()}\)",
    ):
        load_bundle(bundle_copy, limits=_limits(**{cap: size - 1}))


def test_sparse_200mb_manifest_is_refused_fast_without_reading_it(bundle_copy: Path) -> None:
    with open(bundle_copy / MANIFEST, "r+b") as f:
        f.truncate(200 << 20)
    start = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(BundleLimitError, match=r"manifest.json: 209715200 bytes, over the cap of 1048576"):
        load_bundle(bundle_copy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - start < 2.0 and peak < 1 << 20


def test_a_million_file_entries_are_refused_by_size_before_parsing(bundle_copy: Path) -> None:
    entry = '"f{}":{{"sha256":"{}","bytes":1}}'
    body = ",".join(entry.format(i, "0" * 64) for i in range(1_000_000))
    put(bundle_copy / MANIFEST, ('{"schema_version":1,"files":{' + body + "}}").encode())
    tracemalloc.start()
    with pytest.raises(BundleLimitError, match=r"over the cap of 1048576"):
        load_bundle(bundle_copy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20  # refused on its size: never read, never parsed
    # with the cap raised past its size it is parsed, and then refused by the entry cap
    edit_cap = _limits(manifest_bytes=200 << 20)
    with pytest.raises(
        BundleLimitError, match=r"manifest.json: files: expected 0..1024 entries, got 1000000"
    ):
        load_bundle(bundle_copy, limits=edit_cap)


@pytest.mark.parametrize(
    ("field", "limit", "value", "message"),
    [
        ("heads", 256, None, r"manifest.json: heads: expected 0..3 entries, got 4"),
        ("labels", 3, None, r"manifest.json: heads\[1\].labels: expected 0..2 entries, got 3"),
    ],
)
def test_list_caps(bundle_copy: Path, field: str, limit: int, value: object, message: str) -> None:
    n_heads = len(manifest(bundle_copy)["heads"])
    caps = {"heads": n_heads - 1} if field == "heads" else {"labels": 2}
    with pytest.raises(
        BundleLimitError,
        match=message.replace("0..3", f"0..{n_heads - 1}").replace("got 4", f"got {n_heads}"),
    ):
        load_bundle(bundle_copy, limits=_limits(**caps))


# ---------------------------------------------------------------------------- schema: field by field, first


@pytest.mark.parametrize(
    ("edit_fn", "message"),
    [
        (lambda m: m.update(heads=[1]), r"^manifest.json: heads\[0\]: expected dict, got 1$"),
        (
            lambda m: m["heads"][1].update(labels=["a", 2]),
            r"^manifest.json: heads\[1\].labels\[1\]: expected str, got 2$",
        ),
        (
            lambda m: m.update(max_seq_len=1),
            r"^manifest.json: max_seq_len: expected a value in \[2, 1048576\], got 1$",
        ),
        (lambda m: m.update(pad_token_id=True), r"^manifest.json: pad_token_id: expected int, got True$"),
        (
            lambda m: m.update(pooling="avg"),
            r"^manifest.json: pooling: 'avg' is not one of \['mean', 'cls', 'max'\]$",
        ),
        (
            lambda m: m["files"]["model.onnx"].update(sha256="abc"),
            r"^manifest.json: files.model.onnx.sha256: expected 64 hexadecimal digits",
        ),
        (
            lambda m: m.update(tokenizer="tok\x00.json"),
            r"^manifest.json: tokenizer: 'tok\\x00.json' is not a file name",
        ),
        (
            lambda m: m["variants"][0].update(
                details={"a": [[[[]]]]} | {"b": json.loads("[" * 40 + "]" * 40)}
            ),
            r"^manifest.json: variants\[0\].details.b(\[0\])+: nested deeper than 32 levels$",
        ),
        (lambda m: m.update(provenance=None), r"^manifest.json: provenance: expected dict, got None$"),
        (lambda m: m.update(mtst_version=None), r"^manifest.json: mtst_version: expected str, got None$"),
        (
            lambda m: m["heads"][1].update(output="token_states"),
            r"^manifest.json: heads\[1\].output: 'token_states' is reserved",
        ),
        (
            lambda m: m["heads"][1].update(labels=["a", "b", "a"]),
            r"^manifest.json: heads\[1\].labels: duplicate labels \['a'\]$",
        ),
    ],
)
def test_schema_names_the_field_and_reads_no_other_file(
    bundle_copy: Path, open_recorder: OpenRecorder, edit_fn, message: str
) -> None:
    edit(bundle_copy, edit_fn)
    with open_recorder.recording() as paths, pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle_copy)
    assert isinstance(info.value, (ManifestError, BundleLimitError))
    assert [Path(p).name for p in paths] == [MANIFEST]


def test_duplicate_keys_nan_and_deep_nesting_are_typed(bundle_copy: Path) -> None:
    text = (bundle_copy / MANIFEST).read_text()
    put(bundle_copy / MANIFEST, text.replace('"max_seq_len": ', '"max_seq_len": 3, "max_seq_len": ').encode())
    with pytest.raises(ManifestError, match=r"manifest.json: invalid JSON \(duplicate key 'max_seq_len'\)"):
        load_bundle(bundle_copy)
    put(bundle_copy / MANIFEST, text.replace('"max_seq_len": ', '"max_seq_len": NaN, "q": ').encode())
    with pytest.raises(ManifestError, match=r"invalid JSON \(NaN is not JSON\)"):
        load_bundle(bundle_copy)
    put(bundle_copy / MANIFEST, b"[" * 100_000)
    with pytest.raises(BundleLimitError, match=r"invalid JSON \(nested too deeply\)"):
        load_bundle(bundle_copy)


def test_fields_a_newer_exporter_adds_are_ignored_but_bounded(bundle_copy: Path) -> None:
    edit(bundle_copy, lambda m: (m.update(future={"x": [1, 2]}), m["heads"][1].update(temperature=2.0)))
    load_bundle(bundle_copy)


# ---------------------------------------------------------------------------- what is opened


def test_a_good_load_opens_only_the_manifest_and_listed_files(
    bundle_copy: Path, open_recorder: OpenRecorder, tmp_path: Path
) -> None:
    put(bundle_copy / "notes.txt", b"unlisted, never opened")
    (bundle_copy / "sub").mkdir()
    put(bundle_copy / "sub" / "data.bin", b"\0" * 10)
    Engine.load(bundle_copy, providers=["cpu"])  # warm (lazy imports)
    clear_hash_cache()
    with open_recorder.recording() as paths:
        engine = Engine.load(bundle_copy, providers=["cpu"])
        engine.predict(TEXTS)
    assert outside_opens(paths, bundle_copy) == []
    opened = {Path(p).name for p in paths}
    assert (
        MANIFEST in opened
        and "model.onnx" in opened
        and "notes.txt" not in opened
        and "data.bin" not in opened
    )


def test_manifest_symlink_leaving_the_bundle_is_refused_unread(
    bundle_copy: Path, tmp_path: Path, open_recorder: OpenRecorder
) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes((bundle_copy / MANIFEST).read_bytes())
    (bundle_copy / MANIFEST).unlink()
    os.symlink(outside, bundle_copy / MANIFEST)
    with (
        open_recorder.recording() as paths,
        pytest.raises(BundleError, match=r"manifest.json: a symlink to .*elsewhere.json, outside the bundle"),
    ):
        load_bundle(bundle_copy)
    assert paths == []


def test_manifest_symlink_inside_is_fine(bundle_copy: Path) -> None:
    (bundle_copy / "m").mkdir()
    os.replace(bundle_copy / MANIFEST, bundle_copy / "m" / "real.json")
    os.symlink("m/real.json", bundle_copy / MANIFEST)
    load_bundle(bundle_copy)


def test_fifo_is_refused_without_blocking(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    os.mkfifo(bundle_copy / "tokenizer.json")
    with pytest.raises(BundleError, match=r"tokenizer.json: not a regular file"):
        load_bundle(bundle_copy)


# ---------------------------------------------------------------------------- the bytes hashed are the bytes used


def test_files_swapped_after_verification_are_never_used(bundle_copy: Path, rel_bundle: Path) -> None:
    expected = Engine.load(rel_bundle, providers=["cpu"]).embed(TEXTS)
    b = load_bundle(bundle_copy)  # verified: the bytes are in hand
    put(bundle_copy / "model.onnx", b"\x08\x07garbage")  # swapped before the session opens
    put(bundle_copy / "tokenizer.json", b"{}")
    sessions = Sessions(resolve_providers(["cpu"]), SessionSettings())
    variant, runner = open_variant(b, sessions)
    engine = Engine(b, variant, runner, sessions, batch_size=8, max_batch_tokens=None, embedding_cache=0)
    np.testing.assert_array_equal(engine.embed(TEXTS), expected)
    assert b.blobs == {}  # released once the engine holds its sessions and tokenizer


def test_graph_bytes_are_let_go_before_the_tokenizer_is_built(
    rel_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # peak memory of a load: the graph bytes (and onnxruntime's own reference to them) are gone by
    # the time the tokenizer is built, so the two never count together
    import mtst.runtime.engine as engine_mod
    from mtst.runtime.tokenize import TextTokenizer

    loaded = []
    real_load, real_from_bytes = engine_mod.load_bundle, TextTokenizer.from_bytes

    def recording_load(*args, **kwargs):  # the real loader; the test keeps its bundle
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    held = []

    def recording_from_bytes(*args, **kwargs):  # the real builder; the test notes what is still held
        held.append(dict(loaded[-1].blobs))
        return real_from_bytes(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "load_bundle", recording_load)
    monkeypatch.setattr(TextTokenizer, "from_bytes", recording_from_bytes)
    engine = Engine.load(rel_bundle, providers=["cpu"])
    assert held == [{}]
    assert all(getattr(g.session, "_model_bytes", None) is None for g in engine._heads.runner.graphs)
    assert engine.predict(TEXTS[:2])[0].heads


PINNED = Path("/proc/self/fd").is_dir()


def test_a_graph_not_kept_is_checked_again_when_its_session_opens(bundle_copy: Path) -> None:
    b = load_bundle(bundle_copy, keep_graphs=())  # verified; no graph bytes in hand
    assert "model.onnx" not in b.blobs and "tokenizer.json" in b.blobs
    put(bundle_copy / "model.onnx", b"\x08\x07garbage")  # swapped before the session opens
    sessions = Sessions(resolve_providers(["cpu"]), SessionSettings())
    with pytest.raises(BundleError, match=r"model.onnx: size mismatch"):
        open_variant(b, sessions)
    with pytest.raises(BundleError, match=r"model.onnx: size mismatch"):
        b.data("model.onnx")


@pytest.mark.skipif(not PINNED, reason="no /proc/self/fd on this system: graphs are handed over as bytes")
def test_a_pinned_graph_is_the_file_that_was_hashed(bundle_copy: Path, rel_bundle: Path) -> None:
    expected = Engine.load(rel_bundle, providers=["cpu"]).embed(TEXTS)
    put(bundle_copy / "model.onnx", (bundle_copy / "model.onnx").read_bytes())  # our own inode
    original = (bundle_copy / "model.onnx").read_bytes()
    b = load_bundle(bundle_copy, keep_graphs=())
    # replaced in the folder while ONNX Runtime reads it: the open file is still the one hashed
    with b.graph_source("model.onnx") as path:
        assert isinstance(path, Path) and path.parent == Path("/proc/self/fd")
        put(bundle_copy / "model.onnx", b"\x08\x07garbage")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name
    # an engine built the same way answers as the untouched bundle
    put(bundle_copy / "model.onnx", original)
    engine = Engine.load(bundle_copy, providers=["cpu"])
    np.testing.assert_array_equal(engine.embed(TEXTS), expected)
    assert engine.bundle.blobs == {}


@pytest.mark.skipif(not PINNED, reason="no /proc/self/fd on this system: graphs are handed over as bytes")
def test_a_pinned_graph_changed_in_place_while_read_is_refused(bundle_copy: Path) -> None:
    put(bundle_copy / "model.onnx", (bundle_copy / "model.onnx").read_bytes())  # our own inode
    b = load_bundle(bundle_copy, keep_graphs=())
    changed = pytest.raises(BundleError, match=r"model.onnx: changed while ONNX Runtime read it")
    with changed, b.graph_source("model.onnx"), open(bundle_copy / "model.onnx", "r+b") as f:
        f.seek(100)  # same inode, same size, new bytes
        f.write(b"\xff" * 8)
    with pytest.raises(BundleError, match=r"model.onnx: sha256 mismatch"), b.graph_source("model.onnx"):
        pass


def test_an_engine_holds_one_variant_of_a_bundle_of_several(
    rel_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bundle with two variants: verification reads both, the engine keeps neither in memory and
    # opens sessions only for the one it runs
    import mtst.runtime.bundle as bundle_mod

    two = tmp_path / "two"
    two.mkdir()
    for f in rel_bundle.iterdir():
        put(two / f.name, f.read_bytes())
    put(two / "copy.onnx", (rel_bundle / "model.onnx").read_bytes())
    m = json.loads((two / MANIFEST).read_text())
    extra = dict(m["variants"][0], precision="int8-dynamic", graphs={"model": "copy.onnx"})
    m["variants"].append(extra)
    (two / MANIFEST).write_text(json.dumps(m))
    relist(two, "copy.onnx")
    pinned: list[str] = []
    real = bundle_mod._pinned

    def recording(root, name, *args):  # the real pinning; the test notes which graphs it opened
        pinned.append(name)
        return real(root, name, *args)

    monkeypatch.setattr(bundle_mod, "_pinned", recording)
    engine = Engine.load(two, providers=["cpu"], precision="fp32")
    assert engine.variant.graphs == {"model": "model.onnx"}
    assert pinned == (["model.onnx"] if PINNED else [])
    assert engine.bundle.blobs == {}
    assert engine.embed(TEXTS).shape[0] == len(TEXTS)


def test_file_changed_in_place_after_a_cached_hash_is_hashed_again(bundle_copy: Path) -> None:
    put(bundle_copy / "model.onnx", (bundle_copy / "model.onnx").read_bytes())  # our own inode, not a link
    load_bundle(bundle_copy)
    data = bytearray((bundle_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    with open(bundle_copy / "model.onnx", "r+b") as f:  # same inode, same size
        f.seek(0)
        f.write(bytes(data))
    with pytest.raises(BundleError, match=r"model.onnx: sha256 mismatch"):
        load_bundle(bundle_copy)


# ---------------------------------------------------------------------------- external data


def _externalize(bundle: Path, location: str) -> bytes:
    import onnx
    from onnx import TensorProto

    model = onnx.load_from_string((bundle / "model.onnx").read_bytes())
    init = max(model.graph.initializer, key=lambda x: len(x.raw_data))
    data = init.raw_data
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value=location)
    init.external_data.add(key="length", value=str(len(data)))
    put(bundle / "model.onnx", model.SerializeToString())
    relist(bundle, "model.onnx")
    return data


def test_external_data_inside_and_listed_is_read_hashed_and_passed_in_memory(
    bundle_copy: Path, rel_bundle: Path, open_recorder: OpenRecorder
) -> None:
    expected = Engine.load(rel_bundle, providers=["cpu"]).embed(TEXTS)
    data = _externalize(bundle_copy, "weights.bin")
    put(bundle_copy / "weights.bin", data)
    with pytest.raises(
        BundleError, match=r"external data 'weights.bin': 'weights.bin' is not listed in manifest.json"
    ):
        load_bundle(bundle_copy)
    relist(bundle_copy, "weights.bin")
    with open_recorder.recording() as paths:
        engine = Engine.load(bundle_copy, providers=["cpu"])
    np.testing.assert_allclose(engine.embed(TEXTS), expected, atol=1e-6)
    assert "weights.bin" in {Path(p).name for p in paths} and outside_opens(paths, bundle_copy) == []
    b = load_bundle(bundle_copy)
    put(bundle_copy / "weights.bin", b"\0" * len(data))  # swapped after verification: unused
    sessions = Sessions(resolve_providers(["cpu"]), SessionSettings())
    variant, runner = open_variant(b, sessions)
    engine = Engine(b, variant, runner, sessions, batch_size=8, max_batch_tokens=None, embedding_cache=0)
    np.testing.assert_allclose(engine.embed(TEXTS), expected, atol=1e-6)


def test_external_data_named_in_a_function_attribute_default_is_checked(bundle_copy: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string((bundle_copy / "model.onnx").read_bytes())
    t = numpy_helper.from_array(np.ones(2, dtype=np.float32), "dflt")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../secret.bin")
    fn = helper.make_function(
        "t", "F", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])], [helper.make_opsetid("", 17)]
    )
    fn.attribute_proto.append(helper.make_attribute("value", t))
    model.functions.append(fn)
    raw = model.SerializeToString()
    assert [(r.tensor, r.location) for r in external_data_refs_in(raw, "m")] == [("dflt", "../secret.bin")]
    put(bundle_copy / "model.onnx", raw)
    relist(bundle_copy, "model.onnx")
    with pytest.raises(
        BundleError, match=r"model.onnx: tensor 'dflt': external data '../secret.bin' must be a relative path"
    ):
        load_bundle(bundle_copy)


# ---------------------------------------------------------------------------- manifest against graph and tokenizer


@pytest.mark.parametrize(
    ("edit_fn", "message"),
    [
        (
            lambda m: m.update(embedding_dim=m["embedding_dim"] + 1),
            r"model.onnx: 'embedding' has 32 values per row, but manifest.json embedding_dim says 33",
        ),
        (
            lambda m: m["heads"][1]["labels"].append("extra"),
            r"model.onnx: 'intent' has 3 values per row, but manifest.json heads\[1\].labels \('intent'\) says 4",
        ),
        (
            lambda m: m["heads"][2].update(kind="sentence_classification"),
            r"model.onnx: 'ner' has rank 3, expected 2 for manifest.json heads\[2\].labels",
        ),
        (
            lambda m: m.update(pad_token_id=30522),
            r"manifest.json: pad_token_id: 30522 is not in the vocabulary of .*tokenizer.json \(30522 tokens\)",
        ),
    ],
)
def test_manifest_disagreeing_with_graph_or_tokenizer_is_refused_at_load(
    bundle_copy: Path, edit_fn, message: str
) -> None:
    edit(bundle_copy, edit_fn)
    with pytest.raises(BundleError, match=message):
        Engine.load(bundle_copy, providers=["cpu"])


def test_tokenizer_that_loads_but_cannot_encode_is_refused_at_load(bundle_copy: Path) -> None:
    tok = json.loads((bundle_copy / "tokenizer.json").read_text())
    tok["model"]["vocab"].pop(tok["model"]["unk_token"])
    put(bundle_copy / "tokenizer.json", json.dumps(tok).encode())
    relist(bundle_copy, "tokenizer.json")
    from tokenizers import Tokenizer

    Tokenizer.from_str(json.dumps(tok))  # it parses ...
    with pytest.raises(BundleError, match=r"tokenizer.json: the tokenizer cannot encode a probe text"):
        Engine.load(bundle_copy, providers=["cpu"])  # ... and is refused at load, not per request


def test_manifest_checks_match_what_the_exporter_writes(rel_bundle: Path) -> None:
    m = Manifest.read(rel_bundle)
    assert Manifest.from_dict(json.loads(m.to_json())) == m
    assert sha((rel_bundle / "model.onnx").read_bytes()) == m.files["model.onnx"].sha256
    assert ort.get_available_providers()


def test_read_fd_returns_whole_files_and_chunked_streams(tmp_path: Path) -> None:
    # a regular file comes back from one read, as is; a pipe that delivers in pieces is still read
    # up to the limit, and never past it
    from mtst.runtime.manifest_schema import read_fd

    data = bytes(range(256)) * 4099
    f = tmp_path / "blob"
    f.write_bytes(data)
    for limit, want in ((len(data) + 1, data), (len(data), data), (1000, data[:1000])):
        fd = os.open(f, os.O_RDONLY)
        try:
            assert read_fd(fd, limit) == want
        finally:
            os.close(fd)
    r, w = os.pipe()
    os.write(w, data[:3000])

    def rest() -> None:  # arrives after the first read has returned its 3000 bytes
        time.sleep(0.2)
        os.write(w, data[3000:5000])
        os.close(w)

    writer = threading.Thread(target=rest)
    writer.start()
    try:
        assert read_fd(r, 4500) == data[:4500]
    finally:
        writer.join()
        os.close(r)
    r, w = os.pipe()
    os.write(w, data[:10])
    os.close(w)
    try:
        assert read_fd(r, 100) == data[:10]
    finally:
        os.close(r)
