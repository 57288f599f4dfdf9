"""What the file readers yield: chunks of raw rows with the records they rejected, and the
limits that keep a hostile file from taking the process down.

Accounting: every record of a file is either a row of a chunk's frame or a :class:`RejectedRow`
(record number, bounded raw text, reason). Blank lines hold nothing and are not records.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import polars as pl

MAX_RAW_CHARS = 1_000
LINE_COLUMN = "__line"
RAW_COLUMN = "__raw"


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one file may make the reader hold.

    ``max_field_chars``: a longer field rejects its record. ``max_record_chars``: a record whose
    text is longer is rejected (with its record number) without being parsed, and reading goes on.
    ``max_columns``: a file with more columns fails. A chunk ends at ``chunk_rows`` records, or
    once its raw text reaches ``chunk_chars`` or its cells ``chunk_cells`` (a wide file gets
    shorter chunks, so memory stays bounded whatever the width). ``block_bytes``: the largest
    block the CSV fast path hands to polars (:mod:`.csv_blocks`).
    """

    chunk_rows: int = 50_000
    chunk_chars: int = 64 << 20
    chunk_cells: int = 4_000_000
    max_field_chars: int = 65_536
    max_record_chars: int = 1 << 20
    max_columns: int = 1_000
    block_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    def full(self, records: int, chars: int, width: int) -> bool:
        """Whether a chunk of ``records`` records, ``chars`` characters and ``width`` columns is complete."""
        return records >= self.chunk_rows or chars >= self.chunk_chars or records * max(width, 1) >= self.chunk_cells


@dataclass(frozen=True)
class RejectedRow:
    """A record that could not become a row. ``raw`` is at most 1,000 characters, without the
    record's line ending, NUL shown as U+2400 so the text can be stored anywhere."""

    line: int
    raw: str
    reason: str


@dataclass
class RawChunk:
    """``frame``: ``__line`` (Int64), ``__raw`` (String, bounded raw text), then one String column
    per header field. CSV cells are kept as given (empty cells are ``""``); JSON nulls and keys
    absent from an object are null."""

    frame: pl.DataFrame
    rejects: list[RejectedRow] = field(default_factory=list)


class TooManyColumns(ValueError):
    """More distinct column names than :attr:`ReadLimits.max_columns`."""


class ColumnNames:
    """Unique column names from raw header fields: trimmed, ``name_2`` for repeats, ``column_N``
    for empty ones, never ``__line``/``__raw``.

    Linear in the number of names: the next free suffix of each base name is remembered, so
    100,000 copies of one name do not retry ``name_2``, ``name_3``, … each time.
    """

    def __init__(self, raw_names: Iterable[str], max_columns: int) -> None:
        self.names: list[str] = []
        self._max = max_columns
        self._by_raw: dict[str, str] = {}
        self._taken = {LINE_COLUMN, RAW_COLUMN}
        self._next_suffix: dict[str, int] = {}
        for raw in raw_names:
            self._add(raw)

    def _add(self, raw: str) -> str:
        if len(self.names) >= self._max:
            raise TooManyColumns(f"more than {self._max} columns (the limit)")
        base = raw.replace("\x00", "").strip().strip("\ufeff").strip() or f"column_{len(self.names) + 1}"
        name = base
        if name in self._taken:
            suffix = self._next_suffix.get(base, 2)
            while (name := f"{base}_{suffix}") in self._taken:
                suffix += 1
            self._next_suffix[base] = suffix + 1
        self._taken.add(name)
        self.names.append(name)
        self._by_raw.setdefault(raw, name)
        return name

    def name_of(self, key: str) -> str:
        """Column of a JSON key, added when the key is new."""
        name = self._by_raw.get(key)
        return name if name is not None else self._add(key)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building a chunk allocates a list per record; the cyclic collector's passes over them
    more than double the cost of parsing, and nothing built here forms a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def bounded(raw: str) -> str:
    return raw[: MAX_RAW_CHARS + 2].rstrip("\r\n")[:MAX_RAW_CHARS].replace("\x00", "\u2400")


class ChunkBuilder:
    def __init__(self) -> None:
        self.rows: list[Sequence[str | None]] = []
        self.lines: list[int] = []
        self.raws: list[str] = []
        self.rejects: list[RejectedRow] = []
        self.chars = 0

    @property
    def records(self) -> int:
        return len(self.lines) + len(self.rejects)

    def release(self) -> None:
        """Free the per-record lists while the collector is still paused, so that it does not
        walk them when it resumes."""
        self.rows, self.lines, self.raws = [], [], []

    def reject(self, line: int, raw: str, reason: str) -> None:
        self.rejects.append(RejectedRow(line, bounded(raw), reason))

    def frame(self, names: list[str], columns: list[Sequence[str | None]]) -> pl.DataFrame:
        return self.framed(
            pl.Series(LINE_COLUMN, self.lines, dtype=pl.Int64),
            pl.Series(RAW_COLUMN, self.raws, dtype=pl.String),
            pl.DataFrame([pl.Series(name, column, dtype=pl.String) for name, column in zip(names, columns)]),
        )

    @staticmethod
    def framed(lines: pl.Series, raws: pl.Series, cells: pl.DataFrame) -> pl.DataFrame:
        """A chunk frame from record line numbers, raw record texts and the cells (one String
        column per header name)."""
        raw = raws.str.strip_chars_end("\r\n").str.slice(0, MAX_RAW_CHARS)
        return pl.DataFrame([lines.cast(pl.Int64).alias(LINE_COLUMN), raw.alias(RAW_COLUMN)]).hstack(cells)
