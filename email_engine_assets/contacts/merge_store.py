"""Golden records: merge staged rows into ``contacts`` with set-based statements.

Survivorship per field: the value from the highest-ranked staged row that has one, where the rank
is (source priority, file id, line): the highest-priority source, ties to the newest import, then
the later line.

Provenance is stored sparsely. A contact's *primary* row is its highest-ranked staged row
(``primary_priority``, ``primary_file_id``, ``primary_line_no``); it provides every field it
fills. ``field_sources`` holds only the fields won by another row, as
``{field: {"priority": …, "file_id": …, "line": …}}``; for most contacts (one row, or a first row
that fills everything) it stays empty, which keeps the insert of a large batch close to a plain
``INSERT``. An incremental merge compares against the stored winners and reaches the same columns
as a rebuild from every staged row. :func:`field_sources` expands the provenance per field.

Most addresses of a batch come from one staged row (in-file repeats are already flagged as
duplicates); such a row is the primary row of its contact and goes straight from ``staged_rows`` to
``contacts`` without aggregation. Only addresses found in several files of the batch are
aggregated, in a temporary table. Existing contacts are updated, new ones inserted in email order
(the unique index is then filled sequentially; byte order, which is the order of the ``C.UTF-8``
and ``C`` collations and sorts much faster than a libc collation).

``contacts.tags`` is not written here: its one writer is the tag-assignment sync
(:func:`email_engine_assets.audiences.store.sync_tag_assignments`), which unions import, rule
and manual tags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.contacts.store import tenant_lock

MERGE_WORK_MEM = "256MB"
_RANK = "priority DESC, file_id DESC, line_no DESC"
_COLUMNS = ", ".join(TEXT_FIELDS)
_PRIMARY = ("primary_priority", "primary_file_id", "primary_line_no")


# ---------------------------------------------------------------------------------------------
# Provenance entries: {"priority", "file_id", "line"} of the staged row that won a field


def _entry(priority: str, file_id: str, line: str) -> str:
    return f"jsonb_build_object('priority', {priority}, 'file_id', {file_id}, 'line', {line})"


def _entry_rank(entry: str) -> str:
    return f"(({entry}->>'priority')::int, ({entry}->>'file_id')::bigint, ({entry}->>'line')::bigint)"


def _exceptions(winner: Callable[[str], str], file_id: str, line: str) -> str:
    """``field_sources``: the winning entries (jsonb, per field) that are not the primary row (file_id, line)."""
    pairs = ", ".join(
        f"'{f}', CASE WHEN ({winner(f)}->>'file_id')::bigint = {file_id} AND ({winner(f)}->>'line')::bigint = {line}"
        f" THEN NULL ELSE {winner(f)} END"
        for f in TEXT_FIELDS
    )
    return f"jsonb_strip_nulls(jsonb_build_object({pairs}))"


# ---------------------------------------------------------------------------------------------
# Incoming rows: one per address, from a single staged row or aggregated over several


def _batch_rows() -> str:
    """Non-duplicate staged rows of the batch's files, with their source and priority."""
    return """SELECT s.*, f.source_id, f.priority
              FROM staged_rows s JOIN import_files f ON f.file_id = s.file_id
              WHERE s.file_id = ANY(:files) AND NOT s.is_duplicate"""


def _single_rows(aggregated: bool) -> str:
    """Batch rows whose address has no other row in the batch (every row when nothing was aggregated)."""
    if not aggregated:
        return _batch_rows()
    return f"SELECT b.* FROM ({_batch_rows()}) b WHERE NOT EXISTS (SELECT 1 FROM merge_multi m WHERE m.email = b.email)"


# ``winners`` holds every field's entry (the UPDATE compares them); ``field_sources`` the sparse form.
_AGGREGATE_SQL = f"""
    CREATE TEMPORARY TABLE merge_multi ON COMMIT DROP AS
    SELECT a.*, {_exceptions(lambda f: f"a.winners->'{f}'", "a.primary_file_id", "a.primary_line_no")} AS field_sources
    FROM (
        WITH several AS (
            SELECT email FROM ({_batch_rows()}) b GROUP BY email HAVING count(*) > 1
        ), repeated AS (
            SELECT b.*, {_entry("b.priority", "b.file_id", "b.line_no")} AS p FROM ({_batch_rows()}) b JOIN several USING (email)
        )
        SELECT r.email,
               {", ".join(f"(array_agg(r.{f} ORDER BY {_RANK}) FILTER (WHERE r.{f} IS NOT NULL))[1] AS {f}" for f in TEXT_FIELDS)},
               array_agg(DISTINCT r.source_id ORDER BY r.source_id) AS sources,
               (array_agg(r.priority ORDER BY {_RANK}))[1] AS primary_priority,
               (array_agg(r.file_id ORDER BY {_RANK}))[1] AS primary_file_id,
               (array_agg(r.line_no ORDER BY {_RANK}))[1] AS primary_line_no,
               jsonb_strip_nulls(jsonb_build_object({", ".join(
                   f"'{f}', (array_agg(r.p ORDER BY {_RANK}) FILTER (WHERE r.{f} IS NOT NULL))[1]" for f in TEXT_FIELDS)}))
                   AS winners
        FROM repeated r
        GROUP BY r.email
    ) a
"""


@dataclass(frozen=True)
class _Incoming:
    """How the statements read one kind of incoming row ``x`` (one per address)."""

    source: str  # the rows
    primary: tuple[str, str, str]  # (priority, file id, line) of the incoming primary row
    rank: Callable[[str], str]  # field -> (priority, file id, line) of the incoming value
    entry: Callable[[str], str]  # field -> its provenance entry (jsonb)
    sources: str
    field_sources: str  # sparse, relative to ``primary``


def _singles(aggregated: bool) -> _Incoming:
    row = ("x.priority", "x.file_id", "x.line_no")
    return _Incoming(
        source=_single_rows(aggregated),
        primary=row,
        rank=lambda f: f"({', '.join(row)})",
        entry=lambda f: _entry(*row),
        sources="ARRAY[x.source_id]",
        field_sources="'{}'::jsonb",
    )


_AGGREGATED = _Incoming(
    source="SELECT * FROM merge_multi",
    primary=tuple(f"x.{c}" for c in _PRIMARY),  # type: ignore[arg-type]
    rank=lambda f: _entry_rank(f"x.winners->'{f}'"),
    entry=lambda f: f"x.winners->'{f}'",
    sources="x.sources",
    field_sources="x.field_sources",
)


# ---------------------------------------------------------------------------------------------
# New addresses: INSERT in email order


def _insert(incoming: _Incoming) -> str:
    # OFFSET 0: the rows reach the INSERT in email order, the unique index is filled sequentially.
    return f"""
        INSERT INTO contacts (tenant_id, email, {_COLUMNS}, sources, {", ".join(_PRIMARY)}, field_sources)
        SELECT :t, x.email, {", ".join("x." + f for f in TEXT_FIELDS)}, {incoming.sources},
               {", ".join(incoming.primary)}, {incoming.field_sources}
        FROM (
            SELECT b.* FROM ({incoming.source}) b
            WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = :t AND c.email = b.email)
            ORDER BY b.email COLLATE "C" OFFSET 0
        ) x"""


# ---------------------------------------------------------------------------------------------
# Known addresses: UPDATE field by field (incremental) or overwrite (rebuild)


def _stored_winner(field: str) -> str:
    """The entry that won ``field`` of contact ``k``: its exception, else the primary row when the field is filled."""
    primary = _entry(*(f"k.{c}" for c in _PRIMARY))
    return f"coalesce(k.field_sources->'{field}', CASE WHEN k.{field} IS NOT NULL AND k.primary_file_id IS NOT NULL THEN {primary} END)"


def _merged_rows(incoming: _Incoming) -> str:
    """Each incoming row joined to its contact ``k``, with the merged values computed level by level.

    Per field: ``w_`` the stored winner, ``win_`` whether the incoming value beats it, ``nw_`` the
    new winner; ``np_`` the new primary row (the higher-ranked of the two). OFFSET 0 keeps each
    level a separate row source, so that every expression is evaluated once per row.
    """
    stored = ", ".join(f"{_stored_winner(f)} AS w_{f}" for f in TEXT_FIELDS)
    primary = ", ".join(f"k.{c}" for c in _PRIMARY)
    leads = f"(k.primary_file_id IS NULL OR ({', '.join(incoming.primary)}) > ({primary}))"
    wins = ", ".join(
        f"(x.{f} IS NOT NULL AND (x.w_{f} IS NULL OR {incoming.rank(f)} > {_entry_rank(f'x.w_{f}')})) AS win_{f}"
        for f in TEXT_FIELDS
    )
    new = ", ".join(f"CASE WHEN x.win_{f} THEN {incoming.entry(f)} ELSE x.w_{f} END AS nw_{f}" for f in TEXT_FIELDS)
    new_primary = ", ".join(
        f"CASE WHEN x.leads THEN {p} ELSE x.k_{c} END AS np_{c.removeprefix('primary_')}"
        for p, c in zip(incoming.primary, _PRIMARY)
    )
    return f"""
        SELECT x.*, {new}, {new_primary} FROM (
            SELECT x.*, {wins} FROM (
                SELECT x.*, k.contact_id, {stored}, {leads} AS leads,
                       {", ".join(f"k.{c} AS k_{c}" for c in _PRIMARY)}
                FROM ({incoming.source}) x JOIN contacts k ON k.tenant_id = :t AND k.email = x.email
                OFFSET 0
            ) x OFFSET 0
        ) x OFFSET 0"""


def _update(incoming: _Incoming, rebuild: bool) -> str:
    if rebuild:
        source = f"SELECT x.*, k.contact_id FROM ({incoming.source}) x JOIN contacts k ON k.tenant_id = :t AND k.email = x.email"
        sets = [f"{f} = x.{f}" for f in TEXT_FIELDS]
        sets += [f"{c} = {p}" for c, p in zip(_PRIMARY, incoming.primary)]
        sets += [f"sources = {incoming.sources}", f"field_sources = {incoming.field_sources}"]
    else:
        source = _merged_rows(incoming)
        sets = [f"{f} = CASE WHEN x.win_{f} THEN x.{f} ELSE c.{f} END" for f in TEXT_FIELDS]
        sets += [f"{c} = x.np_{c.removeprefix('primary_')}" for c in _PRIMARY]
        sets += [
            f"sources = ARRAY(SELECT DISTINCT s FROM unnest(c.sources || {incoming.sources}) s ORDER BY s)",
            f"field_sources = {_exceptions(lambda f: f'x.nw_{f}', 'x.np_file_id', 'x.np_line_no')}",
        ]
    return f"""
        UPDATE contacts AS c SET {", ".join(sets)}, updated_at = now()
        FROM ({source}) x
        WHERE c.contact_id = x.contact_id"""


# ---------------------------------------------------------------------------------------------
# Entry points


def _tenant_files(conn: sa.Connection, tenant_id: str, *, pending_only: bool = False, any_status: bool = False) -> list[int]:
    """The tenant's imported files (``pending_only``: not merged yet; ``any_status``: every file).

    Statements on ``staged_rows`` select a tenant's rows by these ids (the table's index is by file).
    """
    where = "" if any_status else " AND status = 'imported'" + (" AND merged_at IS NULL" if pending_only else "")
    return list(
        conn.execute(
            sa.text(f"SELECT file_id FROM import_files WHERE tenant_id = :t{where} ORDER BY file_id"),
            {"t": tenant_id},
        ).scalars()
    )


def _may_know_an_address(conn: sa.Connection, files: list[int]) -> bool:
    """Whether an address of these pending files may already be a contact of the tenant.

    Not when every file counted no ``merged`` address at staging: each file was counted, under the
    tenant lock, against the tenant's contacts and the files then waiting to be merged, and only a
    merge adds contacts, one that takes every file waiting. The UPDATE, a probe of ``contacts`` per
    staged row that finds nothing, is then skipped (a first import of a tenant, a file of new people).
    """
    known = conn.execute(
        sa.text("SELECT coalesce(sum(merged), 0) FROM import_files WHERE file_id = ANY(:files)"), {"files": files}
    ).scalar_one()
    return known > 0


def merge_staged(conn: sa.Connection, tenant_id: str, *, rebuild: bool = False) -> dict[str, int]:
    """Merge pending staged rows (or, with ``rebuild``, all of them) into the tenant's contacts.

    Returns ``files``, ``inserted``, ``updated`` and, for a rebuild, ``removed`` (contacts left with no staged row).
    """
    tenant_lock(conn, tenant_id)
    conn.execute(sa.text(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'"))
    files = _tenant_files(conn, tenant_id, pending_only=not rebuild)
    result = {"files": len(files), "inserted": 0, "updated": 0, "removed": 0}
    if not files and not rebuild:
        return result
    params = {"t": tenant_id, "files": files}
    aggregated = len(files) > 1
    if aggregated:
        conn.execute(sa.text(_AGGREGATE_SQL), params)
        conn.execute(sa.text("ANALYZE merge_multi"))
        result["updated"] += conn.execute(sa.text(_update(_AGGREGATED, rebuild)), params).rowcount
        result["inserted"] += conn.execute(sa.text(_insert(_AGGREGATED)), params).rowcount
    singles = _singles(aggregated)
    if rebuild or _may_know_an_address(conn, files):
        result["updated"] += conn.execute(sa.text(_update(singles, rebuild)), params).rowcount
    result["inserted"] += conn.execute(sa.text(_insert(singles)), params).rowcount
    if aggregated:
        conn.execute(sa.text("DROP TABLE merge_multi"))
    if rebuild:
        result["removed"] = conn.execute(
            sa.text(
                """DELETE FROM contacts c WHERE c.tenant_id = :t AND NOT EXISTS (
                       SELECT 1 FROM staged_rows s WHERE s.file_id = ANY(:files) AND s.email = c.email)"""
            ),
            params,
        ).rowcount
    conn.execute(
        sa.text("UPDATE import_files SET merged_at = now() WHERE file_id = ANY(:files) AND merged_at IS NULL"),
        params,
    )
    return result


def field_sources(conn: sa.Connection, tenant_id: str) -> dict[str, dict[str, dict]]:
    """{email: {field: {"source", "file_id", "line", "priority"}}}: the staged row behind each filled field."""
    winners = ", ".join(
        f"""('{f}', coalesce(c.field_sources->'{f}', CASE WHEN c.{f} IS NOT NULL AND c.primary_file_id IS NOT NULL
                THEN {_entry(*(f"c.{p}" for p in _PRIMARY))} END))"""
        for f in TEXT_FIELDS
    )
    rows = conn.execute(
        sa.text(
            f"""SELECT c.email, w.field, f.source_id, (w.e->>'file_id')::bigint AS file_id,
                       (w.e->>'line')::bigint AS line, (w.e->>'priority')::int AS priority
                FROM contacts c CROSS JOIN LATERAL (VALUES {winners}) AS w(field, e)
                JOIN import_files f ON f.file_id = (w.e->>'file_id')::bigint
                WHERE c.tenant_id = :t"""
        ),
        {"t": tenant_id},
    )
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r.email, {})[r.field] = {"source": r.source_id, "file_id": r.file_id, "line": r.line, "priority": r.priority}
    return out


def contact_counts(conn: sa.Connection, tenant_id: str) -> int:
    return conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one()


def _whole_tenant_plans(conn: sa.Connection) -> None:
    """Hash joins for a query over all of a tenant's rows: statistics taken before a large merge
    (the tenant then had few contacts) must not turn it into a nested loop over both sides."""
    conn.execute(sa.text(f"SELECT set_config('work_mem', '{MERGE_WORK_MEM}', true), set_config('enable_nestloop', 'off', true)"))


def contacts_without_provenance(conn: sa.Connection, tenant_id: str) -> int:
    _whole_tenant_plans(conn)
    return conn.execute(
        sa.text(
            """SELECT count(*) FROM contacts c WHERE c.tenant_id = :t AND NOT EXISTS (
                   SELECT 1 FROM staged_rows s WHERE s.file_id = ANY(:files) AND s.email = c.email AND NOT s.is_duplicate)"""
        ),
        {"t": tenant_id, "files": _tenant_files(conn, tenant_id, any_status=True)},
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
