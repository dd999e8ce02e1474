"""External-data references of an ONNX file, read straight from the protobuf wire format.

The runtime may not import ``onnx``, and ONNX Runtime does not say which files a graph reads, so the
bundle check reads the few message fields that can hold a tensor and collects the ``location`` of
every tensor stored outside the graph file. It walks only the containers a tensor can sit in (graph
initializers, node attributes, subgraphs, functions, training graphs) and skips every other field by
its length, so a 90 MB graph with embedded weights costs a few thousand field reads, not a parse.

Field numbers follow ``onnx/onnx.proto`` (stable since IR version 3):

- ``ModelProto``: graph 7, training_info 20, functions 25
- ``TrainingInfoProto``: initialization 1, algorithm 2 (graphs)
- ``FunctionProto``: node 7, attribute_proto 11 (attribute defaults, which may hold tensors and graphs)
- ``GraphProto``: node 1, initializer 5, sparse_initializer 15
- ``NodeProto``: attribute 5
- ``AttributeProto``: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23
- ``SparseTensorProto``: values 1, indices 2 (tensors)
- ``TensorProto``: name 8, external_data 13 (``StringStringEntryProto`` key 1, value 2), data_location 14
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, overload

from mtst.errors import BundleError

__all__ = ["ExternalRef", "external_data_refs", "external_data_refs_fd", "external_data_refs_in"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_DEPTH = 64  # subgraphs nest (If/Loop bodies); real models stay far below this

# message kind -> {field number: message kind of that (length-delimited) field}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


@dataclass(frozen=True, slots=True)
class ExternalRef:
    tensor: str  # tensor (initializer) name
    location: str  # file name as written in the graph, relative to the graph's folder


class _Malformed(Exception):
    pass


class _Buf(Protocol):
    """What the walk reads: one byte by index, a slice as bytes (a memoryview, or :class:`_FileBuf`)."""

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> bytes | memoryview: ...


class _FileBuf:
    """An open file read as a :class:`_Buf` through ``pread`` in small windows: the walk skips tensor
    payloads by their length, so a graph is checked without reading its weights into memory."""

    _WINDOW = 1 << 16

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size = fd, size
        self._start, self._data = 0, b""

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> bytes: ...
    def __getitem__(self, i: int | slice) -> int | bytes:
        if isinstance(i, slice):
            return self._read(i.start, i.stop - i.start)
        if not self._start <= i < self._start + len(self._data):
            self._start, self._data = i, self._read(i, self._WINDOW)
        return self._data[i - self._start]

    def _read(self, pos: int, n: int) -> bytes:
        out = os.pread(self._fd, min(n, max(self._size - pos, 0)), pos)
        if pos < self._size and not out:
            raise _Malformed(f"file ended early at byte {pos}")
        return out


def _varint(buf: _Buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: _Buf, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end or varint value) of one message's fields."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, pos, value
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed(f"field {number} at byte {pos} runs past its message ({length} bytes)")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:  # groups (3, 4) are not used by onnx.proto; anything else is not protobuf
            raise _Malformed(f"unsupported wire type {wire} for field {number} at byte {pos}")
    if pos != end:
        raise _Malformed(f"message ends at byte {pos}, expected {end}")


def _text(buf: _Buf, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"invalid UTF-8 string at byte {start}") from None


def _tensor(buf: _Buf, start: int, end: int, out: list[ExternalRef]) -> None:
    name = ""
    locations: list[str] = []
    for number, wire, a, b in _fields(buf, start, end):
        if number == 8 and wire == _LEN:
            name = _text(buf, a, b)
        elif number == 13 and wire == _LEN:  # external_data entry
            key = value = None
            for n2, w2, a2, b2 in _fields(buf, a, b):
                if w2 == _LEN and n2 == 1:
                    key = _text(buf, a2, b2)
                elif w2 == _LEN and n2 == 2:
                    value = _text(buf, a2, b2)
            if key == "location" and value is not None:
                locations.append(value)
    out.extend(ExternalRef(name, loc) for loc in locations)


def _walk(buf: _Buf, kind: str, start: int, end: int, out: list[ExternalRef], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed(f"messages nested deeper than {_MAX_DEPTH} levels")
    children = _CHILDREN[kind]
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN:
            continue
        child = children.get(number)
        if child == "tensor":
            _tensor(buf, a, b, out)
        elif child is not None:
            _walk(buf, child, a, b, out, depth + 1)


def external_data_refs_in(data: bytes | memoryview, where: str) -> list[ExternalRef]:
    """Every external-data location named inside the ONNX model ``data`` (its bytes), in file order.

    Raises BundleError starting with ``where`` (the file's name) when it is not an ONNX protobuf.
    """
    buf = memoryview(data)
    try:
        if len(buf) == 0:
            raise BundleError(f"{where}: empty file, expected an ONNX model")
        out: list[ExternalRef] = []
        try:
            _walk(buf, "model", 0, len(buf), out, 0)
        except _Malformed as exc:
            raise BundleError(f"{where}: not a valid ONNX model ({exc})") from None
        return out
    finally:
        buf.release()


def external_data_refs_fd(fd: int, size: int, where: str) -> list[ExternalRef]:
    """:func:`external_data_refs_in` of the open file ``fd`` (``size`` bytes), read by ``pread`` in
    small pieces: its tensors' payloads are skipped, never read."""
    if size == 0:
        raise BundleError(f"{where}: empty file, expected an ONNX model")
    out: list[ExternalRef] = []
    try:
        _walk(_FileBuf(fd, size), "model", 0, size, out, 0)
    except _Malformed as exc:
        raise BundleError(f"{where}: not a valid ONNX model ({exc})") from None
    return out


def external_data_refs(path: str | Path) -> list[ExternalRef]:
    """Every external-data location named inside the ONNX file at ``path``, in file order.

    Raises BundleError naming the file when it is not a readable ONNX protobuf.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise BundleError(f"{path}: empty file, expected an ONNX model")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return external_data_refs_in(view, str(path))
            finally:
                view.release()
