"""Reading contact files: formats, encodings, rejects with line numbers, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from email_engine_assets.contacts.readers import (
    FileFormat,
    FileReadError,
    RawChunk,
    RejectedRow,
    iter_chunks,
    read_header,
    sniff_format,
)

FRENCH_ROWS = [
    ("francois@example.fr", "François", "Lefèvre", "Cœur & Çie"),
    ("helene@example.fr", "Hélène", "Bœuf", "Prix 10 €"),
    ("cecile@example.fr", "Cécile", "Müller", "Ça va"),
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path, fmt: FileFormat | None = None, **kwargs: int) -> tuple[pl.DataFrame, list[RejectedRow], list[RawChunk]]:
    chunks = list(iter_chunks(path, fmt or sniff_format(path), **kwargs))
    frame = pl.concat([c.frame for c in chunks], how="diagonal")
    rejects = [r for c in chunks for r in c.rejects]
    return frame, rejects, chunks


def data_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if not c.startswith("__")]


def french_csv(delimiter: str) -> str:
    lines = [delimiter.join(("email", "prénom", "nom", "société"))]
    lines += [delimiter.join(row) for row in FRENCH_ROWS]
    return "\r\n".join(lines) + "\r\n"


# --- CSV structure ------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_each_delimiter_is_detected_and_read(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path, "contacts.csv", french_csv(delimiter).encode("utf-8"))
    fmt = sniff_format(path)
    assert fmt == FileFormat("csv", "utf-8", delimiter)
    frame, rejects, _ = read_all(path, fmt)
    assert rejects == []
    assert data_columns(frame) == ["email", "prénom", "nom", "société"]
    assert frame.select(data_columns(frame)).rows() == FRENCH_ROWS
    assert frame["__line"].to_list() == [2, 3, 4]
    assert frame["__raw"].to_list()[0] == delimiter.join(FRENCH_ROWS[0])


def test_tsv_extension_with_tabs(tmp_path: Path) -> None:
    path = write(tmp_path, "export.tsv", b"email\tname\ta@x.io\tAnn, Smith\n".replace(b"\ta@x", b"\na@x"))
    fmt = sniff_format(path)
    assert (fmt.kind, fmt.delimiter) == ("csv", "\t")
    frame, _, _ = read_all(path, fmt)
    assert frame.select("email", "name").rows() == [("a@x.io", "Ann, Smith")]


def test_quoted_delimiters_and_newlines_keep_line_numbers(tmp_path: Path) -> None:
    data = (
        'email,name,notes\n'
        'a@x.io,"Smith, Ann","line one\nline two\nline three"\n'
        'b@x.io,Bob,"said ""hi"", left"\n'
        'c@x.io,"Carl\r\nJr",plain\n'
        'd@x.io,Dee,last\n'
    )
    path = write(tmp_path, "q.csv", data.encode())
    frame, rejects, _ = read_all(path)
    assert rejects == []
    assert frame["__line"].to_list() == [2, 5, 6, 8]
    assert frame["name"].to_list() == ["Smith, Ann", "Bob", "Carl\r\nJr", "Dee"]
    assert frame["notes"].to_list() == ["line one\nline two\nline three", 'said "hi", left', "plain", "last"]
    assert frame["__raw"][0] == 'a@x.io,"Smith, Ann","line one\nline two\nline three"'


def test_ragged_rows_are_rejected_with_counts_and_lines(tmp_path: Path) -> None:
    data = "email,name,city\na@x.io,Ann,Paris\nb@x.io,Bob\nc@x.io,Cy,Lyon,extra,more\n\nd@x.io,Dee,Nice\n"
    path = write(tmp_path, "ragged.csv", data.encode())
    frame, rejects, _ = read_all(path)
    assert frame["email"].to_list() == ["a@x.io", "d@x.io"]
    assert frame["__line"].to_list() == [2, 6]
    assert rejects == [
        RejectedRow(3, "b@x.io,Bob", "expected 3 fields, found 2"),
        RejectedRow(4, "c@x.io,Cy,Lyon,extra,more", "expected 3 fields, found 5"),
    ]


def test_duplicate_and_empty_header_names_are_made_unique(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.csv", b"email,email, Name ,,email\na@x.io,b@x.io,Ann,x,c@x.io\n")
    fmt = sniff_format(path)
    assert read_header(path, fmt) == ["email", "email_2", "Name", "column_4", "email_3"]
    frame, _, _ = read_all(path, fmt)
    assert frame.select("email", "email_2", "email_3").row(0) == ("a@x.io", "b@x.io", "c@x.io")


def test_csv_injection_text_is_kept_verbatim(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://x","y")'
    data = 'email,name,note\na@x.io,"=HYPERLINK(""http://x"",""y"")",+cmd|\' /C calc\'!A0\n'
    path = write(tmp_path, "inj.csv", data.encode())
    frame, rejects, _ = read_all(path)
    assert rejects == []
    assert frame.row(0, named=True)["name"] == formula
    assert frame.row(0, named=True)["note"] == "+cmd|' /C calc'!A0"


def test_nul_bytes_reject_only_their_row(tmp_path: Path) -> None:
    data = b"email,name\na@x.io,Ann\nb@x.io,B\x00ob\nc@x.io,Cy\n"
    path = write(tmp_path, "nul.csv", data)
    frame, rejects, _ = read_all(path)
    assert frame["email"].to_list() == ["a@x.io", "c@x.io"]
    assert [(r.line, r.reason) for r in rejects] == [(3, "contains NUL bytes")]
    assert "\x00" not in rejects[0].raw and rejects[0].raw.startswith("b@x.io,B")


def test_two_megabyte_field_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    big = "x" * 2_000_000
    data = f'email,notes\na@x.io,ok\nb@x.io,{big}\nc@x.io,"{big}\nstill the field"\nd@x.io,fine\n'
    path = write(tmp_path, "big.csv", data.encode())
    frame, rejects, _ = read_all(path)
    assert frame["email"].to_list() == ["a@x.io", "d@x.io"]
    assert frame["__line"].to_list() == [2, 6]
    assert [r.line for r in rejects] == [3, 4]
    assert all("over the limit of 65536" in r.reason for r in rejects)
    assert all(len(r.raw) <= 1000 and r.raw.startswith(("b@x.io", "c@x.io")) for r in rejects)


def test_field_between_limit_and_csv_module_limit_is_rejected(tmp_path: Path) -> None:
    data = f"email,notes\na@x.io,{'y' * 70_000}\nb@x.io,short\n"
    path = write(tmp_path, "mid.csv", data.encode())
    frame, rejects, _ = read_all(path)
    assert frame["email"].to_list() == ["b@x.io"]
    assert rejects[0].line == 2
    assert rejects[0].reason == "field 'notes' has 70000 characters, over the limit of 65536"


def test_max_field_chars_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "small.csv", b"email,name\na@x.io,Ann\nb@x.io,Bartholomew\n")
    frame, rejects, _ = read_all(path, max_field_chars=8)
    assert frame["email"].to_list() == ["a@x.io"]
    assert rejects[0].line == 3 and "'name' has 11 characters" in rejects[0].reason


def test_runaway_quote_is_rejected_without_taking_the_file_down(tmp_path: Path) -> None:
    tail = "".join(f"z{i}@x.io,Name {i}\n" for i in range(20_000))
    data = f'email,name\na@x.io,Ann\nb@x.io,"never closed\n{tail}'
    path = write(tmp_path, "runaway.csv", data.encode())
    frame, rejects, _ = read_all(path, max_field_chars=1_000)
    assert frame["email"].to_list() == ["a@x.io"]
    assert len(rejects) == 1 and rejects[0].line == 3
    assert rejects[0].raw.startswith('b@x.io,"never closed')


# --- chunking and accounting --------------------------------------------------------------


def test_chunks_keep_order_and_line_numbers(tmp_path: Path) -> None:
    rows = [f"u{i}@x.io,Name {i}" for i in range(10)]
    path = write(tmp_path, "ten.csv", ("email,name\n" + "\n".join(rows) + "\n").encode())
    _, _, chunks = read_all(path, chunk_rows=3)
    assert [c.frame.height for c in chunks] == [3, 3, 3, 1]
    frame = pl.concat([c.frame for c in chunks])
    assert frame["email"].to_list() == [f"u{i}@x.io" for i in range(10)]
    assert frame["__line"].to_list() == list(range(2, 12))


def test_chunks_with_multiline_records_and_rejects(tmp_path: Path) -> None:
    records = []
    for i in range(12):
        if i % 4 == 1:
            records.append(f'u{i}@x.io,"two\nlines"')
        elif i % 5 == 2:
            records.append(f"u{i}@x.io,too,many")
        else:
            records.append(f"u{i}@x.io,n{i}")
    path = write(tmp_path, "mixed.csv", ("email,name\n" + "\n".join(records) + "\n").encode())
    frame, rejects, chunks = read_all(path, chunk_rows=3)
    assert all(c.frame.height + len(c.rejects) <= 3 for c in chunks)
    assert frame.height + len(rejects) == 12
    expected_lines, line = {}, 2
    for i, record in enumerate(records):
        expected_lines[f"u{i}@x.io"] = line
        line += record.count("\n") + 1
    assert dict(zip(frame["email"], frame["__line"])) == {
        e: n for e, n in expected_lines.items() if e not in {"u2@x.io", "u7@x.io"}}
    assert sorted((r.line, r.raw) for r in rejects) == [
        (expected_lines["u2@x.io"], "u2@x.io,too,many"), (expected_lines["u7@x.io"], "u7@x.io,too,many")]


def test_accounting_rows_plus_rejects_equals_records(tmp_path: Path) -> None:
    good = [f"g{i}@x.io,G,{i}" for i in range(50)]
    bad = ["short@x.io,S", "long@x.io,L,1,2", "nul@x.io,N\x00,1"]
    multi = ['multi@x.io,"M\nM",9']
    records = good[:20] + bad + multi + good[20:]
    path = write(tmp_path, "count.csv", ("email,name,n\n" + "\n".join(records) + "\n").encode())
    frame, rejects, _ = read_all(path, chunk_rows=7)
    assert frame.height + len(rejects) == len(records)
    assert frame.height == len(good) + 1
    assert len(set(frame["__line"]) | {r.line for r in rejects}) == len(records)


# --- empty and unreadable files -----------------------------------------------------------


def test_empty_file_yields_no_rows_and_no_error(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.csv", b"")
    fmt = sniff_format(path)
    assert read_header(path, fmt) == []
    chunks = list(iter_chunks(path, fmt))
    assert sum(c.frame.height for c in chunks) == 0
    assert [r for c in chunks for r in c.rejects] == []


def test_header_only_file_reports_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "head.csv", b"email;Name;Pays\r\n")
    fmt = sniff_format(path)
    assert fmt.delimiter == ";"
    assert read_header(path, fmt) == ["email", "Name", "Pays"]
    chunks = list(iter_chunks(path, fmt))
    assert len(chunks) == 1
    assert chunks[0].frame.height == 0 and chunks[0].rejects == []
    assert data_columns(chunks[0].frame) == ["email", "Name", "Pays"]
    assert chunks[0].frame.schema["__line"] == pl.Int64


def test_binary_file_raises_naming_the_file(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
    path = write(tmp_path, "photo.csv", png)
    with pytest.raises(FileReadError, match="photo.csv") as caught:
        sniff_format(path)
    assert "binary" in str(caught.value)


def test_nul_filled_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "zeros.csv", b"\x00" * 500)
    with pytest.raises(FileReadError, match="zeros.csv.*binary"):
        sniff_format(path)


def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileReadError, match="nope.csv"):
        sniff_format(tmp_path / "nope.csv")


# --- encodings ----------------------------------------------------------------------------


def test_utf8_bom_is_detected_and_not_in_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + french_csv(",").encode("utf-8"))
    fmt = sniff_format(path)
    assert fmt.encoding == "utf-8-sig"
    frame, _, _ = read_all(path, fmt)
    assert data_columns(frame)[0] == "email"
    assert frame.select(data_columns(frame)).rows() == FRENCH_ROWS


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_utf16_with_bom(tmp_path: Path, codec: str) -> None:
    text = french_csv("\t")
    data = text.encode("utf-16") if codec == "utf-16" else b"\xfe\xff" + text.encode("utf-16-be")
    path = write(tmp_path, "u16.txt", data)
    fmt = sniff_format(path)
    assert fmt == FileFormat("csv", "utf-16", "\t")
    frame, rejects, _ = read_all(path, fmt)
    assert rejects == []
    assert frame.select(data_columns(frame)).rows() == FRENCH_ROWS
    assert frame["__line"].to_list() == [2, 3, 4]


def test_cp1252_french_names(tmp_path: Path) -> None:
    path = write(tmp_path, "win.csv", french_csv(";").encode("cp1252"))
    fmt = sniff_format(path)
    assert fmt.encoding == "cp1252"
    frame, rejects, _ = read_all(path, fmt)
    assert rejects == []
    assert frame.select(data_columns(frame)).rows() == FRENCH_ROWS
    assert data_columns(frame) == ["email", "prénom", "nom", "société"]


def test_cp1252_bytes_after_a_long_ascii_start_are_found(tmp_path: Path) -> None:
    ascii_rows = "".join(f"u{i}@x.io;Plain{i}\r\n" for i in range(8_000))
    text = "email;name\r\n" + ascii_rows + "zoe@x.io;Zoé Œuvre\r\n"
    path = write(tmp_path, "late.csv", text.encode("cp1252"))
    fmt = sniff_format(path)
    assert fmt.encoding == "cp1252"
    frame, rejects, _ = read_all(path, fmt)
    assert rejects == []
    assert frame["name"][-1] == "Zoé Œuvre"


def test_undecodable_bytes_reject_their_row(tmp_path: Path) -> None:
    data = b"email,name\na@x.io,Ann\nb@x.io,B\xff\xfeob\nc@x.io,Cy\n"
    path = write(tmp_path, "bad.csv", data)
    frame, rejects, _ = read_all(path, FileFormat("csv", "utf-8", ","))
    assert frame["email"].to_list() == ["a@x.io", "c@x.io"]
    assert [(r.line, r.reason) for r in rejects] == [(3, "contains bytes that are not valid utf-8")]


def test_overrides_of_encoding_delimiter_and_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "email:name\na@x.io:Zoé\n".encode("latin-1"))
    fmt = sniff_format(path, encoding="latin-1", delimiter=":")
    assert fmt == FileFormat("csv", "iso8859-1", ":")
    frame, _, _ = read_all(path, fmt)
    assert frame.select("email", "name").row(0) == ("a@x.io", "Zoé")
    ndjson = write(tmp_path, "data.log", b'{"email": "a@x.io"}\n')
    assert sniff_format(ndjson, kind="ndjson").kind == "ndjson"


def test_bad_overrides_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", b"email\na@x.io\n")
    with pytest.raises(ValueError, match="'klingon'"):
        sniff_format(path, encoding="klingon")
    with pytest.raises(ValueError, match="';;'"):
        sniff_format(path, delimiter=";;")
    with pytest.raises(ValueError, match="'xml'"):
        sniff_format(path, kind="xml")


# --- JSON -------------------------------------------------------------------------------


def test_json_array_values_and_item_numbers(tmp_path: Path) -> None:
    data = (
        '[\n'
        '  {"email": "a@x.io", "age": 42, "score": 1.50, "vip": true, "tags": ["b2b", "fr"],\n'
        '   "address": {"city": "Lyon", "zip": 69001}, "phone": null},\n'
        '  "not an object",\n'
        '  {\n'
        '    "email": "b@x.io", "formula": "=HYPERLINK(\\"http://x\\",\\"y\\")"\n'
        '  }\n'
        ']\n'
    )
    path = write(tmp_path, "contacts.json", data.encode())
    fmt = sniff_format(path)
    assert fmt == FileFormat("json", "utf-8", None)
    frame, rejects, _ = read_all(path, fmt)
    first = frame.row(0, named=True)
    assert first["__line"] == 1  # a JSON array's records are numbered by their position in the array
    assert (first["age"], first["score"], first["vip"], first["tags"]) == ("42", "1.50", "true", "b2b;fr")
    assert json.loads(first["address"]) == {"city": "Lyon", "zip": 69001}
    assert first["address"] == '{"city":"Lyon","zip":69001}'
    assert first["phone"] is None
    second = frame.row(1, named=True)
    assert (second["__line"], second["email"], second["formula"]) == (3, "b@x.io", '=HYPERLINK("http://x","y")')
    assert second["age"] is None
    assert rejects == [RejectedRow(2, '"not an object"', "array item is not an object (found string)")]


def test_json_keys_first_seen_later_become_columns(tmp_path: Path) -> None:
    records = [{"email": f"u{i}@x.io"} for i in range(5)] + [{"email": "late@x.io", "city": "Nice"}]
    path = write(tmp_path, "late.json", json.dumps(records).encode())
    fmt = sniff_format(path)
    chunks = list(iter_chunks(path, fmt, chunk_rows=4))
    assert [c.frame.height for c in chunks] == [4, 2]
    assert chunks[1].frame.filter(pl.col("email") == "late@x.io")["city"].to_list() == ["Nice"]
    assert read_header(path, fmt) == ["email", "city"]


def test_truncated_json_array_raises_before_any_row(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.json", b'[{"email": "a@x.io"}, {"email": "b@x')
    fmt = sniff_format(path)
    with pytest.raises(FileReadError, match="cut.json.*truncated"):
        iter_chunks(path, fmt)


def test_json_syntax_error_inside_array_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.json", b'[\n{"email": "a@x.io"},\n{"email" "b@x.io"}\n]\n')
    with pytest.raises(FileReadError, match="broken.json.*line 3"):
        list(iter_chunks(path, sniff_format(path)))


def test_json_array_with_large_item_and_small_blocks(tmp_path: Path) -> None:
    records = [{"email": f"u{i}@x.io", "notes": "n" * (i * 1000)} for i in range(40)]
    records.append({"email": "huge@x.io", "notes": "h" * 1_000_000})  # under the record cap, over the field cap
    records.append({"email": "after@x.io"})
    path = write(tmp_path, "large.json", json.dumps(records, indent=1).encode())
    frame, rejects, _ = read_all(path)
    assert frame["email"].to_list() == [f"u{i}@x.io" for i in range(40)] + ["after@x.io"]
    assert [r.reason for r in rejects] == ["field 'notes' has 1000000 characters, over the limit of 65536"]
    assert len(rejects[0].raw) == 1000


def test_ndjson_blank_and_bad_lines(tmp_path: Path) -> None:
    data = (
        b'{"email": "a@x.io", "tags": ["x", 1, null]}\n'
        b"\n"
        b'["a@x.io"]\n'
        b"{not json\n"
        b'{"email": "b@x.io", "n": "\\u0000"}\n'
        b'{"email": "c@x.io", "city": "Metz"}\n'
    )
    path = write(tmp_path, "feed.ndjson", data)
    fmt = sniff_format(path)
    assert fmt.kind == "ndjson"
    frame, rejects, _ = read_all(path, fmt)
    assert frame.select("__line", "email", "tags", "city").rows() == [
        (1, "a@x.io", "x;1", None), (6, "c@x.io", None, "Metz")]
    assert [(r.line, r.reason.split(" (")[0]) for r in rejects] == [
        (3, "JSON line is not an object"),
        (4, "invalid JSON: Expecting property name enclosed in double quotes"),
        (5, "contains NUL bytes"),
    ]
    assert rejects[0].raw == '["a@x.io"]'


def test_ndjson_detected_by_content_and_pretty_object_refused(tmp_path: Path) -> None:
    ndjson = write(tmp_path, "push.json", b'{"email": "a@x.io"}\n{"email": "b@x.io"}\n')
    assert sniff_format(ndjson).kind == "ndjson"
    pretty = write(tmp_path, "pretty.json", b'{\n  "contacts": []\n}\n')
    with pytest.raises(FileReadError, match="pretty.json.*NDJSON"):
        sniff_format(pretty)


def test_json_utf16_and_empty_array(tmp_path: Path) -> None:
    path = write(tmp_path, "u16.json", json.dumps([{"email": "a@x.io", "nom": "Bœuf"}], ensure_ascii=False).encode("utf-16"))
    fmt = sniff_format(path)
    assert fmt == FileFormat("json", "utf-16", None)
    frame, _, _ = read_all(path, fmt)
    assert frame.select("email", "nom").row(0) == ("a@x.io", "Bœuf")
    empty = write(tmp_path, "none.json", b"[ ]\n")
    frame, rejects, chunks = read_all(empty)
    assert (frame.height, rejects, len(chunks)) == (0, [], 1)
