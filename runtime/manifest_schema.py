"""The bundle's size caps, and ``manifest.json`` read and checked field by field before any other file.

``read_manifest`` opens only ``<bundle>/manifest.json`` (a symlink must resolve inside the bundle; a
regular file of at most ``Limits.manifest_bytes``), parses it with strict JSON (no NaN/Infinity, no
duplicate keys, bounded nesting) and checks every known field against :data:`MANIFEST_FIELDS`: type,
range, length of strings and lists, file names (no NUL or control characters), sha256 spelling, and
the cross-field rules of :func:`check_manifest`. Unknown keys are ignored (a newer exporter may add
optional fields within a schema version) but stay bounded in size and depth like free-form fields.

To add a field: add one :class:`Field` line to ``MANIFEST_FIELDS`` / ``HEAD_FIELDS`` /
``VARIANT_FIELDS``; its messages follow from the spec (``manifest.json: heads[1].labels[3]: expected
str, got 5``). Enum values (precision, layout, head kind) and graph roles are checked by
``Manifest.from_dict`` right after this module (one source of truth for them).

The caps (:class:`Limits`) are stated in docs/architecture.md (bundle contract); each may be raised or
lowered by an environment variable ``MTST_BUNDLE_MAX_<FIELD>`` (e.g. ``MTST_BUNDLE_MAX_MANIFEST_BYTES``)
or by passing ``limits=`` to ``load_bundle``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.errors import BundleError

__all__ = [
    "HEAD_FIELDS",
    "MANIFEST_FIELDS",
    "VARIANT_FIELDS",
    "BundleLimitError",
    "Field",
    "Limits",
    "ManifestError",
    "check_manifest",
    "open_regular",
    "read_manifest",
]

MANIFEST = "manifest.json"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ManifestError(BundleError):
    """``manifest.json`` is not well formed: names the field, the value and what was expected."""


class BundleLimitError(BundleError):
    """A bundle file (or the manifest, or one of its lists) is larger than the runtime's cap."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what a bundle may make the runtime read (bytes) or hold (entries)."""

    manifest_bytes: int = 1 << 20  # real manifests: < 25 KB
    graph_bytes: int = 2 << 30  # one ONNX file: protobuf's own 2 GiB limit
    data_bytes: int = 16 << 30  # one external-data file (weights of graphs past 2 GiB)
    text_bytes: int = 64 << 20  # tokenizer.json, parity.json, tokenizer tables (XLM-R's tokenizer: 17 MB)
    files: int = 1024  # entries of ``files``
    heads: int = 256
    variants: int = 64
    labels: int = 65536  # labels of one head
    name_chars: int = 1024  # one name, label or file name
    depth: int = 32  # nesting of free-form objects (details, provenance)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, each overridden by ``MTST_BUNDLE_MAX_<FIELD>`` when set (a positive integer)."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            key = f"MTST_BUNDLE_MAX_{f.name.upper()}"
            raw = env.get(key)
            if raw is None:
                continue
            try:
                values[f.name] = int(raw)
            except ValueError:
                values[f.name] = -1
            if values[f.name] < 1:
                raise BundleLimitError(f"{key}: expected a positive integer, got {raw!r}")
        return cls(**values)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(where: str, what: str) -> ManifestError:
    return ManifestError(f"{MANIFEST}: {where}: {what}")


# ---------------------------------------------------------------------------- the field specs


@dataclass(frozen=True, slots=True)
class Field:
    """One manifest field. ``max_len`` is an int or the name of a :class:`Limits` field."""

    type: type | tuple[type, ...]
    required: bool = False
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    min_len: int = 0
    max_len: int | str | None = None
    item: Field | None = None  # list items, or values of a dict without ``fields``
    fields: Mapping[str, Field] | None = None  # the known keys of an object
    choices: tuple[str, ...] | None = None
    check: Callable[[Any, str], None] | None = None  # extra rule: raises ManifestError
    type_message: str | None = None  # the message of a wrong type, where the C++ runtime's must match

    def type_name(self) -> str:
        t = self.type
        return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _file_name(value: str, where: str) -> None:
    if not value or _CONTROL.search(value):
        raise _fail(where, f"{_short(value)} is not a file name (empty, or control characters such as NUL)")


def _sha(value: str, where: str) -> None:
    if not _SHA256.fullmatch(value):
        raise _fail(where, f"expected 64 hexadecimal digits (a sha256), got {_short(value)}")


def _name(value: str, where: str) -> None:
    if not value.strip() or _CONTROL.search(value):
        raise _fail(where, f"{_short(value)} is not a name (empty, blank, or control characters)")


def _temperature(value: float, where: str) -> None:
    if not 0.0 < value < math.inf:  # NaN fails too
        raise _fail(where, f"expected a number > 0 (a softmax temperature), got {_short(value)}")


_NAME = Field(str, required=True, max_len="name_chars", check=_name)
_PATH = Field(str, nullable=True, max_len="name_chars", check=_file_name)
_FREE = Field(dict)  # free-form object: bounded by depth and the manifest's size only

FILE_FIELDS: dict[str, Field] = {
    "sha256": Field(str, required=True, check=_sha),
    "bytes": Field(int, required=True, lo=0),
}
HEAD_FIELDS: dict[str, Field] = {
    "name": _NAME,
    "kind": Field(str, required=True, max_len=64),
    "output": _NAME,
    "labels": Field(
        list, required=True, max_len="labels", item=Field(str, max_len="name_chars", check=_name)
    ),
    "scheme": Field(str, nullable=True, max_len=16),
    # calibration (mtst.calibrate): scores are softmax(logits / temperature); a sentence head abstains
    # under its threshold, a token head drops entities scored under it
    "temperature": Field((int, float), check=_temperature),
    "threshold": Field((int, float), lo=0.0, hi=1.0),
}
VARIANT_FIELDS: dict[str, Field] = {
    "precision": Field(str, required=True, max_len=64),
    "layout": Field(str, required=True, max_len=64),
    "graphs": Field(
        dict, required=True, min_len=1, max_len=8, item=Field(str, max_len="name_chars", check=_file_name)
    ),
    "opset": Field(int, required=True, lo=1, hi=1000),
    "details": _FREE,
}
MANIFEST_FIELDS: dict[str, Field] = {
    # schema_version is checked first, on its own (its message does not depend on the rest)
    "files": Field(
        dict,
        required=True,
        max_len="files",
        item=Field(dict, fields=FILE_FIELDS, type_message="expected an object with sha256 and bytes"),
    ),
    "heads": Field(list, required=True, max_len="heads", item=Field(dict, fields=HEAD_FIELDS)),
    "variants": Field(list, required=True, max_len="variants", item=Field(dict, fields=VARIANT_FIELDS)),
    "mtst_version": Field(str, max_len=64),
    "inputs": Field(list, required=True, min_len=1, max_len=8, item=Field(str, max_len=64)),
    "max_seq_len": Field(int, required=True, lo=2, hi=1 << 20),
    "pooling": Field(str, choices=("mean", "cls", "max")),
    "embedding_dim": Field(int, required=True, lo=1, hi=1 << 16),
    "tokenizer": _PATH,
    "pad_token_id": Field(int, lo=0, hi=(1 << 31) - 1),
    "encoder_sha256": Field(str, nullable=True, check=_sha),
    "parity": _PATH,
    "provenance": _FREE,
    "tokenizer_tables": _PATH,
}


# ---------------------------------------------------------------------------- checking


def _within(v: float, spec: Field) -> bool:
    return (spec.lo is None or v >= spec.lo) and (spec.hi is None or v <= spec.hi)


class _Checker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def _cap(self, value: int | str | None) -> int | None:
        return getattr(self.limits, value) if isinstance(value, str) else value

    def value(self, v: Any, spec: Field, where: str) -> None:
        if v is None and spec.nullable:
            return
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise _fail(where, spec.type_message or f"expected {spec.type_name()}, got {_short(v)}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not _within(v, spec):
            raise _fail(where, f"expected a value in [{spec.lo}, {spec.hi}], got {_short(v)}")
        if isinstance(v, (str, list, dict)):
            cap = self._cap(spec.max_len)
            if len(v) < spec.min_len or (cap is not None and len(v) > cap):
                unit = "characters" if isinstance(v, str) else "entries"
                error = BundleLimitError if cap is not None and len(v) > cap else ManifestError
                raise error(f"{MANIFEST}: {where}: expected {spec.min_len}..{cap} {unit}, got {len(v)}")
        if spec.choices is not None and v not in spec.choices:
            raise _fail(where, f"{_short(v)} is not one of {list(spec.choices)}")
        if spec.check is not None:
            spec.check(v, where)
        if isinstance(v, list) and spec.item is not None:
            for i, x in enumerate(v):
                self.value(x, spec.item, f"{where}[{i}]")
        elif isinstance(v, dict):
            if spec.fields is not None:
                self.object(v, spec.fields, where + ".")
            elif spec.item is not None:
                for k, x in v.items():
                    _file_name(k, where)
                    self.value(x, spec.item, f"{where}.{k}")
            else:
                self.free(v, where, 1)

    def object(self, d: dict[str, Any], fields: Mapping[str, Field], prefix: str) -> None:
        for key, spec in fields.items():
            if key not in d:
                if spec.required:
                    raise _fail(prefix + key, "missing")
                continue
            self.value(d[key], spec, prefix + key)
        for key, v in d.items():
            if key not in fields:
                self.free(v, prefix + key, 1)

    def free(self, v: Any, where: str, depth: int) -> None:
        """Free-form values (details, provenance, unknown keys): JSON of bounded depth, nothing more."""
        if depth > self.limits.depth:
            raise BundleLimitError(f"{MANIFEST}: {where}: nested deeper than {self.limits.depth} levels")
        if isinstance(v, dict):
            for k, x in v.items():
                self.free(x, f"{where}.{k}", depth + 1)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.free(x, f"{where}[{i}]", depth + 1)


def _schema_version(d: dict[str, Any], supported: tuple[int, int]) -> None:
    if "schema_version" not in d:
        raise _fail("schema_version", "missing")
    version = d["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail("schema_version", f"expected int, got {_short(version)}")
    lo, hi = supported
    if not lo <= version <= hi:
        raise ManifestError(
            f"{MANIFEST}: schema_version {version} is not supported; this runtime reads {lo}..{hi}"
        )


def _cross_checks(d: dict[str, Any]) -> None:
    """Rules between fields (after each field alone is well formed)."""
    inputs = d["inputs"]
    if (
        len(set(inputs)) != len(inputs)
        or not set(inputs) <= set(_INPUTS)
        or not set(_INPUTS[:2]) <= set(inputs)
    ):
        raise ManifestError(
            f"{MANIFEST}: inputs: {inputs}; expected input_ids, attention_mask (and token_type_ids)"
        )
    heads = d["heads"]
    names = [h["name"] for h in heads]
    if len(set(names)) != len(names):
        return  # Manifest.from_dict names the duplicates (its message is the C++ runtime's too)
    outputs = [h["output"] for h in heads]
    if len(set(outputs)) != len(outputs):
        raise _fail("heads", f"two heads share one graph output: {outputs}")
    for i, h in enumerate(heads):
        labels = h["labels"]
        if len(set(labels)) != len(labels):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            raise _fail(f"heads[{i}].labels", f"duplicate labels {_short(dup)}")
        if h["kind"] != "embedding" and h["output"] in ("embedding", "token_states"):
            raise _fail(f"heads[{i}].output", f"{h['output']!r} is reserved for the encoder's outputs")
        if h["kind"] == "embedding" and labels:
            raise _fail(f"heads[{i}].labels", f"an embedding head has no labels, got {len(labels)}")
    needs_tokenizer = any(v.get("layout") != "heads" for v in d["variants"])
    if needs_tokenizer and not d.get("tokenizer"):
        raise _fail("tokenizer", "missing: a bundle with an encoder graph needs its tokenizer file")


def check_manifest(d: Any, *, supported: tuple[int, int], limits: Limits | None = None) -> None:
    """Raise ManifestError (or BundleLimitError) unless ``d`` (parsed JSON) is a well-formed manifest."""
    if not isinstance(d, dict):
        raise ManifestError(f"{MANIFEST}: expected a JSON object, got {type(d).__name__}")
    _schema_version(d, supported)
    checker = _Checker(limits or Limits.from_env())
    checker.object(d, MANIFEST_FIELDS, "")
    _cross_checks(d)


# ---------------------------------------------------------------------------- reading


def open_regular(path: Path, shown: str) -> tuple[int, os.stat_result]:
    """An fd (read-only, never blocking, never following a final symlink) on the regular file ``path``.

    ``path`` is already resolved; ``shown`` is the name used in errors. A FIFO or device is refused
    before it is opened (and again on the fd, in case it was swapped in between).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{shown}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BundleError(f"{shown}: missing") from None
    except OSError as exc:
        raise BundleError(f"{shown}: cannot be opened ({exc.strerror or exc})") from None
    st2 = os.fstat(fd)
    if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise BundleError(f"{shown}: replaced while being opened")
    return fd, st2


def read_fd(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes of ``fd`` (the caller compares the length with what it expected).

    A regular file comes back from the first read whole (Linux reads up to 2 GB at once), and that
    bytes object is returned as it is: joining chunks would hold every byte twice for a moment (a
    23 MB graph: 23 MB more peak memory at load, and a copy).
    """
    first = os.read(fd, limit)
    chunks = [first]
    left = limit - len(first)
    while left > 0 and chunks[-1]:
        chunk = os.read(fd, min(left, 1 << 24))
        chunks.append(chunk)
        left -= len(chunk)
    return first if len(first) == limit or not any(chunks[1:]) else b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number that is a finite float (``1e400`` would read as inf; the C++ runtime's parser refuses it)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number overflow parsing {text!r}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _manifest_path(root: Path) -> Path:
    path = root / MANIFEST
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (not an mtst bundle, or an unfinished export)") from None
    if stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(root):
            raise BundleError(f"{path}: a symlink to {real}, outside the bundle (symlinks may not leave it)")
        try:
            os.stat(real)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BundleError(f"{path}: a symlink loop") from None
            raise BundleError(f"{path}: a broken symlink ({exc.strerror})") from None
        return real
    return path


def read_manifest(root: Path, limits: Limits) -> Any:
    """The parsed JSON of ``root/manifest.json`` (``root`` resolved), read under ``limits.manifest_bytes``."""
    path = _manifest_path(root)
    shown = str(root / MANIFEST)
    fd, st = open_regular(path, shown)
    try:
        if st.st_size > limits.manifest_bytes:
            raise BundleLimitError(
                f"{shown}: {st.st_size} bytes, over the cap of {limits.manifest_bytes} (MTST_BUNDLE_MAX_MANIFEST_BYTES)"
            )
        raw = read_fd(fd, limits.manifest_bytes + 1)
    finally:
        os.close(fd)
    if len(raw) > limits.manifest_bytes:
        raise BundleLimitError(
            f"{shown}: grew past the cap of {limits.manifest_bytes} bytes while being read"
        )
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_constant=_no_constants,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{shown}: invalid JSON ({exc})") from None
    except ValueError as exc:
        raise ManifestError(f"{shown}: invalid JSON ({exc})") from None
    except RecursionError:
        raise BundleLimitError(f"{shown}: invalid JSON (nested too deeply)") from None
