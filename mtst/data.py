"""Examples and the readers that make them: CoNLL column files, CSV/TSV, JSONL, JSON split files and
Hugging Face ``datasets``.

Torch-free. One :class:`DataSource` describes one split of one task; :func:`load_examples` turns it
into :class:`SentenceExample` or :class:`TokenExample` objects that remember where they came from
(``where`` = ``"path:line"``) so that every later error can point at the row. Token tags come out in
IOB2 whatever the file used (IOB1 is detected and converted).

Nothing is dropped silently: rows skipped on purpose (CoNLL ``-DOCSTART-`` lines, blank lines) are
counted in a debug log line; everything else that does not fit raises :class:`DataError` naming the
file, the line and the value.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, DataError, require
from mtst.tasks import TaskKind

__all__ = [
    "DataFormat",
    "DataSource",
    "Example",
    "SentenceExample",
    "TagScheme",
    "TokenExample",
    "check_labels",
    "label_set",
    "load_examples",
    "split_off",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- examples
@dataclass(frozen=True, slots=True)
class SentenceExample:
    text: str
    label: str
    where: str = field(default="", compare=False)  # "path:line" for error messages


@dataclass(frozen=True, slots=True)
class TokenExample:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]  # IOB2, one per token
    where: str = field(default="", compare=False)


Example = SentenceExample | TokenExample


# --------------------------------------------------------------------------- sources
class DataFormat(str, Enum):
    AUTO = "auto"
    CONLL = "conll"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    JSON = "json"
    HF = "hf"


class TagScheme(str, Enum):
    AUTO = "auto"  # detect IOB1 (an I- tag starting an entity) and convert it to IOB2
    IOB1 = "iob1"
    IOB2 = "iob2"


SUFFIX_FORMATS = {
    ".txt": DataFormat.CONLL,
    ".conll": DataFormat.CONLL,
    ".csv": DataFormat.CSV,
    ".tsv": DataFormat.TSV,
    ".jsonl": DataFormat.JSONL,
    ".json": DataFormat.JSON,
}
HF_PREFIX = "hf:"
TOKEN_FORMATS = frozenset({DataFormat.CONLL, DataFormat.JSONL, DataFormat.JSON, DataFormat.HF})
SENTENCE_FORMATS = frozenset(
    {DataFormat.CSV, DataFormat.TSV, DataFormat.JSONL, DataFormat.JSON, DataFormat.HF}
)

Column = str | int


def _check_column(name: str, value: Any) -> Column:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{name}: expected a column name or a 0-based column index, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{name}: a column index must be >= 0, got {value!r}")
    if isinstance(value, str) and not value:
        raise ConfigError(f"{name}: the column name is empty")
    return value


@dataclass(frozen=True)
class DataSource:
    """One split of one task's data.

    ``path`` is a file (relative to the data root unless absolute) or ``"hf:NAME"`` /
    ``"hf:NAME:CONFIG"`` for a Hugging Face dataset. ``format`` ``auto`` reads the suffix
    (``.txt``/``.conll`` -> CoNLL, ``.csv``, ``.tsv``, ``.jsonl``, ``.json``) or the ``hf:`` prefix.
    """

    path: str
    format: DataFormat = DataFormat.AUTO
    split: str | None = None  # key inside a JSON split file (CLINC150: "train") or the HF split name
    extra_splits: tuple[str, ...] = ()  # more keys appended (CLINC150: ("oos_train",))
    text_column: Column = "text"  # csv/tsv/jsonl/json/hf; int = column index (headerless files, list rows)
    label_column: Column = "label"
    tokens_column: str = "tokens"  # jsonl/json/hf token tasks
    tags_column: str = "tags"  # HF ClassLabel ints are mapped to their names
    tag_column: int = -1  # conll: which whitespace-separated column holds the tag
    scheme: TagScheme = TagScheme.AUTO  # token tags: iob1 | iob2 | auto
    header: bool = True  # csv/tsv: the first row names the columns
    # raw label -> name (partial renames allowed); left out of the hash, which stays usable
    label_map: Mapping[str, str] = field(default_factory=dict, hash=False)
    limit: int | None = None  # keep this many examples, chosen by a seeded shuffle (file order kept)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.path, Path):
            object.__setattr__(self, "path", str(self.path))
        if not isinstance(self.path, str) or not self.path.strip():
            raise ConfigError(f"data path: expected a file path or 'hf:NAME', got {self.path!r}")
        try:
            fmt = DataFormat(self.format)
        except ValueError:
            raise ConfigError(
                f"data {self.path!r}: format {self.format!r} is not one of {[f.value for f in DataFormat]}"
            ) from None
        object.__setattr__(self, "format", fmt)
        is_hf = self.path.startswith(HF_PREFIX)
        if fmt is DataFormat.HF and not is_hf:
            raise ConfigError(f"data {self.path!r}: format 'hf' needs a path of the form 'hf:NAME[:CONFIG]'")
        if is_hf and fmt not in (DataFormat.AUTO, DataFormat.HF):
            raise ConfigError(
                f"data {self.path!r}: an 'hf:' path is a Hugging Face dataset, not {fmt.value!r}"
            )
        if is_hf:
            parts = self.path[len(HF_PREFIX) :].split(":")
            if len(parts) > 2 or not all(parts):
                raise ConfigError(f"data {self.path!r}: expected 'hf:NAME' or 'hf:NAME:CONFIG'")
        resolved = self.resolved_format  # raises ConfigError for an unknown suffix
        if self.split is not None and (not isinstance(self.split, str) or not self.split):
            raise ConfigError(f"data {self.path!r}: split: expected a non-empty name, got {self.split!r}")
        if resolved is DataFormat.HF and self.split is None:
            raise ConfigError(
                f"data {self.path!r}: split: a Hugging Face dataset needs a split name, e.g. 'train'"
            )
        if isinstance(self.extra_splits, str):
            raise ConfigError(
                f"data {self.path!r}: extra_splits: expected a list of names, got the string {self.extra_splits!r}"
            )
        extra = tuple(self.extra_splits)
        if any(not isinstance(s, str) or not s for s in extra):
            raise ConfigError(
                f"data {self.path!r}: extra_splits: expected non-empty names, got {list(extra)}"
            )
        if extra and self.split is None:
            raise ConfigError(f"data {self.path!r}: extra_splits {list(extra)} need a split to extend")
        object.__setattr__(self, "extra_splits", extra)
        for name in ("text_column", "label_column"):
            _check_column(f"data {self.path!r}: {name}", getattr(self, name))
        for name in ("tokens_column", "tags_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"data {self.path!r}: {name}: expected a field name, got {value!r}")
        if isinstance(self.tag_column, bool) or not isinstance(self.tag_column, int):
            raise ConfigError(f"data {self.path!r}: tag_column: expected an integer, got {self.tag_column!r}")
        if self.tag_column == 0:
            raise ConfigError(f"data {self.path!r}: tag_column: column 0 holds the token, not the tag")
        try:
            object.__setattr__(self, "scheme", TagScheme(self.scheme))
        except ValueError:
            raise ConfigError(
                f"data {self.path!r}: scheme {self.scheme!r} is not one of {[s.value for s in TagScheme]}"
            ) from None
        if not isinstance(self.header, bool):
            raise ConfigError(f"data {self.path!r}: header: expected true or false, got {self.header!r}")
        if resolved in (DataFormat.CSV, DataFormat.TSV) and not self.header:
            for name in ("text_column", "label_column"):
                if isinstance(getattr(self, name), str):
                    raise ConfigError(
                        f"data {self.path!r}: {name} {getattr(self, name)!r} is a name but header is false; "
                        "give a 0-based column index"
                    )
        if not isinstance(self.label_map, Mapping):
            raise ConfigError(f"data {self.path!r}: label_map: expected a mapping, got {self.label_map!r}")
        # YAML reads `0: negative` with an int key: labels are strings everywhere in mtst
        object.__setattr__(self, "label_map", {str(k): str(v) for k, v in self.label_map.items()})
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ConfigError(
                f"data {self.path!r}: limit: expected a positive integer or null, got {self.limit!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"data {self.path!r}: seed: expected an integer, got {self.seed!r}")

    @property
    def resolved_format(self) -> DataFormat:
        """The format to read with: ``format`` itself, or what the suffix / ``hf:`` prefix says."""
        if self.format is not DataFormat.AUTO:
            return DataFormat(self.format)
        if self.path.startswith(HF_PREFIX):
            return DataFormat.HF
        suffix = Path(self.path).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise ConfigError(
                f"data {self.path!r}: cannot tell the format from the suffix {suffix!r} "
                f"(known: {sorted(SUFFIX_FORMATS)}); set format to one of {[f.value for f in DataFormat]}"
            )
        return SUFFIX_FORMATS[suffix]

    def resolve_path(self, data_root: Path | str | None = None) -> Path:
        """The file this source reads: ``path`` itself when absolute, else under ``data_root`` (or the cwd)."""
        path = Path(self.path).expanduser()
        if path.is_absolute():
            return path
        return (Path(data_root).expanduser() if data_root is not None else Path.cwd()) / path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> DataSource:
        """Build from a config mapping; a bare string is the path."""
        if isinstance(data, (str, Path)):
            return cls(path=str(data))
        if not isinstance(data, Mapping):
            raise ConfigError(f"data source: expected a path or a mapping, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"data source {dict(data)!r}: unknown field(s) {unknown}; known: {sorted(known)}"
            )
        if "path" not in data:
            raise ConfigError(f"data source {dict(data)!r}: missing field 'path'")
        kwargs = dict(data)
        if isinstance(kwargs.get("extra_splits"), list):
            kwargs["extra_splits"] = tuple(kwargs["extra_splits"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values; ``from_dict(to_dict())`` gives an equal source."""
        return {
            "path": self.path,
            "format": DataFormat(self.format).value,
            "split": self.split,
            "extra_splits": list(self.extra_splits),
            "text_column": self.text_column,
            "label_column": self.label_column,
            "tokens_column": self.tokens_column,
            "tags_column": self.tags_column,
            "tag_column": self.tag_column,
            "scheme": TagScheme(self.scheme).value,
            "header": self.header,
            "label_map": dict(self.label_map),
            "limit": self.limit,
            "seed": self.seed,
        }


# --------------------------------------------------------------------------- loading
def load_examples(
    source: DataSource, kind: TaskKind | str, *, data_root: Path | str | None = None
) -> list[Example]:
    """Read every example of ``source`` for a task of ``kind`` (tags in IOB2), then apply ``limit``."""
    try:
        kind = TaskKind(kind)
    except ValueError:
        raise ConfigError(f"task kind {kind!r} is not one of {[k.value for k in TaskKind]}") from None
    fmt = source.resolved_format
    allowed = TOKEN_FORMATS if kind is TaskKind.TOKEN else SENTENCE_FORMATS
    if fmt not in allowed:
        raise ConfigError(
            f"data {source.path!r}: format {fmt.value!r} cannot hold a {kind.value} task "
            f"(use one of {sorted(f.value for f in allowed)})"
        )
    examples: list[Example]
    if fmt is DataFormat.HF:
        examples = _read_hf(source, kind)
    else:
        path = _existing_file(source, data_root)
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
            raise DataError(
                f"{path}: no examples in the file (only blank lines, a header or -DOCSTART- lines)"
            )
    if kind is TaskKind.TOKEN:
        examples = _normalize_scheme([_as_token(ex) for ex in examples], source)
    n = len(examples)
    if source.limit is not None and source.limit < n:
        keep = sorted(random.Random(source.seed).sample(range(n), source.limit))
        examples = [examples[i] for i in keep]
        logger.info(
            "%s: kept %d of %d examples (limit %d, seed %d)",
            source.path,
            len(examples),
            n,
            source.limit,
            source.seed,
        )
    logger.debug("%s: %d %s examples", source.path, len(examples), kind.value)
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
def _normalize_scheme(examples: list[TokenExample], source: DataSource) -> list[Example]:
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
    if kind is TaskKind.SENTENCE:
        for col, name in ((source.text_column, "text_column"), (source.label_column, "label_column")):
            if col not in columns:
                raise DataError(
                    f"{where}: column {col!r} ({name}) not found; the dataset has columns {columns}"
                )
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
        for col, name in ((source.tokens_column, "tokens_column"), (source.tags_column, "tags_column")):
            if col not in columns:
                raise DataError(
                    f"{where}: column {col!r} ({name}) not found; the dataset has columns {columns}"
                )
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


# --------------------------------------------------------------------------- labels
def label_set(examples: Sequence[Example], kind: TaskKind | str) -> tuple[str, ...]:
    """Labels in index order, taken from training examples.

    Sentence tasks: sorted label names. Token tasks: ``O``, then ``B-T``, ``I-T`` for every entity
    type ``T`` (sorted), both present even when one never occurs in the split.
    """
    kind = TaskKind(kind)
    if not examples:
        raise DataError("cannot take a label set from an empty list of examples")
    if kind is TaskKind.SENTENCE:
        return tuple(sorted({_as_sentence(ex).label for ex in examples}))
    types = {tag[2:] for ex in examples for tag in _as_token(ex).tags if tag != "O"}
    return ("O", *(f"{p}-{t}" for t in sorted(types) for p in ("B", "I")))


def _as_sentence(ex: Example) -> SentenceExample:
    if not isinstance(ex, SentenceExample):
        raise DataError(f"{getattr(ex, 'where', '')}: expected a sentence example, got {type(ex).__name__}")
    return ex


def _as_token(ex: Example) -> TokenExample:
    if not isinstance(ex, TokenExample):
        raise DataError(f"{getattr(ex, 'where', '')}: expected a token example, got {type(ex).__name__}")
    return ex


def check_labels(examples: Sequence[Example], labels: Sequence[str], *, what: str) -> None:
    """Raise DataError at the first example whose label (or tag) is not in the training ``labels``."""
    known = set(labels)
    first: tuple[str, str] | None = None
    unknown: Counter[str] = Counter()
    for ex in examples:
        found = [ex.label] if isinstance(ex, SentenceExample) else list(ex.tags)
        for label in found:
            if label not in known:
                unknown[label] += 1
                if first is None:
                    first = (ex.where, label)
    if first is not None:
        where, label = first
        others = (
            f"; unknown labels in all: {dict(unknown.most_common())}"
            if len(unknown) > 1 or unknown[label] > 1
            else ""
        )
        raise DataError(
            f"{where}: label {label!r} in {what} is not in the training label set {list(labels)}{others}"
        )


def split_off(
    examples: Sequence[Example], fraction: float, *, seed: int
) -> tuple[list[Example], list[Example]]:
    """(rest, held_out): hold out ``fraction`` of the examples, stratified by label for sentence tasks.

    Used for a validation split when a task has none (Banking77). Every label keeps at least one
    training example; both parts keep the input order.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction: expected a value in (0, 1), got {fraction!r}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.label if isinstance(ex, SentenceExample) else ""].append(i)
    held: list[int] = []
    for key in sorted(groups):
        idx = groups[key]
        n = min(round(len(idx) * fraction), len(idx) - 1)
        held.extend(rng.sample(idx, n))
    held_set = set(held)
    rest = [ex for i, ex in enumerate(examples) if i not in held_set]
    out = [ex for i, ex in enumerate(examples) if i in held_set]
    if not out:
        raise DataError(
            f"holding out {fraction} of {len(examples)} examples leaves no validation examples; "
            "give a validation file or more data"
        )
    return rest, out
