"""The bundle manifest: the contract between ``mtst.export`` (writes it) and ``mtst.runtime`` (reads it).

Standard library only. ``manifest.json`` sits at the bundle's root; every other file in the bundle is
listed in ``files`` with its sha256 and size. A bundle carries one or more *variants* (a precision
and a graph layout), so that, e.g., an int8 graph for CPU and an fp16 graph for GPU can ship together.

Graph layouts (``Variant.graphs`` maps a role to a file name):

- ``single``: ``{"model": "model.onnx"}`` -- inputs ``input_ids``, ``attention_mask`` (and
  ``token_type_ids`` where the encoder uses them); outputs ``embedding`` ``[batch, dim]`` and one
  output per head, named like the head: ``[batch, n_labels]`` or ``[batch, sequence, n_labels]``.
- ``split``: ``{"encoder": "encoder.onnx", "heads": "heads.onnx"[, "token_heads": "token_heads.onnx"]}``
  -- the encoder outputs ``embedding`` (and ``token_states`` ``[batch, sequence, hidden]`` when a
  token head exists); ``heads.onnx`` maps ``embedding`` to the sentence heads' outputs;
  ``token_heads.onnx`` maps ``token_states`` to the token heads' outputs.
- ``heads``: a heads-only bundle (``{"heads": ..., ["token_heads": ...]}``) built for the encoder
  whose hash is ``encoder_sha256``; it runs on cached embeddings or is swapped into a loaded engine.

``encoder_sha256`` identifies the encoder *weights* (see ``encoder_fingerprint`` in mtst.export),
so that heads built for another encoder are refused whatever the precision of the encoder graph.

Heads (``heads[i]``): ``name``, ``kind`` (``sentence_classification|token_classification|embedding``),
``output`` (graph output name), ``labels`` (index order), ``scheme`` (``"IOB2"`` for token heads), and
two optional calibration fields (schema 1; a runtime must read a head without them as today):

- ``temperature`` (number > 0, default 1.0): scores are ``softmax(logits / temperature)``; a sentence
  head's score is the largest of them, a token head's entity score the mean over the entity's words of
  the probability of the tag predicted at the word's first sub-token. Arg-maxes never change.
- ``threshold`` (number in [0, 1], default 0.0): a sentence head *abstains* (answers, flagged
  ``abstained``) when its score is below it; a token head drops entities scored below it. Callers
  may override it per call. Both are fitted on validation data after training (mtst.calibrate).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from mtst.errors import BundleError, ConfigError, MtstError, parse_enum
from mtst.runtime.manifest_schema import Limits, check_manifest, read_manifest
from mtst.runtime.shape_profiles import TrtProfiles

__all__ = [
    "MANIFEST_NAME",
    "PRECISION_ALIASES",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "FileEntry",
    "HeadInfo",
    "HeadKind",
    "Layout",
    "Manifest",
    "Precision",
    "Variant",
    "check_relative_name",
    "parse_precision",
    "sha256_file",
]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1, 1)  # inclusive range this runtime reads


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"  # QDQ, for TensorRT
    INT8_STATIC_CPU = "int8-static-cpu"  # constant activation scales in ORT's CPU int8 ops: batch-invariant


# precisions whose answers for a text depend on the rest of its batch (int8-dynamic: one activation scale
# per batch tensor); the engine's embedding cache computes their misses one text at a time
BATCH_DEPENDENT = frozenset({Precision.INT8_DYNAMIC})


# what a person may write for a precision (CLI --quantize/--precision, experiment configs) -> Precision;
# "none" and "int8" are the short forms of mtst-export's --quantize ("int8": the CPU int8 whose answers do
# not depend on the rest of the batch)
PRECISION_ALIASES: dict[str, Precision] = {
    "none": Precision.FP32,
    "fp32": Precision.FP32,
    "int8": Precision.INT8_STATIC_CPU,
    "int8-static-cpu": Precision.INT8_STATIC_CPU,
    "int8-dynamic": Precision.INT8_DYNAMIC,
    "int8-static": Precision.INT8_STATIC,
    "fp16": Precision.FP16,
}


def parse_precision(value: str | Precision, where: str, *, error: type[MtstError] = ConfigError) -> Precision:
    """A precision or one of its aliases (``PRECISION_ALIASES``), case-insensitive."""
    if isinstance(value, Precision):
        return value
    key = str(value).strip().lower()
    if key not in PRECISION_ALIASES:
        raise error(f"{where}: {value!r} is not one of {list(PRECISION_ALIASES)}")
    return PRECISION_ALIASES[key]


class Layout(str, Enum):
    SINGLE = "single"
    SPLIT = "split"
    HEADS = "heads"


class HeadKind(str, Enum):
    SENTENCE = "sentence_classification"
    TOKEN = "token_classification"
    EMBEDDING = "embedding"


GRAPH_ROLES = {
    Layout.SINGLE: ({"model"}, set()),
    Layout.SPLIT: ({"encoder", "heads"}, {"token_heads"}),
    Layout.HEADS: ({"heads"}, {"token_heads"}),
}


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file: the one hash of every bundle file (export writes it, the runtime checks it).

    Reads ``chunk`` bytes at a time into one reused buffer (4 MiB: fewer syscalls; sha256 itself
    dominates beyond ~64 KiB).
    """
    h = hashlib.sha256()
    view = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def check_relative_name(name: str, *, field_name: str) -> str:
    """A file name from the manifest must stay inside the bundle: relative, no ``..``, POSIX separators."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"manifest.json: {field_name}: expected a file name, got {name!r}")
    p = PurePosixPath(name)
    if (
        p.is_absolute()
        or "\\" in name
        or ":" in name.split("/")[0]
        or any(part in ("..", "") for part in p.parts)
    ):
        raise BundleError(f"manifest.json: {field_name}: {name!r} must be a relative path inside the bundle")
    return name


def _get(data: dict[str, Any], key: str, where: str, typ: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise BundleError(f"manifest.json: {where}{key}: missing")
    value = data[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise BundleError(
            f"manifest.json: {where}{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}"
        )
    return value


def _number(data: dict[str, Any], key: str, where: str, default: float) -> float:
    """An optional finite number (an int is taken as its float)."""
    if key not in data:
        return default
    value = _get(data, key, where, (int, float))
    if isinstance(value, bool) or not math.isfinite(value):
        raise BundleError(f"manifest.json: {where}{key}: expected a finite number, got {value!r}")
    return float(value)


def _enum(cls: type[Enum], value: Any, where: str) -> Any:
    return parse_enum(cls, value, f"manifest.json: {where}", error=BundleError)


@dataclass(frozen=True, slots=True)
class HeadInfo:
    name: str
    kind: HeadKind
    output: str  # graph output name
    labels: tuple[str, ...]  # index order
    scheme: str | None = None  # "IOB2" for token heads
    temperature: float = 1.0  # scores = softmax(logits / temperature)
    threshold: float = 0.0  # sentence: abstain below it; token: drop entities scored below it

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "output": self.output,
            "labels": list(self.labels),
        }
        if self.scheme:
            d["scheme"] = self.scheme
        if self.temperature != 1.0 or self.threshold != 0.0:  # calibrated heads only: older readers match
            d["temperature"], d["threshold"] = self.temperature, self.threshold
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], i: int) -> HeadInfo:
        where = f"heads[{i}]."
        kind = _enum(HeadKind, _get(d, "kind", where, str), where + "kind")
        labels = tuple(_get(d, "labels", where, list))
        if kind is not HeadKind.EMBEDDING and len(labels) < 2:
            raise BundleError(f"manifest.json: {where}labels: expected at least 2 labels, got {list(labels)}")
        temperature = _number(d, "temperature", where, 1.0)
        if not 0.0 < temperature < math.inf:
            raise BundleError(
                f"manifest.json: {where}temperature: expected a number > 0, got {temperature!r}"
            )
        threshold = _number(d, "threshold", where, 0.0)
        if not 0.0 <= threshold <= 1.0:
            raise BundleError(
                f"manifest.json: {where}threshold: expected a number in [0, 1], got {threshold!r}"
            )
        if kind is HeadKind.EMBEDDING and (temperature != 1.0 or threshold != 0.0):
            raise BundleError(f"manifest.json: {where}: the embedding has no scores to calibrate")
        return cls(
            name=_get(d, "name", where, str),
            kind=kind,
            output=_get(d, "output", where, str),
            labels=tuple(str(x) for x in labels),
            scheme=d.get("scheme"),
            temperature=temperature,
            threshold=threshold,
        )


@dataclass(frozen=True, slots=True)
class Variant:
    precision: Precision
    layout: Layout
    graphs: dict[str, str]  # role -> file name
    opset: int
    # Free-form facts about how the variant was made: fusions applied, nodes kept in fp32, quantizer options.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.precision.value}/{self.layout.value}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "layout": self.layout.value,
            "graphs": dict(self.graphs),
            "opset": self.opset,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], i: int) -> Variant:
        where = f"variants[{i}]."
        layout = _enum(Layout, _get(d, "layout", where, str), where + "layout")
        graphs = _get(d, "graphs", where, dict)
        required, optional = GRAPH_ROLES[layout]
        if not required <= set(graphs) <= required | optional:
            raise BundleError(
                f"manifest.json: {where}graphs: layout {layout.value!r} needs roles {sorted(required)} "
                f"(optional {sorted(optional)}), got {sorted(graphs)}"
            )
        for role, name in graphs.items():
            check_relative_name(name, field_name=f"{where}graphs.{role}")
        return cls(
            precision=_enum(Precision, _get(d, "precision", where, str), where + "precision"),
            layout=layout,
            graphs=dict(graphs),
            opset=_get(d, "opset", where, int),
            details=dict(d.get("details", {})),
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Manifest:
    schema_version: int
    mtst_version: str
    inputs: tuple[str, ...]
    max_seq_len: int
    pooling: str
    embedding_dim: int
    tokenizer: str  # file name of the HF tokenizers JSON
    pad_token_id: int
    heads: tuple[HeadInfo, ...]
    variants: tuple[Variant, ...]
    files: dict[str, FileEntry]
    encoder_sha256: str | None = None
    parity: str | None = None  # file name of parity.json
    provenance: dict[str, Any] = field(default_factory=dict)
    # file name of the tokenizer's Unicode tables for the C++ runtime (mtst.export.tokenizer_tables);
    # optional: older bundles and non-WordPiece tokenizers have none, and the Python runtime never reads it
    tokenizer_tables: str | None = None
    # TensorRT optimization profiles from the token lengths of real sentences (mtst.runtime.trt); optional
    trt_profiles: TrtProfiles | None = None

    # ------------------------------------------------------------------ access
    def head(self, name: str) -> HeadInfo:
        for h in self.heads:
            if h.name == name:
                return h
        raise BundleError(f"bundle has no head {name!r}; heads: {[h.name for h in self.heads]}")

    def variant(self, precision: Precision | str, layout: Layout | str | None = None) -> Variant:
        precision = parse_precision(precision, "precision")
        lay = None if layout is None else parse_enum(Layout, layout, "layout")
        for v in self.variants:
            if v.precision is precision and (lay is None or v.layout is lay):
                return v
        have = [v.key for v in self.variants]
        raise BundleError(
            f"bundle has no {precision.value} variant{f' with layout {lay.value}' if lay else ''}; it has {have}"
        )

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "mtst_version": self.mtst_version,
            "inputs": list(self.inputs),
            "max_seq_len": self.max_seq_len,
            "pooling": self.pooling,
            "embedding_dim": self.embedding_dim,
            "tokenizer": self.tokenizer or None,  # heads-only bundles carry no tokenizer
            "pad_token_id": self.pad_token_id,
            "heads": [h.to_dict() for h in self.heads],
            "variants": [v.to_dict() for v in self.variants],
            "files": {k: {"sha256": v.sha256, "bytes": v.bytes} for k, v in sorted(self.files.items())},
            "encoder_sha256": self.encoder_sha256,
            "parity": self.parity,
            "provenance": self.provenance,
            **({"tokenizer_tables": self.tokenizer_tables} if self.tokenizer_tables else {}),
            **({"trt_profiles": self.trt_profiles.to_dict()} if self.trt_profiles else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any, *, limits: Limits | None = None) -> Manifest:
        check_manifest(d, supported=SUPPORTED_SCHEMA_VERSIONS, limits=limits)  # field by field, first
        version = _get(d, "schema_version", "", int)
        lo, hi = SUPPORTED_SCHEMA_VERSIONS
        if not lo <= version <= hi:
            raise BundleError(
                f"manifest.json: schema_version {version} is not supported; this runtime reads {lo}..{hi}"
            )
        files: dict[str, FileEntry] = {}
        for name, entry in _get(d, "files", "", dict).items():
            check_relative_name(name, field_name="files")
            if not isinstance(entry, dict):
                raise BundleError(f"manifest.json: files.{name}: expected an object with sha256 and bytes")
            files[name] = FileEntry(
                sha256=_get(entry, "sha256", f"files.{name}.", str),
                bytes=_get(entry, "bytes", f"files.{name}.", int),
            )
        heads = tuple(HeadInfo.from_dict(h, i) for i, h in enumerate(_get(d, "heads", "", list)))
        variants = tuple(Variant.from_dict(v, i) for i, v in enumerate(_get(d, "variants", "", list)))
        if not variants:
            raise BundleError("manifest.json: variants: the bundle lists no graph")
        tokenizer = d.get("tokenizer")
        if tokenizer is not None:
            check_relative_name(tokenizer, field_name="tokenizer")
        parity = d.get("parity")
        if parity is not None:
            check_relative_name(parity, field_name="parity")
        tables = d.get("tokenizer_tables")
        if tables is not None:
            check_relative_name(tables, field_name="tokenizer_tables")
        listed = [
            *(g for v in variants for g in v.graphs.values()),
            *(x for x in (tokenizer, parity, tables) if x),
        ]
        for name in listed:
            if name not in files:
                raise BundleError(
                    f"manifest.json: {name!r} is used but not listed in files (no sha256 to check)"
                )
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise BundleError(f"manifest.json: heads: duplicate head names {names}")
        return cls(
            schema_version=version,
            mtst_version=str(d.get("mtst_version", "unknown")),
            inputs=tuple(_get(d, "inputs", "", list)),
            max_seq_len=_get(d, "max_seq_len", "", int),
            pooling=str(d.get("pooling", "mean")),
            embedding_dim=_get(d, "embedding_dim", "", int),
            tokenizer=tokenizer or "",
            pad_token_id=int(d.get("pad_token_id", 0)),
            heads=heads,
            variants=variants,
            files=files,
            encoder_sha256=d.get("encoder_sha256"),
            parity=parity,
            provenance=dict(d.get("provenance", {})),
            tokenizer_tables=tables,
            trt_profiles=TrtProfiles.from_dict(d["trt_profiles"]) if d.get("trt_profiles") else None,
        )

    @classmethod
    def read(cls, bundle_dir: str | Path, *, limits: Limits | None = None) -> Manifest:
        """``manifest.json`` of the bundle folder, read under the size caps and checked field by field."""
        limits = limits or Limits.from_env()
        root = Path(os.path.realpath(bundle_dir))
        return cls.from_dict(read_manifest(root, limits), limits=limits)
