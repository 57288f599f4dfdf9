"""CSV records and chunks: RFC 4180 quoting, quoted delimiters and newlines, ragged rows.

Line numbers are 1-based physical lines where the record starts (header: line 1). A single
record is held whole while it is read; a field over the csv module's limit (a runaway quote) is
cut there, and a record over :attr:`.ReadLimits.max_record_chars` is rejected.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

from email_engine_assets.contacts.chunks import (
    MAX_RAW_CHARS,
    ChunkBuilder,
    ColumnNames,
    RawChunk,
    ReadLimits,
    gc_paused,
)
from email_engine_assets.contacts.csv_blocks import (
    Careful,
    block_chunks,
    data_offset,
    fast_path_applies,
)
from email_engine_assets.contacts.sniffing import (
    BLOCK_CHARS,
    FileFormat,
    FileReadError,
    excerpt,
)

# Records read at once at the start of a chunk, before their average size is known.
_FIRST_BATCH = 64


def dialect(fmt: FileFormat) -> dict[str, Any]:
    return {"delimiter": fmt.delimiter or ",", "quotechar": '"', "doublequote": True, "strict": False}


@dataclass
class _Segment:
    """Consecutive records: fields, first physical line and raw text of each, plus a record the
    csv module refused (field over its limit) as ``(line, raw)``."""

    rows: list[list[str]]
    first_lines: Sequence[int]
    raws: list[str]
    broken: tuple[int, str] | None = None


class _CsvRecords:
    """CSV records with the physical lines each one spans.

    The csv reader counts the lines it consumes (``line_num``); the lines themselves stay in a
    window until their records are turned into rows, which gives each record its raw text
    without a second read of the file. When every record of a batch is one line (the usual
    case) line numbers and raw text come from slices, with no per-record Python work.
    """

    def __init__(self, stream: TextIO, dialect: dict[str, Any], path: Path, first_line: int = 1) -> None:
        self._stream = stream
        self._dialect = dialect
        self._path = path
        self._line0 = first_line - 1  # the stream's first line is the file's line ``first_line``
        self._window: list[str] = []
        self._window_first = 1
        self._skipped = 0
        self._feed = chain.from_iterable(self._blocks())
        self._reader = csv.reader(self._feed, **dialect)
        self.exhausted = False

    def _blocks(self) -> Iterator[list[str]]:
        while block := self._stream.readlines(BLOCK_CHARS):
            self._window.extend(block)
            yield block

    @property
    def consumed(self) -> int:
        """Physical lines of the stream read so far (records turned into rows or refused)."""
        return self._reader.line_num + self._skipped

    def header(self) -> list[str] | None:
        while not self.exhausted:
            segment = self.read(1)
            if segment.broken:
                raise FileReadError(self._path, f"header line {segment.broken[0]} has a field over the size limit")
            for fields in segment.rows:
                if fields:
                    return fields
        return None

    def read(self, limit: int) -> _Segment:
        before = self.consumed
        rows: list[list[str]] = []
        failed = False
        try:
            rows.extend(islice(self._reader, limit))
        except csv.Error:
            failed = True
        after = self.consumed
        offset = 1 - self._window_first
        lines = self._window[before + offset : after + offset]
        if not failed and len(rows) == len(lines):
            segment = _Segment(rows, range(self._line0 + before + 1, self._line0 + after + 1), lines)
        else:
            segment = self._reparse(lines, self._line0 + before + 1)
            if segment.broken:
                segment.broken = self._skip_rest(*segment.broken)
        self.exhausted = not failed and len(rows) < limit
        self._release(self.consumed)
        return segment

    def _reparse(self, lines: list[str], first_line: int) -> _Segment:
        """Record by record, for batches with multi-line records or a refused record."""
        reader = csv.reader(lines, **self._dialect)
        segment = _Segment([], [], [])
        done = 0
        try:
            for fields in reader:
                end = reader.line_num
                segment.rows.append(fields)
                segment.first_lines.append(first_line + done)  # type: ignore[attr-defined]
                segment.raws.append(lines[done] if end == done + 1 else "".join(lines[done:end]))
                done = end
        except csv.Error:
            segment.broken = (first_line + done, "".join(lines[done:]))
        return segment

    def _skip_rest(self, line: int, text: str) -> tuple[int, str]:
        """After a refused record, consume its remaining lines: while its quotes are unbalanced
        the record goes on. Lines skipped are released as they go, so a runaway quote does not
        hold the rest of the file."""
        quote = self._dialect["quotechar"]
        open_quote = text.count(quote) % 2 == 1
        raw = text[: MAX_RAW_CHARS + 2]
        while open_quote:
            next_line = next(self._feed, None)
            if next_line is None:
                break
            self._skipped += 1
            open_quote = (next_line.count(quote) % 2 == 1) != open_quote
            if len(raw) <= MAX_RAW_CHARS:
                raw += next_line[: MAX_RAW_CHARS + 2]
            if self._skipped % 4096 == 0:
                self._release(self.consumed)
        return line, raw

    def _release(self, upto: int) -> None:
        count = upto - self._window_first + 1
        if count > 0:
            del self._window[:count]
            self._window_first += count


def csv_header(path: Path, stream: TextIO, fmt: FileFormat, limits: ReadLimits) -> ColumnNames:
    """Column names from the first non-blank record; more than ``limits.max_columns`` fails the file."""
    return _header_names(path, _CsvRecords(stream, dialect(fmt), path), limits)


def _header_names(path: Path, records: _CsvRecords, limits: ReadLimits) -> ColumnNames:
    header = records.header() or []
    if len(header) > limits.max_columns:
        raise FileReadError(path, f"the header has {len(header)} columns, over the limit of {limits.max_columns}")
    return ColumnNames(header, limits.max_columns)


def csv_chunks(path: Path, stream: TextIO, fmt: FileFormat, limits: ReadLimits, *, fast: bool = True) -> Iterator[RawChunk]:
    """The file's chunks after its header. Blocks of a UTF-8 file are parsed by polars where they
    are well-formed (:mod:`.csv_blocks`, unless ``fast`` is false); everything else by the careful
    record reader, which gives the same rows, line numbers and rejects."""
    if csv.field_size_limit() <= limits.max_field_chars:
        csv.field_size_limit(limits.max_field_chars + 1)  # raised only: the csv module's limit is global
    records = _CsvRecords(stream, dialect(fmt), path)
    names = _header_names(path, records, limits).names
    checks = _CsvChecks(names, limits, fmt.encoding)
    delimiter = dialect(fmt)["delimiter"]

    def careful(text: TextIO, first_line: int) -> Iterator[RawChunk]:
        return _careful_chunks(_CsvRecords(text, dialect(fmt), path, first_line), checks, limits, len(names))

    chunks: Iterator[RawChunk | Careful] | None = None
    if fast and names and not records.exhausted and fast_path_applies(fmt.encoding, delimiter):
        buffer = stream.buffer
        resume = buffer.tell()  # where this reader's text stream reads on
        offset = data_offset(buffer, records.consumed)
        if offset is not None:
            chunks = block_chunks(buffer, offset, records.consumed + 1, names, delimiter, limits, careful)
        else:
            buffer.seek(resume)
    empty = True
    for chunk in chunks or ():
        if chunk is Careful.REST:  # at the first block: this reader goes on as if it were alone
            buffer.seek(resume)
            chunks = None
            break
        empty = False
        yield chunk
    if chunks is None:
        for chunk in _careful_chunks(records, checks, limits, len(names)):
            empty = False
            yield chunk
    if empty:
        yield RawChunk(ChunkBuilder().frame(names, [()] * len(names)))


def _careful_chunks(records: _CsvRecords, checks: _CsvChecks, limits: ReadLimits, width: int) -> Iterator[RawChunk]:
    """Chunks of the records after the header, record by record in Python; never an empty one."""
    average_chars = 0.0
    while not records.exhausted:
        chunk = ChunkBuilder()
        with gc_paused():
            while not records.exhausted and not limits.full(chunk.records, chunk.chars, width):
                checks.add(records.read(_batch_size(chunk, limits, width, average_chars)), chunk)
            if chunk.records:
                average_chars = chunk.chars / chunk.records
            columns = list(zip(*chunk.rows)) if chunk.rows else [()] * len(checks.names)
            frame = chunk.frame(checks.names, columns)
            del columns
            chunk.release()
        if frame.height or chunk.rejects:
            yield RawChunk(frame, chunk.rejects)


def _batch_size(chunk: ChunkBuilder, limits: ReadLimits, width: int, average_chars: float) -> int:
    """Records to read next: what is left of the chunk's row and cell budgets, and of its
    character budget at the average record size seen so far (a few records when none was seen)."""
    rows_left = limits.chunk_rows - chunk.records
    cells_left = max(1, (limits.chunk_cells - chunk.records * max(width, 1)) // max(width, 1))
    average = chunk.chars / chunk.records if chunk.records else average_chars
    chars_left = int((limits.chunk_chars - chunk.chars) / average) + 1 if average else _FIRST_BATCH
    return max(1, min(rows_left, cells_left, chars_left))


class _CsvChecks:
    """Splits a segment into accepted rows and rejects; the common all-good case is decided
    with C-level passes over the whole segment."""

    def __init__(self, names: list[str], limits: ReadLimits, encoding: str) -> None:
        self.names = names
        self._width = len(names)
        self._max = limits.max_field_chars
        self._max_record = limits.max_record_chars
        self._encoding = encoding

    def add(self, segment: _Segment, chunk: ChunkBuilder) -> None:
        chunk.chars += sum(map(len, segment.raws))
        problems = self._problems(segment)
        if not problems:
            chunk.rows.extend(segment.rows)
            chunk.lines.extend(segment.first_lines)
            chunk.raws.extend(segment.raws)
        else:
            for index, (fields, line, raw) in enumerate(zip(segment.rows, segment.first_lines, segment.raws)):
                reason = problems.get(index)
                if reason is None:
                    chunk.rows.append(fields)
                    chunk.lines.append(line)
                    chunk.raws.append(raw)
                elif reason:
                    chunk.reject(line, raw, reason)
        if segment.broken:
            line, raw = segment.broken
            chunk.reject(line, raw, f"a field is over the limit of {self._max} characters")

    def _problems(self, segment: _Segment) -> dict[int, str]:
        """Reason per bad record; ``""`` marks a blank line (not a record)."""
        problems: dict[int, str] = {}
        raws = segment.raws
        longest = max(map(len, raws), default=0)
        if longest > self._max_record:
            for index, raw in enumerate(raws):
                if len(raw) > self._max_record:
                    problems[index] = f"the record has {len(raw)} characters, over the limit of {self._max_record}"
        widths = list(map(len, segment.rows))
        if widths.count(self._width) != len(widths):
            for index, width in enumerate(widths):
                if width != self._width:
                    problems.setdefault(index, f"expected {self._width} fields, found {width}" if width else "")
        if longest > self._max:
            for index, raw in enumerate(raws):
                if len(raw) > self._max and index not in problems:
                    reason = self._oversize(segment.rows[index])
                    if reason:
                        problems[index] = reason
        text = "".join(raws)
        for needle, reason in (("\x00", "contains NUL bytes"),
                               ("\ufffd", f"contains bytes that are not valid {self._encoding}")):
            if needle in text:
                for index, raw in enumerate(raws):
                    if needle in raw:
                        problems.setdefault(index, reason)
        return problems

    def _oversize(self, fields: list[str]) -> str | None:
        sizes = list(map(len, fields))
        longest = max(sizes, default=0)
        if longest <= self._max:
            return None
        name = self.names[sizes.index(longest)]
        return f"field {excerpt(name)} has {longest} characters, over the limit of {self._max}"


