"""The corruption corpus: hundreds of broken bundles made from one real exported bundle.

Each :class:`Case` turns a clone of the good bundle into a bad one. Every case must be refused by
``Engine.load`` with a ``BundleError`` (a typed error naming the file or field), opening no file but
``manifest.json`` and the files it lists. Categories: bit flips in every file, truncation, sha/size
mismatches, missing/extra files, FIFOs/folders/symlinks in place of files, names that leave the
bundle, external data leaving it (also named in a function's attribute defaults), broken and
oversized manifests, wrong field types and values, schema versions, and manifests that disagree with
the graph or the tokenizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bundle_fixtures import MANIFEST, edit, manifest, put, relist, replace_listed, sha, write_manifest

Build = Callable[[Path, Path], None]  # (bundle clone, a scratch folder outside it)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    category: str
    build: Build


def _flip(name: str, pos: int, bit: int) -> Build:
    def build(b: Path, _: Path) -> None:
        data = bytearray((b / name).read_bytes())
        data[pos % len(data)] ^= 1 << bit
        put(b / name, bytes(data))

    return build


def _truncate(name: str, keep: Callable[[int], int]) -> Build:
    def build(b: Path, _: Path) -> None:
        data = (b / name).read_bytes()
        put(b / name, data[: keep(len(data))])

    return build


def _set(path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Build:
    """Set (or delete) the manifest value at ``path`` (keys and list indices)."""

    def build(b: Path, _: Path) -> None:
        def fn(m: dict[str, Any]) -> None:
            node: Any = m
            for k in path[:-1]:
                node = node[k]
            if delete:
                del node[path[-1]]
            else:
                node[path[-1]] = value

        edit(b, fn)

    return build


def _raw_manifest(data: bytes) -> Build:
    return lambda b, _: put(b / MANIFEST, data)


def _nested(depth: int) -> Any:
    x: Any = 1
    for _ in range(depth):
        x = {"a": x}
    return x


def _files_of(base: Path) -> list[str]:
    return sorted(manifest(base)["files"])


def _head_index(base: Path, kind: str) -> int:
    return next(i for i, h in enumerate(manifest(base)["heads"]) if h["kind"] == kind)


def bit_flips(base: Path) -> list[Case]:
    cases = []
    for name in _files_of(base):
        size = (base / name).stat().st_size
        positions = sorted({0, 1, size // 2, size - 1, *(size * k // 24 for k in range(1, 24))})
        for k, pos in enumerate(positions):
            cases.append(Case(f"flip {name} @{pos}", "bit flip", _flip(name, pos, k % 8)))
    for pos in (0, 5, 12):  # the manifest itself: JSON that no longer parses or no longer matches
        cases.append(Case(f"flip {MANIFEST} @{pos}", "bit flip", _flip(MANIFEST, pos, 6)))
    return cases


def truncations(base: Path) -> list[Case]:
    cuts: dict[str, Callable[[int], int]] = {
        "empty": lambda n: 0,
        "1 byte": lambda n: 1,
        "half": lambda n: n // 2,
        "all but 1": lambda n: n - 1,
    }
    cases = [
        Case(f"truncate {name} {k}", "truncation", _truncate(name, f))
        for name in _files_of(base)
        for k, f in cuts.items()
    ]
    for name in _files_of(base):
        cases.append(
            Case(
                f"append to {name}",
                "truncation",
                lambda b, _, n=name: put(b / n, (b / n).read_bytes() + b"\0"),
            )
        )
    for k in ("empty", "half"):
        cases.append(Case(f"truncate {MANIFEST} {k}", "truncation", _truncate(MANIFEST, cuts[k])))
    return cases


def hash_and_size(base: Path) -> list[Case]:
    cases = []
    for name in _files_of(base):
        good = manifest(base)["files"][name]
        other = "0" * 64 if good["sha256"] != "0" * 64 else "1" * 64
        cases += [
            Case(f"sha of {name} wrong", "sha/size", _set(("files", name, "sha256"), other)),
            Case(
                f"sha of {name} one digit off",
                "sha/size",
                _set(
                    ("files", name, "sha256"),
                    good["sha256"][:-1] + ("0" if good["sha256"][-1] != "0" else "1"),
                ),
            ),
            Case(f"size of {name} +1", "sha/size", _set(("files", name, "bytes"), good["bytes"] + 1)),
            Case(f"size of {name} -1", "sha/size", _set(("files", name, "bytes"), good["bytes"] - 1)),
            Case(f"size of {name} 0", "sha/size", _set(("files", name, "bytes"), 0)),
            Case(f"size of {name} huge", "sha/size", _set(("files", name, "bytes"), 1 << 50)),
            Case(f"swap content of {name} with another file", "sha/size", _swap_content(name, base)),
        ]
    return cases


def _swap_content(name: str, base: Path) -> Build:
    others = [n for n in _files_of(base) if n != name]

    def build(b: Path, _: Path) -> None:
        put(b / name, (b / others[0]).read_bytes())

    return build


def missing_and_extra(base: Path) -> list[Case]:
    cases = [
        Case(f"missing {name}", "missing/extra", lambda b, _, n=name: (b / n).unlink())
        for name in _files_of(base)
    ]
    cases.append(Case("missing manifest.json", "missing/extra", lambda b, _: (b / MANIFEST).unlink()))
    cases.append(
        Case(
            "listed file absent",
            "missing/extra",
            _set(("files", "extra.bin"), {"sha256": "0" * 64, "bytes": 3}),
        )
    )
    cases.append(
        Case(
            "unlisted graph",
            "missing/extra",
            lambda b, _: put(b / "stray.onnx", (b / "model.onnx").read_bytes()),
        )
    )

    def sub_graph(b: Path, _: Path) -> None:
        (b / "sub").mkdir()
        put(b / "sub" / "m.onnx", b"\x08\x07")

    cases.append(Case("unlisted graph in a subfolder", "missing/extra", sub_graph))
    return cases


def special_files(base: Path) -> list[Case]:
    cases = []
    for name in [*_files_of(base), MANIFEST]:

        def fifo(b: Path, _: Path, n: str = name) -> None:
            (b / n).unlink()
            os.mkfifo(b / n)

        def folder(b: Path, _: Path, n: str = name) -> None:
            (b / n).unlink()
            (b / n).mkdir()

        def loop(b: Path, _: Path, n: str = name) -> None:
            (b / n).unlink()
            os.symlink(n + ".loop", b / n)
            os.symlink(n, b / (n + ".loop"))

        def dangling(b: Path, _: Path, n: str = name) -> None:
            (b / n).unlink()
            os.symlink("nowhere", b / n)

        def outside(b: Path, scratch: Path, n: str = name) -> None:  # the same bytes, outside the folder
            target = scratch / ("outside-" + n)
            target.write_bytes((b / n).read_bytes())
            (b / n).unlink()
            os.symlink(target, b / n)

        def dev_zero(b: Path, _: Path, n: str = name) -> None:
            (b / n).unlink()
            os.symlink("/dev/zero", b / n)

        for kind, fn in (("FIFO", fifo), ("folder", folder), ("symlink loop", loop), ("dangling symlink", dangling),
                         ("symlink out", outside), ("symlink to /dev/zero", dev_zero)):  # fmt: skip
            cases.append(Case(f"{kind} as {name}", "special file", fn))
    return cases


BAD_NAMES = ["../x.onnx", "/etc/passwd", "a\x00b", "a\\b", "C:x", "", "sub/../../x", "x\n", "a//b", "..", "."]


def names(base: Path) -> list[Case]:
    cases = []
    graph = next(iter(manifest(base)["variants"][0]["graphs"]))
    for bad in BAD_NAMES:
        cases.append(Case(f"graph name {bad!r}", "name", _set(("variants", 0, "graphs", graph), bad)))
        cases.append(Case(f"tokenizer name {bad!r}", "name", _set(("tokenizer",), bad)))

        def listed(b: Path, _: Path, n: str = bad) -> None:
            edit(b, lambda m: m["files"].__setitem__(n, {"sha256": "0" * 64, "bytes": 1}))

        cases.append(Case(f"files key {bad!r}", "name", listed))
    return cases


def _external_graph(location: str, *, in_function: bool = False) -> Build:
    """model.onnx with one initializer moved to external data named ``location`` (listed hashes kept right)."""

    def build(b: Path, scratch: Path) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        model = onnx.load_from_string((b / "model.onnx").read_bytes())
        if in_function:  # a function whose attribute default holds an external tensor
            t = numpy_helper.from_array(__import__("numpy").ones(2, dtype="float32"), "dflt")
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            t.external_data.add(key="location", value=location)
            attr = helper.make_attribute("value", t)
            fn = helper.make_function("mtst.test", "F", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
                                      [helper.make_opsetid("", 17)], attributes=[])  # fmt: skip
            fn.attribute_proto.append(attr)
            model.functions.append(fn)
        else:
            init = max(model.graph.initializer, key=lambda x: len(x.raw_data))
            data = init.raw_data
            (scratch / "w.bin").write_bytes(data)
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            init.external_data.add(key="location", value=location)
            init.external_data.add(key="length", value=str(len(data)))
        replace_listed(b, "model.onnx", model.SerializeToString())
        if location == "w.bin" and not in_function:  # inside but not listed
            put(b / "w.bin", (scratch / "w.bin").read_bytes())

    return build


def external_data(base: Path) -> list[Case]:
    locs = ["../w.bin", "/tmp/w.bin", "sub/../../w.bin", "w.bin", "a\\..\\w.bin", "C:w.bin", "w.bin\n"]
    cases = [Case(f"external data {loc!r}", "external data", _external_graph(loc)) for loc in locs]
    cases += [Case(f"function default external data {loc!r}", "external data", _external_graph(loc, in_function=True)) for loc in ("../secret.bin", "/etc/passwd", "unlisted.bin")]  # fmt: skip
    return cases


def broken_manifests(base: Path) -> list[Case]:
    text = (base / MANIFEST).read_bytes()
    raw = {
        "not JSON": b"not json",
        "JSON list": b"[1, 2]",
        "JSON string": b'"manifest"',
        "JSON null": b"null",
        "trailing garbage": text + b"}}",
        "UTF-16": text.decode("utf-8").encode("utf-16"),
        "latin-1 byte": text.replace(b'"mean"', b'"m\xe9an"'),
        "NaN": text.replace(b'"max_seq_len": ', b'"max_seq_len": NaN, "x": '),
        "Infinity": text.replace(b'"embedding_dim": ', b'"embedding_dim": Infinity, "y": '),
        "duplicate key": text.replace(b'"max_seq_len": ', b'"max_seq_len": 5, "max_seq_len": '),
        "deep list nesting": b"[" * 200_000 + b"]" * 200_000,
        "deep object nesting": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "huge integer": text.replace(b'"max_seq_len": ', b'"max_seq_len": ' + b"9" * 5000 + b', "z": '),
        "1e400": text.replace(b'"embedding_dim": ', b'"embedding_dim": 1e400, "w": '),
    }
    cases = [Case(f"manifest {k}", "broken manifest", _raw_manifest(v)) for k, v in raw.items()]
    for cut in (1, 10, len(text) // 3, len(text) // 2, len(text) - 2):
        cases.append(Case(f"manifest cut at {cut}", "broken manifest", _raw_manifest(text[:cut])))
    return cases


def oversized(base: Path) -> list[Case]:
    def whitespace(b: Path, _: Path) -> None:  # 200 MB: sparse, refused by its size before a read
        path = b / MANIFEST
        data = path.read_bytes()
        put(path, data)
        with open(path, "r+b") as f:
            f.truncate(200 << 20)

    def million_files(b: Path, _: Path) -> None:
        m = manifest(b)
        entries = ",".join(f'"f{i}":{{"sha256":"{"0" * 64}","bytes":1}}' for i in range(1_000_000))
        body = json.dumps({k: v for k, v in m.items() if k != "files"})[:-1]
        put(b / MANIFEST, (body + ',"files":{' + entries + "}}").encode())

    def many_files_under_cap(b: Path, _: Path) -> None:
        edit(b, lambda m: m["files"].update({f"f{i}": {"sha256": "0" * 64, "bytes": 1} for i in range(2000)}))

    def deep_details(b: Path, _: Path) -> None:
        edit(b, lambda m: m["variants"][0].__setitem__("details", _nested(200)))

    def deep_provenance(b: Path, _: Path) -> None:
        edit(b, lambda m: m.__setitem__("provenance", _nested(40)))

    def deep_unknown(b: Path, _: Path) -> None:
        edit(b, lambda m: m.__setitem__("future_field", _nested(50)))

    def long_label(b: Path, _: Path) -> None:
        edit(
            b,
            lambda m: m["heads"][_head_index(b, "sentence_classification")]["labels"].__setitem__(
                0, "x" * 5000
            ),
        )

    def many_labels(b: Path, _: Path) -> None:
        edit(
            b,
            lambda m: m["heads"][_head_index(b, "sentence_classification")].__setitem__(
                "labels", [f"l{i}" for i in range(70_000)]
            ),
        )

    return [
        Case(f"oversized: {f.__name__}", "oversized manifest", f)
        for f in (
            whitespace,
            million_files,
            many_files_under_cap,
            deep_details,
            deep_provenance,
            deep_unknown,
            long_label,
            many_labels,
        )
    ]


def _invalid_values(base: Path) -> dict[tuple[Any, ...], list[Any]]:
    """Manifest paths -> values that no valid bundle can hold there."""
    m = manifest(base)
    s = _head_index(base, "sentence_classification")
    t = _head_index(base, "token_classification")
    n_s = len(m["heads"][s]["labels"])
    return {
        ("schema_version",): [0, 2, -1, 99, "1", 1.0, True, None, [1]],
        ("mtst_version",): [1, None, [], {}],
        ("inputs",): [[], ["input_ids"], ["input_ids", "attention_mask", "bogus"], "input_ids", [1, 2], ["input_ids", "input_ids", "attention_mask"], None],
        ("max_seq_len",): [0, 1, -5, 1.5, "32", True, 10**9, None, []],
        ("pooling",): ["avg", 1, None],
        ("embedding_dim",): [0, -1, m["embedding_dim"] - 1, m["embedding_dim"] + 1, "32", 1.0, None, 10**9],
        ("tokenizer",): [None, 5, "nope.json", ["tokenizer.json"]],
        ("pad_token_id",): [-1, 10**6, 30522, "0", 1.5, True, None],
        ("heads",): [[1], [None], "x", {}, [[]], None, 5],
        ("heads", s): [1, "x", [], None],
        ("heads", s, "name"): [5, None, "", " ", "a\x00"],
        ("heads", s, "kind"): ["bogus", 5, None, "token_classification", "embedding"],
        ("heads", s, "output"): ["no_such_output", 5, None, "embedding", ""],
        ("heads", s, "labels"): [None, "abc", [1, 2, 3], ["a"], [f"l{i}" for i in range(n_s + 1)], [f"l{i}" for i in range(n_s - 1)] if n_s > 2 else ["a", "a"], ["a"] * n_s, [None] * n_s, ["x\x00"] + [f"l{i}" for i in range(n_s - 1)]],
        ("heads", t, "labels"): [[f"t{i}" for i in range(len(m["heads"][t]["labels"]) + 1)], ["O"], {"O": 0}],
        ("heads", t, "kind"): ["sentence_classification"],
        ("heads", s, "scheme"): [5, [], "x" * 100],
        ("variants",): [[], [1], "x", None, {}],
        ("variants", 0): [1, None, []],
        ("variants", 0, "graphs"): [{}, {"encoder": "model.onnx"}, {"model": "model.onnx", "heads": "model.onnx"}, [], None, {"model": 5}],
        ("variants", 0, "precision"): ["fp64", 5, None],
        ("variants", 0, "layout"): ["sideways", "split", "heads", 5, None],
        ("variants", 0, "opset"): ["17", 0, -1, 1.5, None, 10**6],
        ("variants", 0, "details"): ["x", [], 5],
        ("files",): [[], "x", None, {}],
        ("encoder_sha256",): ["x", 5, "g" * 64, "0" * 63],
        ("parity",): [5, "../p.json", "missing.json", []],
        ("provenance",): ["x", [], 5, None],
        ("tokenizer_tables",): [5, "none.json", []],
    }  # fmt: skip


def field_values(base: Path) -> list[Case]:
    cases = []
    for path, values in _invalid_values(base).items():
        for v in values:
            cases.append(Case(f"{'.'.join(map(str, path))} = {v!r:.40}", "field value", _set(path, v)))
    required = ["schema_version", "inputs", "max_seq_len", "embedding_dim", "heads", "variants", "files"]
    cases += [Case(f"missing field {k}", "field value", _set((k,), None, delete=True)) for k in required]
    for k in ("name", "kind", "output", "labels"):
        cases.append(Case(f"missing heads[1].{k}", "field value", _set(("heads", 1, k), None, delete=True)))
    for k in ("precision", "layout", "graphs", "opset"):
        cases.append(
            Case(f"missing variants[0].{k}", "field value", _set(("variants", 0, k), None, delete=True))
        )
    name = _files_of(base)[0]
    for k in ("sha256", "bytes"):
        cases.append(
            Case(f"missing files.{name}.{k}", "field value", _set(("files", name, k), None, delete=True))
        )
    cases.append(Case("files entry not an object", "field value", _set(("files", name), "x")))
    cases.append(
        Case(
            "duplicate head",
            "field value",
            lambda b, _: edit(b, lambda m: m["heads"].append(dict(m["heads"][1]))),
        )
    )
    return cases


def _tokenizer_edit(fn: Callable[[dict[str, Any]], Any]) -> Build:
    def build(b: Path, _: Path) -> None:
        name = manifest(b)["tokenizer"]
        tok = json.loads((b / name).read_text(encoding="utf-8"))
        fn(tok)
        replace_listed(b, name, json.dumps(tok).encode("utf-8"))

    return build


def _drop_unk(tok: dict[str, Any]) -> None:
    vocab = tok["model"]["vocab"]
    unk = tok["model"].get("unk_token", "[UNK]")
    vocab.pop(unk)
    tok["added_tokens"] = [t for t in tok.get("added_tokens", []) if t["content"] != unk]


def inconsistent(base: Path) -> list[Case]:
    """Hashes all right; the files disagree with the manifest or are not what they claim to be."""
    tok = manifest(base)["tokenizer"]
    return [
        Case("tokenizer without [UNK]", "inconsistent", _tokenizer_edit(_drop_unk)),
        Case("tokenizer model type unknown", "inconsistent", _tokenizer_edit(lambda t: t["model"].__setitem__("type", "Nope"))),
        Case("tokenizer empty vocab", "inconsistent", _tokenizer_edit(lambda t: t["model"].__setitem__("vocab", {}))),
        Case("tokenizer is a list", "inconsistent", lambda b, _: replace_listed(b, tok, b"[]")),
        Case("tokenizer not UTF-8", "inconsistent", lambda b, _: replace_listed(b, tok, b"\xff\xfe{}")),
        Case("tokenizer is the graph", "inconsistent", lambda b, _: replace_listed(b, tok, (b / "model.onnx").read_bytes())),
        Case("graph is the tokenizer", "inconsistent", lambda b, _: replace_listed(b, "model.onnx", (b / tok).read_bytes())),
        Case("graph empty", "inconsistent", lambda b, _: replace_listed(b, "model.onnx", b"")),
        Case("graph truncated, rehashed", "inconsistent", lambda b, _: replace_listed(b, "model.onnx", (b / "model.onnx").read_bytes()[:5000])),
        Case("graph absurd length", "inconsistent", lambda b, _: replace_listed(b, "model.onnx", b"\x3a\xff\xff\xff\xff\x0f")),
        Case("graph random bytes", "inconsistent", lambda b, _: replace_listed(b, "model.onnx", os.urandom(4096))),
        Case("graph without outputs the manifest names", "inconsistent", _identity_graph),
    ]  # fmt: skip


def _identity_graph(b: Path, _: Path) -> None:
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["embedding"])],
        "g",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
            for n in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.INT64, ["b", "s"])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    replace_listed(b, "model.onnx", model.SerializeToString())


GENERATORS = (
    bit_flips, truncations, hash_and_size, missing_and_extra, special_files, names, external_data,
    broken_manifests, oversized, field_values, inconsistent,
)  # fmt: skip


def corpus(base: Path) -> list[Case]:
    """Every case, generated from the good bundle ``base``."""
    cases = [c for gen in GENERATORS for c in gen(base)]
    seen: set[str] = set()
    out = []
    for c in cases:
        if c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


__all__ = ["Case", "corpus", "relist", "sha", "write_manifest"]
