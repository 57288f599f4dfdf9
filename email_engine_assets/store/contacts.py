"""Golden records: merge staged rows into ``contacts`` with one set-based statement per batch.

Survivorship per field: the value from the highest-priority source that has one; ties go to the
newest import (higher file id), then the later line. The winner's provenance is kept in
``field_sources`` so that an incremental merge compares against it and reaches the same result as a
rebuild from every staged row.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..core.normalise import TEXT_FIELDS
from .imports import tenant_lock

_RANK = "priority DESC, file_id DESC, line_no DESC"


def _winner(field: str) -> str:
    return (
        f"(array_agg({field} ORDER BY {_RANK}) FILTER (WHERE {field} IS NOT NULL))[1] AS {field},\n"
        f"(array_agg(jsonb_build_object('source', source_id, 'file_id', file_id, 'line', line_no, 'priority', priority)"
        f" ORDER BY {_RANK}) FILTER (WHERE {field} IS NOT NULL))[1] AS {field}__src"
    )


def _beats(field: str) -> str:
    """SQL: the incoming value of ``field`` wins over the stored one."""
    new, old = f"EXCLUDED.field_sources->'{field}'", f"contacts.field_sources->'{field}'"
    return (
        f"(EXCLUDED.{field} IS NOT NULL AND ({old} IS NULL OR "
        f"(({new}->>'priority')::int, ({new}->>'file_id')::bigint, ({new}->>'line')::bigint) > "
        f"(({old}->>'priority')::int, ({old}->>'file_id')::bigint, ({old}->>'line')::bigint)))"
    )


def _merge_sql(rebuild: bool) -> str:
    file_filter = "" if rebuild else "AND f.merged_at IS NULL"
    winners = ",\n".join(_winner(f) for f in TEXT_FIELDS)
    sources = ", ".join(f"'{f}', a.{f}__src" for f in TEXT_FIELDS)
    if rebuild:
        updates = ",\n".join(f"{f} = EXCLUDED.{f}" for f in TEXT_FIELDS) + """,
            tags = EXCLUDED.tags, sources = EXCLUDED.sources, field_sources = EXCLUDED.field_sources"""
    else:
        updates = ",\n".join(f"{f} = CASE WHEN {_beats(f)} THEN EXCLUDED.{f} ELSE contacts.{f} END" for f in TEXT_FIELDS)
        kept = " || ".join(
            f"CASE WHEN {_beats(f)} THEN jsonb_build_object('{f}', EXCLUDED.field_sources->'{f}') ELSE '{{}}'::jsonb END"
            for f in TEXT_FIELDS
        )
        updates += f""",
            tags = ARRAY(SELECT DISTINCT t FROM unnest(contacts.tags || EXCLUDED.tags) t ORDER BY t),
            sources = ARRAY(SELECT DISTINCT s FROM unnest(contacts.sources || EXCLUDED.sources) s ORDER BY s),
            field_sources = contacts.field_sources || {kept}"""
    return f"""
        WITH batch AS (
            SELECT s.*, f.source_id, f.priority
            FROM staged_rows s JOIN import_files f ON f.file_id = s.file_id
            WHERE f.tenant_id = :t AND s.tenant_id = :t AND f.status = 'imported' {file_filter} AND NOT s.is_duplicate
        ), agg AS (
            SELECT email, {winners},
                   array_agg(DISTINCT source_id ORDER BY source_id) AS sources
            FROM batch GROUP BY email
        ), tag_agg AS (
            SELECT email, array_agg(DISTINCT tag ORDER BY tag) AS tags FROM batch, unnest(tags) AS tag GROUP BY email
        ), upserted AS (
            INSERT INTO contacts AS contacts (tenant_id, email, {", ".join(TEXT_FIELDS)}, tags, sources, field_sources)
            SELECT :t, a.email, {", ".join("a." + f for f in TEXT_FIELDS)}, coalesce(g.tags, '{{}}'), a.sources,
                   jsonb_strip_nulls(jsonb_build_object({sources}))
            FROM agg a LEFT JOIN tag_agg g USING (email)
            ON CONFLICT (tenant_id, email) DO UPDATE SET
            {updates},
            updated_at = now()
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated FROM upserted
    """


def merge_staged(conn: sa.Connection, tenant_id: str, *, rebuild: bool = False) -> dict[str, int]:
    """Merge pending staged rows (or, with ``rebuild``, all of them) into the tenant's contacts.

    Returns ``files``, ``inserted``, ``updated`` and, for a rebuild, ``removed`` (contacts left with no staged row).
    """
    tenant_lock(conn, tenant_id)
    files = conn.execute(
        sa.text(
            "SELECT count(*) FROM import_files WHERE tenant_id = :t AND status = 'imported'"
            + ("" if rebuild else " AND merged_at IS NULL")
        ),
        {"t": tenant_id},
    ).scalar_one()
    result = {"files": int(files), "inserted": 0, "updated": 0, "removed": 0}
    if files == 0 and not rebuild:
        return result
    row = conn.execute(sa.text(_merge_sql(rebuild)), {"t": tenant_id}).one()
    result.update(inserted=int(row.inserted), updated=int(row.updated))
    if rebuild:
        result["removed"] = conn.execute(
            sa.text(
                """DELETE FROM contacts c WHERE c.tenant_id = :t AND NOT EXISTS (
                       SELECT 1 FROM staged_rows s JOIN import_files f ON f.file_id = s.file_id
                       WHERE s.tenant_id = :t AND s.email = c.email AND f.status = 'imported')"""
            ),
            {"t": tenant_id},
        ).rowcount
    conn.execute(
        sa.text("UPDATE import_files SET merged_at = now() WHERE tenant_id = :t AND status = 'imported' AND merged_at IS NULL"),
        {"t": tenant_id},
    )
    return result


def contact_counts(conn: sa.Connection, tenant_id: str) -> int:
    return conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one()


def contacts_without_provenance(conn: sa.Connection, tenant_id: str) -> int:
    return conn.execute(
        sa.text(
            """SELECT count(*) FROM contacts c WHERE c.tenant_id = :t AND NOT EXISTS (
                   SELECT 1 FROM staged_rows s WHERE s.tenant_id = :t AND s.email = c.email AND NOT s.is_duplicate)"""
        ),
        {"t": tenant_id},
    ).scalar_one()


def unbalanced_imports(conn: sa.Connection, tenant_id: str) -> list[dict]:
    """Imported files whose counts do not add up, or disagree with the rows actually stored."""
    rows = conn.execute(
        sa.text(
            """SELECT f.file_id, f.path, f.rows_total, f.new, f.merged, f.duplicates, f.rejected,
                      (SELECT count(*) FROM staged_rows s WHERE s.file_id = f.file_id) AS staged,
                      (SELECT count(*) FROM rejected_rows r WHERE r.file_id = f.file_id) AS rejects_stored
               FROM import_files f WHERE f.tenant_id = :t AND f.status = 'imported'"""
        ),
        {"t": tenant_id},
    )
    bad = []
    for r in rows:
        if (
            r.rows_total != r.new + r.merged + r.duplicates + r.rejected
            or r.staged != r.new + r.merged + r.duplicates
            or r.rejects_stored != r.rejected
        ):
            bad.append(dict(r._mapping))
    return bad
