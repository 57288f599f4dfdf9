"""Golden records: merge staged rows into ``contacts`` with set-based statements.

Survivorship per field: the value from the highest-priority source that has one; ties go to the
newest import (higher file id), then the later line. The winner's provenance is kept in
``field_sources`` so that an incremental merge compares against it and reaches the same result as a
rebuild from every staged row.

Most addresses of a batch come from one staged row (in-file repeats are already flagged as
duplicates), and such a row wins every field it fills: those rows go straight from
``staged_rows`` to ``contacts`` without aggregation. Only addresses found in several files of the
batch are aggregated, in a temporary table. Existing contacts are updated, new ones inserted in
email order (the unique index is then filled sequentially; byte order, which is the order of the
``C.UTF-8`` and ``C`` collations and sorts much faster than a libc collation).

``contacts.tags`` is not written here: its one writer is the tag-assignment sync
(:func:`email_engine_assets.audiences.store.sync_tag_assignments`), which unions import, rule
and manual tags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.contacts.store import tenant_lock

MERGE_WORK_MEM = "256MB"
_RANK = "priority DESC, file_id DESC, line_no DESC"
_COLUMNS = ", ".join(TEXT_FIELDS)


# ---------------------------------------------------------------------------------------------
# Incoming rows: one per address, from a single staged row or aggregated over several


def _provenance(alias: str) -> str:
    """The ``field_sources`` entry of a value taken from staged row ``alias`` (jsonb)."""
    return (
        f"jsonb_build_object('source', {alias}.source_id, 'file_id', {alias}.file_id, "
        f"'line', {alias}.line_no, 'priority', {alias}.priority)"
    )


def _provenance_text(alias: str) -> str:
    """The same entry as JSON text (source ids are slugs: nothing to escape)."""
    return (
        f"""'{{"line":' || {alias}.line_no || ',"source":"' || {alias}.source_id || '","file_id":' || {alias}.file_id"""
        f""" || ',"priority":' || {alias}.priority || '}}'"""
    )


def _batch_rows() -> str:
    """Non-duplicate staged rows of the batch's files, with their source and priority."""
    return """SELECT s.*, f.source_id, f.priority
              FROM staged_rows s JOIN import_files f ON f.file_id = s.file_id
              WHERE s.tenant_id = :t AND s.file_id = ANY(:files) AND NOT s.is_duplicate"""


def _single_rows(aggregated: bool) -> str:
    """Batch rows whose address has no other row in the batch (every row when nothing was aggregated)."""
    if not aggregated:
        return _batch_rows()
    return f"SELECT b.* FROM ({_batch_rows()}) b WHERE NOT EXISTS (SELECT 1 FROM merge_multi m WHERE m.email = b.email)"


def _field_sources(entry: Callable[[str], str]) -> str:
    pairs = ", ".join(f"'{f}', {entry(f)}" for f in TEXT_FIELDS)
    return f"jsonb_strip_nulls(jsonb_build_object({pairs}))"


def _single_field_sources() -> str:
    """field_sources of a contact whose every value comes from row ``x`` (its entry as text in ``x.pt``).

    Written as JSON text and cast once: about a third cheaper than ``jsonb_build_object`` with
    nested objects, which dominates the cost of inserting a large batch.
    """
    entries = ", ".join(f"""CASE WHEN x.{f} IS NOT NULL THEN '"{f}":' || x.pt END""" for f in TEXT_FIELDS)
    return f"('{{' || concat_ws(',', {entries}) || '}}')::jsonb"


_AGGREGATE_SQL = f"""
    CREATE TEMPORARY TABLE merge_multi ON COMMIT DROP AS
    WITH several AS (
        SELECT email FROM ({_batch_rows()}) b GROUP BY email HAVING count(*) > 1
    ), repeated AS (
        SELECT b.*, {_provenance("b")} AS p FROM ({_batch_rows()}) b JOIN several USING (email)
    )
    SELECT r.email,
           {", ".join(f"(array_agg(r.{f} ORDER BY {_RANK}) FILTER (WHERE r.{f} IS NOT NULL))[1] AS {f}" for f in TEXT_FIELDS)},
           array_agg(DISTINCT r.source_id ORDER BY r.source_id) AS sources,
           {_field_sources(lambda f: f"(array_agg(r.p ORDER BY {_RANK}) FILTER (WHERE r.{f} IS NOT NULL))[1]")}
               AS field_sources
    FROM repeated r
    GROUP BY r.email
"""


# ---------------------------------------------------------------------------------------------
# New addresses: INSERT in email order


def _insert(source: str, sources: str, field_sources: str) -> str:
    return f"""
        INSERT INTO contacts (tenant_id, email, {_COLUMNS}, sources, field_sources)
        SELECT :t, x.email, {", ".join("x." + f for f in TEXT_FIELDS)}, {sources}, {field_sources}
        FROM ({source}) x"""


def _insert_singles(aggregated: bool) -> str:
    # OFFSET 0 keeps each level a separate row source: the provenance is built once per row,
    # after the sort, and the rows reach the INSERT in email order.
    source = f"""
        SELECT y.*, {_provenance_text("y")} AS pt FROM (
            SELECT b.* FROM ({_single_rows(aggregated)}) b
            WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = :t AND c.email = b.email)
            ORDER BY b.email COLLATE "C" OFFSET 0
        ) y OFFSET 0"""
    return _insert(source, "ARRAY[x.source_id]", _single_field_sources())


_INSERT_AGGREGATED = _insert(
    """SELECT m.* FROM merge_multi m
       WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = :t AND c.email = m.email)
       ORDER BY m.email COLLATE "C"
    """,
    "x.sources", "x.field_sources",
)


# ---------------------------------------------------------------------------------------------
# Known addresses: UPDATE field by field (incremental) or overwrite (rebuild)


def _beats(field: str, new_rank: Sequence[str]) -> str:
    """SQL: the incoming value of ``field`` wins over the stored one (``new_rank``: priority, file id, line)."""
    old = f"c.field_sources->'{field}'"
    return (
        f"(x.{field} IS NOT NULL AND ({old} IS NULL OR ({', '.join(new_rank)}) > "
        f"(({old}->>'priority')::int, ({old}->>'file_id')::bigint, ({old}->>'line')::bigint)))"
    )


@dataclass(frozen=True)
class _Incoming:
    """How the UPDATE reads one kind of incoming row ``x``."""

    source: str  # rows joined to the contact they update (column contact_id)
    rank: Callable[[str], Sequence[str]]  # field -> (priority, file id, line) of the incoming value
    entry: Callable[[str], str]  # field -> its field_sources entry
    sources: str
    field_sources: str


def _update(incoming: _Incoming, rebuild: bool) -> str:
    if rebuild:
        sets = [f"{f} = x.{f}" for f in TEXT_FIELDS]
        sets += [f"sources = {incoming.sources}", f"field_sources = {incoming.field_sources}"]
    else:
        wins = {f: _beats(f, incoming.rank(f)) for f in TEXT_FIELDS}
        sets = [f"{f} = CASE WHEN {wins[f]} THEN x.{f} ELSE c.{f} END" for f in TEXT_FIELDS]
        kept = " || ".join(
            f"CASE WHEN {wins[f]} THEN jsonb_build_object('{f}', {incoming.entry(f)}) ELSE '{{}}'::jsonb END"
            for f in TEXT_FIELDS
        )
        sets += [
            f"sources = ARRAY(SELECT DISTINCT s FROM unnest(c.sources || {incoming.sources}) s ORDER BY s)",
            f"field_sources = c.field_sources || {kept}",
        ]
    return f"""
        UPDATE contacts AS c SET {", ".join(sets)}, updated_at = now()
        FROM ({incoming.source}) x
        WHERE c.contact_id = x.contact_id"""


def _update_singles(aggregated: bool, rebuild: bool) -> str:
    source = f"""
        SELECT b.*, k.contact_id, {_provenance_text("b")} AS pt
        FROM ({_single_rows(aggregated)}) b JOIN contacts k ON k.tenant_id = :t AND k.email = b.email
        OFFSET 0"""
    return _update(
        _Incoming(
            source=source,
            rank=lambda f: ("x.priority", "x.file_id", "x.line_no"),
            entry=lambda f: "x.pt::jsonb",
            sources="ARRAY[x.source_id]",
            field_sources=_single_field_sources(),
        ),
        rebuild,
    )


def _aggregated_rank(field: str) -> tuple[str, str, str]:
    src = f"x.field_sources->'{field}'"
    return (f"({src}->>'priority')::int", f"({src}->>'file_id')::bigint", f"({src}->>'line')::bigint")


def _update_aggregated(rebuild: bool) -> str:
    return _update(
        _Incoming(
            source="SELECT m.*, k.contact_id FROM merge_multi m JOIN contacts k ON k.tenant_id = :t AND k.email = m.email",
            rank=_aggregated_rank,
            entry=lambda f: f"x.field_sources->'{f}'",
            sources="x.sources",
            field_sources="x.field_sources",
        ),
        rebuild,
    )


# ---------------------------------------------------------------------------------------------
# Entry points


def _batch_files(conn: sa.Connection, tenant_id: str, rebuild: bool) -> list[int]:
    pending = "" if rebuild else " AND merged_at IS NULL"
    return list(
        conn.execute(
            sa.text(f"SELECT file_id FROM import_files WHERE tenant_id = :t AND status = 'imported'{pending} ORDER BY file_id"),
            {"t": tenant_id},
        ).scalars()
    )


def merge_staged(conn: sa.Connection, tenant_id: str, *, rebuild: bool = False) -> dict[str, int]:
    """Merge pending staged rows (or, with ``rebuild``, all of them) into the tenant's contacts.

    Returns ``files``, ``inserted``, ``updated`` and, for a rebuild, ``removed`` (contacts left with no staged row).
    """
    tenant_lock(conn, tenant_id)
    conn.execute(sa.text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))
    files = _batch_files(conn, tenant_id, rebuild)
    result = {"files": len(files), "inserted": 0, "updated": 0, "removed": 0}
    if not files and not rebuild:
        return result
    params = {"t": tenant_id, "files": files}
    aggregated = len(files) > 1
    if aggregated:
        conn.execute(sa.text(_AGGREGATE_SQL), params)
        conn.execute(sa.text("ANALYZE merge_multi"))
        result["updated"] += conn.execute(sa.text(_update_aggregated(rebuild)), params).rowcount
        result["inserted"] += conn.execute(sa.text(_INSERT_AGGREGATED), params).rowcount
    result["updated"] += conn.execute(sa.text(_update_singles(aggregated, rebuild)), params).rowcount
    result["inserted"] += conn.execute(sa.text(_insert_singles(aggregated)), params).rowcount
    if aggregated:
        conn.execute(sa.text("DROP TABLE merge_multi"))
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
        sa.text("UPDATE import_files SET merged_at = now() WHERE file_id = ANY(:files) AND merged_at IS NULL"),
        params,
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
