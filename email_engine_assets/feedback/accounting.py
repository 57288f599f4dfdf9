"""PowerMTA accounting lines -> delivery events: the parsing and mapping rules, no I/O.

An accounting file (REFERENCE.md, "PowerMTA") is RFC 4180 CSV in UTF-8 with one header line
first; a file that mixes record types carries the union of their columns, so columns are read by
header NAME (case-insensitive), never by position. Files grow while PowerMTA writes them: the
caller keeps the header and a byte offset, and hands over the bytes after the offset;
:func:`complete_length` says how many of them form complete lines (a partial last line waits for
the next tick).

How a line maps (:func:`parse_lines`):

* ``d`` -> delivered; ``b`` and ``rb`` -> bounced, classed by
  :func:`email_engine_assets.feedback.events.bounce_class` from ``bounceCat`` and ``dsnStatus``;
  ``t`` -> deferred; ``f`` -> complained (the complainer is ``rcpt``; the report's ``format``,
  JMRP or ARF, goes to the detail); ``tq``, ``r`` and ``rs`` are ignored and counted.
* Link fields: ``envId`` (or a ``header_x-envid`` column), with its case kept, is our ledger
  token; ``jobId`` is ``<tenant>.<campaign>`` and ``rcpt`` gives the address key (the ledger's
  ``email`` normalisation, :func:`email_engine_assets.quality.syntax.check_addresses`).
* A line whose job names another tenant is not this tenant's (a PowerMTA can serve several): it
  is counted as ``other_tenants`` and left for that tenant's run.
* A line that cannot be used (unknown type, no recipient, a time that does not parse, a line
  that is not CSV of the header's width, a line over :data:`MAX_LINE_BYTES`, a line without a
  job whose ENVID is not in the tenant's ledger) is kept with a reason (:data:`KEPT_REASONS`)
  and its raw text. A line shorter than the header reads its missing columns as empty.
* The dedupe key is a digest of the raw line: a line applied twice, even from a rotated copy of
  the file under another name, counts once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from dataclasses import dataclass, field

import polars as pl

from email_engine_assets.feedback.events import EVENT_FRAME_SCHEMA, bounce_class
from email_engine_assets.quality.syntax import check_addresses

RECORD_EVENTS: dict[str, str] = {"d": "delivered", "b": "bounced", "rb": "bounced", "t": "deferred", "f": "complained"}
IGNORED_TYPES: tuple[str, ...] = ("tq", "r", "rs")
RECORD_TYPES: tuple[str, ...] = (*RECORD_EVENTS, *IGNORED_TYPES)
KEPT_REASONS: tuple[str, ...] = (
    "unknown_type", "no_recipient", "bad_time", "malformed", "line_too_long", "no_job_not_in_ledger",
)

MAX_LINE_BYTES = 64 * 1024
MAX_HEADER_COLUMNS = 1000
MAX_KEPT_RAW_CHARS = 4096
MAX_DETAIL_CHARS = 300
MAX_TOKEN_CHARS = 100
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")

_EVENT_SCHEMA = {name: (pl.Datetime("us", "UTC") if kind == "Datetime" else pl.String) for name, kind in EVENT_FRAME_SCHEMA.items()}
KEPT_SCHEMA = {"byte_offset": pl.Int64, "line_digest": pl.String, "raw_line": pl.String, "reason": pl.String}


class HeaderError(ValueError):
    """The first line of a file is no accounting header; ``str()`` says what is wrong."""


@dataclass(frozen=True)
class ParsedLines:
    """What a run of complete lines gave: events to record, lines kept with a reason, counts.

    ``events`` has the columns of :data:`email_engine_assets.feedback.events.EVENT_FRAME_SCHEMA`
    plus ``has_job`` (bool: the line named a job of this tenant; a line without a job is this
    tenant's only when its token is in the tenant's ledger, which the caller checks), ``byte_offset``
    and ``raw_line`` (for that check's leftovers). ``kept`` has :data:`KEPT_SCHEMA`.
    """

    events: pl.DataFrame
    kept: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def header_columns(header: bytes) -> list[str]:
    """The column names of a header line (without its line ending); :class:`HeaderError` when unusable."""
    if len(header) > MAX_LINE_BYTES:
        raise HeaderError(f"header line longer than {MAX_LINE_BYTES} bytes")
    try:
        text = header.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"header is not UTF-8 (byte {exc.start})") from None
    names = next(csv.reader([text]), [])
    if not names or len(names) > MAX_HEADER_COLUMNS:
        raise HeaderError(f"header has {len(names)} columns (1 to {MAX_HEADER_COLUMNS} expected)")
    lowered = [n.strip().lower() for n in names]
    if "type" not in lowered:
        raise HeaderError("header has no 'type' column; is this a PowerMTA accounting file?")
    dup = next((n for n in lowered if lowered.count(n) > 1), None)
    if dup is not None:
        raise HeaderError(f"header names column {dup!r} twice")
    return [n.strip() for n in names]


def complete_length(data: bytes) -> int:
    """How many leading bytes of ``data`` (which starts at a line start) are complete CSV lines.

    The end is after the last ``\\n`` that is outside a quoted field (an even number of ``"``
    before it); 0 when there is none yet.
    """
    end = data.rfind(b"\n")
    quotes = data.count(b'"', 0, end) if end >= 0 else 0
    while end >= 0 and quotes % 2:
        previous = data.rfind(b"\n", 0, end)
        quotes -= data.count(b'"', previous + 1, end)
        end = previous
    return end + 1


def _records(data: bytes) -> list[bytes]:
    """``data`` (complete lines) as CSV records: lines, joined again where a quoted field spans a newline."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if b'"' not in data:
        return lines
    out: list[bytes] = []
    pending: list[bytes] = []
    odd = False
    for line in lines:
        if line.count(b'"') % 2:
            odd = not odd
        pending.append(line)
        if not odd:
            out.append(pending[0] if len(pending) == 1 else b"\n".join(pending))
            pending = []
    if pending:  # cannot happen after complete_length; kept whole rather than lost
        out.append(b"\n".join(pending))
    return out


def line_digest(raw: bytes) -> str:
    """The dedupe key of a raw accounting line (its line ending left out)."""
    return hashlib.blake2b(raw, digest_size=20).hexdigest()


def _fields_fast(columns: list[str], records: list[bytes]) -> pl.DataFrame | None:
    """All records parsed by polars (strings only), or ``None`` when they are not all of the header's width."""
    body = io.BytesIO()
    body.write(_header_line(columns))
    body.write(b"\n".join(records))
    body.write(b"\n")
    try:
        frame = pl.read_csv(body.getvalue(), infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=False,
                            new_columns=[f"c{i}" for i in range(len(columns))])
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.ShapeError):
        return None
    if frame.height != len(records) or frame.width != len(columns):
        return None
    return frame


def _header_line(columns: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([f"c{i}" for i in range(len(columns))])
    return buffer.getvalue().encode() + b"\n"


def _fields_slow(columns: list[str], records: list[bytes]) -> tuple[pl.DataFrame, list[bool]]:
    """Record by record with :mod:`csv`: the rows of the header's width, and which records were."""
    good: list[list[str | None]] = []
    ok: list[bool] = []
    for raw in records:
        try:
            row = next(csv.reader([raw.decode("utf-8", "replace").rstrip("\r")], strict=True), [])
        except csv.Error:
            row = []
        fine = len(row) == len(columns)
        ok.append(fine)
        if fine:
            good.append([v if v != "" else None for v in row])
    schema = {f"c{i}": pl.String for i in range(len(columns))}
    return pl.DataFrame(good, schema=schema, orient="row"), ok


def parse_lines(columns: list[str], data: bytes, *, base_offset: int, tenant_id: str) -> ParsedLines:
    """Map complete lines (``data``, as :func:`complete_length` cut them) of a file with these header columns.

    ``base_offset`` is the file offset of ``data[0]`` (kept lines say where they were).
    """
    records = _records(data)
    offsets = list(itertools.accumulate((len(r) + 1 for r in records), initial=base_offset))[:-1]
    counts: dict[str, int] = {"lines": 0, "blank": 0, "ignored": 0, "other_tenants": 0, "kept_with_reason": 0}
    counts.update({f"type_{t}": 0 for t in RECORD_TYPES})
    kept: list[tuple[int, bytes, str]] = []

    usable_raw: list[bytes] = []
    usable_offsets: list[int] = []
    has_nul = b"\x00" in data
    for raw, offset in zip(records, offsets):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if not raw.strip():
            counts["blank"] += 1
            continue
        if len(raw) > MAX_LINE_BYTES:
            kept.append((offset, raw, "line_too_long"))
            continue
        if has_nul and b"\x00" in raw:  # no text column can hold it: not an accounting line
            kept.append((offset, raw, "malformed"))
            continue
        usable_raw.append(raw)
        usable_offsets.append(offset)
    counts["lines"] = len(records) - counts["blank"]

    frame = _fields_fast(columns, usable_raw) if usable_raw else None
    if frame is None and usable_raw:
        frame, ok = _fields_slow(columns, usable_raw)
        kept.extend((o, r, "malformed") for o, r, fine in zip(usable_offsets, usable_raw, ok) if not fine)
        usable_raw = [r for r, fine in zip(usable_raw, ok) if fine]
        usable_offsets = [o for o, fine in zip(usable_offsets, ok) if fine]
    events = _empty_events()
    if usable_raw:
        events, more_kept = _map(columns, frame, usable_raw, usable_offsets, tenant_id, counts)
        kept.extend(more_kept)
    counts["kept_with_reason"] = len(kept)
    return ParsedLines(events=events, kept=kept_frame(kept), counts=counts)


def kept_frame(kept) -> pl.DataFrame:
    """Kept lines as a :data:`KEPT_SCHEMA` frame (raw text decoded leniently and capped)."""
    return pl.DataFrame(
        [(o, line_digest(r), r.decode("utf-8", "replace")[:MAX_KEPT_RAW_CHARS], why) for o, r, why in kept],
        schema=KEPT_SCHEMA, orient="row",
    )


def _empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema={**_EVENT_SCHEMA, "has_job": pl.Boolean, "byte_offset": pl.Int64, "raw_line": pl.Binary})


def _column(columns: list[str], *names: str) -> pl.Expr:
    lowered = {c.lower(): f"c{i}" for i, c in enumerate(columns)}
    for name in names:
        if name.lower() in lowered:
            text = pl.col(lowered[name.lower()]).str.strip_chars()
            return pl.when(text == "").then(None).otherwise(text)
    return pl.lit(None, dtype=pl.String)


def _map(columns, frame: pl.DataFrame, raws: list[bytes], offsets: list[int], tenant_id: str,
         counts: dict[str, int]) -> tuple[pl.DataFrame, list[tuple[int, bytes, str]]]:
    time_text = _column(columns, "timeLogged")
    parsed = frame.select(
        kind=_column(columns, "type").str.to_lowercase(),
        time_text=time_text,
        occurred_at=pl.coalesce([time_text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in TIME_FORMATS]),
        rcpt=_column(columns, "rcpt"),
        token=pl.coalesce([_column(columns, "envId"), _column(columns, "header_x-envid")]),
        job=_column(columns, "jobId"),
        bounce_cat=_column(columns, "bounceCat"),
        dsn_status=_column(columns, "dsnStatus"),
        dsn_diag=_column(columns, "dsnDiag"),
        feedback=pl.concat_str([_column(columns, "feedbackType"), _column(columns, "format")], separator=" ", ignore_nulls=True),
    ).with_columns(
        row=pl.int_range(pl.len(), dtype=pl.Int64),
        byte_offset=pl.Series(offsets, dtype=pl.Int64),
        job_tenant=pl.col("job").str.split_exact(".", 1).struct.field("field_0"),
        job_campaign=pl.col("job").str.splitn(".", 2).struct.field("field_1"),
    )
    for kind, n in parsed.group_by("kind").len().iter_rows():
        key = f"type_{kind}" if kind in RECORD_TYPES else "type_other"
        counts[key] = counts.get(key, 0) + n

    reason = (
        pl.when(~pl.col("kind").is_in(RECORD_TYPES) | pl.col("kind").is_null()).then(pl.lit("unknown_type"))
        .when(pl.col("kind").is_in(IGNORED_TYPES)).then(None)
        .when(pl.col("job_tenant").is_not_null() & (pl.col("job_tenant") != tenant_id)).then(None)
        .when(pl.col("rcpt").is_null()).then(pl.lit("no_recipient"))
        .when(pl.col("occurred_at").is_null()).then(pl.lit("bad_time"))
        .otherwise(None)
    )
    parsed = parsed.with_columns(reason=reason)
    counts["ignored"] += parsed.filter(pl.col("kind").is_in(IGNORED_TYPES)).height
    other = pl.col("job_tenant").is_not_null() & (pl.col("job_tenant") != tenant_id)
    counts["other_tenants"] += parsed.filter(other & pl.col("kind").is_in(list(RECORD_EVENTS))).height

    kept = [(o, raws[i], why) for i, o, why in parsed.filter(pl.col("reason").is_not_null())
            .select("row", "byte_offset", "reason").iter_rows()]
    usable = parsed.filter(pl.col("reason").is_null() & pl.col("kind").is_in(list(RECORD_EVENTS)) & ~other)
    if usable.height == 0:
        return _empty_events(), kept

    keys = address_keys(usable["rcpt"])
    classes = _bounce_classes(usable)
    usable = usable.with_columns(email=keys, bounce_class=classes)
    raw_list = [raws[i] for i in usable["row"].to_list()]
    digests = pl.Series([line_digest(r) for r in raw_list], dtype=pl.String)
    lines = pl.Series(raw_list, dtype=pl.Binary)
    token = pl.col("token")
    events = usable.select(
        event_type=pl.col("kind").replace_strict(RECORD_EVENTS, return_dtype=pl.String),
        origin=pl.lit("powermta"),
        occurred_at=pl.col("occurred_at"),
        dedupe_key=digests,
        bounce_class=pl.col("bounce_class"),
        token=pl.when(token.str.len_chars() <= MAX_TOKEN_CHARS).then(token).otherwise(None),
        campaign=pl.when(pl.col("job_tenant") == tenant_id).then(pl.col("job_campaign")).otherwise(None),
        email=pl.col("email"),
        detail=_detail(),
        url=pl.lit(None, dtype=pl.String),
        has_job=pl.col("job_tenant") == tenant_id,
        byte_offset=pl.col("byte_offset"),
        raw_line=lines,
    ).with_columns(pl.col("has_job").fill_null(False))
    return events, kept


def address_keys(rcpt: pl.Series) -> pl.Series:
    """The ledger's address key of each recipient (``check_addresses``' ``email_key`` after trimming and NFC);
    an address that is no valid address keeps its lower-cased text, so an unmatched line still says who."""
    text = rcpt.str.strip_chars().str.strip_chars("<>").str.normalize("NFC")
    checked = check_addresses(text)
    return checked["email_key"].fill_null(text.str.to_lowercase()).alias("email")


def _bounce_classes(frame: pl.DataFrame) -> pl.Series:
    """:func:`bounce_class` of each bounce, computed once per distinct (bounceCat, dsnStatus)."""
    is_bounce = frame["kind"].is_in(["b", "rb"])
    pairs = frame.filter(is_bounce).select("bounce_cat", "dsn_status").unique()
    table = pairs.with_columns(
        cls=pl.Series([bounce_class(c, s) for c, s in pairs.iter_rows()], dtype=pl.String)
    )
    joined = frame.select("bounce_cat", "dsn_status", "kind").with_row_index("i").join(
        table, on=["bounce_cat", "dsn_status"], how="left", nulls_equal=True
    ).sort("i")
    return joined.select(pl.when(pl.col("kind").is_in(["b", "rb"])).then(pl.col("cls")).otherwise(None)).to_series()


def _detail() -> pl.Expr:
    """What a person reading the event wants: the record type, the bounce category and DSN, the complaint format."""
    return pl.concat_str(
        [
            pl.col("kind"),
            pl.col("bounce_cat"),
            pl.col("dsn_status"),
            pl.col("dsn_diag"),
            pl.when(pl.col("feedback") != "").then(pl.col("feedback")).otherwise(None),
            pl.when(pl.col("job").is_not_null()).then(pl.lit("job=") + pl.col("job")).otherwise(None),
        ],
        separator=" ", ignore_nulls=True,
    ).str.slice(0, MAX_DETAIL_CHARS)


def event_columns(events: pl.DataFrame) -> pl.DataFrame:
    """The events as :func:`email_engine_assets.feedback.store.record_events` takes them."""
    return events.select(list(EVENT_FRAME_SCHEMA))
