"""Reading contact files: the header and streamed chunks of raw rows.

Formats and encodings are detected by :mod:`.sniffing`; records come from :mod:`.csv_records`
and :mod:`.json_items`. Every record of a file is either a row of a chunk's frame or a
:class:`RejectedRow`. A file that cannot be read at all raises :class:`FileReadError`; for a JSON
array whose syntax breaks in the middle that can happen after chunks were yielded, so consumers
stage rows and commit at the end.

Memory stays flat in the file size and width: text is read in blocks of about 1 MB, and a chunk
ends at ``chunk_rows`` records or at the character and cell budgets of :class:`ReadLimits`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from email_engine_assets.contacts.chunks import (
    RawChunk,
    ReadLimits,
    RejectedRow,
    TooManyColumns,
)
from email_engine_assets.contacts.csv_records import csv_chunks, csv_header
from email_engine_assets.contacts.json_items import (
    json_chunks,
    json_header,
    require_array_end,
)
from email_engine_assets.contacts.sniffing import (
    KINDS,
    FileFormat,
    FileReadError,
    open_text,
    sniff_format,
)

__all__ = ["FileFormat", "FileReadError", "RawChunk", "ReadLimits", "RejectedRow", "iter_chunks", "read_header", "sniff_format"]

DEFAULT_LIMITS = ReadLimits()


def read_header(path: Path, fmt: FileFormat, limits: ReadLimits = DEFAULT_LIMITS) -> list[str]:
    """Column names as they appear in chunk frames (trimmed, made unique).

    CSV: the first non-blank record. JSON / NDJSON: the union of the keys of the first objects.
    More than ``limits.max_columns`` columns fails the file.
    """
    path = Path(path)
    with open_text(path, fmt) as stream:
        header = csv_header if fmt.kind == "csv" else json_header
        return header(path, stream, fmt, limits).names


def iter_chunks(path: Path, fmt: FileFormat, *, limits: ReadLimits = DEFAULT_LIMITS, **overrides: int) -> Iterator[RawChunk]:
    """Stream the file as chunks of at most ``limits.chunk_rows`` records (rows + rejects);
    ``overrides`` replace single limits (``chunk_rows=1000``).

    The first chunk is always yielded, empty for an empty or header-only file, so its frame
    carries the columns; later chunks are never empty.
    """
    path = Path(path)
    if fmt.kind not in KINDS:
        raise ValueError(f"unknown file kind {fmt.kind!r}; expected one of {', '.join(KINDS)}")
    if overrides:
        limits = ReadLimits(**{**vars(limits), **overrides})
    if fmt.kind == "json":
        try:
            require_array_end(path, fmt)
        except OSError as exc:
            raise FileReadError(path, f"cannot open: {exc.strerror or exc}") from exc
    return _chunks(path, fmt, limits)


def _chunks(path: Path, fmt: FileFormat, limits: ReadLimits) -> Iterator[RawChunk]:
    try:
        with open_text(path, fmt) as stream:
            if fmt.kind == "csv":
                yield from csv_chunks(path, stream, fmt, limits)
            else:
                yield from json_chunks(path, stream, fmt, limits)
    except TooManyColumns as exc:
        raise FileReadError(path, str(exc)) from None
    except OSError as exc:
        raise FileReadError(path, f"read failed: {exc.strerror or exc}") from exc
