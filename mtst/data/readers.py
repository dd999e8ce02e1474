"""Format readers of the data layer: CoNLL column files, CSV/TSV, JSONL, JSON split files and Hugging
Face ``datasets``, each turning one :class:`~mtst.data.sources.DataSource` into examples.

:func:`read_source` picks the reader by the source's format; :func:`normalize_scheme` turns token tags
into IOB2 (IOB1 is detected and converted). Rows skipped on purpose (CoNLL ``-DOCSTART-`` lines, blank
lines) are counted in a debug log line; everything else that does not fit raises :class:`DataError`
naming the file, the line and the value. Torch-free.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mtst.data.sources import (
    HF_PREFIX,
    Column,
    DataFormat,
    DataSource,
    Example,
    SentenceExample,
    TagScheme,
    TokenExample,
)
from mtst.errors import DataError, require
from mtst.tasks import TaskKind

__all__ = ["hf_examples", "iob1_to_iob2", "normalize_scheme", "read_source"]

logger = logging.getLogger(__name__)


def read_source(source: DataSource, kind: TaskKind, *, data_root: Path | str | None) -> list[Example]:
    """Every example of ``source`` as its format's reader gives them (tags not yet normalized)."""
    fmt = source.resolved_format
    if fmt is DataFormat.HF:
        return _read_hf(source, kind)
    path = _existing_file(source, data_root)
    examples: list[Example]
    try:
        if fmt is DataFormat.CONLL:
            examples = list(_read_conll(path, source))
        elif fmt in (DataFormat.CSV, DataFormat.TSV):
            examples = list(_read_delimited(path, source, tsv=fmt is DataFormat.TSV))
        elif fmt is DataFormat.JSONL:
            examples = [_row_example(row, where, source, kind) for row, where in _jsonl_rows(path)]
        else:
            examples = [_row_example(row, where, source, kind) for row, where in _json_rows(path, source)]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a read block)"
        ) from None
    if not examples:
        raise DataError(f"{path}: no examples in the file (only blank lines, a header or -DOCSTART- lines)")
    return examples


def _existing_file(source: DataSource, data_root: Path | str | None) -> Path:
    path = source.resolve_path(data_root)
    if not path.is_file():
        root = (
            f"data_root {str(data_root)!r}" if data_root is not None else "no data_root (relative to the cwd)"
        )
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DataError(f"data file {source.path!r} {what}: looked for {path} ({root})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return path


def _map_label(raw: Any, source: DataSource) -> str:
    label = str(raw).strip()
    return source.label_map.get(label, label)


def _sentence(text: Any, label: Any, where: str, source: DataSource, what: str) -> SentenceExample:
    if not isinstance(text, str):
        raise DataError(f"{where}: text {what} must be a string, got {text!r}")
    text = text.strip()
    if not text:
        raise DataError(f"{where}: empty text in {what}")
    if label is None or isinstance(label, (dict, list)):
        raise DataError(f"{where}: label must be a string or a number, got {label!r}")
    name = _map_label(label, source)
    if not name:
        raise DataError(f"{where}: empty label")
    return SentenceExample(text, name, where)


# ----------------------------------------------------------------- CoNLL
def _read_conll(path: Path, source: DataSource) -> Iterator[TokenExample]:
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    docstarts = blanks = 0
    col = source.tag_column
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if line.startswith("-DOCSTART-"):
                    docstarts += 1
                else:
                    blanks += 1
                if tokens:
                    yield TokenExample(tuple(tokens), tuple(tags), f"{path}:{start}")
                    tokens, tags = [], []
                continue
            cols = line.split()
            if len(cols) < 2:
                raise DataError(
                    f"{path}:{lineno}: malformed CoNLL line {line!r}: expected a token and a tag separated by whitespace"
                )
            if not -len(cols) <= col < len(cols):
                raise DataError(
                    f"{path}:{lineno}: malformed CoNLL line {line!r}: it has {len(cols)} columns, tag_column is {col}"
                )
            tag = _map_label(cols[col], source)
            _check_tag(tag, f"{path}:{lineno}")
            if not tokens:
                start = lineno
            tokens.append(cols[0])
            tags.append(tag)
    if tokens:
        yield TokenExample(tuple(tokens), tuple(tags), f"{path}:{start}")
    logger.debug("%s: skipped %d -DOCSTART- lines and %d blank lines", path, docstarts, blanks)


def _check_tag(tag: str, where: str) -> None:
    if tag == "O":
        return
    if len(tag) > 2 and tag[:2] in ("B-", "I-") and tag[2:].strip() == tag[2:]:
        return
    raise DataError(f"{where}: tag {tag!r} is not 'O', 'B-TYPE' or 'I-TYPE'")


# ----------------------------------------------------------------- IOB1 / IOB2
def normalize_scheme(examples: list[TokenExample], source: DataSource) -> list[Example]:
    """Check the scheme and return IOB2 tags (IOB1 converted; IOB2 untouched)."""
    iob1_at: tuple[str, int, str] | None = None  # first I- tag that starts an entity
    iob2_at: tuple[str, int, str] | None = None  # first B- tag that starts an entity after O/another type
    for ex in examples:
        prev = "O"
        for i, tag in enumerate(ex.tags):
            if tag != "O":
                continues = prev != "O" and prev[2:] == tag[2:]
                if tag.startswith("I-") and not continues and iob1_at is None:
                    iob1_at = (ex.where, i, tag)
                if tag.startswith("B-") and not continues and iob2_at is None:
                    iob2_at = (ex.where, i, tag)
            prev = tag
        if iob1_at and iob2_at:
            break
    scheme = TagScheme(source.scheme)
    if scheme is TagScheme.IOB2 and iob1_at is not None:
        where, i, tag = iob1_at
        raise DataError(
            f"{where}: tag {tag!r} at token {i} starts an entity, which IOB2 does not allow; "
            "the data looks like IOB1 (set scheme: iob1 or auto)"
        )
    if scheme is TagScheme.AUTO and iob1_at is not None and iob2_at is not None:
        (w1, i1, t1), (w2, i2, t2) = iob1_at, iob2_at
        raise DataError(
            f"{source.path}: cannot read the tagging scheme: {w1} token {i1} has {t1!r} starting an entity "
            f"(IOB1) but {w2} token {i2} has {t2!r} starting an entity (IOB2); set scheme: iob1 or iob2"
        )
    if iob1_at is None:  # valid IOB2: nothing to convert
        return list(examples)
    logger.debug("%s: converting IOB1 tags to IOB2", source.path)
    return [TokenExample(ex.tokens, iob1_to_iob2(ex.tags), ex.where) for ex in examples]


def iob1_to_iob2(tags: Sequence[str]) -> tuple[str, ...]:
    """IOB1 -> IOB2: an ``I-X`` that does not continue an ``X`` entity becomes ``B-X``."""
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return tuple(out)


# ----------------------------------------------------------------- CSV / TSV
def _read_delimited(path: Path, source: DataSource, *, tsv: bool) -> Iterator[SentenceExample]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        if tsv:  # SST-2 style: tabs, no quoting (quotes are part of the text)
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(fh, strict=True)  # an unclosed quote must not swallow the rest of the file
        header: list[str] | None = None
        width = 0
        text_i = label_i = 0
        blanks = 0
        line = reader.line_num + 1
        for row in _csv_rows(reader, path):
            where = f"{path}:{line}"
            line = reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                blanks += 1
                continue
            if not width:  # first non-blank row: the header, or the first data row
                width = len(row)
                if source.header:
                    header = [c.strip() for c in row]
                text_i = _column_index(source.text_column, header, width, path, "text_column")
                label_i = _column_index(source.label_column, header, width, path, "label_column")
                if header is not None:
                    continue
            if len(row) != width:
                basis = "the header has" if header is not None else "the first row has"
                raise DataError(f"{where}: row has {len(row)} fields, {basis} {width}: {row!r}")
            yield _sentence(row[text_i], row[label_i], where, source, f"column {source.text_column!r}")
        if blanks:
            logger.debug("%s: skipped %d blank lines", path, blanks)


def _csv_rows(reader: Any, path: Path) -> Iterator[list[str]]:
    """The reader's rows, with csv's own errors (NUL bytes, an unclosed quote) as DataError."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: cannot parse the row as CSV ({exc})") from None
        yield row


def _column_index(col: Column, header: list[str] | None, width: int, path: Path, name: str) -> int:
    if isinstance(col, int):
        if col >= width:
            cols = f"columns {header}" if header is not None else f"{width} columns"
            raise DataError(f"{path}: {name} {col} is out of range: the file has {cols}")
        return col
    assert header is not None  # DataSource rejects named columns without a header
    if col not in header:
        raise DataError(f"{path}: column {col!r} ({name}) not found; the header has columns {header}")
    return header.index(col)


# ----------------------------------------------------------------- JSONL / JSON
def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    blanks = 0
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                blanks += 1
                continue
            try:
                yield json.loads(line.rstrip("\r\n")), f"{path}:{lineno}"
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno}): {line.strip()[:200]!r}"
                ) from None
    if blanks:
        logger.debug("%s: skipped %d blank lines", path, blanks)


def _json_rows(path: Path, source: DataSource) -> Iterator[tuple[Any, str]]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, list):
        if source.split is not None:
            raise DataError(
                f"{path}: the file holds a list of rows, not an object of splits; remove split {source.split!r}"
            )
        for i, row in enumerate(data):
            yield row, f"{path}:[{i}]"
        return
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a JSON list of rows or an object of splits, got {type(data).__name__}"
        )
    if source.split is None:
        raise DataError(f"{path}: the file is an object of splits; set split to one of {list(data)}")
    for key in (source.split, *source.extra_splits):
        if key not in data:
            raise DataError(f"{path}: split key {key!r} not found; the file has keys {list(data)}")
        rows = data[key]
        if not isinstance(rows, list):
            raise DataError(f"{path}: split {key!r} must be a list of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            yield row, f"{path}:{key}[{i}]"


def _field(row: Any, col: Column, where: str, name: str, *, pair_index: int) -> Any:
    """``row[col]`` for an object row or a list row, with an error naming the fields that exist."""
    if isinstance(row, dict):
        if isinstance(col, int):
            raise DataError(
                f"{where}: {name} is the index {col} but the row is an object with fields {list(row)}"
            )
        if col not in row:
            raise DataError(f"{where}: field {col!r} ({name}) not found; the row has fields {list(row)}")
        return row[col]
    if isinstance(row, list):
        if isinstance(col, int):
            if col >= len(row):
                raise DataError(f"{where}: {name} {col} is out of range: the row has {len(row)} items")
            return row[col]
        if len(row) == 2:  # [text, label] pairs (CLINC150) when the columns are names
            return row[pair_index]
        raise DataError(
            f"{where}: the row is a list of {len(row)} items, not a [text, label] pair; "
            f"set {name} to a 0-based index"
        )
    raise DataError(f"{where}: expected an object or a list, got {row!r}")


def _row_example(row: Any, where: str, source: DataSource, kind: TaskKind) -> Example:
    if kind is TaskKind.SENTENCE:
        text = _field(row, source.text_column, where, "text_column", pair_index=0)
        label = _field(row, source.label_column, where, "label_column", pair_index=1)
        return _sentence(text, label, where, source, f"field {source.text_column!r}")
    tokens = _field(row, source.tokens_column, where, "tokens_column", pair_index=0)
    tags = _field(row, source.tags_column, where, "tags_column", pair_index=1)
    return _token_example(tokens, tags, where, source)


def _token_example(
    tokens: Any, tags: Any, where: str, source: DataSource, names: Sequence[str] | None = None
) -> TokenExample:
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: {source.tokens_column!r} must be a list of strings, got {tokens!r}")
    if not isinstance(tags, list) or not all(
        isinstance(t, (str, int)) and not isinstance(t, bool) for t in tags
    ):
        raise DataError(f"{where}: {source.tags_column!r} must be a list of tags, got {tags!r}")
    if len(tokens) != len(tags):
        raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
    if not tokens:
        raise DataError(f"{where}: empty token list")
    for i, tok in enumerate(tokens):
        if not tok.strip():
            raise DataError(f"{where}: token {i} is empty or whitespace ({tok!r})")
    out: list[str] = []
    for t in tags:
        if names is not None and isinstance(t, int):
            if not 0 <= t < len(names):
                raise DataError(
                    f"{where}: tag id {t} is out of range for the dataset's {len(names)} tag names"
                )
            t = names[t]
        tag = _map_label(t, source)
        _check_tag(tag, where)
        out.append(tag)
    return TokenExample(tuple(tokens), tuple(out), where)


# ----------------------------------------------------------------- Hugging Face datasets
def _read_hf(source: DataSource, kind: TaskKind) -> list[Example]:
    datasets: Any = require("datasets", "hf", f"data source {source.path!r}")
    parts = source.path[len(HF_PREFIX) :].split(":")
    name, config = parts[0], (parts[1] if len(parts) > 1 else None)
    out: list[Example] = []
    for split in (source.split, *source.extra_splits):
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except Exception as exc:  # offline, unknown name, unknown split: the library raises many types
            raise DataError(
                f"{source.path}: cannot load Hugging Face dataset {name!r} (config {config!r}, split {split!r}); "
                f"offline or unreachable? ({type(exc).__name__}: {exc})"
            ) from exc
        out.extend(hf_examples(ds, source, kind, where=f"{source.path}:{split}"))
    return out


def _label_names(feature: Any) -> list[str] | None:
    """Names of a ClassLabel feature, or of the ClassLabel inside a sequence feature."""
    names = getattr(feature, "names", None)
    if names is None and hasattr(feature, "feature"):
        names = getattr(feature.feature, "names", None)
    return list(names) if names is not None else None


def hf_examples(dataset: Any, source: DataSource, kind: TaskKind, *, where: str) -> list[Example]:
    """Examples from a loaded ``datasets.Dataset`` (ClassLabel ints mapped to their names)."""
    columns = list(dataset.column_names)
    features = dataset.features
    out: list[Example] = []
    sentence = kind is TaskKind.SENTENCE
    for name in ("text_column", "label_column") if sentence else ("tokens_column", "tags_column"):
        if (col := getattr(source, name)) not in columns:
            raise DataError(f"{where}: column {col!r} ({name}) not found; the dataset has columns {columns}")
    if sentence:
        names = _label_names(features[source.label_column])
        for i, row in enumerate(dataset):
            label = row[source.label_column]
            if names is not None and isinstance(label, int):
                if not 0 <= label < len(names):  # -1 marks unlabeled rows (e.g. GLUE test splits)
                    raise DataError(f"{where}[{i}]: label id {label} is out of range for the names {names}")
                label = names[label]
            out.append(
                _sentence(
                    row[source.text_column], label, f"{where}[{i}]", source, f"column {source.text_column!r}"
                )
            )
    else:
        names = _label_names(features[source.tags_column])
        for i, row in enumerate(dataset):
            out.append(
                _token_example(
                    list(row[source.tokens_column]),
                    list(row[source.tags_column]),
                    f"{where}[{i}]",
                    source,
                    names,
                )
            )
    if not out:
        raise DataError(f"{where}: the dataset split has no rows")
    return out
