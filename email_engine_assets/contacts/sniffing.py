"""Which format a contact file is in: kind, encoding and CSV delimiter (:func:`sniff_format`).

Formats: CSV (any of ``,`` ``;`` tab ``|``, RFC 4180 quoting, quoted delimiters and newlines),
TSV, JSON array of objects, NDJSON (one object per line). Encodings: UTF-8 with or without BOM,
UTF-16 / UTF-32 with BOM, otherwise detected; all three are recorded in :class:`FileFormat` and
can be overridden. Every open goes through :func:`.inbox.open_regular_file`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TextIO

import charset_normalizer

from email_engine_assets.contacts.inbox import open_regular_file

KINDS = ("csv", "json", "ndjson")
CSV_DELIMITERS = (",", ";", "\t", "|")
BLOCK_CHARS = 1 << 20
EXCERPT_CHARS = 80

_SAMPLE_BYTES = 64 * 1024
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


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """File text as it may appear in an error message: at most ``limit`` characters, quoted, with
    control characters, terminal escapes and other unprintable characters escaped (``repr``)."""
    shown = repr(text[:limit])
    return shown + "…" if len(text) > limit else shown


def shown_name(text: str) -> str:
    """A file or column name for a message: as is when printable, else escaped like :func:`excerpt`."""
    return text if text.isprintable() else repr(text)[1:-1]


class FileReadError(Exception):
    """A file that cannot be read at all; ``str(e)`` names the file and the problem (never more of
    its content than an :func:`excerpt`)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{shown_name(str(path))}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class FileFormat:
    kind: str  # "csv" | "json" | "ndjson"
    encoding: str  # python codec name actually used, e.g. "utf-8-sig", "utf-16", "cp1252"
    delimiter: str | None  # csv only


def open_text(path: Path, fmt: FileFormat) -> TextIO:
    """CSV keeps line endings as they are (quoted ``\\r\\n`` stays in the field); JSON reads
    universal newlines. Undecodable bytes become U+FFFD and reject their record."""
    newline = "" if fmt.kind == "csv" else None
    try:
        raw = open_regular_file(path)
    except OSError as exc:
        raise FileReadError(path, f"cannot open: {exc.strerror or exc}") from exc
    return io.TextIOWrapper(raw, encoding=fmt.encoding, errors="replace", newline=newline)


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open_regular_file(path) as stream:
        stream.seek(offset)
        return stream.read(size)


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
        with open_regular_file(path) as stream:
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
    sample = head + read_at(path, max(0, bad_offset - 1024), _SAMPLE_BYTES)
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
    with open_regular_file(path) as stream:
        while block := stream.read(BLOCK_CHARS):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return offset + max(0, exc.start)
            offset += len(block)
    return None


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


