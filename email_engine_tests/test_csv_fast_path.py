"""The CSV fast path (polars on blocks of a UTF-8 file) gives exactly what the careful reader gives:
the same rows, line numbers, raw text and rejects, whatever the file holds."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from email_engine_assets.contacts.chunks import LINE_COLUMN, RAW_COLUMN, ReadLimits
from email_engine_assets.contacts.csv_blocks import Careful, parse_block
from email_engine_assets.contacts.csv_records import csv_chunks
from email_engine_assets.contacts.sniffing import FileFormat, open_text

NAMES = ["email", "name", "note"]
LIMITS = ReadLimits(max_field_chars=60, max_record_chars=150)
ALPHABET = ["a", "b", "z", "é", "ß", " ", ",", ";", '"', "\n", "\r\n", "x@y.org", "ü"]


def read_all(path: Path, fmt: FileFormat, limits: ReadLimits, *, fast: bool) -> tuple[pl.DataFrame, list]:
    with open_text(path, fmt) as stream:
        chunks = list(csv_chunks(path, stream, fmt, limits, fast=fast))
    frame = pl.concat([chunk.frame for chunk in chunks])
    rejects = [(r.line, r.raw, r.reason) for chunk in chunks for r in chunk.rejects]
    return frame, rejects


def _field(rng: random.Random, delimiter: str) -> str:
    value = "".join(rng.choice(ALPHABET) for _ in range(rng.choice([0, 1, 2, 4, 6])))
    if rng.random() < 0.003:
        value = "w" * rng.choice([61, 62, 200])  # over the field cap, and the record cap
    if any(c in value for c in (delimiter, '"', "\n", "\r")) or rng.random() < 0.2:
        return '"' + value.replace('"', '""') + '"'
    return value


def _file(rng: random.Random, delimiter: str) -> bytes:
    eol = rng.choice(["\n", "\r\n"])
    records = [delimiter.join(NAMES)]
    for _ in range(rng.randint(0, 40)):
        width = len(NAMES) if rng.random() > 0.01 else rng.choice([1, 2, 4])
        records.append(delimiter.join(_field(rng, delimiter) for _ in range(width)))
    text = eol.join(records) + (eol if rng.random() < 0.8 else "")
    data = bytearray(text.encode())
    for _ in range(rng.choice([0, 0, 0, 0, 0, 1, 2])):  # damage: stray quote, blank line, NUL, lone CR, bad byte, U+FFFD
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([b'"', b"\n", b"\n\n", b"\x00", b"\r", b"\xff", "\ufffd".encode(), b"\r\n\r\n"])
    if rng.random() < 0.1:
        data[:0] = b"\xef\xbb\xbf"
    return bytes(data)


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_fast_path_reads_like_the_careful_reader(tmp_path: Path, delimiter: str) -> None:
    rng = random.Random(20240611 + ord(delimiter))
    fmt = FileFormat("csv", "utf-8-sig", delimiter)
    polars_blocks = 0
    for case in range(250):
        path = tmp_path / f"case_{case}.csv"
        path.write_bytes(data := _file(rng, delimiter))
        limits = ReadLimits(**{**vars(LIMITS), "block_bytes": rng.choice([32, 64, 200, 1 << 20]), "chunk_rows": rng.choice([3, 7, 1000])})
        careful_frame, careful_rejects = read_all(path, fmt, limits, fast=False)
        fast_frame, fast_rejects = read_all(path, fmt, limits, fast=True)
        context = f"case {case}: {path.read_bytes()!r}"
        assert fast_frame.rows() == careful_frame.rows(), context
        assert fast_frame.columns == careful_frame.columns, context
        assert fast_rejects == careful_rejects, context
        body = data.removeprefix(b"\xef\xbb\xbf").partition(b"\n")[2]
        polars_blocks += isinstance(parse_block(body, 2, NAMES, delimiter, limits), pl.DataFrame)
    assert polars_blocks > 100  # most files are read by polars whole (when in one block)


def _block(records: list[str]) -> bytes:
    return "".join(records).encode()


def test_a_well_formed_block_is_parsed_by_polars_with_lines_and_raw_text() -> None:
    block = _block(['a@x.org,Zoë,plain\r\n', 'b@x.org,"Line\r\nBreak, Ltd","say ""hi"""\r\n', 'c@x.org,,""\r\n'])
    frame = parse_block(block, 7, NAMES, ",", LIMITS)
    assert isinstance(frame, pl.DataFrame)
    assert frame[LINE_COLUMN].to_list() == [7, 8, 10]
    assert frame[RAW_COLUMN].to_list() == ["a@x.org,Zoë,plain", 'b@x.org,"Line\r\nBreak, Ltd","say ""hi"""', 'c@x.org,,""']
    assert frame.select(NAMES).rows() == [("a@x.org", "Zoë", "plain"), ("b@x.org", "Line\r\nBreak, Ltd", 'say "hi"'), ("c@x.org", "", "")]


@pytest.mark.parametrize(
    ("block", "needs"),
    [
        (b"a,b,c\n\nd,e,f\n", Careful.BLOCK),  # a blank line is not a record
        (b"a,b,c\nd,e\n", Careful.BLOCK),  # a short record
        (b"a,b,c\nd,e,f,g\n", Careful.BLOCK),  # a long record (polars would truncate it)
        (b'a,"b,c"\nd,e,f\n', Careful.BLOCK),  # two fields, one holding the delimiter
        (b"a,\xff,c\n", Careful.BLOCK),
        ("a,\ufffd,c\n".encode(), Careful.BLOCK),
        (b"a," + b"r" * 130 + b",c\n", Careful.BLOCK),  # a record over its cap, its fields within theirs
        (b'a,x"y,c\n', Careful.REST),  # stray quotes: the careful reader takes them as text
        (b'"a"b,c,d\n', Careful.REST),
        (b'a,"b" ,c\n', Careful.REST),
        (b'a,b,c\n"d""\n', Careful.REST),
        (b"a,b\x00,c\n", Careful.REST),
        (b"a,b\rc,d\n", Careful.REST),  # a lone carriage return breaks a line for the careful reader
    ],
)
def test_blocks_the_fast_path_does_not_take(block: bytes, needs: Careful) -> None:
    limits = ReadLimits(max_field_chars=200, max_record_chars=120)
    assert parse_block(block, 2, NAMES, ",", limits) is needs


def test_a_field_over_its_cap_hands_the_rest_of_the_file_to_the_careful_reader() -> None:
    assert parse_block(b"a," + b"r" * 70 + b",c\n", 2, NAMES, ",", LIMITS) is Careful.REST
