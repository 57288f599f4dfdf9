"""PowerMTA accounting lines -> delivery events: the parsing and mapping rules, no I/O.

An accounting file (REFERENCE.md, "PowerMTA") is RFC 4180 CSV in UTF-8 with one header line
first; a file that mixes record types carries the union of their columns, so columns are read by
header NAME (case-insensitive), never by position. A name may come twice (published production
headers list ``rcvSourceIp`` twice): the first non-empty value wins. Only a header without a
``type`` column refuses a file. Times are PowerMTA's ``2026-11-29 12:00:00+0100``, ISO 8601 forms
or Unix seconds (``timeQueued`` stands in when ``timeLogged`` is absent or empty). Files grow while PowerMTA writes them: the
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
  and its raw text. A line wider or narrower than the header is ``malformed``: its fields would
  land in the wrong columns.
* The dedupe key is a digest of the raw line: a line applied twice, even from a rotated copy of
  the file under another name, counts once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl

from email_engine_assets.feedback.events import (
    CLASSIFICATION_COLUMNS,
    HARD_BOUNCE_CATEGORIES,
    REPUTATION_BOUNCE_CATEGORIES,
    SOFT_BOUNCE_CATEGORIES,
    event_frame_dtypes,
    with_event_columns,
)
from email_engine_assets.quality.syntax import check_addresses

RECORD_EVENTS: dict[str, str] = {"d": "delivered", "b": "bounced", "rb": "bounced", "t": "deferred", "f": "complained"}
IGNORED_TYPES: tuple[str, ...] = ("tq", "r", "rs")
RECORD_TYPES: tuple[str, ...] = (*RECORD_EVENTS, *IGNORED_TYPES)
KEPT_REASONS: tuple[str, ...] = (
    "unknown_type", "no_recipient", "bad_time", "malformed", "line_too_long", "no_job_not_in_ledger",
)

MAX_LINE_BYTES = 64 * 1024
MAX_KEPT_RAW_CHARS = 4096
MAX_DETAIL_CHARS = 300
MAX_TOKEN_CHARS = 100
DIGEST_BYTES = 20
# Other spellings of a time, tried on the text with a ``T`` made a space and a final ``Z`` made ``+00:00``
# (ISO 8601); a fraction of a second and an offset written ``+0100`` or ``+01:00`` are both taken.
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f")
# Unix seconds ("normally time_t" in older guides): 9 to 11 digits, never a YYYYMMDD date.
EPOCH_SECONDS = r"^\d{9,11}(?:\.\d{1,6})?$"

_EVENT_SCHEMA = {name: dtype for name, dtype in event_frame_dtypes().items() if name not in CLASSIFICATION_COLUMNS}
KEPT_SCHEMA = {"byte_offset": pl.Int64, "line_digest": pl.String, "raw_line": pl.String, "reason": pl.String}


class HeaderError(ValueError):
    """The first line of a file is no accounting header; ``str()`` says what is wrong."""


@dataclass(frozen=True)
class ParsedLines:
    """What a run of complete lines gave: events to record, lines kept with a reason, counts.

    ``events`` has the columns of :data:`email_engine_assets.feedback.events.EVENT_FRAME_SCHEMA`
    but the tracking classification, plus ``has_job`` (bool: the line named a job of this tenant; a line without a job is this
    tenant's only when its token is in the tenant's ledger, which the caller checks), ``byte_offset``
    and ``raw_line`` (for that check's leftovers). ``kept`` has :data:`KEPT_SCHEMA`.
    """

    events: pl.DataFrame
    kept: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def header_columns(header: bytes) -> list[str]:
    """The column names of a header line (without its line ending); :class:`HeaderError` when it has no ``type`` column.

    Nothing else refuses a header: a name may come twice (published production headers list
    ``rcvSourceIp`` twice; the first non-empty value of a repeated name wins, see :func:`_column`),
    and a byte that is not UTF-8 is replaced rather than refused.
    """
    if len(header) > MAX_LINE_BYTES:
        raise HeaderError(f"header line longer than {MAX_LINE_BYTES} bytes")
    text = header.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")
    try:
        names = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise HeaderError(f"header is not a CSV line: {exc}") from None
    if "type" not in (n.strip().lower() for n in names):
        raise HeaderError("header has no 'type' column; is this a PowerMTA accounting file?")
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


def line_digests(raws: list[bytes]) -> list[str]:
    """:func:`line_digest` of each line."""
    blake2b = hashlib.blake2b
    return [blake2b(r, digest_size=DIGEST_BYTES).hexdigest() for r in raws]


def line_digest(raw: bytes) -> str:
    """The dedupe key of a raw accounting line (its line ending left out)."""
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).hexdigest()


# The columns the mapping reads; the others are tokenised by the CSV reader but never built.
USED_COLUMNS = ("type", "timelogged", "timequeued", "rcpt", "envid", "header_x-envid", "jobid", "bouncecat", "dsnstatus", "dsndiag",
                "feedbacktype", "format")
_SENTINEL = b"\x01"


def _fields_fast(columns: list[str], body: bytes, expected: int) -> pl.DataFrame | None:
    """``body`` (``expected`` physical lines, no header, no quoted newline: the sentinel would land
    inside the quoted field) parsed by polars as strings, or ``None`` when it is not ``expected``
    records of exactly the header's width (the caller then goes record by record).

    Only :data:`USED_COLUMNS` are built (named ``c<position>``). polars does not check the width of
    a line when it builds only some columns (nor of a short line ever), so each line gets a sentinel
    field appended (``,\\x01``, a byte the data must not hold) and that field is built too: it is
    the sentinel on every line exactly when every line has the header's width (a short line leaves
    it null, a long line puts one of its own fields there).
    """
    if _SENTINEL in body or not body.endswith(b"\n"):
        return None
    width = len(columns)
    schema = {f"c{i}": pl.String for i in range(width + 1)}
    used = [i for i, c in enumerate(columns) if c.lower() in USED_COLUMNS]
    try:
        frame = pl.read_csv(body.replace(b"\n", b"," + _SENTINEL + b"\n"), has_header=False, schema=schema,
                            columns=[*used, width], encoding="utf8-lossy", truncate_ragged_lines=False)
    except pl.exceptions.PolarsError:
        return None
    if frame.height != expected or frame.width != len(used) + 1:
        return None
    sentinel = frame.get_column(f"c{width}")
    if sentinel.null_count() or not (sentinel == _SENTINEL.decode()).all():
        return None
    return frame.drop(f"c{width}")


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

    ``base_offset`` is the file offset of ``data[0]`` (kept lines say where they were). The common
    case (no blank, CR, NUL or over-long line, no quoted newline, every line of the header's width)
    is parsed in one polars call; anything else goes record by record, and what does not parse is
    kept as ``malformed``.
    """
    counts: dict[str, int] = {"lines": 0, "blank": 0, "ignored": 0, "other_tenants": 0, "kept_with_reason": 0}
    counts.update({f"type_{t}": 0 for t in RECORD_TYPES})
    records = data.split(b"\n")
    if records and records[-1] == b"":
        records.pop()
    if not records:
        return ParsedLines(events=_empty_events(), kept=kept_frame([]), counts=counts)
    lengths = pl.Series(list(map(len, records)), dtype=pl.Int64)
    plain = 0 < lengths.min() and lengths.max() <= MAX_LINE_BYTES and b"\x00" not in data and b"\r" not in data
    if plain:
        # The digests (CPython, one core) are taken while polars parses and maps (Rust, without the
        # GIL); the mapping waits for them only at its end.
        with ThreadPoolExecutor(1) as pool:
            digesting = pool.submit(line_digests, records)
            frame = _fields_fast(columns, data, len(records))
            if frame is not None:
                counts["lines"] = len(records)
                offsets = (lengths + 1).cum_sum() - (lengths + 1) + base_offset
                events, kept = _map(columns, frame, records, offsets, tenant_id, counts, digesting.result)
                counts["kept_with_reason"] = len(kept)
                return ParsedLines(events=events, kept=kept_frame(kept), counts=counts)
    return _parse_records(columns, _records(data), base_offset, tenant_id, counts)


def _parse_records(columns: list[str], records: list[bytes], base_offset: int, tenant_id: str,
                   counts: dict[str, int]) -> ParsedLines:
    """The careful path: record by record (blank, CR, NUL, over-long, quoted newlines, ragged lines)."""
    offsets = list(itertools.accumulate((len(r) + 1 for r in records), initial=base_offset))[:-1]
    kept: list[tuple[int, bytes, str]] = []
    usable_raw: list[bytes] = []
    usable_offsets: list[int] = []
    for raw, offset in zip(records, offsets):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if not raw.strip():
            counts["blank"] += 1
            continue
        if len(raw) > MAX_LINE_BYTES:
            kept.append((offset, raw, "line_too_long"))
            continue
        if b"\x00" in raw:  # no text column can hold it: not an accounting line
            kept.append((offset, raw, "malformed"))
            continue
        usable_raw.append(raw)
        usable_offsets.append(offset)
    counts["lines"] = len(records) - counts["blank"]

    one_line = usable_raw and not any(b"\n" in r for r in usable_raw)
    frame = _fields_fast(columns, b"\n".join(usable_raw) + b"\n", len(usable_raw)) if one_line else None
    if frame is None and usable_raw:
        frame, ok = _fields_slow(columns, usable_raw)
        kept.extend((o, r, "malformed") for o, r, fine in zip(usable_offsets, usable_raw, ok) if not fine)
        usable_raw = [r for r, fine in zip(usable_raw, ok) if fine]
        usable_offsets = [o for o, fine in zip(usable_offsets, ok) if fine]
    events = _empty_events()
    if usable_raw:
        events, more_kept = _map(columns, frame, usable_raw, pl.Series(usable_offsets, dtype=pl.Int64), tenant_id, counts)
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


def _column(columns: list[str], *names: str, trim: bool = True) -> pl.Expr:
    """The first of ``names`` (case-insensitive) the header has; null when absent or empty.

    A name the header repeats gives the first non-empty value among its columns, left to right.
    """
    for name in names:
        positions = [f"c{i}" for i, c in enumerate(columns) if c.lower() == name.lower()]
        if positions:
            values = []
            for position in positions:
                text = pl.col(position)
                if trim:
                    text = text.str.strip_chars()
                values.append(pl.when(text == "").then(None).otherwise(text))
            return values[0] if len(values) == 1 else pl.coalesce(values)
    return pl.lit(None, dtype=pl.String)


def _powermta_time(text: pl.Expr) -> pl.Expr:
    """PowerMTA's ``2026-11-29 12:00:00+0100`` as UTC: the local time parsed, the offset subtracted
    (several times faster than ``%z`` parsing); null when the text has another shape."""
    local = text.str.slice(0, 19).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
    zone = text.str.slice(19)
    minutes = zone.str.slice(1, 2).cast(pl.Int64, strict=False) * 60 + zone.str.slice(3, 2).cast(pl.Int64, strict=False)
    signed = pl.when(zone.str.starts_with("-")).then(-minutes).otherwise(minutes)
    shaped = zone.str.contains(r"^[+-][0-2]\d[0-5]\d$").fill_null(False) & (text.str.len_bytes() == 24)
    return pl.when(shaped).then((local - pl.duration(minutes=signed)).dt.replace_time_zone("UTC"))


def _other_time(text: pl.Expr) -> pl.Expr:
    """Unix seconds (:data:`EPOCH_SECONDS`) or an ISO 8601 / :data:`TIME_FORMATS` spelling, as UTC; null otherwise."""
    seconds = text.str.extract(EPOCH_SECONDS.replace("^", "^(").replace("$", ")$"), 1).cast(pl.Float64, strict=False)
    epoch = (seconds * 1_000_000).round().cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt]", "${1} ").str.replace(r"[Zz]$", "+00:00")
    return pl.coalesce([epoch] + [iso.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in TIME_FORMATS])


def _times(text: pl.Series) -> pl.Series:
    """The UTC time of each time text (null where it does not parse).

    Each distinct text is parsed once: PowerMTA logs to the second, so a chunk holds far fewer
    distinct times than lines, and parsing dominated the mapping. PowerMTA's own spelling first;
    the other spellings are tried only where it did not parse.
    """
    distinct = text.unique().to_frame("time_text").with_columns(occurred_at=_powermta_time(pl.col("time_text")))
    if (distinct["occurred_at"].is_null() & distinct["time_text"].is_not_null()).any():
        distinct = distinct.with_columns(occurred_at=pl.coalesce([pl.col("occurred_at"), _other_time(pl.col("time_text"))]))
    return (text.to_frame("time_text").join(distinct, on="time_text", how="left", nulls_equal=True, maintain_order="left")
            .get_column("occurred_at"))


def _bounce_class_expr(cat: pl.Expr, status: pl.Expr) -> pl.Expr:
    """:func:`email_engine_assets.feedback.events.bounce_class` on columns (the tests hold them equal)."""
    cat = cat.str.strip_chars().str.to_lowercase()
    code = status.str.extract(r"([245]\.\d{1,3}\.\d{1,3})", 1)
    return (
        pl.when(cat.is_in(sorted(HARD_BOUNCE_CATEGORIES))).then(pl.lit("hard"))
        .when(cat.is_in(sorted(SOFT_BOUNCE_CATEGORIES))).then(pl.lit("soft"))
        .when(cat.is_in(sorted(REPUTATION_BOUNCE_CATEGORIES))).then(pl.lit("reputation"))
        .when(code.str.contains(r"^5\.1\.\d+$|^5\.2\.1$").fill_null(False)).then(pl.lit("hard"))
        .when(code.str.starts_with("5.7.").fill_null(False)).then(pl.lit("reputation"))
        .otherwise(pl.lit("soft"))
    )


def _map(columns, frame: pl.DataFrame, raws: list[bytes], offsets: pl.Series, tenant_id: str,
         counts: dict[str, int], all_digests: Callable[[], list[str]] | None = None,
         ) -> tuple[pl.DataFrame, list[tuple[int, bytes, str]]]:
    """The mapping of parsed fields; ``all_digests`` gives the digest of every line of ``raws``
    (taken meanwhile by the caller), else the usable lines are digested here."""
    job = _column(columns, "jobId").str.splitn(".", 2)
    parsed = frame.lazy().select(
        kind=_column(columns, "type").str.to_lowercase(),
        time_text=pl.coalesce([_column(columns, "timeLogged"), _column(columns, "timeQueued")]),
        rcpt=_column(columns, "rcpt"),
        token=pl.coalesce([_column(columns, "envId"), _column(columns, "header_x-envid")]),
        job=_column(columns, "jobId"),
        job_tenant=job.struct.field("field_0"),
        job_campaign=job.struct.field("field_1"),
        bounce_cat=_column(columns, "bounceCat", trim=False),
        dsn_status=_column(columns, "dsnStatus", trim=False),
        dsn_diag=_column(columns, "dsnDiag", trim=False),
        feedback=pl.concat_str([_column(columns, "feedbackType"), _column(columns, "format")], separator=" ",
                               ignore_nulls=True),
        row=pl.int_range(pl.len(), dtype=pl.Int64),
        byte_offset=pl.lit(offsets),
    ).with_columns(
        other=(pl.col("job_tenant") != tenant_id).fill_null(False),
    ).collect()
    parsed = parsed.with_columns(occurred_at=_times(parsed.get_column("time_text")))

    known = pl.col("kind").is_in(RECORD_TYPES).fill_null(False)
    ignored = pl.col("kind").is_in(IGNORED_TYPES).fill_null(False)
    parsed = parsed.with_columns(
        reason=pl.when(~known).then(pl.lit("unknown_type"))
        .when(ignored | pl.col("other")).then(None)
        .when(pl.col("rcpt").is_null()).then(pl.lit("no_recipient"))
        .when(pl.col("occurred_at").is_null()).then(pl.lit("bad_time"))
        .otherwise(None),
        ignored=ignored,
    )
    tally = parsed.group_by("kind", "ignored", "other").len()
    for kind, is_ignored, is_other, n in tally.iter_rows():
        key = f"type_{kind}" if kind in RECORD_TYPES else "type_other"
        counts[key] = counts.get(key, 0) + n
        counts["ignored"] += n if is_ignored else 0
        counts["other_tenants"] += n if is_other and kind in RECORD_EVENTS else 0

    kept = [(o, raws[i], why) for i, o, why in parsed.filter(pl.col("reason").is_not_null())
            .select("row", "byte_offset", "reason").iter_rows()]
    usable = parsed.filter(pl.col("reason").is_null() & ~pl.col("ignored") & ~pl.col("other"))
    if usable.height == 0:
        return _empty_events(), kept

    every = usable.height == len(raws)
    raw_list = raws if every else [raws[i] for i in usable["row"].to_list()]
    if all_digests is None:
        digests = line_digests(raw_list)
    else:
        digests = all_digests()
        if not every:
            digests = [digests[i] for i in usable["row"].to_list()]
    digests = pl.Series(digests, dtype=pl.String)
    # The raw text travels only with lines without a job: the caller may have to keep them.
    no_job = usable["job_tenant"].is_null()
    lines = pl.Series("raw_line", [None] * usable.height, dtype=pl.Binary)
    if no_job.any():
        rows = no_job.arg_true()
        lines = lines.scatter(rows, pl.Series([raw_list[i] for i in rows.to_list()], dtype=pl.Binary))
    token = pl.col("token")
    events = usable.lazy().select(
        event_type=pl.col("kind").replace_strict(RECORD_EVENTS, return_dtype=pl.String),
        origin=pl.lit("powermta"),
        occurred_at=pl.col("occurred_at"),
        dedupe_key=pl.lit(digests),
        bounce_class=pl.when(pl.col("kind").is_in(["b", "rb"])).then(_bounce_class_expr(pl.col("bounce_cat"), pl.col("dsn_status"))),
        token=pl.when(token.str.len_chars() <= MAX_TOKEN_CHARS).then(token),
        campaign=pl.when(~pl.col("other")).then(pl.col("job_campaign")),
        email=pl.lit(address_keys(usable["rcpt"])),
        detail=_detail(),
        url=pl.lit(None, dtype=pl.String),
        has_job=pl.col("job_tenant").is_not_null(),
        byte_offset=pl.col("byte_offset"),
        raw_line=pl.lit(lines),
    ).collect()
    return events, kept


def address_keys(rcpt: pl.Series) -> pl.Series:
    """The ledger's address key of each recipient (``check_addresses``' ``email_key`` after trimming and NFC);
    an address that is no valid address keeps its lower-cased text, so an unmatched line still says who.

    For an ASCII address the key is its lower-cased text whenever it has one, so only the others
    (IDN domains, international local parts) go through ``check_addresses``.
    """
    text = rcpt.str.strip_chars().str.strip_chars("<>")
    lowered = text.str.to_lowercase()
    other = (text.str.len_bytes() != text.str.len_chars()).fill_null(False)
    if not other.any():
        return lowered.alias("email")
    rows = other.arg_true()
    special = text.gather(rows).str.normalize("NFC")
    keys = check_addresses(special)["email_key"].fill_null(special.str.to_lowercase())
    return lowered.scatter(rows, keys).alias("email")


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
    return with_event_columns(events)
