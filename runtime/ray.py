"""Ray Data integration: run a bundle over a corpus on a Ray cluster, one engine per actor.

::

    import ray
    from mtst.runtime.ray import Predictor

    ds = ray.data.read_parquet("corpus/")                     # any dataset with a string column "text"
    out = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"bundle": "/shared/bundle"},   # a path every node can read
        batch_format="pyarrow",
        batch_size=256,
        compute=ray.data.ActorPoolStrategy(size=2),           # 2 actors, each loads the bundle once
        num_cpus=1,
    )
    out.write_parquet("predictions/")

Each output row is its input row plus the prediction columns of :mod:`mtst.runtime.columns`. Ray keeps
rows in input order only with ``DataContext.get_current().execution_options.preserve_order = True``
(set it before building the dataset); :func:`read_corpus` and :func:`predict_corpus` (``mtst-predict
--ray``) do. Actors run with Ray's defaults for ``map_batches``: an actor that dies is restarted and its
batches are run again, so no row is lost or written twice.

Needs ``pip install 'mtst[ray]'`` (ray[data], pyarrow); ``import mtst.runtime`` does not import it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import ConfigError, DataError, MissingExtraError
from mtst.runtime.columns import column_names, predictions_table
from mtst.runtime.engine import Engine

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.data.datasource import FileBasedDatasource
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("Ray Data inference needs ray[data]: pip install 'mtst[ray]'") from exc

__all__ = ["FORMATS", "Predictor", "corpus_files", "count_rows", "predict_dataset", "read_corpus"]

logger = logging.getLogger(__name__)

# input formats by file suffix; a folder must hold one of them (files starting with "." or "_" are skipped)
FORMATS = {".txt": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
ROWS_PER_BLOCK = 256  # rows per block read: the unit that Ray hands to an actor


def _assigned_cpus() -> int:
    """CPUs Ray assigned to this worker (0 outside Ray: ONNX Runtime's own choice)."""
    if not ray.is_initialized():
        return 0
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    return max(1, int(cpus)) if cpus else 0


def _as_table(batch: Any) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):  # Ray's "numpy" batch format: column name -> array
        return pa.table(
            {
                k: pa.array(v.tolist() if isinstance(v, np.ndarray) and v.dtype.kind == "O" else v)
                for k, v in batch.items()
            }
        )
    if hasattr(batch, "columns") and hasattr(batch, "to_dict"):  # a pandas DataFrame
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(
        f"batch: expected a pyarrow Table, a pandas DataFrame or a dict of arrays, got {type(batch).__name__}"
    )


class Predictor:
    """A callable class for ``Dataset.map_batches``: loads the bundle once per actor, predicts every batch.

    ``text_column`` names the input column with the texts; ``heads`` picks heads (default: all);
    ``embedding=True`` adds an ``embedding`` column; ``min_entity_score`` as in :meth:`Engine.predict`.
    Other keyword options go to :meth:`Engine.load`; ``intra_op_threads`` defaults to the CPUs Ray
    assigned to the actor (``num_cpus``), so actors on one node do not oversubscribe its cores.
    """

    def __init__(
        self,
        bundle: str | Path,
        *,
        text_column: str = "text",
        heads: Iterable[str] | str | None = None,
        embedding: bool = False,
        min_entity_score: float = 0.0,
        intra_op_threads: int | None = None,
        **engine_options: Any,
    ) -> None:
        threads = _assigned_cpus() if intra_op_threads is None else intra_op_threads
        self.engine = Engine.load(bundle, intra_op_threads=threads, **engine_options)
        self.text_column = text_column
        self.embedding = bool(embedding)
        self.min_entity_score = min_entity_score
        names = (
            list(self.engine.heads) if heads is None else ([heads] if isinstance(heads, str) else list(heads))
        )
        self.engine.predict([], heads=names, min_entity_score=min_entity_score)  # checks the options now
        self.heads = [self.engine.heads[n] for n in dict.fromkeys(names)]
        self.head_names = [h.name for h in self.heads]
        self.columns = column_names(self.heads, embedding=self.embedding)
        logger.info("Predictor on pid %d: %r, %d intra-op threads", os.getpid(), self.engine, threads)

    def __call__(self, batch: Any) -> pa.Table:
        table = _as_table(batch)
        if self.text_column not in table.column_names:
            raise DataError(
                f"column {self.text_column!r}: not in the input (it has {table.column_names}); "
                f"name the text column with text_column="
            )
        clash = [c for c in self.columns if c in table.column_names]
        if clash:
            raise DataError(
                f"input columns {clash} have the names of prediction columns; rename them or pick other heads"
            )
        col = table.column(self.text_column)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise DataError(f"column {self.text_column!r}: expected strings, got {col.type}")
        if col.null_count:
            first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            after = table.column(self.text_column)[first - 1].as_py() if first else None
            raise DataError(
                f"column {self.text_column!r}: row {first} of this batch is null "
                f"(expected a string; the row before it: {after!r:.60})"
            )
        preds = self.engine.predict(
            col.to_pylist(),
            heads=self.head_names,
            return_embedding=self.embedding,
            min_entity_score=self.min_entity_score,
        )
        out = predictions_table(
            preds, self.heads, embedding_dim=self.engine.embedding_dim if self.embedding else None
        )
        for field, column in zip(out.schema, out.columns, strict=True):
            table = table.append_column(field, column)
        return table


def predict_dataset(
    ds: ray.data.Dataset,
    bundle: str | Path,
    *,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    rows_per_batch: int = ROWS_PER_BLOCK,
    **predictor_options: Any,
) -> ray.data.Dataset:
    """``ds.map_batches(Predictor, ...)`` on a fixed pool of ``actors`` actors (the bundle path made absolute).

    ``predictor_options`` go to :class:`Predictor` (text_column, heads, embedding, Engine.load options).
    """
    if not isinstance(actors, int) or isinstance(actors, bool) or actors < 1:
        raise ConfigError(f"actors: expected an integer >= 1, got {actors!r}")
    kwargs: dict[str, Any] = {}
    if gpus_per_actor:
        kwargs["num_gpus"] = gpus_per_actor
    return ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"bundle": str(Path(bundle).resolve()), **predictor_options},
        batch_format="pyarrow",
        batch_size=rows_per_batch,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- reading


def _decode(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) as ``mtst-predict --file`` reads them: split at ``\\n``, ``\\r`` and BOM removed."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":  # a final newline ends the last line, it does not start one
        parts.pop()
    for lineno, raw in enumerate(parts, start=1):
        yield lineno, raw.rstrip(b"\r")


class _Blocks:
    """Rows collected into blocks of ROWS_PER_BLOCK (blocks are what Ray spreads over the actors)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> pa.Table | None:
        self.rows.append(row)
        return self.flush() if len(self.rows) >= self.size else None

    def flush(self) -> pa.Table | None:
        if not self.rows:
            return None
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        try:
            table = pa.table({k: pa.array([r.get(k) for r in self.rows]) for k in keys})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"rows of mixed types in one field ({exc})") from None
        self.rows = []
        return table


class _TextLines(FileBasedDatasource):  # type: ignore[misc]
    """``.txt``: one text a line (empty lines kept, so row i answers line i)."""

    def __init__(self, paths: list[str], *, rows_per_block: int = ROWS_PER_BLOCK) -> None:
        super().__init__(paths)
        self.rows_per_block = rows_per_block

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        blocks = _Blocks(self.rows_per_block)
        for lineno, raw in _lines(f.readall()):
            if (b := blocks.add({"text": _decode(raw, path, lineno)})) is not None:
                yield b
        if (b := blocks.flush()) is not None:
            yield b


class _JsonLines(FileBasedDatasource):  # type: ignore[misc]
    """``.jsonl``: one JSON object a line with a string field ``text_column`` (blank lines skipped)."""

    def __init__(self, paths: list[str], *, text_column: str, rows_per_block: int = ROWS_PER_BLOCK) -> None:
        super().__init__(paths)
        self.text_column = text_column
        self.rows_per_block = rows_per_block

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        blocks = _Blocks(self.rows_per_block)
        for lineno, raw in _lines(f.readall()):
            line = _decode(raw, path, lineno)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            if not isinstance(row.get(self.text_column), str):
                got = "no such field" if self.text_column not in row else type(row[self.text_column]).__name__
                raise DataError(
                    f"{path}:{lineno}: field {self.text_column!r}: expected a string ({got}; fields: {sorted(row)})"
                )
            try:
                b = blocks.add(row)
            except DataError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            if b is not None:
                yield b
        try:
            b = blocks.flush()
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        if b is not None:
            yield b


class _ParquetRows(FileBasedDatasource):  # type: ignore[misc]
    """``.parquet``: every column, in blocks of ``rows_per_block`` rows (a big row group is cut up)."""

    def __init__(self, paths: list[str], *, rows_per_block: int = ROWS_PER_BLOCK) -> None:
        super().__init__(paths)
        self.rows_per_block = rows_per_block

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        try:
            pf = pq.ParquetFile(pa.BufferReader(f.readall()))
        except pa.ArrowInvalid as exc:
            raise DataError(f"{path}: not a Parquet file ({exc})") from None
        for batch in pf.iter_batches(batch_size=self.rows_per_block):
            yield pa.Table.from_batches([batch])


def corpus_files(path: str | Path) -> tuple[str, list[Path]]:
    """The format and the files of a corpus: one file, or a folder's files of one format (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
        kinds = {FORMATS[p.suffix.lower()] for p in files if p.suffix.lower() in FORMATS}
        if not kinds:
            raise DataError(f"{path}: no input files (expected {sorted(FORMATS)} files)")
        if len(kinds) > 1:
            raise DataError(f"{path}: files of several formats ({sorted(kinds)}); give one format per run")
        (kind,) = kinds
        return kind, [p for p in files if FORMATS.get(p.suffix.lower()) == kind]
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown input format {path.suffix!r} (expected one of {sorted(FORMATS)})")
    return fmt, [path]


def count_rows(kind: str, files: Sequence[Path]) -> int:
    """Rows the corpus will give (for a progress bar): lines, non-blank lines, or Parquet row counts."""
    n = 0
    for p in files:
        if kind == "parquet":
            try:
                n += pq.ParquetFile(p).metadata.num_rows
            except pa.ArrowInvalid as exc:
                raise DataError(f"{p}: not a Parquet file ({exc})") from None
        else:
            data = p.read_bytes()
            n += sum(1 for _, line in _lines(data) if kind == "text" or line.strip())
    return n


def read_corpus(
    path: str | Path, *, text_column: str = "text", rows_per_block: int = ROWS_PER_BLOCK
) -> ray.data.Dataset:
    """A dataset of a corpus file or folder (``.txt``, ``.jsonl``, ``.parquet``), rows in file order.

    Sets ``preserve_order`` in the current DataContext: datasets built from now on keep input order.
    """
    kind, files = corpus_files(path)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    paths = [str(p.resolve()) for p in files]
    source: FileBasedDatasource
    if kind == "text":
        if text_column != "text":
            raise ConfigError(f"text_column: {text_column!r}; a .txt corpus has one column, 'text'")
        source = _TextLines(paths, rows_per_block=rows_per_block)
    elif kind == "jsonl":
        source = _JsonLines(paths, text_column=text_column, rows_per_block=rows_per_block)
    else:
        schema = pq.read_schema(files[0])
        if text_column not in schema.names:
            raise DataError(f"{files[0]}: no column {text_column!r} (columns: {schema.names})")
        source = _ParquetRows(paths, rows_per_block=rows_per_block)
    return ray.data.read_datasource(source)
