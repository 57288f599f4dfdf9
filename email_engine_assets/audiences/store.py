"""Tag assignments: import tags, rule tags and manual tags, and the one writer of ``contacts.tags``."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from email_engine_assets.quality.store import ContactRange
from email_engine_resources.frames import copy_frame, read_frame

ASSIGNMENT_SCHEMA = {"contact_id": pl.Int64, "tag": pl.String, "provenance": pl.String}


def stage_import_tags(conn: sa.Connection, tenant_id: str) -> int:
    """Tags carried by imported rows, per contact (provenance ``import:<source>``), into the session table ``import_tags``.

    One set-based join of the tenant's staged rows with its contacts (staged rows are indexed by
    file, not by address), read back range by range with :func:`import_tag_assignments`. The table
    lives until :func:`drop_import_tags` or the end of the session.
    """
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.import_tags")
    count = conn.execute(
        sa.text(
            """CREATE TEMPORARY TABLE import_tags AS
               SELECT DISTINCT c.contact_id, t.tag, 'import:' || f.source_id AS provenance
               FROM staged_rows s
               JOIN import_files f ON f.file_id = s.file_id
               JOIN contacts c ON c.tenant_id = :t AND c.email = s.email
               CROSS JOIN LATERAL unnest(s.tags) AS t(tag)
               WHERE s.file_id = ANY(ARRAY(SELECT file_id FROM import_files WHERE tenant_id = :t AND status = 'imported'))
                     AND NOT s.is_duplicate AND cardinality(s.tags) > 0"""
        ),
        {"t": tenant_id},
    ).rowcount
    conn.exec_driver_sql("CREATE INDEX ON import_tags (contact_id)")
    conn.exec_driver_sql("ANALYZE import_tags")
    return count


def drop_import_tags(conn: sa.Connection) -> None:
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.import_tags")


def import_tag_assignments(conn: sa.Connection, ids: ContactRange) -> pl.DataFrame:
    """The import tags of the contacts in ``ids`` (from :func:`stage_import_tags`)."""
    return read_frame(
        conn,
        "SELECT contact_id, tag, provenance FROM import_tags WHERE contact_id BETWEEN :first AND :last",
        {"first": ids[0], "last": ids[1]},
        ASSIGNMENT_SCHEMA,
    )


def manual_tag_assignments(conn: sa.Connection, tenant_id: str, ids: ContactRange) -> pl.DataFrame:
    return read_frame(
        conn,
        """SELECT contact_id, tag, provenance FROM tag_assignments
           WHERE tenant_id = :t AND contact_id BETWEEN :first AND :last AND provenance = 'manual'""",
        {"t": tenant_id, "first": ids[0], "last": ids[1]},
        ASSIGNMENT_SCHEMA,
    )


def contacts_for_rules(conn: sa.Connection, tenant_id: str, ids: ContactRange) -> pl.DataFrame:
    """One row per contact of the range with the stored fields a tag rule may test (enriched values first).

    ``email_domain`` is not read here: the matcher derives it from ``email`` with the one domain rule.
    """
    return read_frame(
        conn,
        """SELECT c.contact_id, c.email, c.first_name, c.last_name,
                  c.full_name, c.company, coalesce(e.phone_e164, c.phone) AS phone, c.city,
                  coalesce(e.country, c.country) AS country, coalesce(e.language, c.language) AS language,
                  c.category, c.website, c.sources, v.verdict,
                  array_remove(ARRAY[CASE WHEN v.disposable THEN 'disposable' END,
                                     CASE WHEN v.role_account THEN 'role_account' END,
                                     CASE WHEN v.free_mail THEN 'free_mail' END,
                                     CASE WHEN v.typo_suggestion IS NOT NULL THEN 'typo' END], NULL) AS flags
           FROM contacts c
           LEFT JOIN email_validations v ON v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id
           LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
           WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last ORDER BY c.contact_id""",
        {"t": tenant_id, "first": ids[0], "last": ids[1]},
        {"contact_id": pl.Int64, "email": pl.String, "first_name": pl.String,
         "last_name": pl.String, "full_name": pl.String, "company": pl.String, "phone": pl.String, "city": pl.String,
         "country": pl.String, "language": pl.String, "category": pl.String, "website": pl.String,
         "sources": pl.List(pl.String), "verdict": pl.String, "flags": pl.List(pl.String)},
    )


def sync_tag_assignments(conn: sa.Connection, tenant_id: str, desired: pl.DataFrame, ids: ContactRange) -> dict[str, int]:
    """Make the import and rule assignments of the contacts in ``ids`` equal ``desired``; manual ones stay.

    Then rewrite ``contacts.tags`` of the range from the assignments where it differs. Exact per
    range: an assignment of the range that ``desired`` lacks is removed, whatever rule made it.
    Set-based and robust to stale statistics: ``desired`` is copied once in key order and inserted
    with no join against ``tag_assignments`` (whose statistics may still say it is empty: a join
    then picks a nested loop and turns quadratic); each contact's tag list is read through the
    primary key, and only the range's contacts whose list differs are written.
    """
    conn.exec_driver_sql("CREATE TEMP TABLE desired_tags (contact_id bigint, tag text, provenance text) ON COMMIT DROP")
    # In primary-key order: the inserts below walk the index instead of jumping around it.
    copy_frame(conn, "desired_tags", desired.unique().sort("contact_id", "tag", "provenance"), ["contact_id", "tag", "provenance"])
    # Indexed, so the anti-join of the DELETE stays a lookup per row whatever plan stale statistics pick.
    conn.exec_driver_sql("CREATE INDEX ON desired_tags (contact_id, tag, provenance)")
    conn.exec_driver_sql("ANALYZE desired_tags")
    params = {"t": tenant_id, "first": ids[0], "last": ids[1]}
    removed = conn.execute(
        sa.text(
            """DELETE FROM tag_assignments a
               WHERE a.tenant_id = :t AND a.contact_id BETWEEN :first AND :last AND a.provenance <> 'manual'
               AND NOT EXISTS (SELECT 1 FROM desired_tags d WHERE d.contact_id = a.contact_id
                               AND d.tag = a.tag AND d.provenance = a.provenance)"""
        ),
        params,
    ).rowcount
    added = conn.execute(
        sa.text(
            """INSERT INTO tag_assignments (contact_id, tenant_id, tag, provenance)
               SELECT contact_id, :t, tag, provenance FROM desired_tags
               WHERE contact_id BETWEEN :first AND :last
               ON CONFLICT (tenant_id, contact_id, tag, provenance) DO NOTHING"""
        ),
        params,
    ).rowcount
    changed = conn.execute(
        sa.text(
            """UPDATE contacts c SET tags = n.tags, updated_at = now()
               FROM (SELECT r.contact_id,
                            coalesce((SELECT array_agg(DISTINCT a.tag ORDER BY a.tag) FROM tag_assignments a
                                      WHERE a.tenant_id = r.tenant_id AND a.contact_id = r.contact_id), '{}') AS tags
                     FROM contacts r WHERE r.tenant_id = :t AND r.contact_id BETWEEN :first AND :last) n
               WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last AND c.contact_id = n.contact_id
                     AND c.tags IS DISTINCT FROM n.tags"""
        ),
        params,
    ).rowcount
    conn.exec_driver_sql("DROP TABLE desired_tags")
    return {"added": added, "removed": removed, "contacts_retagged": changed}


def top_tags(conn: sa.Connection, tenant_id: str, limit: int = 5) -> list[tuple[str, int]]:
    rows = conn.execute(
        sa.text(
            """SELECT tag, count(DISTINCT contact_id) AS n FROM tag_assignments WHERE tenant_id = :t
               GROUP BY tag ORDER BY n DESC, tag LIMIT :n"""
        ),
        {"t": tenant_id, "n": limit},
    )
    return [(r.tag, r.n) for r in rows]
