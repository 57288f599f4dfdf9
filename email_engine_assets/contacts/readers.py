"""Reading contact files: format sniffing and streamed chunks of raw rows.

Formats: CSV (any of ``,`` ``;`` tab ``|``, RFC 4180 quoting, quoted delimiters and newlines),
TSV, JSON array of objects, NDJSON (one object per line). Encodings: UTF-8 with or without BOM,
UTF-16 / UTF-32 with BOM, otherwise detected (see :func:`sniff_format`); all three are recorded
in :class:`FileFormat` and can be overridden.

Accounting: every record of a file is either a row of a chunk's frame or a :class:`RejectedRow`
(line, bounded raw text, reason). Blank lines hold nothing and are not records. A file that
cannot be read at all raises :class:`FileReadError`; for a JSON array whose syntax breaks in the
middle that can happen after chunks were yielded, so consumers stage rows and commit at the end.

Memory stays flat in the file size: text is read in blocks of about 1 MB and a chunk holds at
most ``chunk_rows`` records. A single record is held whole while it is read (a 2 MB field costs
2 MB once); a CSV quoted field that runs away is cut by the csv module's field limit.

Line numbers are 1-based physical lines where the record starts (CSV header: line 1). For a
JSON array that is the line of the object's opening brace.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

import charset_normalizer
import polars as pl

KINDS = ("csv", "json", "ndjson")
CSV_DELIMITERS = (",", ";", "\t", "|")
MAX_RAW_CHARS = 1_000
DEFAULT_MAX_FIELD_CHARS = 65_536
DEFAULT_CHUNK_ROWS = 50_000
JSON_HEADER_RECORDS = 1_000
LINE_COLUMN = "__line"
RAW_COLUMN = "__raw"

_SAMPLE_BYTES = 64 * 1024
_BLOCK_CHARS = 1 << 20
_SNIFF_LINES = 100
_CSV_EXTENSIONS = {".csv", ".tsv", ".tab", ".txt"}
_NDJSON_EXTENSIONS = {".ndjson", ".jsonl"}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Single-byte code pages of Latin script that charset-normalizer proposes for Western European
# text; such bytes come from Windows exports far more often than from any of these.
_LATIN_SINGLE_BYTE = {
    "cp1250", "cp1252", "cp1254", "cp1257", "latin-1", "iso8859-1", "iso8859-2", "iso8859-9",
    "iso8859-15", "mac-latin2", "mac-roman", "mac-iceland", "cp437", "cp775", "cp850", "cp852",
    "hp-roman8",
}
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_JSON_WS = re.compile(r"[ \t\n\r]*")


def _parse_int(text: str) -> int | Decimal:
    """Python refuses ints over 4,300 digits; such a number is kept as a Decimal."""
    return int(text) if len(text) <= 4_000 else Decimal(text)


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=_parse_int)
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean",
                    int: "number", Decimal: "number", type(None): "null"}


class FileReadError(Exception):
    """A file that cannot be read at all; ``str(e)`` names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class FileFormat:
    kind: str  # "csv" | "json" | "ndjson"
    encoding: str  # python codec name actually used, e.g. "utf-8-sig", "utf-16", "cp1252"
    delimiter: str | None  # csv only


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


# ---------------------------------------------------------------------------------------------
# Sniffing


def sniff_format(
    path: Path,
    *,
    kind: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> FileFormat:
    """Detect kind, encoding and (CSV) delimiter; any of them given is used as is.

    Encoding: a BOM decides; else a file that is valid UTF-8 throughout is UTF-8; else
    charset-normalizer proposes one, and a Latin-script single-byte proposal is read as cp1252
    when the bytes decode in it. Kind: ``.csv``/``.tsv``/``.tab``/``.txt`` are CSV,
    ``.ndjson``/``.jsonl`` NDJSON, anything else by content (``[`` JSON array, ``{`` NDJSON,
    otherwise CSV). Delimiter: the candidate that splits the first lines into the same number
    (at least two) of fields, quote-aware; a single-column file gets ``,`` (tab for ``.tsv``).
    """
    path = Path(path)
    head = _read_head(path)
    used_encoding = _given_encoding(head, encoding) if encoding else _detect_encoding(path, head)
    complete = len(head) < _SAMPLE_BYTES
    text = head.decode(used_encoding, errors="replace")
    _reject_binary(path, text)
    used_kind = _given_kind(kind) if kind else _detect_kind(path, text)
    if used_kind != "csv":
        return FileFormat(used_kind, used_encoding, None)
    used_delimiter = _given_delimiter(delimiter) if delimiter else _detect_delimiter(path, text, complete)
    return FileFormat("csv", used_encoding, used_delimiter)


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            return stream.read(_SAMPLE_BYTES)
    except OSError as exc:
        raise FileReadError(path, f"cannot open: {exc.strerror or exc}") from exc


def _given_encoding(head: bytes, encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if name == "utf-8" and head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    return name


def _given_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _given_delimiter(delimiter: str) -> str:
    if delimiter.lower() == "tab":
        return "\t"
    if len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ValueError(f"delimiter must be one character other than a quote or line break, got {delimiter!r}")
    return delimiter


def _detect_encoding(path: Path, head: bytes) -> str:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    bad_offset = _first_invalid_utf8(path)
    if bad_offset is None:
        return "utf-8"
    sample = head + _read_at(path, max(0, bad_offset - 1024), _SAMPLE_BYTES)
    matches = charset_normalizer.from_bytes(sample)
    best = matches.best()
    if best is None:
        raise FileReadError(path, "binary data or unknown text encoding (pass an encoding if it is text)")
    proposed = codecs.lookup(best.encoding).name
    cp1252_close = any(m.encoding == "cp1252" and m.chaos <= best.chaos + 0.05 for m in matches)
    if (proposed in _LATIN_SINGLE_BYTE or cp1252_close) and _decodes(sample, "cp1252"):
        return "cp1252"
    return proposed


def _first_invalid_utf8(path: Path) -> int | None:
    """Offset of the first byte that is not UTF-8, or None; a sequence cut by the end of the
    file does not count (that last record is rejected, the file is still UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with path.open("rb") as stream:
        while block := stream.read(_BLOCK_CHARS):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return offset + max(0, exc.start)
            offset += len(block)
    return None


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _reject_binary(path: Path, text: str) -> None:
    """Text files hold few control characters; a NUL in one record must not fail the file."""
    suspicious = len(_CONTROL_CHARS.findall(text))
    if suspicious > 0.1 * len(text) or (suspicious >= 64 and suspicious > 0.01 * len(text)):
        raise FileReadError(path, "binary data, not a text file (control or undecodable characters)")


def _detect_kind(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in _CSV_EXTENSIONS:
        return "csv"
    if suffix in _NDJSON_EXTENSIONS:
        return "ndjson"
    start = text.lstrip("\ufeff \t\r\n")
    if start.startswith("["):
        return "json"
    if start.startswith("{"):
        _require_ndjson(path, start)
        return "ndjson"
    if suffix == ".json" and start:
        raise FileReadError(path, "JSON file does not start with '[' (array) or '{' (NDJSON)")
    return "json" if suffix == ".json" else "csv"


def _require_ndjson(path: Path, text: str) -> None:
    first_line = text.split("\n", 1)[0]
    try:
        value = json.loads(first_line)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise FileReadError(
            path, "starts with '{' but its first line is not a complete JSON object; "
            "expected a JSON array or NDJSON (one object per line)")


def _detect_delimiter(path: Path, text: str, complete: bool) -> str:
    lines = list(islice(io.StringIO(text, newline=""), _SNIFF_LINES + 1))
    if not complete or len(lines) > _SNIFF_LINES:
        lines = lines[:-1] or lines
    preferred = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    best: tuple[float, int, int] | None = None
    chosen = preferred
    for rank, candidate in enumerate(sorted(CSV_DELIMITERS, key=lambda d: d != preferred)):
        counts = [len(r) for r in _quiet_csv(lines, candidate) if r]
        if not counts or counts[0] < 2:
            continue
        score = (counts.count(counts[0]) / len(counts), counts[0], -rank)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen


def _quiet_csv(lines: list[str], delimiter: str) -> list[list[str]]:
    try:
        return list(csv.reader(lines, delimiter=delimiter))
    except csv.Error:
        return []


# ---------------------------------------------------------------------------------------------
# Header


def read_header(path: Path, fmt: FileFormat) -> list[str]:
    """Column names as they appear in chunk frames (trimmed, made unique).

    CSV: the first non-blank record. JSON / NDJSON: the union of the keys of the first
    ``JSON_HEADER_RECORDS`` objects, in first-seen order; keys first seen later are added to the
    frames from the chunk where they appear on.
    """
    path = Path(path)
    with _open_text(path, fmt) as stream:
        if fmt.kind == "csv":
            header = _CsvRecords(stream, _dialect(fmt), path).header()
            return _ColumnNames(header or []).names
        return _ColumnNames(_json_header_keys(path, stream, fmt)).names


class _ColumnNames:
    """Unique column names from raw header fields: trimmed, ``name_2`` for repeats, ``column_N``
    for empty ones, never ``__line``/``__raw``."""

    def __init__(self, raw_names: Iterable[str]) -> None:
        self.names: list[str] = []
        self._by_raw: dict[str, str] = {}
        self._taken = {LINE_COLUMN, RAW_COLUMN}
        for raw in raw_names:
            self._add(raw)

    def _add(self, raw: str) -> str:
        base = raw.replace("\x00", "").strip().strip("\ufeff").strip() or f"column_{len(self.names) + 1}"
        name, suffix = base, 2
        while name in self._taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self._taken.add(name)
        self.names.append(name)
        self._by_raw.setdefault(raw, name)
        return name

    def name_of(self, key: str) -> str:
        """Column of a JSON key, added when the key is new."""
        name = self._by_raw.get(key)
        return name if name is not None else self._add(key)


# ---------------------------------------------------------------------------------------------
# Chunks


def iter_chunks(
    path: Path,
    fmt: FileFormat,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
) -> Iterator[RawChunk]:
    """Stream the file as chunks of at most ``chunk_rows`` records (rows + rejects).

    The first chunk is always yielded, empty for an empty or header-only file, so its frame
    carries the columns; later chunks are never empty.
    """
    path = Path(path)
    if fmt.kind not in KINDS:
        raise ValueError(f"unknown file kind {fmt.kind!r}; expected one of {', '.join(KINDS)}")
    if chunk_rows < 1 or max_field_chars < 1:
        raise ValueError("chunk_rows and max_field_chars must be positive")
    if fmt.kind == "json":
        _require_array_end(path, fmt)
    return _chunks(path, fmt, chunk_rows, max_field_chars)


def _chunks(path: Path, fmt: FileFormat, chunk_rows: int, max_field_chars: int) -> Iterator[RawChunk]:
    try:
        with _open_text(path, fmt) as stream:
            if fmt.kind == "csv":
                yield from _csv_chunks(path, stream, fmt, chunk_rows, max_field_chars)
            else:
                yield from _json_chunks(path, stream, fmt, chunk_rows, max_field_chars)
    except OSError as exc:
        raise FileReadError(path, f"read failed: {exc.strerror or exc}") from exc


def _open_text(path: Path, fmt: FileFormat) -> TextIO:
    """CSV keeps line endings as they are (quoted ``\\r\\n`` stays in the field); JSON reads
    universal newlines. Undecodable bytes become U+FFFD and reject their record."""
    newline = "" if fmt.kind == "csv" else None
    try:
        return path.open(encoding=fmt.encoding, errors="replace", newline=newline)
    except OSError as exc:
        raise FileReadError(path, f"cannot open: {exc.strerror or exc}") from exc


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a chunk allocates a list per record; the cyclic collector's passes over them
    more than double the cost of parsing, and nothing built here forms a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _ChunkBuilder:
    def __init__(self) -> None:
        self.rows: list[Sequence[str | None]] = []
        self.lines: list[int] = []
        self.raws: list[str] = []
        self.rejects: list[RejectedRow] = []

    @property
    def records(self) -> int:
        return len(self.lines) + len(self.rejects)

    def release(self) -> None:
        """Free the per-record lists while the collector is still paused, so that it does not
        walk them when it resumes."""
        self.rows, self.lines, self.raws = [], [], []

    def reject(self, line: int, raw: str, reason: str) -> None:
        self.rejects.append(RejectedRow(line, _bounded(raw), reason))

    def frame(self, names: list[str], columns: list[Sequence[str | None]]) -> pl.DataFrame:
        raw = pl.Series(RAW_COLUMN, self.raws, dtype=pl.String)
        series = [
            pl.Series(LINE_COLUMN, self.lines, dtype=pl.Int64),
            raw.str.strip_chars_end("\r\n").str.slice(0, MAX_RAW_CHARS),
            *(pl.Series(name, column, dtype=pl.String) for name, column in zip(names, columns)),
        ]
        return pl.DataFrame(series)


def _bounded(raw: str) -> str:
    return raw[: MAX_RAW_CHARS + 2].rstrip("\r\n")[:MAX_RAW_CHARS].replace("\x00", "\u2400")


# ---------------------------------------------------------------------------------------------
# CSV


def _dialect(fmt: FileFormat) -> dict[str, Any]:
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

    def __init__(self, stream: TextIO, dialect: dict[str, Any], path: Path) -> None:
        self._stream = stream
        self._dialect = dialect
        self._path = path
        self._window: list[str] = []
        self._window_first = 1
        self._skipped = 0
        self._feed = chain.from_iterable(self._blocks())
        self._reader = csv.reader(self._feed, **dialect)
        self.exhausted = False

    def _blocks(self) -> Iterator[list[str]]:
        while block := self._stream.readlines(_BLOCK_CHARS):
            self._window.extend(block)
            yield block

    @property
    def _consumed(self) -> int:
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
        before = self._consumed
        rows: list[list[str]] = []
        failed = False
        try:
            rows.extend(islice(self._reader, limit))
        except csv.Error:
            failed = True
        after = self._consumed
        offset = 1 - self._window_first
        lines = self._window[before + offset : after + offset]
        if not failed and len(rows) == len(lines):
            segment = _Segment(rows, range(before + 1, after + 1), lines)
        else:
            segment = self._reparse(lines, before + 1)
            if segment.broken:
                segment.broken = self._skip_rest(*segment.broken)
        self.exhausted = not failed and len(rows) < limit
        self._release(self._consumed)
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
                self._release(self._consumed)
        return line, raw

    def _release(self, upto: int) -> None:
        count = upto - self._window_first + 1
        if count > 0:
            del self._window[:count]
            self._window_first += count


def _csv_chunks(path: Path, stream: TextIO, fmt: FileFormat, chunk_rows: int,
                max_field_chars: int) -> Iterator[RawChunk]:
    if csv.field_size_limit() <= max_field_chars:
        csv.field_size_limit(max_field_chars + 1)  # raised only: the csv module's limit is global
    records = _CsvRecords(stream, _dialect(fmt), path)
    names = _ColumnNames(records.header() or []).names
    checks = _CsvChecks(names, max_field_chars, fmt.encoding)
    first = True
    while first or not records.exhausted:
        chunk = _ChunkBuilder()
        with _gc_paused():
            while chunk.records < chunk_rows and not records.exhausted:
                checks.add(records.read(chunk_rows - chunk.records), chunk)
            columns = list(zip(*chunk.rows)) if chunk.rows else [()] * len(names)
            frame = chunk.frame(names, columns)
            del columns
            chunk.release()
        if first or frame.height or chunk.rejects:
            yield RawChunk(frame, chunk.rejects)
        first = False


class _CsvChecks:
    """Splits a segment into accepted rows and rejects; the common all-good case is decided
    with C-level passes over the whole segment."""

    def __init__(self, names: list[str], max_field_chars: int, encoding: str) -> None:
        self._names = names
        self._width = len(names)
        self._max = max_field_chars
        self._encoding = encoding

    def add(self, segment: _Segment, chunk: _ChunkBuilder) -> None:
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
        widths = list(map(len, segment.rows))
        if widths.count(self._width) != len(widths):
            for index, width in enumerate(widths):
                if width != self._width:
                    problems[index] = f"expected {self._width} fields, found {width}" if width else ""
        raws = segment.raws
        if raws and max(map(len, raws)) > self._max:
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
        name = self._names[sizes.index(longest)]
        return f"field {name!r} has {longest} characters, over the limit of {self._max}"


# ---------------------------------------------------------------------------------------------
# JSON


def _json_items(path: Path, stream: TextIO, fmt: FileFormat) -> Iterator[tuple[int, str, Any]]:
    """``(line, raw text, value or JSONDecodeError)`` per record."""
    if fmt.kind == "ndjson":
        return _ndjson_items(stream)
    return _JsonArrayItems(path, stream).items()


def _ndjson_items(stream: TextIO) -> Iterator[tuple[int, str, Any]]:
    for line_number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            value = _JSON_DECODER.decode(line)
        except ValueError as exc:  # JSONDecodeError, or a number Python refuses
            value = exc
        yield line_number, line, value


class _JsonArrayItems:
    """Items of a top-level JSON array, read block by block: ``raw_decode`` parses one item at a
    time from a buffer that only ever holds the current block and the item being read."""

    def __init__(self, path: Path, stream: TextIO, max_item_chars: int = 16 << 20) -> None:
        self._path = path
        self._stream = stream
        self._max_item = max_item_chars
        self._buf = ""
        self._pos = 0
        self._line = 1
        self._eof = False

    def items(self) -> Iterator[tuple[int, str, Any]]:
        char = self._skip_space()
        if not char:
            return
        if char != "[":
            self._fail(f"expected '[' at line {self._line}")
        self._pos += 1
        char = self._skip_space()
        while char != "]":
            if not char:
                self._fail("truncated JSON array: the file ends before its closing ']'")
            yield self._item()
            char = self._skip_space()
            if char == ",":
                self._pos += 1
                char = self._skip_space()
            elif char and char != "]":
                self._fail(f"expected ',' or ']' at line {self._line}")
        self._pos += 1
        if self._skip_space():
            self._fail(f"unexpected data after the end of the JSON array at line {self._line}")

    def _fail(self, problem: str) -> None:
        raise FileReadError(self._path, problem)

    def _more(self) -> bool:
        block = "" if self._eof else self._stream.read(_BLOCK_CHARS)
        if not block:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + block
        self._pos = 0
        return True

    def _skip_space(self) -> str:
        """Advance to the next non-blank character and return it ("" at the end of the file)."""
        while True:
            end = _JSON_WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            self._line += self._buf.count("\n", self._pos, end)
            self._pos = end
            if end < len(self._buf):
                return self._buf[end]
            if not self._more():
                return ""

    def _item(self) -> tuple[int, str, Any]:
        while True:
            try:
                value, end = _JSON_DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # Cut by the end of the buffer, an item fails within a few characters of it
                # (a literal, number or escape) or as an unterminated string.
                broken = exc.pos < len(self._buf) - 16 and not exc.msg.startswith("Unterminated string")
                if self._eof or broken:
                    line = self._line + self._buf.count("\n", self._pos, exc.pos)
                    self._fail(f"invalid or truncated JSON at line {line}: {exc.msg}")
                end = -1
            # A number can be cut by the end of the buffer: an item is complete only when
            # something follows it.
            if end != -1 and (end < len(self._buf) or self._eof):
                break
            if len(self._buf) - self._pos > self._max_item:
                self._fail(f"JSON value at line {self._line} is invalid or larger than {self._max_item} characters")
            self._more()
        raw = self._buf[self._pos : end]
        line = self._line
        self._line += raw.count("\n")
        self._pos = end
        return line, raw, value


def _require_array_end(path: Path, fmt: FileFormat) -> None:
    """A JSON array cut short is refused before any row is yielded."""
    size = path.stat().st_size
    head = _read_at(path, 0, 4)
    unit = 4 if fmt.encoding.startswith("utf-32") else 2 if fmt.encoding.startswith("utf-16") else 1
    start = max(0, size - 4096)
    start -= start % unit
    tail_bytes = _read_at(path, start, size - start)
    encoding = fmt.encoding
    if encoding in {"utf-16", "utf-32"} and start > 0:
        little = head.startswith(codecs.BOM_UTF16_LE)
        encoding += "-le" if little else "-be"
    tail = tail_bytes.decode(encoding, errors="ignore").rstrip(" \t\r\n\ufeff")
    if tail and not tail.endswith("]"):
        raise FileReadError(path, "truncated JSON array: the file does not end with its closing ']'")


def _json_chunks(path: Path, stream: TextIO, fmt: FileFormat, chunk_rows: int,
                 max_field_chars: int) -> Iterator[RawChunk]:
    with _open_text(path, fmt) as header_stream:
        names = _ColumnNames(_json_header_keys(path, header_stream, fmt))
    items = _json_items(path, stream, fmt)
    first = True
    while True:
        chunk = _ChunkBuilder()
        with _gc_paused():
            for line, raw, value in islice(items, chunk_rows):
                _add_json_record(chunk, line, raw, value, names, fmt, max_field_chars)
            if not (first or chunk.records):
                return
            columns = [[row.get(name) for row in chunk.rows] for name in names.names]  # type: ignore[union-attr]
            frame = chunk.frame(names.names, columns)
            del columns
            chunk.release()
        yield RawChunk(frame, chunk.rejects)
        first = False
        if frame.height + len(chunk.rejects) < chunk_rows:
            return


def _add_json_record(chunk: _ChunkBuilder, line: int, raw: str, value: Any, names: _ColumnNames,
                     fmt: FileFormat, max_field_chars: int) -> None:
    reason = _json_problem(value, fmt)
    row = None if reason else _json_row(value, names)
    reason = reason or _row_problem(row, raw, max_field_chars, fmt.encoding)  # type: ignore[arg-type]
    if reason:
        chunk.reject(line, raw, reason)
    else:
        chunk.rows.append(row)  # type: ignore[arg-type]
        chunk.lines.append(line)
        chunk.raws.append(raw)


def _json_header_keys(path: Path, stream: TextIO, fmt: FileFormat) -> list[str]:
    """Raw keys of the first ``JSON_HEADER_RECORDS`` objects, in first-seen order."""
    keys: dict[str, None] = {}
    for _, _, value in islice(_json_items(path, stream, fmt), JSON_HEADER_RECORDS):
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return list(keys)


def _json_problem(value: Any, fmt: FileFormat) -> str | None:
    if isinstance(value, json.JSONDecodeError):
        return f"invalid JSON: {value.msg} (column {value.colno})"
    if isinstance(value, ValueError):
        return f"invalid JSON: {value}"
    if not isinstance(value, dict):
        found = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        where = "JSON line" if fmt.kind == "ndjson" else "array item"
        return f"{where} is not an object (found {found})"
    return None


def _json_row(value: dict[str, Any], names: _ColumnNames) -> dict[str, str | None]:
    return {names.name_of(key): _json_text(item) for key, item in value.items()}


def _json_text(value: Any) -> str | None:
    """Strings as given, numbers and booleans as their JSON text, lists of scalars joined with
    ``;`` (tags arrive that way), anything nested as compact JSON, null as null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, list) and not any(isinstance(item, (list, dict)) for item in value):
        return ";".join(text for text in map(_json_text, value) if text is not None)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=float)


def _row_problem(row: dict[str, str | None], raw: str, max_field_chars: int, encoding: str) -> str | None:
    for name, text in row.items():
        if text is not None and len(text) > max_field_chars:
            return f"field {name!r} has {len(text)} characters, over the limit of {max_field_chars}"
    if "\x00" in raw or any(text and "\x00" in text for text in row.values()):
        return "contains NUL bytes"
    if "\ufffd" in raw:
        return f"contains bytes that are not valid {encoding}"
    return None
