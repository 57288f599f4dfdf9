"""The CSV reader's fast path: blocks of a UTF-8 file parsed by polars' native CSV reader.

Blocks end at a line break after an even number of quotes. Polars parses a block; its rows are
taken as they are only when the block and every record pass checks that make them the rows the
careful reader (:mod:`.csv_records`) would give: every quote opens or closes a whole field or is
doubled inside one, valid UTF-8 without NUL or U+FFFD, line breaks ``\\n`` or ``\\r\\n``, no blank
line, as many fields as the header (each record holds exactly its field separators plus the
delimiters inside its values), records and fields within the caps. Line numbers and raw text come
from the block's lines: a record spans one line plus the line breaks inside its values.

A block whose quotes are well formed but which fails another check (a short record, a blank line,
bytes that are not UTF-8, a record over the cap) is read by the careful reader alone, which finds
its rejects. Anything else (a stray quote, NUL, a lone carriage return, a field over the cap, no
block end to be found) hands the rest of the file to the careful reader: only then is a block end
not a record end for it, or its handling does not stop at block ends.
"""

from __future__ import annotations

import codecs
import functools
import io
import re
from collections.abc import Callable, Iterator
from enum import Enum
from typing import BinaryIO, TextIO

import numpy as np
import polars as pl

from email_engine_assets.contacts.chunks import (
    LINE_COLUMN,
    RAW_COLUMN,
    ChunkBuilder,
    RawChunk,
    ReadLimits,
)

FAST_ENCODINGS = frozenset({"utf-8", "utf-8-sig"})
_FIRST_BLOCK_BYTES = 1 << 20
_MIN_BLOCK_BYTES = 64 << 10
# Line breaks tried, from the end of a block back, for one outside quotes.
_CUT_TRIES = 64
_QUOTE = b'"'


class Careful(Enum):
    BLOCK = "block"  # this block only
    REST = "rest"  # this block and every one after it


# (text stream, its first line number) -> the careful reader's chunks of that stream.
CarefulReader = Callable[[TextIO, int], Iterator[RawChunk]]


def fast_path_applies(encoding: str, delimiter: str) -> bool:
    return codecs.lookup(encoding).name in FAST_ENCODINGS and len(delimiter.encode()) == 1 and delimiter not in '"\r\n'


def data_offset(buffer: BinaryIO, header_lines: int) -> int | None:
    """Byte offset of the line after the first ``header_lines`` lines (a UTF-8 BOM skipped); None
    when those lines hold a line break other than ``\\n`` / ``\\r\\n`` or the file ends first."""
    buffer.seek(0)
    prefix = buffer.read(len(codecs.BOM_UTF8))
    offset = len(codecs.BOM_UTF8) if prefix == codecs.BOM_UTF8 else 0
    buffer.seek(offset)
    seen = 0
    while seen < header_lines:
        piece = buffer.read(1 << 20)
        if not piece:
            return None
        start = 0
        while seen < header_lines:
            at = piece.find(b"\n", start)
            if at < 0:
                break
            seen += 1
            start = at + 1
        used = piece[:start] if seen == header_lines else piece
        if used.count(b"\r") != used.count(b"\r\n") or (used.endswith(b"\r") and seen < header_lines):
            return None
        offset += len(used)
    return offset


def block_chunks(
    buffer: BinaryIO, offset: int, first_line: int, names: list[str], delimiter: str, limits: ReadLimits,
    careful: CarefulReader,
) -> Iterator[RawChunk | Careful]:
    """Chunks of the file from byte ``offset`` (line ``first_line``) on.

    Yields ``Careful.REST`` and stops when the first block needs the careful reader for the rest
    of the file: the caller's own careful reader goes on from ``offset``. Later blocks that need
    it are read by ``careful`` here.
    """
    buffer.seek(offset)
    pending = b""
    line = first_line
    first = True
    eof = False
    per_chunk = max(1, min(limits.chunk_rows, limits.chunk_cells // max(len(names), 1)))
    most = min(limits.block_bytes, limits.chunk_chars)
    size = min(_FIRST_BLOCK_BYTES, most)  # then about one chunk's worth of records per block
    while True:
        if not eof:
            data = buffer.read(size)
            eof = len(data) < size
            pending += data
        if not pending:
            return
        cut = len(pending) if eof else _record_end(pending)
        if cut == 0:
            if len(pending) < limits.chunk_chars:
                continue
            outcome = Careful.REST
        else:
            outcome = parse_block(pending[:cut], line, names, delimiter, limits)
        if outcome is Careful.BLOCK and eof and cut == len(pending):
            outcome = Careful.REST  # the last block: the rest of the file
        if outcome is Careful.REST:
            if first:
                yield Careful.REST
            else:
                buffer.seek(offset)
                yield from _careful_stream(careful, buffer, line)
            return
        block, pending = pending[:cut], pending[cut:]
        if outcome is Careful.BLOCK:
            yield from careful(io.TextIOWrapper(io.BytesIO(block), encoding="utf-8", errors="replace", newline=""), line)
        else:
            for start in range(0, outcome.height, per_chunk):
                yield RawChunk(outcome.slice(start, per_chunk))
            size = min(most, max(_MIN_BLOCK_BYTES, int(len(block) / outcome.height * per_chunk * 0.95)))
        line += _line_breaks(block) + (not block.endswith((b"\n", b"\r")))
        offset += len(block)
        first = False


def _careful_stream(careful: CarefulReader, buffer: BinaryIO, line: int) -> Iterator[RawChunk]:
    text = io.TextIOWrapper(buffer, encoding="utf-8", errors="replace", newline="")
    try:
        yield from careful(text, line)
    finally:
        text.detach()  # the buffer belongs to the caller's stream


def _line_breaks(block: bytes) -> int:
    """Line breaks as the careful reader counts them: ``\\n``, ``\\r\\n`` and a lone ``\\r``."""
    return block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")


def _record_end(buffer: bytes) -> int:
    """Length of the longest prefix that ends with a line break outside quotes (0: none found).

    Outside quotes means after an even number of quote characters; a stray quote fools this,
    which polars' parse of the block then reports.
    """
    quotes = buffer.count(_QUOTE)
    end = len(buffer)
    for _ in range(_CUT_TRIES):
        at = buffer.rfind(b"\n", 0, end)
        if at < 0:
            return 0
        quotes -= buffer.count(_QUOTE, at, end)
        if quotes % 2 == 0:
            return at + 1
        end = at
    return 0


def _lone_returns(block: bytes) -> bool:
    returns = block.count(b"\r")
    return bool(returns) and returns != block.count(b"\r\n")


# A quoted field: its quotes doubled inside.
_QUOTED_FIELD = re.compile(rb'"[^"]*(?:""[^"]*)*"')


def _quotes_well_formed(block: bytes, delimiter: bytes) -> bool:
    """Whether every quote of the block opens or closes a whole field, or is doubled inside one.

    Then the careful reader and polars read the same fields, and a line break after an even
    number of quotes ends a record. The careful reader also takes a stray quote (``x"y``,
    ``"x"y``) as text, which polars may read differently. Each quoted field is replaced by a NUL
    (the block holds none), which must then stand between field separators.
    """
    marked = _QUOTED_FIELD.sub(b"\x00", block)
    if _QUOTE in marked:
        return False
    fields = marked.count(b"\x00")
    opened = marked.count(delimiter + b"\x00") + marked.count(b"\n\x00") + marked.startswith(b"\x00")
    closed = marked.count(b"\x00" + delimiter) + marked.count(b"\x00\n") + marked.count(b"\x00\r\n") + marked.endswith(b"\x00")
    return fields == opened == closed


def parse_block(block: bytes, first_line: int, names: list[str], delimiter: str, limits: ReadLimits) -> pl.DataFrame | Careful:
    """The block's rows as a chunk frame (``__line``, ``__raw``, one column per name), or which
    careful reading it needs.

    Quotes are checked on the records polars found (one regex per record, in Rust); a block
    refused for another reason has them checked on its bytes (:func:`_careful_reading`).
    """
    if b"\x00" in block or _lone_returns(block):
        return Careful.REST
    if "\ufffd".encode() in block:
        return _careful_reading(block, delimiter)
    try:
        text = block.decode("utf-8")
        frame = pl.read_csv(
            block, has_header=False, schema=dict.fromkeys(names, pl.String), separator=delimiter, quote_char='"',
            infer_schema=False, empty_string_is_null=False, truncate_ragged_lines=True, raise_if_empty=False,
            missing_columns="insert", extra_columns="ignore",
        )
    except (UnicodeDecodeError, pl.exceptions.PolarsError):
        return _careful_reading(block, delimiter)
    lines = pl.Series(RAW_COLUMN, [text]).str.split("\n").explode()
    if text.endswith("\n"):
        lines = lines.head(len(lines) - 1)
    quoted = _QUOTE in block  # else no value holds a delimiter or a line break
    columns = [pl.col(name) for name in names]
    stats = frame.select(
        (pl.sum_horizontal(c.str.count_matches("\n", literal=True) for c in columns) if quoted else pl.lit(0))
        .cast(pl.Int64).alias("breaks"),
        (pl.sum_horizontal(c.str.count_matches(delimiter, literal=True) for c in columns) if quoted else pl.lit(0))
        .cast(pl.Int64).alias("inner"),
        pl.any_horizontal(c.is_null() for c in columns).alias("missing"),
    )
    spans = stats["breaks"] + 1
    if frame.height == 0 or stats["missing"].any() or spans.sum() != len(lines):
        return _careful_reading(block, delimiter)
    raws = _record_texts(lines, spans) if len(lines) != frame.height else lines
    raw = pl.col(RAW_COLUMN)
    checks = pl.DataFrame([raws, stats["inner"]]).select(
        stray_quotes=(~raw.str.contains(_record_pattern(delimiter))).any() if quoted else pl.lit(False),
        blank=(raw.str.strip_chars_end("\r") == "").any(),
        ragged=(raw.str.count_matches(delimiter, literal=True) != pl.col("inner") + len(names) - 1).any(),
        longest=raw.str.len_chars().max(),
    ).row(0, named=True)
    if checks["stray_quotes"]:
        return Careful.REST
    if checks["blank"] or checks["ragged"] or checks["longest"] + 2 > limits.max_record_chars:
        return _careful_reading(block, delimiter)
    if checks["longest"] > limits.max_field_chars:
        longest_field = frame.select(pl.max_horizontal(c.str.len_chars().max() for c in columns)).item()
        if longest_field > limits.max_field_chars:
            return Careful.REST
    line_numbers = (spans.cum_sum() - spans + first_line).alias(LINE_COLUMN)
    return ChunkBuilder.framed(line_numbers, raws, frame)


def _careful_reading(block: bytes, delimiter: str) -> Careful:
    """A block the fast path refuses is read carefully alone only when its quotes let its end be
    a record end for the careful reader too."""
    if _QUOTE in block and not _quotes_well_formed(block, delimiter.encode()):
        return Careful.REST
    return Careful.BLOCK


@functools.lru_cache(maxsize=8)
def _record_pattern(delimiter: str) -> str:
    """A record whose every quote opens or closes a whole field, or is doubled inside one."""
    separator = f"\\x{{{ord(delimiter):X}}}"
    field = f'(?:"[^"]*(?:""[^"]*)*"|[^"\\r\\n{separator}]*)'
    return f"^{field}(?:{separator}{field})*\\r?$"


def _record_texts(lines: pl.Series, spans: pl.Series) -> pl.Series:
    """Each record's text: its ``spans`` lines joined again (a record of one line is that line)."""
    starts = spans.cum_sum() - spans
    texts = lines.gather(starts)
    counts = spans.to_numpy()
    multi = np.flatnonzero(counts > 1)
    if len(multi):
        parts = lines.filter(pl.Series(np.repeat(counts > 1, counts))).to_list()
        joined, at = [], 0
        for count in counts[multi].tolist():
            joined.append("\n".join(parts[at : at + count]))
            at += count
        texts = texts.scatter(multi, joined)
    return texts
