"""Import the files of one (tenant, source): read, normalise, stage, account — file by file.

Each file is its own transaction: a file that fails leaves nothing staged and a ledger row that
says why; the other files of the partition still import.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
import sqlalchemy as sa

from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.columns import MissingEmailColumn, map_columns
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    list_source_folder,
    open_regular_file,
    real_source_folder,
)
from email_engine_assets.contacts.normalise import FirstRows, NormalisedChunk, normalise_chunk
from email_engine_assets.contacts.readers import (
    FileFormat,
    FileReadError,
    RejectedRow,
    iter_chunks,
    read_header,
    sniff_format,
)
from email_engine_assets.contacts.sniffing import shown_name
from email_engine_assets.tenancy.config import SourceConfig, TenantConfig

CHUNK_ROWS = 100_000
# A file this small is read in the importing thread: a worker thread would have nothing to overlap.
READ_AHEAD_BYTES = 1 << 20

# A session keeps the staging tables searchable (:func:`ledger.keep_staging_searchable`) when it
# starts a tenant and, before its next file, once it staged this many rows: about one BRIN range
# of staged_rows, so no query of a file reads more than a few ranges it was not meant to.
UPKEEP_ROWS = 2_000

T = TypeVar("T")
_END = object()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular_file(path) as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# import_files.status: claimed and being read, staged with exact counts, or failed with its error.
LEDGER_STATUSES = ("processing", "imported", "failed")


@dataclass
class FileReport:
    path: str
    sha256: str
    status: str  # imported | skipped (already in the ledger) | failed (also: refused, never read)
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    format: str | None = None
    encoding: str | None = None
    seconds: float = 0.0
    # set by import_sources: the (tenant, source) partition of a run over many the file belongs to
    tenant_id: str | None = None
    source_id: str | None = None


def _reader_hints(source: SourceConfig) -> dict:
    kind = {"tsv": "csv"}.get(source.format or "", source.format)
    delimiter = "\t" if source.format == "tsv" else source.delimiter
    return {"kind": kind, "encoding": source.encoding, "delimiter": delimiter}


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items``, producing the next one in a worker thread while the caller uses the current one.

    Reading and normalising a chunk (Python and polars) then overlaps with the database loading
    the previous one. Errors of the producer are raised in the caller; at most two items are alive.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]


def normalised_chunks(
    path: Path, fmt: FileFormat, mapping: dict[str, str], tenant: TenantConfig, source: SourceConfig
) -> Iterator[tuple[NormalisedChunk, list[RejectedRow]]]:
    """The file's chunks, normalised, each with the records the reader rejected."""
    category = source.category or tenant.default_category
    for raw in iter_chunks(path, fmt, chunk_rows=CHUNK_ROWS):
        yield normalise_chunk(raw.frame, mapping, source_tags=source.tags, default_category=category), raw.rejects


def import_file(
    engine: sa.Engine, tenant: TenantConfig, source: SourceConfig, path: Path, *,
    digest: str | None = None, run_id: str | None = None, session: sa.Connection | None = None,
) -> FileReport:
    """Import one file; whatever goes wrong, its ledger row ends 'imported' or 'failed', never 'processing'.

    ``session``: a connection from :func:`ledger.file_session` shared by the files of a run (one is
    opened for this file otherwise). Only a process that dies leaves a row 'processing'; the lock
    its session held dies with it, and the next import of the content claims the row again (see
    :func:`ledger.claim_file`).
    """
    if session is None:
        with ledger.file_session(engine) as conn:
            return import_file(engine, tenant, source, path, digest=digest, run_id=run_id, session=conn)
    conn = session
    started = time.perf_counter()
    digest = digest or file_digest(path)
    report = FileReport(path=str(path), sha256=digest, status="skipped")
    size = path.stat().st_size
    with conn.begin():
        file_id = ledger.claim_file(
            conn, tenant_id=tenant.id, source_id=source.id, path=str(path), sha256=digest,
            size=size, priority=source.priority, run_id=run_id,
        )
    if file_id is None:
        return report  # imported already, or being imported by a live session
    fmt = None
    try:
        fmt = sniff_format(path, **_reader_hints(source))
        header = read_header(path, fmt)
        # An empty file (no header at all) is a valid import of zero rows, not a missing email column.
        mapping = map_columns(header, source.columns) if header else None
        # Rows, rejects and the final status commit together: a crash anywhere leaves nothing staged.
        with conn.begin():
            ledger.tenant_lock(conn, tenant.id)
            chunks = normalised_chunks(path, fmt, mapping, tenant, source) if mapping else ()
            staged, first_rows = 0, FirstRows()
            for chunk, reader_rejects in read_ahead(chunks) if mapping and size > READ_AHEAD_BYTES else chunks:
                ledger.stage_chunk(conn, tenant.id, file_id, chunk, first_rows)
                ledger.stage_reader_rejects(conn, tenant.id, file_id, reader_rejects)
                staged += chunk.accepted.height
            report.counts = ledger.finish_file(
                conn, tenant.id, file_id, fmt=fmt.kind, encoding=fmt.encoding, delimiter=fmt.delimiter,
                staged=staged, first_rows=first_rows,
            )
        report.status = "imported"
    except (FileReadError, MissingEmailColumn, ValueError, UnicodeError, OSError, sa.exc.SQLAlchemyError) as exc:
        report.status, report.error = "failed", _error_text(path, exc)
    except Exception as exc:  # anything else still closes the ledger row; the next files go on
        report.status, report.error = "failed", unexpected_failure(path, exc)
    if report.status == "failed":
        # On a connection of its own: the error may have broken this session's.
        with engine.begin() as other:
            ledger.fail_file(other, file_id, report.error, fmt=fmt and fmt.kind, encoding=fmt and fmt.encoding)
    _release(conn, file_id)
    report.seconds = time.perf_counter() - started
    if fmt is not None:
        report.format, report.encoding = fmt.kind, fmt.encoding
    return report


def _release(conn: sa.Connection, file_id: int) -> None:
    """The file's lock back, so the session can go on with the next file.

    A connection the error broke is replaced: the server ended its session, and the lock with it.
    """
    try:
        conn.rollback()
        ledger.release_file(conn, file_id)
    except sa.exc.SQLAlchemyError:
        conn.invalidate()
        conn.rollback()


def unexpected_failure(path: Path, exc: Exception) -> str:
    """The ledger error for an exception no reader rule anticipated: the file and the kind of failure.

    Never the exception's text, which may quote the file's content; only a codec lookup's own
    message (it names the configured encoding) is kept.
    """
    kind = type(exc).__name__
    if isinstance(exc, RecursionError):
        detail = "values nested too deeply to read"
    elif isinstance(exc, MemoryError):
        detail = "out of memory while reading"
    elif type(exc) is LookupError:
        detail = str(exc)[:200]
    elif isinstance(exc, (sa.exc.DBAPIError, psycopg.Error)):
        kind, detail = type(getattr(exc, "orig", None) or exc).__name__, "database error"
    else:
        detail = "unexpected error while importing"
    return f"{path.name}: {detail} ({kind})"


def _error_text(path: Path, exc: BaseException) -> str:
    """The ledger's error for a failed file: names it, says what is wrong, never echoes content
    (a database error keeps only its first line: its detail may quote row values)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        first_line = (str(exc.orig).strip().splitlines() or [""])[0][:300]
        text = f"database error while staging the file ({type(exc.orig).__name__}): {first_line}"
    elif isinstance(exc, sa.exc.SQLAlchemyError):
        text = f"database error while staging the file ({type(exc).__name__})"
    elif isinstance(exc, RefusedFile):
        text = f"refused, {exc.why}"
    else:
        text = str(exc)
    name = shown_name(path.name)
    return text if name in text else f"{name}: {text}"


def _refused(path: Path, exc: OSError) -> FileReport:
    return FileReport(path=shown_name(str(path)), sha256="", status="failed", error=_error_text(path, exc))


def import_source(engine: sa.Engine, tenant: TenantConfig, source: SourceConfig, folder: Path, *, run_id: str | None = None) -> list[FileReport]:
    """Import every file of the folder whose content is not yet in the ledger (see :func:`import_sources`)."""
    return import_sources(engine, tenant, [(source, folder)], run_id=run_id)


def import_sources(
    engine: sa.Engine, tenant: TenantConfig, sources: list[tuple[SourceConfig, Path]], *, run_id: str | None = None
) -> list[FileReport]:
    """Import every file of the sources' folders whose content is not yet in the ledger.

    One database session serves all the files, each file still claimed, staged and committed on
    its own. Links, special files and a linked folder are never read: each is a failed report saying why.
    """
    reports: list[FileReport] = []
    with ledger.file_session(engine) as session:
        known = ledger.known_digests(session, tenant.id, [source.id for source, _ in sources])
        session.commit()
        upkeep = _Upkeep(session)
        for source, folder in sources:
            first = len(reports)
            reports += _import_folder(engine, tenant, source, folder, known, session, run_id, upkeep)
            for report in reports[first:]:
                report.tenant_id, report.source_id = tenant.id, source.id
    return reports


class _Upkeep:
    """Counts the rows a session staged and keeps the staging tables searchable every :data:`UPKEEP_ROWS`.

    The first upkeep runs before the session's first file: the tables may have grown by other
    sessions' imports since anyone analyzed them.
    """

    def __init__(self, session: sa.Connection) -> None:
        self.session, self.staged = session, UPKEEP_ROWS

    def before_file(self) -> None:
        if self.staged >= UPKEEP_ROWS:
            ledger.keep_staging_searchable(self.session)
            self.staged = 0

    def after_file(self, report: FileReport) -> None:
        self.staged += report.counts.get("rows_total", 0)


def _import_folder(
    engine: sa.Engine, tenant: TenantConfig, source: SourceConfig, folder: Path, known: dict,
    session: sa.Connection, run_id: str | None, upkeep: _Upkeep,
) -> list[FileReport]:
    try:
        folder = real_source_folder(folder)
    except RefusedFile as exc:
        return [_refused(folder, exc)]
    listing = list_source_folder(folder)
    reports = [_refused(path, RefusedFile(path, why)) for path, why in listing.refused]
    for path in listing.files:
        try:
            digest = file_digest(path)
        except OSError as exc:
            reports.append(_refused(path, exc))
            continue
        if known.get((source.id, digest)) == "imported":
            reports.append(FileReport(path=str(path), sha256=digest, status="skipped"))
            continue
        upkeep.before_file()
        reports.append(import_file(engine, tenant, source, path, digest=digest, run_id=run_id, session=session))
        upkeep.after_file(reports[-1])
        known[(source.id, digest)] = reports[-1].status
    return reports
