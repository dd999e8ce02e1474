"""What a split of a task's data is: the example types and :class:`DataSource` (not how it is read).

Torch-free. A run config's data sources are built by the config reader (:mod:`mtst.config`), which
checks every field's type from the annotations below; ``__post_init__`` checks only what the types
cannot say (a tag column that is the token column, an ``hf:`` path without a split, ...), so that a
source built in Python fails as clearly as one read from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from mtst.errors import ConfigError, DataError, parse_enum

__all__ = [
    "HF_PREFIX",
    "SENTENCE_FORMATS",
    "SUFFIX_FORMATS",
    "TOKEN_FORMATS",
    "Column",
    "DataFormat",
    "DataSource",
    "Example",
    "SentenceExample",
    "TagScheme",
    "TokenExample",
    "as_sentence",
    "as_token",
]


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


def as_sentence(ex: Example) -> SentenceExample:
    if not isinstance(ex, SentenceExample):
        raise DataError(f"{getattr(ex, 'where', '')}: expected a sentence example, got {type(ex).__name__}")
    return ex


def as_token(ex: Example) -> TokenExample:
    if not isinstance(ex, TokenExample):
        raise DataError(f"{getattr(ex, 'where', '')}: expected a token example, got {type(ex).__name__}")
    return ex


# --------------------------------------------------------------------------- sources
class DataFormat(str, Enum):
    AUTO = "auto"
    CONLL = "conll"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    JSON = "json"
    HF = "hf"
    LINES = "lines"  # one sentence a line, no labels: out-of-domain texts only (load_texts)


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
        # Types are the config reader's job (it converts every field from its annotation). Checked here:
        # values, plain strings for enums, and what a test pins for sources built in Python
        # (extra_splits given as one string, a bool column, a label_map that is no mapping).
        if isinstance(self.path, Path):
            object.__setattr__(self, "path", str(self.path))
        if not self.path.strip():
            raise ConfigError(f"data path: expected a file path or 'hf:NAME', got {self.path!r}")
        where = f"data {self.path!r}"
        fmt = parse_enum(DataFormat, self.format, f"{where}: format", sep=" ")
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "scheme", parse_enum(TagScheme, self.scheme, f"{where}: scheme", sep=" "))
        self._check_hf(fmt)
        resolved = self.resolved_format  # raises ConfigError for an unknown suffix
        if self.split is not None and not self.split:
            raise ConfigError(f"{where}: split: expected a non-empty name, got {self.split!r}")
        if resolved is DataFormat.HF and self.split is None:
            raise ConfigError(f"{where}: split: a Hugging Face dataset needs a split name, e.g. 'train'")
        self._check_extra_splits(where)
        for name in ("text_column", "label_column"):
            _check_column(f"{where}: {name}", getattr(self, name))
        for name in ("tokens_column", "tags_column"):
            if not getattr(self, name):
                raise ConfigError(f"{where}: {name}: expected a field name, got {getattr(self, name)!r}")
        if self.tag_column == 0:
            raise ConfigError(f"{where}: tag_column: column 0 holds the token, not the tag")
        if resolved in (DataFormat.CSV, DataFormat.TSV) and not self.header:
            for name in ("text_column", "label_column"):
                if isinstance(getattr(self, name), str):
                    raise ConfigError(
                        f"{where}: {name} {getattr(self, name)!r} is a name but header is false; "
                        "give a 0-based column index"
                    )
        if not isinstance(self.label_map, Mapping):
            raise ConfigError(f"{where}: label_map: expected a mapping, got {self.label_map!r}")
        # YAML reads `0: negative` with an int key: labels are strings everywhere in mtst
        object.__setattr__(self, "label_map", {str(k): str(v) for k, v in self.label_map.items()})
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{where}: limit: expected a positive integer or null, got {self.limit!r}")

    def _check_hf(self, fmt: DataFormat) -> None:
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

    def _check_extra_splits(self, where: str) -> None:
        if isinstance(self.extra_splits, str):
            raise ConfigError(
                f"{where}: extra_splits: expected a list of names, got the string {self.extra_splits!r}"
            )
        extra = tuple(self.extra_splits)
        if not all(extra):
            raise ConfigError(f"{where}: extra_splits: expected non-empty names, got {list(extra)}")
        if extra and self.split is None:
            raise ConfigError(f"{where}: extra_splits {list(extra)} need a split to extend")
        object.__setattr__(self, "extra_splits", extra)

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
    def check_keys(cls, data: object) -> Mapping[str, Any]:
        """``data`` as a mapping of known fields with a ``path`` (the config reader's first step)."""
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
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> DataSource:
        """Build from a plain mapping (``to_dict()``); a bare string is the path."""
        if isinstance(data, (str, Path)):
            return cls(path=str(data))
        return cls(**cls.check_keys(data))

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
