"""JSON array and NDJSON items, and chunks of them.

Record numbers: NDJSON, the 1-based line of the object; JSON array, the 1-based position of the
item in the array (``jq '.[n-1]'`` finds it), which stays distinct when a minified array puts
every item on line 1. Errors that fail the whole file name the physical line.

An item whose text is longer than :attr:`.ReadLimits.max_record_chars` is skipped without being
parsed (its first characters are kept as raw text) and rejected; reading goes on.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
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
from email_engine_assets.contacts.inbox import open_regular_file
from email_engine_assets.contacts.sniffing import (
    BLOCK_CHARS,
    FileFormat,
    FileReadError,
    excerpt,
    open_text,
)

JSON_HEADER_RECORDS = 1_000

_JSON_WS = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_IN_STRING = re.compile(r'["\\]')
_SCALAR_END = re.compile(r"[,\]\s]")


def _parse_int(text: str) -> int | Decimal:
    """Python refuses ints over 4,300 digits; such a number is kept as a Decimal."""
    return int(text) if len(text) <= 4_000 else Decimal(text)


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=_parse_int)
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean",
                    int: "number", Decimal: "number", type(None): "null"}


@dataclass(frozen=True)
class _TooLarge:
    """In place of the value of an item that was skipped for its size."""

    chars: int
    limit: int


def json_items(path: Path, stream: TextIO, fmt: FileFormat, max_record_chars: int) -> Iterator[tuple[int, str, Any]]:
    """``(record number, raw text, value or JSONDecodeError or _TooLarge)`` per record."""
    if fmt.kind == "ndjson":
        return _ndjson_items(stream, max_record_chars)
    return _JsonArrayItems(path, stream, max_record_chars).items()


def _ndjson_items(stream: TextIO, max_record_chars: int) -> Iterator[tuple[int, str, Any]]:
    line_number = 0
    while line := stream.readline(max_record_chars + 1):
        line_number += 1
        if len(line) > max_record_chars and not line.endswith("\n"):
            head, size = line[: MAX_RAW_CHARS + 2], len(line)
            while not line.endswith("\n") and (line := stream.readline(BLOCK_CHARS)):
                size += len(line)
            yield line_number, head, _TooLarge(size, max_record_chars)
            continue
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

    def __init__(self, path: Path, stream: TextIO, max_item_chars: int) -> None:
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
        number = 0
        while char != "]":
            if not char:
                self._fail("truncated JSON array: the file ends before its closing ']'")
            number += 1
            raw, value = self._item()
            yield number, raw, value
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
        block = "" if self._eof else self._stream.read(BLOCK_CHARS)
        if not block:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + block
        self._pos = 0
        return True

    def _advance(self, end: int) -> None:
        self._line += self._buf.count("\n", self._pos, end)
        self._pos = end

    def _skip_space(self) -> str:
        """Advance to the next non-blank character and return it ("" at the end of the file)."""
        while True:
            self._advance(_JSON_WS.match(self._buf, self._pos).end())  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._more():
                return ""

    def _item(self) -> tuple[str, Any]:
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
                return self._skip_item()
            self._more()
        if end - self._pos > self._max_item:
            raw, value = self._buf[self._pos : self._pos + MAX_RAW_CHARS + 2], _TooLarge(end - self._pos, self._max_item)
        else:
            raw = self._buf[self._pos : end]
        self._advance(end)
        return raw, value

    def _skip_item(self) -> tuple[str, Any]:
        """Move past an item too large to parse, by its brackets and strings alone; keeps its head."""
        head = self._buf[self._pos : self._pos + MAX_RAW_CHARS + 2]
        start_line, size = self._line, 0
        scalar = self._buf[self._pos] not in '{["'
        depth, in_string, pending_escape = 0, False, False
        pos = self._pos
        while True:
            found = None
            if pending_escape and pos < len(self._buf):
                pos, pending_escape = pos + 1, False
            if not pending_escape:
                found = (_SCALAR_END if scalar else _IN_STRING if in_string else _STRUCTURE).search(self._buf, pos)
            if found is None:
                size += len(self._buf) - self._pos
                self._advance(len(self._buf))
                if not self._more():
                    self._fail(f"truncated JSON: the item that starts at line {start_line} never ends")
                pos = 0
                continue
            char, pos = found.group(), found.end()
            if scalar:
                pos = found.start()
                break
            if in_string:
                if char == "\\":  # the escaped character may be the first of the next block
                    pending_escape = True
                    continue
                in_string = False
                if depth == 0:
                    break
            elif char == '"':
                in_string = True
            elif char in "[{":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    break
        size += pos - self._pos
        self._advance(pos)
        return head, _TooLarge(size, self._max_item)


def require_array_end(path: Path, fmt: FileFormat) -> None:
    """A JSON array cut short is refused before any row is yielded."""
    with open_regular_file(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        head = stream.read(4)
        unit = 4 if fmt.encoding.startswith("utf-32") else 2 if fmt.encoding.startswith("utf-16") else 1
        start = max(0, size - 4096)
        start -= start % unit
        stream.seek(start)
        tail_bytes = stream.read(size - start)
    encoding = fmt.encoding
    if encoding in {"utf-16", "utf-32"} and start > 0:
        little = head.startswith(codecs.BOM_UTF16_LE)
        encoding += "-le" if little else "-be"
    tail = tail_bytes.decode(encoding, errors="ignore").rstrip(" \t\r\n\ufeff")
    if tail and not tail.endswith("]"):
        raise FileReadError(path, "truncated JSON array: the file does not end with its closing ']'")


def json_header(path: Path, stream: TextIO, fmt: FileFormat, limits: ReadLimits) -> ColumnNames:
    """Columns from the keys of the first ``JSON_HEADER_RECORDS`` objects, in first-seen order;
    keys first seen later are added to the frames from the chunk where they appear on."""
    keys: dict[str, None] = {}
    for _, _, value in _first_items(path, stream, fmt, limits):
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
            if len(keys) > limits.max_columns:
                raise FileReadError(path, f"the objects have more than {limits.max_columns} distinct keys (the column limit)")
    return ColumnNames(keys, limits.max_columns)


def _first_items(path: Path, stream: TextIO, fmt: FileFormat, limits: ReadLimits) -> Iterator[tuple[int, str, Any]]:
    items = json_items(path, stream, fmt, limits.max_record_chars)
    for count, item in enumerate(items, 1):
        yield item
        if count >= JSON_HEADER_RECORDS:
            return


def json_chunks(path: Path, stream: TextIO, fmt: FileFormat, limits: ReadLimits) -> Iterator[RawChunk]:
    with open_text(path, fmt) as header_stream:
        names = json_header(path, header_stream, fmt, limits)
    items = json_items(path, stream, fmt, limits.max_record_chars)
    first, exhausted = True, False
    while not exhausted:
        chunk = ChunkBuilder()
        with gc_paused():
            while not limits.full(chunk.records, chunk.chars, len(names.names)):
                item = next(items, None)
                if item is None:
                    exhausted = True
                    break
                number, raw, value = item
                chunk.chars += len(raw)
                _add_json_record(chunk, number, raw, value, names, fmt, limits.max_field_chars)
            if not (first or chunk.records):
                return
            columns = [[row.get(name) for row in chunk.rows] for name in names.names]  # type: ignore[union-attr]
            frame = chunk.frame(names.names, columns)
            del columns
            chunk.release()
        yield RawChunk(frame, chunk.rejects)
        first = False


def _add_json_record(chunk: ChunkBuilder, number: int, raw: str, value: Any, names: ColumnNames,
                     fmt: FileFormat, max_field_chars: int) -> None:
    reason = _json_problem(value, fmt)
    row = None if reason else _json_row(value, names)
    reason = reason or _row_problem(row, raw, max_field_chars, fmt.encoding)  # type: ignore[arg-type]
    if reason:
        chunk.reject(number, raw, reason)
    else:
        chunk.rows.append(row)  # type: ignore[arg-type]
        chunk.lines.append(number)
        chunk.raws.append(raw)


def _json_problem(value: Any, fmt: FileFormat) -> str | None:
    if isinstance(value, _TooLarge):
        return f"the record has {value.chars} characters, over the limit of {value.limit}"
    if isinstance(value, json.JSONDecodeError):
        return f"invalid JSON: {value.msg} (column {value.colno})"
    if isinstance(value, ValueError):
        return f"invalid JSON: {value}"
    if not isinstance(value, dict):
        found = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        where = "JSON line" if fmt.kind == "ndjson" else "array item"
        return f"{where} is not an object (found {found})"
    return None


def _json_row(value: dict[str, Any], names: ColumnNames) -> dict[str, str | None]:
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
            return f"field {excerpt(name)} has {len(text)} characters, over the limit of {max_field_chars}"
    if "\x00" in raw or any(text and "\x00" in text for text in row.values()):
        return "contains NUL bytes"
    if "\ufffd" in raw:
        return f"contains bytes that are not valid {encoding}"
    return None
