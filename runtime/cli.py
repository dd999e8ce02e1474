"""``mtst-predict``: run a bundle on texts from the command line (JSON lines or a table)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from mtst.errors import MtstError
from mtst.runtime.manifest import Precision
from mtst.runtime.results import Prediction, SentenceLabel, TokenEntities

__all__ = ["main"]

logger = logging.getLogger(__name__)

_CHUNK = 256  # texts per engine call when reading a file: steady progress, bounded memory


def _read_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    """One text per line (newline stripped, empty lines kept so output line i answers input line i)."""
    for lineno, raw in enumerate(stream, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.ClickException(
                f"{name}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        yield line.rstrip("\r\n")


def _count_lines(path: str) -> int | None:
    """Lines in a file (a last line without newline counts), for the progress bar's total."""
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                n += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return n + (last != b"\n")


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table_row(i: int, p: Prediction) -> str:
    cells = [f"{i:>4}", _short(p.text, 40).ljust(40)]
    for name, r in p.heads.items():
        if isinstance(r, SentenceLabel):
            answer = f"no answer ({r.label} {r.score:.2f})" if r.abstained else f"{r.label} ({r.score:.2f})"
            cells.append(f"{name}={answer}")
        elif isinstance(r, TokenEntities):
            ents = ", ".join(f"{e.text}/{e.label}" for e in r.entities) or "-"
            cells.append(f"{name}=[{ents}]")
    if p.truncated:
        cells.append("(truncated)")
    return "  ".join(cells)


def _thresholds(values: tuple[str, ...]) -> dict[str, float] | None:
    """``--threshold HEAD=VALUE`` options -> {head: value} (None when none is given)."""
    out: dict[str, float] = {}
    for v in values:
        head, sep, raw = v.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not sep or not head.strip() or not 0.0 <= value <= 1.0:
            raise click.BadParameter(
                f"{v!r}: expected HEAD=VALUE with VALUE in [0, 1]", param_hint="--threshold"
            )
        if head.strip() in out:
            raise click.BadParameter(f"head {head.strip()!r} given twice", param_hint="--threshold")
        out[head.strip()] = value
    return out or None


def _emit(preds: list[Prediction], fmt: str, start: int, *, embedding: bool, logits: bool) -> None:
    for k, p in enumerate(preds):
        if fmt == "json":
            d: dict[str, Any] = p.to_dict(embedding=embedding, logits=logits)
            click.echo(json.dumps(d, ensure_ascii=False))
        else:
            click.echo(_table_row(start + k, p))


def _predict_on_ray(bundle: Path, source: Path, output: Path, **options: Any) -> None:
    """``--ray``: the corpus file or folder ``source`` on a Ray cluster into ``output`` (Parquet)."""
    try:
        from mtst.runtime.ray_corpus import predict_corpus

        run = predict_corpus(bundle, source, output, **options)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(run.summary(), err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option(
    "--file", "-f", "file", type=str, default=None, help="Read texts from a file, one per line ('-' = stdin)."
)
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True)
@click.option(
    "--provider",
    "-p",
    "providers",
    multiple=True,
    help="Execution provider, repeat for a chain: tensorrt, cuda, cpu (default: auto).",
)
@click.option(
    "--allow-fallback", is_flag=True, help="Run on what is available when a named provider is missing."
)
@click.option(
    "--heads", "heads", multiple=True, help="Heads to run (repeat or comma-separate; default: all)."
)
@click.option(
    "--precision", type=click.Choice([p.value for p in Precision]), default=None, help="Variant precision."
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Intra-op threads (0 = ORT's choice).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--min-entity-score",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Drop entities scored below this (mean tag probability of their words).",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="HEAD=VALUE",
    help="Override a head's abstention threshold (repeatable), e.g. intent=0.5.",
)
@click.option(
    "--no-abstain", is_flag=True, help="Thresholds off: every sentence head answers, every entity is kept."
)
@click.option("--embedding", is_flag=True, help="Include each text's embedding in JSON output.")
@click.option("--logits", is_flag=True, help="Include raw logits in JSON output.")
@click.option(
    "--progress/--no-progress", default=True, help="Progress bar on stderr for --file (only on a terminal)."
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run --file PATH (a .txt/.jsonl/.parquet file or a folder of them) on a Ray cluster into "
    "--output OUT.parquet: no ADDRESS starts a local one, 'auto' joins a running one (needs mtst[ray]).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True, help="Ray actors.")
@click.option("--text-field", default="text", show_default=True, help="Text field of JSONL/Parquet input.")
@click.option("-v", "--verbose", count=True, help="-v: info, -vv: debug logging on stderr.")
def main(
    bundle: Path,
    texts: tuple[str, ...],
    file: str | None,
    fmt: str,
    providers: tuple[str, ...],
    allow_fallback: bool,
    heads: tuple[str, ...],
    precision: str | None,
    threads: int,
    batch_size: int,
    min_entity_score: float,
    thresholds: tuple[str, ...],
    no_abstain: bool,
    embedding: bool,
    logits: bool,
    progress: bool,
    ray_address: str | None,
    output: Path | None,
    actors: int,
    text_field: str,
    verbose: int,
) -> None:
    """Predict every head of the bundle BUNDLE for each TEXT (or each line of --file).

    JSON output is one object per text, in input order: text, truncated, heads (label/score/abstained/
    scores for sentence heads, entities with character offsets for token heads). A sentence head
    abstains (``"abstained": true``) when its calibrated score is under its threshold.
    """
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    texts, file = _texts_or_file(texts, file)
    head_names = [h.strip() for spec in heads for h in spec.split(",") if h.strip()] or None
    engine_options: dict[str, Any] = {
        "providers": list(providers) or "auto",
        "allow_fallback": allow_fallback,
        "precision": precision,
        "intra_op_threads": threads,
        "batch_size": batch_size,
    }
    if ray_address is not None:  # the corpus on a Ray cluster: mtst.runtime.ray_corpus does it all
        if texts or file in (None, "-") or output is None or logits or thresholds or no_abstain:
            raise click.UsageError(
                "--ray reads --file PATH and writes --output OUT.parquet "
                "(no TEXT, no --logits; the bundle's own thresholds)"
            )
        engine_options["intra_op_threads"] = threads or None  # None: the CPUs Ray gives each actor
        _predict_on_ray(
            bundle, Path(str(file)), output, address=ray_address, actors=actors, text_column=text_field,
            heads=head_names, embedding=embedding, min_entity_score=min_entity_score, progress=progress,
            log_to_driver=verbose > 0, engine_options=engine_options,
        )  # fmt: skip
        return
    predict_options = {
        "heads": head_names,
        "return_embedding": embedding,
        "return_logits": logits,
        "min_entity_score": min_entity_score,
        "thresholds": _thresholds(thresholds),
        "abstain": not no_abstain,
    }
    try:
        _predict_here(bundle, texts, file, engine_options, predict_options, fmt=fmt, progress=progress)
    except MtstError as exc:
        raise click.ClickException(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None


def _texts_or_file(texts: tuple[str, ...], file: str | None) -> tuple[tuple[str, ...], str | None]:
    """The texts to predict: TEXT arguments, or --file (a lone '-' argument means stdin)."""
    if texts == ("-",) and file is None:
        return (), "-"
    if texts and file is not None:
        raise click.UsageError("give texts as arguments or --file, not both")
    if not texts and file is None:
        raise click.UsageError("nothing to predict: give TEXT arguments, --file F, or --file - for stdin")
    return texts, file


def _predict_here(
    bundle: Path,
    texts: tuple[str, ...],
    file: str | None,
    engine_options: dict[str, Any],
    predict_options: dict[str, Any],
    *,
    fmt: str,
    progress: bool,
) -> None:
    """Load the engine in this process and print the predictions of ``texts`` or ``file``."""
    from mtst.runtime.engine import Engine  # after option parsing: --help stays instant

    engine = Engine.load(bundle, **engine_options)
    logger.info("%r", engine)

    def predict(chunk: list[str]) -> list[Prediction]:
        return engine.predict(chunk, **predict_options)

    def emit(preds: list[Prediction], start: int) -> None:
        _emit(
            preds,
            fmt,
            start,
            embedding=predict_options["return_embedding"],
            logits=predict_options["return_logits"],
        )

    if texts:
        emit(predict(list(texts)), 0)
    else:
        assert file is not None
        _predict_file(file, predict, emit, progress=progress)


def _predict_file(
    file: str,
    predict: Callable[[list[str]], list[Prediction]],
    emit: Callable[[list[Prediction], int], None],
    *,
    progress: bool,
) -> None:
    """Predict each line of ``file`` ('-' = stdin) in chunks of _CHUNK lines, emitting as it goes."""
    total = None if file == "-" else _count_lines(file)
    try:
        stream: IO[bytes] = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise click.BadParameter(f"{file}: {exc.strerror}", param_hint="--file") from None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="text", file=sys.stderr, disable=not (progress and sys.stderr.isatty()))
    done = 0
    try:
        for chunk in _chunks(_read_lines(stream, "<stdin>" if file == "-" else file), _CHUNK):
            try:
                preds = predict(chunk)
            except (ValueError, TypeError) as exc:  # name the line, not the index inside the chunk
                raise click.ClickException(f"{file} (lines {done + 1}..{done + len(chunk)}): {exc}") from None
            emit(preds, done)
            done += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
        if stream is not sys.stdin.buffer:
            stream.close()


if __name__ == "__main__":  # pragma: no cover
    main()
