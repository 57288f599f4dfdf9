"""The import ledger: tenants and sources, one row per file content, staged rows and rejects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import sqlalchemy as sa

from email_engine_assets.contacts.normalise import (
    REASON_ERASED,
    REJECT_COLUMNS,
    STAGED_COLUMNS,
    FirstRows,
    NormalisedChunk,
)
from email_engine_assets.tenancy.config import Workspace
from email_engine_resources.frames import copy_frame

COUNT_COLUMNS = ("rows_total", "new", "merged", "duplicates", "rejected")
FINISH_WORK_MEM = "256MB"


def tenant_lock(conn: sa.Connection, tenant_id: str) -> None:
    """Serialise staging and merging of one tenant (accounting of new vs merged depends on order)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('email_engine:tenant:' || :t))"), {"t": tenant_id})


def register_workspace(conn: sa.Connection, workspace: Workspace) -> None:
    """Upsert tenants and their sources from the validated YAML files.

    Rows that already say the same are left as they are (every import run registers its tenants);
    the sources go in one batch.
    """
    for tenant_id, config in workspace.tenants.items():
        conn.execute(
            sa.text(
                """INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :n, :d)
                   ON CONFLICT (tenant_id) DO UPDATE SET name = EXCLUDED.name, config_sha256 = EXCLUDED.config_sha256,
                       updated_at = now() WHERE tenants.config_sha256 <> EXCLUDED.config_sha256"""
            ),
            {"t": tenant_id, "n": config.name, "d": workspace.digests[tenant_id]},
        )
        sources = [
            {"t": tenant_id, "s": source.id, "p": source.priority, "j": json.dumps(source.model_dump())}
            for source in config.sources
        ]
        if sources:
            conn.execute(
                sa.text(
                    """INSERT INTO data_sources (tenant_id, source_id, priority, settings)
                       VALUES (:t, :s, :p, CAST(:j AS jsonb))
                       ON CONFLICT (tenant_id, source_id) DO UPDATE
                       SET priority = EXCLUDED.priority, settings = EXCLUDED.settings, updated_at = now()
                       WHERE (data_sources.priority, data_sources.settings) IS DISTINCT FROM (EXCLUDED.priority, EXCLUDED.settings)"""
                ),
                sources,
            )


def known_digests(conn: sa.Connection, tenant_id: str, source_ids: list[str]) -> dict[tuple[str, str], str]:
    """{(source_id, content_sha256): status} of the files already in the ledger for these sources of the tenant."""
    rows = conn.execute(
        sa.text("SELECT source_id, content_sha256, status FROM import_files WHERE tenant_id = :t AND source_id = ANY(:s)"),
        {"t": tenant_id, "s": list(source_ids)},
    )
    return {(source_id, digest): status for source_id, digest, status in rows}


# The session importing a file holds this lock (keyed on the ledger row) until it is done with the
# file. A 'processing' row whose lock nobody holds was left by a process that died: its staging
# transaction died with it, and the row may be claimed again.
_FILE_LOCK_OF = "hashtext('email_engine:import_file'), (CAST({file_id} AS bigint) % 2147483648)::int"
_FILE_LOCK = _FILE_LOCK_OF.format(file_id=":f")


@contextmanager
def file_session(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One connection for the import of a run's files: it holds the lock of the file it works on.

    :func:`claim_file` takes a file's lock, :func:`release_file` gives it back once the file is done;
    whatever is still held is released when the session ends. A broken connection is discarded
    instead: the server ends its session, and the locks with it.
    """
    with engine.connect() as conn:
        try:
            yield conn
        finally:
            try:
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
            except sa.exc.SQLAlchemyError:
                conn.invalidate()


def claim_file(
    conn: sa.Connection, *, tenant_id: str, source_id: str, path: str, sha256: str, size: int, priority: int, run_id: str | None
) -> int | None:
    """Claim a file for this session: its ledger row set to 'processing' and its lock held by ``conn``.

    Returns the file id, or None when the content is imported already or a live session is
    importing it. A row left 'failed', or left 'processing' by a session that died, is claimed
    again. Call inside a transaction on a connection from :func:`file_session`.
    """
    key = {"t": tenant_id, "s": source_id, "h": sha256}
    # Content the ledger has never seen (the usual case): one statement inserts the row and takes
    # its lock; a new file id has nothing staged under it.
    new = conn.execute(
        sa.text(
            f"""INSERT INTO import_files (tenant_id, source_id, path, content_sha256, size_bytes, status, priority, run_id)
               VALUES (:t, :s, :p, :h, :z, 'processing', :prio, :run)
               ON CONFLICT (tenant_id, source_id, content_sha256) DO NOTHING
               RETURNING file_id, pg_try_advisory_lock({_FILE_LOCK_OF.format(file_id="file_id")}) AS locked"""
        ),
        {**key, "p": path, "z": size, "prio": priority, "run": run_id},
    ).first()
    if new is not None and new.locked:
        return new.file_id
    # The row lock makes claimers of one content take turns; the file lock tells a live importer from a dead one.
    row = conn.execute(
        sa.text(
            """SELECT file_id, status FROM import_files
               WHERE tenant_id = :t AND source_id = :s AND content_sha256 = :h FOR UPDATE"""
        ),
        key,
    ).one()
    if row.status == "imported":
        return None
    if not conn.execute(sa.text(f"SELECT pg_try_advisory_lock({_FILE_LOCK})"), {"f": row.file_id}).scalar_one():
        return None
    conn.execute(
        sa.text(
            """UPDATE import_files SET status = 'processing', path = :p, size_bytes = :z, priority = :prio, run_id = :run,
                   error = NULL, format = NULL, encoding = NULL, delimiter = NULL,
                   started_at = now(), finished_at = NULL, duration_ms = NULL,
                   rows_total = 0, new = 0, merged = 0, duplicates = 0, rejected = 0
               WHERE file_id = :f"""
        ),
        {"f": row.file_id, "p": path, "z": size, "prio": priority, "run": run_id},
    )
    # Staging and the final status commit together, so a dead attempt staged nothing; delete
    # defensively all the same: a row must never count twice.
    conn.execute(sa.text("DELETE FROM staged_rows WHERE file_id = :f"), {"f": row.file_id})
    conn.execute(sa.text("DELETE FROM rejected_rows WHERE file_id = :f"), {"f": row.file_id})
    return row.file_id


def release_file(conn: sa.Connection, file_id: int) -> None:
    """Give back the lock :func:`claim_file` took, once the file's ledger row is closed (committed)."""
    conn.execute(sa.text(f"SELECT pg_advisory_unlock({_FILE_LOCK})"), {"f": file_id})
    conn.commit()


def stage_chunk(
    conn: sa.Connection, tenant_id: str, file_id: int, chunk: NormalisedChunk, first_rows: FirstRows | None = None
) -> None:
    """COPY one normalised chunk into staged_rows and rejected_rows.

    ``first_rows``: the file's addresses staged so far; its repeats are then flagged as they are
    copied (:class:`FirstRows`) and :func:`finish_file` need not look for them.
    """
    # Tags are stored sorted: the merge then takes a single row's tags as they are. A chunk holds
    # few distinct tag lists: each is sorted once and joined back.
    distinct = chunk.accepted.select(pl.col("tags").unique()).with_columns(sorted_tags=pl.col("tags").list.sort())
    accepted = (
        chunk.accepted.join(distinct, on="tags", how="left", maintain_order="left")
        .with_columns(tenant_id=pl.lit(tenant_id), file_id=pl.lit(file_id, pl.Int64), tags=pl.col("sorted_tags"))
    )
    columns = ["tenant_id", "file_id", *STAGED_COLUMNS]
    if first_rows is not None:
        accepted, columns = first_rows.flag(accepted), [*columns, "is_duplicate"]
    copy_frame(conn, "staged_rows", accepted, columns)
    stage_rejects(conn, tenant_id, file_id, chunk.rejects)


def stage_reader_rejects(conn: sa.Connection, tenant_id: str, file_id: int, rejects: list) -> None:
    """Rows the reader could not parse (``RejectedRow`` objects)."""
    if rejects:
        frame = pl.DataFrame(
            {"line_no": [r.line for r in rejects], "raw_text": [r.raw for r in rejects], "reason": [r.reason for r in rejects]},
            schema={"line_no": pl.Int64, "raw_text": pl.String, "reason": pl.String},
        )
        stage_rejects(conn, tenant_id, file_id, frame)


def stage_rejects(conn: sa.Connection, tenant_id: str, file_id: int, rejects: pl.DataFrame) -> None:
    rejects = rejects.with_columns(
        tenant_id=pl.lit(tenant_id),
        file_id=pl.lit(file_id, pl.Int64),
        # PostgreSQL text cannot hold NUL; keep the rest of the raw text as it was.
        raw_text=pl.col("raw_text").str.replace_all("\x00", "\\x00", literal=True),
    )
    copy_frame(conn, "rejected_rows", rejects, ["tenant_id", "file_id", *REJECT_COLUMNS])


# Files of at most this many staged rows are finished by one statement (:data:`_FINISH_SMALL_FILE`);
# larger ones go through a temporary table the planner has statistics on.
SMALL_FILE_ROWS = 10_000

# Per address of the file: its first line and how many rows carry it. A hash aggregate over the
# file's rows: no sort, and the duplicates are then flagged by a join on the few repeated addresses.
_FILE_ADDRESSES = """
    CREATE TEMPORARY TABLE file_addresses ON COMMIT DROP AS
    SELECT email, min(line_no) AS first_line, count(*) AS n FROM staged_rows WHERE file_id = :f GROUP BY email
"""
_FLAG_DUPLICATES = """
    UPDATE staged_rows s SET is_duplicate = true
    FROM file_addresses a
    WHERE a.n > 1 AND s.file_id = :f AND s.email = a.email AND s.line_no <> a.first_line
"""
# Addresses of the file the tenant already has: in contacts, or staged by another file not merged yet
# (``:pending``, the ids of those files: staged_rows is indexed by file only).
_COUNT_KNOWN = """
    SELECT count(*) FROM (
        SELECT a.email FROM file_addresses a JOIN contacts c ON c.tenant_id = :t AND c.email = a.email
        UNION
        SELECT a.email FROM file_addresses a JOIN staged_rows o ON o.email = a.email WHERE o.file_id = ANY(:pending)
    ) k
"""
# The same, for a file whose repeats were flagged while staging: its first rows are its addresses.
_COUNT_KNOWN_STAGED = """
    SELECT count(*) FROM (
        SELECT s.email FROM staged_rows s JOIN contacts c ON c.tenant_id = :t AND c.email = s.email
        WHERE s.file_id = :f AND NOT s.is_duplicate
        UNION
        SELECT s.email FROM staged_rows s JOIN staged_rows o ON o.email = s.email
        WHERE s.file_id = :f AND NOT s.is_duplicate AND o.file_id = ANY(:pending)
    ) k
"""
_HAS_CONTACTS = "SELECT EXISTS (SELECT 1 FROM contacts WHERE tenant_id = :t)"
_COUNT_STAGED = """
    SELECT count(*) FILTER (WHERE is_duplicate) AS duplicates, count(*) FILTER (WHERE NOT is_duplicate) AS addresses
    FROM staged_rows WHERE file_id = :f
"""
_PENDING_FILES = """
    SELECT file_id FROM import_files
    WHERE tenant_id = :t AND status = 'imported' AND merged_at IS NULL AND file_id <> :f
"""
_CLOSE_IMPORTED = """
    UPDATE import_files SET status = 'imported', format = :fmt, encoding = :enc, delimiter = :dl,
        rows_total = :rows_total, new = :new, merged = :merged, duplicates = :duplicates, rejected = :rejected,
        finished_at = clock_timestamp(),
        duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint
    WHERE file_id = :f
"""
# The same rules as the statements above, in one round trip: a data-modifying WITH runs to completion
# once, and every part reads the snapshot taken after the file's rows were staged.
_FINISH_SMALL_FILE = """
    WITH addresses AS MATERIALIZED (
        SELECT email, min(line_no) AS first_line, count(*) AS n FROM staged_rows WHERE file_id = :f GROUP BY email
    ), flagged AS (
        UPDATE staged_rows s SET is_duplicate = true
        FROM addresses a
        WHERE a.n > 1 AND s.file_id = :f AND s.email = a.email AND s.line_no <> a.first_line
        RETURNING 1
    ), known AS (
        SELECT a.email FROM addresses a JOIN contacts c ON c.tenant_id = :t AND c.email = a.email
        UNION
        SELECT a.email FROM addresses a JOIN staged_rows o ON o.email = a.email
        WHERE o.file_id = ANY (ARRAY(""" + _PENDING_FILES + """))
    ), counts AS (
        SELECT (SELECT count(*) FROM flagged) AS duplicates,
               (SELECT count(*) FROM known) AS merged,
               (SELECT count(*) FROM addresses) - (SELECT count(*) FROM known) AS new,
               (SELECT count(*) FROM rejected_rows WHERE tenant_id = :t AND file_id = :f) AS rejected
    )
    UPDATE import_files f SET status = 'imported', format = :fmt, encoding = :enc, delimiter = :dl,
        rows_total = c.new + c.merged + c.duplicates + c.rejected,
        new = c.new, merged = c.merged, duplicates = c.duplicates, rejected = c.rejected,
        finished_at = clock_timestamp(),
        duration_ms = (extract(epoch FROM clock_timestamp() - f.started_at) * 1000)::bigint
    FROM counts c
    WHERE f.file_id = :f
    RETURNING f.rows_total, f.new, f.merged, f.duplicates, f.rejected
"""


# Erased addresses (sql/017_erasure.sql): a staged row whose key hashes, with the tenant's salt, to an
# erased one becomes a rejected row 'erased' that keeps no raw text. Only tenants that erased
# someone run it (:data:`_HAS_ERASURES`, one index probe, is all the others pay). Each row is hashed
# once and probed in the primary key of erased_addresses: OFFSET 0 keeps the EXISTS a per-row probe
# (pulled up into a join, the planner, blind to the size of a file being staged, may hash every
# (row, erased address) pair).
_HAS_ERASURES = "SELECT EXISTS (SELECT 1 FROM erased_addresses WHERE tenant_id = :t)"
_REJECT_ERASED = f"""
    WITH erased AS (
        DELETE FROM staged_rows s
        WHERE s.file_id = :f AND EXISTS (
            SELECT 1 FROM erased_addresses e
            WHERE e.tenant_id = :t
              AND e.email_hash = sha256((SELECT salt FROM erasure_salts WHERE tenant_id = :t) || convert_to(s.email, 'UTF8'))
            OFFSET 0)
        RETURNING s.line_no
    )
    INSERT INTO rejected_rows (tenant_id, file_id, line_no, raw_text, reason)
    SELECT :t, :f, line_no, '', '{REASON_ERASED}' FROM erased
"""


def reject_erased(conn: sa.Connection, tenant_id: str, file_id: int) -> int:
    """Turn the file's staged rows of erased addresses into rejected rows 'erased'; returns how many."""
    if not conn.execute(sa.text(_HAS_ERASURES), {"t": tenant_id}).scalar_one():
        return 0
    # The per-row probes make the estimate large enough for JIT, whose compilation costs more than the probes.
    jit = conn.execute(sa.text("SELECT current_setting('jit'), set_config('jit', 'off', true)")).scalar_one()
    rejected = conn.execute(sa.text(_REJECT_ERASED), {"t": tenant_id, "f": file_id}).rowcount
    conn.execute(sa.text("SELECT set_config('jit', :j, true)"), {"j": jit})
    return rejected


def finish_file(
    conn: sa.Connection, tenant_id: str, file_id: int, *, fmt: str, encoding: str, delimiter: str | None,
    staged: int | None = None, first_rows: FirstRows | None = None,
) -> dict[str, int]:
    """Flag in-file duplicates, count new vs merged addresses, close the ledger row; returns the counts.

    The first row of an address in the file is kept, later ones are duplicates. ``new`` = the
    tenant never saw the address (not in contacts, not staged by an earlier file still waiting to
    be merged); ``merged`` = it did. Rows of erased addresses are rejected first
    (:func:`reject_erased`). ``staged``: the rows staged for the file, when the caller knows; up to
    :data:`SMALL_FILE_ROWS` one statement does it all. ``first_rows``: the :class:`FirstRows`
    every chunk of the file was staged with (its repeats are flagged already; ``staged`` is then
    required). Called under :func:`tenant_lock`.
    """
    params = {"t": tenant_id, "f": file_id, "fmt": fmt, "enc": encoding, "dl": delimiter}
    erased = reject_erased(conn, tenant_id, file_id)
    staged = None if staged is None else staged - erased
    if staged is not None and staged <= SMALL_FILE_ROWS:
        row = conn.execute(sa.text(_FINISH_SMALL_FILE), params).one()
        return {k: int(getattr(row, k)) for k in COUNT_COLUMNS}
    # Hash joins over the file's rows: statistics taken while staged_rows held few live rows (after
    # a killed import, say) must not turn the joins into one index probe per address.
    conn.execute(sa.text(f"SELECT set_config('work_mem', '{FINISH_WORK_MEM}', true), set_config('enable_nestloop', 'off', true)"))
    if first_rows is not None and staged is not None:
        return _finish_flagged(conn, params, staged, first_rows.duplicates, erased)
    addresses = conn.execute(sa.text(_FILE_ADDRESSES), {"f": file_id}).rowcount
    conn.execute(sa.text("ANALYZE file_addresses"))
    counts = {"duplicates": conn.execute(sa.text(_FLAG_DUPLICATES), {"f": file_id}).rowcount}
    pending = list(conn.execute(sa.text(_PENDING_FILES), {"t": tenant_id, "f": file_id}).scalars())
    counts["merged"] = conn.execute(sa.text(_COUNT_KNOWN), {"t": tenant_id, "pending": pending}).scalar_one()
    counts["new"] = addresses - counts["merged"]
    conn.execute(sa.text("DROP TABLE file_addresses"))
    counts["rejected"] = conn.execute(
        sa.text("SELECT count(*) FROM rejected_rows WHERE tenant_id = :t AND file_id = :f"), {"t": tenant_id, "f": file_id}
    ).scalar_one()
    counts["rows_total"] = counts["new"] + counts["merged"] + counts["duplicates"] + counts["rejected"]
    conn.execute(sa.text(_CLOSE_IMPORTED), {**params, **counts})
    return {k: int(counts[k]) for k in COUNT_COLUMNS}


def _finish_flagged(conn: sa.Connection, params: dict, staged: int, duplicates: int, erased: int) -> dict[str, int]:
    """:func:`finish_file` for a file whose repeats were flagged while staging: no pass to find them.

    Its addresses are its first rows; only those of a tenant that has contacts or files waiting to
    be merged are looked up. Rows of erased addresses left staged_rows: the rest is counted again.
    """
    tenant_id, file_id = params["t"], params["f"]
    if erased:
        row = conn.execute(sa.text(_COUNT_STAGED), {"f": file_id}).one()
        duplicates, addresses = row.duplicates, row.addresses
    else:
        addresses = staged - duplicates
    counts = {"duplicates": duplicates, "merged": 0}
    pending = list(conn.execute(sa.text(_PENDING_FILES), {"t": tenant_id, "f": file_id}).scalars())
    if pending or conn.execute(sa.text(_HAS_CONTACTS), {"t": tenant_id}).scalar_one():
        counts["merged"] = conn.execute(sa.text(_COUNT_KNOWN_STAGED), {"t": tenant_id, "f": file_id, "pending": pending}).scalar_one()
    counts["new"] = addresses - counts["merged"]
    counts["rejected"] = conn.execute(
        sa.text("SELECT count(*) FROM rejected_rows WHERE tenant_id = :t AND file_id = :f"), {"t": tenant_id, "f": file_id}
    ).scalar_one()
    counts["rows_total"] = counts["new"] + counts["merged"] + counts["duplicates"] + counts["rejected"]
    conn.execute(sa.text(_CLOSE_IMPORTED), {**params, **counts})
    return {k: int(counts[k]) for k in COUNT_COLUMNS}


# The tables a file's import reads. Their statistics are stale once the table grew by 10 % (and 8
# pages) since the planner last learnt its size, or once as many rows changed as autovacuum waits
# for (50 + 10 %). The size test needs no statistics collector: the change counts reach it late.
_IMPORT_TABLES = ("staged_rows", "rejected_rows", "import_files", "contacts")
_STALE_STATISTICS = """
    SELECT c.relname FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.oid = ANY (CAST(:tables AS regclass[]))
      AND (pg_relation_size(c.oid) / current_setting('block_size')::int > 1.1 * c.relpages + 8
           OR s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0))
    ORDER BY c.relname
"""
UPKEEP_LOCK_TIMEOUT = "200ms"


def keep_staging_searchable(conn: sa.Connection) -> list[str]:
    """Keep a file's queries bounded by its own rows, whether autovacuum runs or not; returns the tables analyzed.

    ``staged_rows`` is found by file through a BRIN index: a block range nobody summarized is read
    whole by every query, and autovacuum is what summarizes new ranges. And a table never analyzed
    has no statistics, so the planner reads it whole rather than trust the index. Here the new
    ranges are summarized (a range summarized once stays so as rows are added to it) and the
    tables the importer queries are analyzed when they changed as much as autovacuum waits for.
    Each step is skipped when another session holds the table for the same work (it is only an
    optimisation); call outside a transaction. Requires ownership of the tables, as migrations have.
    """
    analyzed: list[str] = []
    try:
        with conn.begin():
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{UPKEEP_LOCK_TIMEOUT}'"))
            stale = list(conn.execute(sa.text(_STALE_STATISTICS), {"tables": list(_IMPORT_TABLES)}).scalars())
            conn.execute(sa.text("SELECT brin_summarize_new_values(CAST('staged_rows_file' AS regclass))"))
            if stale:
                conn.execute(sa.text(f"ANALYZE {', '.join(stale)}"))  # names from the fixed list above
                analyzed = stale
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        conn.rollback()  # a lock not granted in time (or privileges): the next upkeep tries again
        return []
    return analyzed


def fail_file(conn: sa.Connection, file_id: int, error: str, *, fmt: str | None = None, encoding: str | None = None) -> None:
    """Close a claimed ledger row as failed (never one that has been imported)."""
    conn.execute(
        sa.text(
            """UPDATE import_files SET status = 'failed', error = :e, format = :fmt, encoding = :enc,
                   finished_at = clock_timestamp(),
                   duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint
               WHERE file_id = :f AND status = 'processing'"""
        ),
        {"f": file_id, "e": error[:4000], "fmt": fmt, "enc": encoding},
    )


def ledger(conn: sa.Connection, tenant_id: str, source_id: str | None = None) -> list[dict]:
    rows = conn.execute(
        sa.text(
            """SELECT file_id, tenant_id, source_id, path, status, format, encoding, rows_total, new, merged,
                      duplicates, rejected, error, merged_at IS NOT NULL AS merged_into_contacts
               FROM import_files WHERE tenant_id = :t AND (CAST(:s AS text) IS NULL OR source_id = :s)
               ORDER BY file_id"""
        ),
        {"t": tenant_id, "s": source_id},
    )
    return [dict(r._mapping) for r in rows]


def rejected_rows(conn: sa.Connection, tenant_id: str, source_id: str | None = None, limit: int = 100) -> list[dict]:
    rows = conn.execute(
        sa.text(
            """SELECT f.source_id, f.path, r.line_no, r.reason, r.raw_text
               FROM rejected_rows r JOIN import_files f ON f.file_id = r.file_id
               WHERE r.tenant_id = :t AND (CAST(:s AS text) IS NULL OR f.source_id = :s)
               ORDER BY r.file_id, r.line_no LIMIT :n"""
        ),
        {"t": tenant_id, "s": source_id, "n": limit},
    )
    return [dict(r._mapping) for r in rows]


def file_outcome(conn: sa.Connection, tenant_id: str, source_id: str, sha256: str) -> dict | None:
    """The ledger row of one content of (tenant, source): status, counts and error; None when unknown."""
    row = conn.execute(
        sa.text(
            """SELECT path, status, rows_total, new, merged, duplicates, rejected, error FROM import_files
               WHERE tenant_id = :t AND source_id = :s AND content_sha256 = :h"""
        ),
        {"t": tenant_id, "s": source_id, "h": sha256},
    ).first()
    return dict(row._mapping) if row else None


def imported_contents(conn: sa.Connection, wanted: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """The (tenant, source, sha256) of ``wanted`` that the ledger holds as imported (one indexed query)."""
    if not wanted:
        return set()
    tenants, sources, digests = (list(column) for column in zip(*wanted))
    rows = conn.execute(
        sa.text(
            """SELECT f.tenant_id, f.source_id, f.content_sha256 FROM import_files f
               JOIN unnest(CAST(:ts AS text[]), CAST(:ss AS text[]), CAST(:hs AS text[])) AS w(t, s, h)
                 ON f.tenant_id = w.t AND f.source_id = w.s AND f.content_sha256 = w.h
               WHERE f.status = 'imported'"""
        ),
        {"ts": tenants, "ss": sources, "hs": digests},
    )
    return {tuple(r) for r in rows}


def abandoned_files(conn: sa.Connection, limit: int = 100) -> list[dict]:
    """Ledger rows left 'processing' by an importer that died: no live session holds their file lock.

    Each candidate's lock is tried and released at once; a live importer holds it for as long as it
    works on the file, so a row whose lock is free has nobody working on it.
    """
    rows = conn.execute(
        sa.text(
            """SELECT file_id, tenant_id, source_id, content_sha256, extract(epoch FROM started_at)::bigint AS started
               FROM import_files WHERE status = 'processing' ORDER BY file_id LIMIT :n"""
        ),
        {"n": limit},
    ).all()
    abandoned = []
    for row in rows:
        if conn.execute(sa.text(f"SELECT pg_try_advisory_lock({_FILE_LOCK})"), {"f": row.file_id}).scalar_one():
            conn.execute(sa.text(f"SELECT pg_advisory_unlock({_FILE_LOCK})"), {"f": row.file_id})
            abandoned.append(dict(row._mapping))
    return abandoned


def source_summaries(conn: sa.Connection, tenant_ids: list[str]) -> list[dict]:
    """Per (tenant, source): files imported and failed, summed counts, and the tenant's contacts."""
    rows = conn.execute(
        sa.text(
            """SELECT s.tenant_id, s.source_id,
                      count(f.file_id) FILTER (WHERE f.status = 'imported') AS files,
                      count(f.file_id) FILTER (WHERE f.status = 'failed') AS failed,
                      coalesce(sum(f.rows_total), 0)::bigint AS rows, coalesce(sum(f.new), 0)::bigint AS new,
                      coalesce(sum(f.merged), 0)::bigint AS merged, coalesce(sum(f.duplicates), 0)::bigint AS duplicates,
                      coalesce(sum(f.rejected), 0)::bigint AS rejected,
                      (SELECT count(*) FROM contacts c WHERE c.tenant_id = s.tenant_id) AS contacts
               FROM data_sources s LEFT JOIN import_files f ON f.tenant_id = s.tenant_id AND f.source_id = s.source_id
               WHERE s.tenant_id = ANY(:ts)
               GROUP BY s.tenant_id, s.source_id ORDER BY s.tenant_id, s.source_id"""
        ),
        {"ts": tenant_ids},
    )
    return [dict(r._mapping) for r in rows]
