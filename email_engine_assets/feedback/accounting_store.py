"""SQL of the accounting files: read positions per (tenant, transport, file), and kept lines."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from email_engine_resources.frames import copy_frame

_KEPT_STAGE = "accounting_kept_stage"


@dataclass(frozen=True)
class FilePosition:
    """Where a file was left: the offset of the end of its last complete line, and its identity then."""

    byte_offset: int
    header: str
    file_size: int
    inode: int | None
    first_line_digest: str


def positions(conn: sa.Connection, tenant_id: str, transport: str) -> dict[str, FilePosition]:
    """Every known file of the tenant's transport, by file name."""
    rows = conn.execute(
        sa.text("""SELECT file_name, byte_offset, header, file_size, inode, first_line_digest
                   FROM accounting_files WHERE tenant_id = :t AND transport = :tr"""),
        {"t": tenant_id, "tr": transport},
    ).all()
    return {r.file_name: FilePosition(r.byte_offset, r.header, r.file_size, r.inode, r.first_line_digest) for r in rows}


def known_sizes(conn: sa.Connection, tenant_id: str) -> dict[tuple[str, str], tuple[int, int | None]]:
    """(transport, file name) -> (size, inode) of the file when it was last read (the sensor compares)."""
    rows = conn.execute(sa.text("SELECT transport, file_name, file_size, inode FROM accounting_files WHERE tenant_id = :t"),
                        {"t": tenant_id}).all()
    return {(r.transport, r.file_name): (r.file_size, r.inode) for r in rows}


def start_file(conn: sa.Connection, tenant_id: str, transport: str, file_name: str, *, header: str, offset: int,
               size: int, inode: int | None, first_line_digest: str, restart: bool) -> None:
    """Record a file seen for the first time, or seen again as another file under the same name
    (``restart``: read again from ``offset``, just after its header)."""
    conn.execute(
        sa.text(
            """INSERT INTO accounting_files (tenant_id, transport, file_name, byte_offset, header, file_size, inode,
                                             first_line_digest)
               VALUES (:t, :tr, :f, :o, :h, :s, :i, :d)
               ON CONFLICT (tenant_id, transport, file_name) DO UPDATE
               SET byte_offset = EXCLUDED.byte_offset, header = EXCLUDED.header, file_size = EXCLUDED.file_size,
                   inode = EXCLUDED.inode, first_line_digest = EXCLUDED.first_line_digest,
                   restarts = accounting_files.restarts + CASE WHEN :restart THEN 1 ELSE 0 END, updated_at = now()"""
        ),
        {"t": tenant_id, "tr": transport, "f": file_name, "o": offset, "h": header, "s": size, "i": inode,
         "d": first_line_digest, "restart": restart},
    )


def advance(conn: sa.Connection, tenant_id: str, transport: str, file_name: str, *, from_offset: int, to_offset: int,
            size: int, counts: dict[str, int]) -> bool:
    """Move the file's offset from ``from_offset`` to ``to_offset`` with the chunk's counts, in the
    caller's transaction (the one that recorded the chunk's events). ``False`` when the offset was
    no longer ``from_offset`` (another run moved it): the caller rolls back."""
    result = conn.execute(
        sa.text(
            """UPDATE accounting_files
               SET byte_offset = :to, file_size = greatest(:size, :to), lines = lines + :lines, events = events + :events,
                   linked = linked + :linked, duplicates = duplicates + :duplicates, ignored = ignored + :ignored,
                   kept = kept + :kept, other_tenants = other_tenants + :other, updated_at = now()
               WHERE tenant_id = :t AND transport = :tr AND file_name = :f AND byte_offset = :from"""
        ),
        {"t": tenant_id, "tr": transport, "f": file_name, "from": from_offset, "to": to_offset, "size": size,
         "lines": counts.get("lines", 0), "events": counts.get("inserted", 0), "linked": counts.get("linked", 0),
         "duplicates": counts.get("duplicates", 0), "ignored": counts.get("ignored", 0),
         "kept": counts.get("kept_with_reason", 0), "other": counts.get("other_tenants", 0)},
    )
    return result.rowcount == 1


def note_size(conn: sa.Connection, tenant_id: str, transport: str, file_name: str, size: int) -> None:
    """The size seen when nothing complete was left to read (a partial last line waits)."""
    conn.execute(sa.text("""UPDATE accounting_files SET file_size = :s, updated_at = now()
                            WHERE tenant_id = :t AND transport = :tr AND file_name = :f"""),
                 {"t": tenant_id, "tr": transport, "f": file_name, "s": size})


def ledger_tokens(conn: sa.Connection, tenant_id: str, tokens: list[str]) -> set[str]:
    """Which of these tokens are ENVIDs of this tenant's ledger rows."""
    if not tokens:
        return set()
    return set(conn.execute(
        sa.text("SELECT token FROM campaign_sends WHERE tenant_id = :t AND token = ANY(:tokens)"),
        {"t": tenant_id, "tokens": tokens},
    ).scalars())


def keep_lines(conn: sa.Connection, tenant_id: str, transport: str, file_name: str, kept: pl.DataFrame) -> int:
    """Store lines kept with a reason (``accounting.KEPT_SCHEMA`` columns); a line already kept is kept once."""
    if kept.height == 0:
        return 0
    conn.execute(sa.text(
        f"""CREATE TEMP TABLE IF NOT EXISTS {_KEPT_STAGE} (byte_offset bigint, line_digest text, raw_line text,
                                                          reason text) ON COMMIT DELETE ROWS"""
    ))
    conn.execute(sa.text(f"TRUNCATE {_KEPT_STAGE}"))
    # NUL cannot be stored in a text column; the raw bytes' digest still names the line.
    copy_frame(conn, _KEPT_STAGE, kept.with_columns(pl.col("raw_line").str.replace_all("\x00", "\\0", literal=True)),
               ["byte_offset", "line_digest", "raw_line", "reason"])
    return conn.execute(
        sa.text(
            f"""INSERT INTO accounting_kept_lines (tenant_id, transport, file_name, byte_offset, line_digest, raw_line, reason)
                SELECT :t, :tr, :f, byte_offset, line_digest, raw_line, reason FROM {_KEPT_STAGE}
                ON CONFLICT (tenant_id, line_digest) DO NOTHING"""
        ),
        {"t": tenant_id, "tr": transport, "f": file_name},
    ).rowcount
