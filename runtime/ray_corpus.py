"""``mtst-predict --ray``: a corpus file or folder through a Ray cluster into one Parquet file, in input order.

The driver reads nothing itself: read tasks on the cluster cut the files into blocks, the actors of
:func:`mtst.runtime.ray.predict_dataset` predict them, and the driver streams the finished blocks, in
order, into the output file (written beside it and renamed when complete). Needs ``mtst[ray]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtst.errors import DataError, MissingExtraError, MtstError
from mtst.runtime.ray import corpus_files, count_rows, predict_dataset, read_corpus

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
except ImportError as exc:  # pragma: no cover - mtst.runtime.ray above names the extra first
    raise MissingExtraError("Ray Data inference needs ray[data]: pip install 'mtst[ray]'") from exc

__all__ = ["CorpusRun", "predict_corpus", "ray_session"]

logger = logging.getLogger(__name__)

LOCAL_OBJECT_STORE = 256 * 2**20  # bytes: a local cluster's object store (blocks stream; results are small)


@dataclass(frozen=True, slots=True)
class CorpusRun:
    rows: int
    seconds: float  # from the first read to the last row written (cluster start-up not counted)
    output: Path
    actors: int

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"{self.rows} texts -> {self.output} in {self.seconds:.1f} s "
            f"({rate:.0f} texts/s, {self.actors} actor{'s' * (self.actors != 1)})"
        )


@contextlib.contextmanager
def ray_session(
    address: str | None, *, num_cpus: int | None = None, log_to_driver: bool = False
) -> Iterator[None]:
    """Connect to the cluster at ``address`` (``"auto"``, ``host:port``, ``ray://…``) or, for ``None`` or
    ``"local"``, start a local one with ``num_cpus`` logical CPUs; shut down on exit what was started here.

    Inside an already connected driver (``ray.is_initialized()``) it changes nothing.
    """
    if ray.is_initialized():
        yield
        return
    if address in (None, "local"):
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=LOCAL_OBJECT_STORE,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


class _NoBarNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off (they are: the driver shows its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")


_NO_BAR_NOTICE = _NoBarNotice()


def _mtst_cause(exc: BaseException) -> MtstError | None:
    """The MtstError a Ray task raised (Ray wraps it in its own exception types)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MtstError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _write(batches: Iterable[pa.Table], out: Path, bar: Any, *, source: str | Path) -> int:
    """Stream ``batches`` into ``out`` (a temporary sibling renamed at the end); the number of rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema)
            elif batch.schema != writer.schema:
                try:
                    batch = batch.select(writer.schema.names).cast(writer.schema)
                except (KeyError, ValueError, pa.ArrowInvalid) as exc:
                    raise DataError(
                        f"rows {rows + 1}..{rows + batch.num_rows}: columns {batch.schema.names} of types "
                        f"{[str(t) for t in batch.schema.types]} do not fit the first rows' "
                        f"{[str(t) for t in writer.schema.types]} ({exc})"
                    ) from None
            writer.write_table(batch)
            rows += batch.num_rows
            bar.update(batch.num_rows)
        if writer is None:
            raise DataError(f"{source}: no texts")
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return rows


def predict_corpus(
    bundle: str | Path,
    source: str | Path,
    output: str | Path,
    *,
    address: str | None = "local",
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    rows_per_batch: int = 256,
    text_column: str = "text",
    heads: list[str] | None = None,
    embedding: bool = False,
    min_entity_score: float = 0.0,
    engine_options: dict[str, Any] | None = None,
    progress: bool = True,
    log_to_driver: bool = False,
) -> CorpusRun:
    """Predict every text of ``source`` (a ``.txt``/``.jsonl``/``.parquet`` file or a folder of one of
    them) on ``actors`` Ray actors and write ``output`` (Parquet: the input columns plus the columns of
    :mod:`mtst.runtime.columns`), rows in input order.

    ``address`` as in :func:`ray_session`; a local cluster gets one logical CPU more than the actors ask
    for (the read tasks need one). A progress bar on stderr counts rows (only on a terminal).
    """
    from tqdm import tqdm

    kind, files = corpus_files(source)
    total = count_rows(kind, files)
    if total == 0:
        raise DataError(f"{source}: no texts (the input is empty)")
    out = Path(output)
    if out.suffix.lower() != ".parquet":
        raise DataError(f"{out}: the output is one Parquet file: name it *.parquet")
    num_cpus = max(os.cpu_count() or 1, math.ceil(actors * cpus_per_actor) + 1)
    with ray_session(address, num_cpus=num_cpus, log_to_driver=log_to_driver):
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # one bar, ours, counting rows written
        if not log_to_driver:  # quiet: not Ray Data's INFO lines on every run, nor its bars notice
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").addFilter(_NO_BAR_NOTICE)
        ds = predict_dataset(
            read_corpus(source, text_column=text_column, rows_per_block=rows_per_batch),
            bundle,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            rows_per_batch=rows_per_batch,
            text_column=text_column,
            heads=heads,
            embedding=embedding,
            min_entity_score=min_entity_score,
            **(engine_options or {}),
        )
        bar = tqdm(total=total, unit="text", file=sys.stderr, disable=not (progress and sys.stderr.isatty()))
        t0 = time.perf_counter()
        try:
            rows = _write(ds.iter_batches(batch_format="pyarrow", batch_size=None), out, bar, source=source)
        except MtstError:
            raise
        except Exception as exc:
            cause = _mtst_cause(exc)
            if cause is None:
                raise
            raise type(cause)(str(cause)) from None
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
    if rows != total:  # a reader and the counter disagree: never leave that unsaid
        logger.warning("%s: wrote %d rows, the input has %d", out, rows, total)
    return CorpusRun(rows=rows, seconds=seconds, output=out, actors=actors)
