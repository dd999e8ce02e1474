"""Real sentences from a text file, one a line: the one reader behind ``--data``, ``--calibration-data``
and parity files (bench, export and the experiment use it)."""

from __future__ import annotations

from pathlib import Path

from mtst.errors import DataError

__all__ = ["read_sentences"]


def read_sentences(
    path: str | Path,
    *,
    dedupe: bool = False,
    limit: int | None = None,
    not_found: str = "no such file (expected a text file with one sentence a line)",
    empty: str = "no sentences (the file is empty or only blank lines)",
) -> list[str]:
    """Stripped, non-blank lines of a UTF-8 file, in file order.

    ``dedupe`` keeps the first of equal lines; ``limit`` keeps that many lines spread evenly over the
    file. ``not_found`` and ``empty`` end the error messages (after ``"{path}: "``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {not_found}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    # lines as a text editor shows them: \n, \r\n or \r end one (not the rarer breaks of str.splitlines)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sentences = [s for s in (line.strip() for line in lines) if s]
    if dedupe:
        sentences = list(dict.fromkeys(sentences))
    if not sentences:
        raise DataError(f"{path}: {empty}")
    if limit is not None and len(sentences) > limit:
        step = len(sentences) / limit
        sentences = [sentences[int(i * step)] for i in range(limit)]
    return sentences
