"""Tag assignments (import, rule and manual tags; the one writer of ``contacts.tags``) and segment snapshots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
import sqlalchemy as sa

from email_engine_assets.audiences.segment_sql import regex_patterns, where_clause
from email_engine_assets.audiences.segments import Segment
from email_engine_assets.audiences.selection import SOURCE_FIELD
from email_engine_assets.audiences.tag_rules import TagRule
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
                                            AND v.contact_id BETWEEN :first AND :last
           LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
                                             AND e.contact_id BETWEEN :first AND :last
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
    """
    _stage_desired(conn, desired)
    return _apply_desired(conn, tenant_id, ids)


def sync_ruled_tags(
    conn: sa.Connection, tenant_id: str, imported: pl.DataFrame, rules: Sequence[TagRule], ids: ContactRange
) -> dict[str, int]:
    """:func:`sync_tag_assignments` with the rule tags computed here, in PostgreSQL.

    ``imported`` holds the range's import assignments (from :func:`import_tag_assignments`). Each
    rule is one ``INSERT … SELECT`` over the range's rule fields, its conditions translated by
    :func:`~email_engine_assets.audiences.segment_sql.where_clause` (the matcher's semantics, held
    to :func:`~email_engine_assets.audiences.tag_rules.evaluate_tag_rules` by a differential test):
    no contact row travels to Python and back. Rules see the import and manual tags, never other
    rules' tags. Returns the sync's counts plus ``rule:<name>`` -> assignments made by that rule.
    """
    _stage_desired(conn, imported, indexed=False)
    params = {"t": tenant_id, "first": ids[0], "last": ids[1]}
    per_rule: dict[str, int] = {}
    if rules:
        # Only the fields the rules test are computed, and only the tables they come from joined.
        fields = {"sources" if cond.field == SOURCE_FIELD else cond.field
                  for rule in rules for cond in (*rule.all, *rule.any, *rule.exclude)}
        columns = ["c.contact_id", *(f"{e} AS {name}" for name, e in _PROFILE_EXPRESSIONS.items() if name in fields)]
        joins = []
        if fields & {"verdict", "flags"}:
            joins.append("""LEFT JOIN email_validations v ON v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id
                                                           AND v.contact_id BETWEEN :first AND :last""")
        if fields & {"phone", "language", "country"}:
            joins.append("""LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
                                                            AND e.contact_id BETWEEN :first AND :last""")
        if "tags" in fields:
            columns.append("coalesce(b.tags, '{}') AS tags")
            # Unsorted, maybe with repeats: every tag test (containment, overlap, any element) reads it as a set.
            joins.append("""LEFT JOIN (SELECT contact_id, array_agg(tag) AS tags FROM (
                                SELECT contact_id, tag FROM desired_tags
                                UNION ALL
                                SELECT contact_id, tag FROM tag_assignments
                                WHERE tenant_id = :t AND contact_id BETWEEN :first AND :last AND provenance = 'manual'
                            ) base GROUP BY contact_id) b ON b.contact_id = c.contact_id""")
        conn.execute(
            sa.text(
                f"""CREATE TEMP TABLE rule_profiles ON COMMIT DROP AS
                    SELECT {", ".join(columns)} FROM contacts c {" ".join(joins)}
                    WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last"""
            ),
            params,
        )
        for number, rule in enumerate(rules):
            where = where_clause(rule.all, rule.any, rule.exclude, param_prefix=f"r{number}_")
            join = (
                " JOIN contacts c ON c.tenant_id = :t AND c.contact_id = p.contact_id AND c.contact_id BETWEEN :first AND :last"
                if where.needs_contacts else ""
            )
            provenance = f"rule:{rule.name}"
            per_rule[provenance] = conn.execute(
                sa.text(
                    f"""INSERT INTO desired_tags (contact_id, tag, provenance)
                        SELECT p.contact_id, CAST(:rule_tag AS text), CAST(:rule_provenance AS text)
                        FROM rule_profiles p{join} WHERE {where.sql}"""
                ),
                {**params, **where.params, "rule_tag": rule.tag, "rule_provenance": provenance},
            ).rowcount
        conn.exec_driver_sql("DROP TABLE rule_profiles")
    conn.exec_driver_sql("CREATE INDEX ON desired_tags (contact_id, tag, provenance)")
    conn.exec_driver_sql("ANALYZE desired_tags")
    return {**_apply_desired(conn, tenant_id, ids), **per_rule}


def _stage_desired(conn: sa.Connection, desired: pl.DataFrame, *, indexed: bool = True) -> None:
    """``desired`` into the transaction's table ``desired_tags``."""
    conn.exec_driver_sql("CREATE TEMP TABLE desired_tags (contact_id bigint, tag text, provenance text) ON COMMIT DROP")
    copy_frame(conn, "desired_tags", desired.unique(), ["contact_id", "tag", "provenance"])
    if indexed:
        # Indexed, so the anti-join of the DELETE stays a lookup per row whatever plan stale statistics pick.
        conn.exec_driver_sql("CREATE INDEX ON desired_tags (contact_id, tag, provenance)")
        conn.exec_driver_sql("ANALYZE desired_tags")


def _apply_desired(conn: sa.Connection, tenant_id: str, ids: ContactRange) -> dict[str, int]:
    """The range's import and rule assignments made equal to ``desired_tags``, then ``contacts.tags`` rewritten where it differs.

    Set-based and robust to stale statistics (``tag_assignments`` may still be described as empty
    on a first run): every statement bounds ``tag_assignments`` by the range, so whatever join a
    plan picks (a hash of the range, or a primary-key lookup per row) reads the range, never the
    tenant; only the range's contacts whose list differs are written.
    """
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
    # Only the missing rows, found by an anti-join bounded by the range on both sides, and a plain
    # INSERT: ON CONFLICT DO NOTHING inserts each row speculatively (about a third more per row on a
    # first run). No other writer makes import or rule assignments: the caller holds the tenant's
    # tag_assignments lock, and manual tags have their own provenance. In primary-key order: the
    # insert walks the index (and the foreign-key checks the contacts) instead of jumping around.
    added = conn.execute(
        sa.text(
            """INSERT INTO tag_assignments (contact_id, tenant_id, tag, provenance)
               SELECT d.contact_id, :t, d.tag, d.provenance FROM desired_tags d
               WHERE d.contact_id BETWEEN :first AND :last
                     AND NOT EXISTS (SELECT 1 FROM tag_assignments a
                                     WHERE a.tenant_id = :t AND a.contact_id BETWEEN :first AND :last
                                           AND a.contact_id = d.contact_id AND a.tag = d.tag AND a.provenance = d.provenance)
               ORDER BY d.contact_id, d.tag, d.provenance"""
        ),
        params,
    ).rowcount
    # Each contact's sorted tag list in one ordered pass over the range's assignments (the primary
    # key's order), analyzed so that the UPDATE below hashes it whatever the statistics of
    # tag_assignments say; one lookup subquery per contact costs far more at 100k contacts a range.
    conn.execute(
        sa.text(
            """CREATE TEMP TABLE synced_tags ON COMMIT DROP AS
               SELECT contact_id, array_agg(DISTINCT tag ORDER BY tag) AS tags FROM tag_assignments
               WHERE tenant_id = :t AND contact_id BETWEEN :first AND :last GROUP BY contact_id"""
        ),
        params,
    )
    conn.exec_driver_sql("ANALYZE synced_tags")
    changed = conn.execute(
        sa.text(
            """UPDATE contacts c SET tags = coalesce(n.tags, '{}'), updated_at = now()
               FROM contacts r LEFT JOIN synced_tags n ON n.contact_id = r.contact_id
               WHERE r.tenant_id = :t AND r.contact_id BETWEEN :first AND :last
                     AND c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last AND c.contact_id = r.contact_id
                     AND c.tags IS DISTINCT FROM coalesce(n.tags, '{}')"""
        ),
        params,
    ).rowcount
    conn.exec_driver_sql("DROP TABLE synced_tags")
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


# --- segments ----------------------------------------------------------------------------

_PROFILE_COLUMNS = ("email", "email_domain", "verdict", "phone", "language", "country", "category", "tags", "flags", "sources")
# The profile's fields but ``tags``, from ``contacts c``, ``email_validations v`` and ``contact_enrichment e``,
# folded as the matcher folds them: what a segment and a tag rule test.
_PROFILE_EXPRESSIONS = {
    "email": "c.email",
    "email_domain": "selection_fold(email_domain(c.email))",
    "verdict": "selection_fold(v.verdict)",
    "phone": "selection_fold(coalesce(e.phone_e164, c.phone))",
    "language": "selection_fold(coalesce(e.language, c.language))",
    "country": "selection_fold(coalesce(e.country, c.country))",
    "category": "selection_fold(c.category)",
    "flags": """ARRAY_REMOVE(ARRAY[CASE WHEN v.disposable THEN 'disposable' END,
                              CASE WHEN v.role_account THEN 'role_account' END,
                              CASE WHEN v.free_mail THEN 'free_mail' END,
                              CASE WHEN v.typo_suggestion IS NOT NULL THEN 'typo' END], NULL)""",
    "sources": "c.sources",
}
_PROFILE_FIELDS = ", ".join(f"{expression} AS {name}" for name, expression in _PROFILE_EXPRESSIONS.items())


def refresh_segment_profiles(conn: sa.Connection, tenant_id: str) -> int:
    """Bring the tenant's ``segment_profiles`` up to date with contacts, validations, enrichment and tags.

    One set-based upsert; only rows whose folded fields changed are written (erased contacts go with
    their contact). The fields are those :func:`contacts_for_rules` gives the matcher (enriched values
    first), folded by ``selection_fold``; ``contacts.tags`` (tag slugs, written only from the checked
    ``tag_assignments``) and ``contacts.sources`` (source ids, slugs) are folded already and copied
    as they are. Returns the number of rows written.
    """
    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name in _PROFILE_COLUMNS)
    old = ", ".join(f"p.{name}" for name in _PROFILE_COLUMNS)
    new = ", ".join(f"f.{name}" for name in _PROFILE_COLUMNS)
    # The difference is found first, by one join (the profile's primary key serves it whatever the
    # statistics say) in a CREATE TABLE AS, which PostgreSQL may run with parallel workers (an INSERT
    # ... SELECT never is); only changed rows reach the upsert, which locks and writes each row it touches.
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.changed_profiles")
    conn.execute(
        sa.text(
            f"""CREATE TEMPORARY TABLE changed_profiles ON COMMIT DROP AS
                WITH fresh AS (
                    SELECT c.tenant_id, c.contact_id, {_PROFILE_FIELDS}, c.tags AS tags
                    FROM contacts c
                    LEFT JOIN email_validations v ON v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id
                    LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
                    WHERE c.tenant_id = :t)
                SELECT f.* FROM fresh f
                LEFT JOIN segment_profiles p ON p.tenant_id = f.tenant_id AND p.contact_id = f.contact_id
                WHERE p.contact_id IS NULL OR ({old}) IS DISTINCT FROM ({new})"""
        ),
        {"t": tenant_id},
    )
    written = conn.execute(
        sa.text(
            f"""INSERT INTO segment_profiles AS p (tenant_id, contact_id, {', '.join(_PROFILE_COLUMNS)})
                SELECT tenant_id, contact_id, {', '.join(_PROFILE_COLUMNS)} FROM changed_profiles ORDER BY contact_id
                ON CONFLICT (tenant_id, contact_id) DO UPDATE SET {sets}"""
        )
    ).rowcount
    conn.exec_driver_sql("DROP TABLE changed_profiles")
    return written


def select_segment_sql(segment: Segment) -> tuple[str, dict[str, object]]:
    """``SELECT contact_id, email, language, verdict`` of the tenant's profiles the segment selects
    (before suppressions and ``max_contacts``); parameters ``:tenant`` and ``:verdicts`` are included."""
    where = where_clause(segment.all, segment.any, segment.exclude)
    join = (
        "JOIN contacts c ON c.tenant_id = p.tenant_id AND c.contact_id = p.contact_id" if where.needs_contacts else ""
    )
    sql = f"""SELECT p.contact_id, p.email, p.language, p.verdict FROM segment_profiles p {join}
              WHERE p.tenant_id = :tenant AND p.verdict = ANY(CAST(:verdicts AS text[])) AND {where.sql}"""
    return sql, {**where.params, "verdicts": list(segment.verdicts)}


@dataclass(frozen=True)
class SnapshotInfo:
    """The current snapshot of a segment."""

    segment: str
    definition_hash: str
    members: int
    matched: int
    suppressed_excluded: int
    built_at: datetime


class SnapshotChanged(RuntimeError):
    """The segment was rebuilt with another definition while its members were being read."""


class SegmentBuildFailed(RuntimeError):
    """PostgreSQL could not evaluate a segment (past its time limit, or a pattern it refuses);
    ``str()`` names the segment. The caller's transaction is aborted: roll it back."""

    def __init__(self, segment: str, reason: str):
        self.segment = segment
        self.reason = reason
        super().__init__(f"segment {segment!r}: {reason}; its previous snapshot (if any) is kept")


# query_canceled (statement_timeout), invalid_regular_expression ("too complex"), program_limit_exceeded
_EVALUATION_ERRORS = {"57014", "2201B", "54000", "54001"}


def build_segment(
    conn: sa.Connection, tenant_id: str, segment: Segment, *, refresh_profiles: bool = True,
    timeout_seconds: float | None = None,
) -> dict:
    """Evaluate ``segment`` over the tenant and make its snapshot the result, in the caller's transaction.

    Suppressed addresses are left out (and counted); ``max_contacts`` keeps the first members in
    contact-id order. Under the same definition only the difference is written; under a new one the
    old members are removed first (the schema refuses a snapshot mixing two definitions). Commit once
    after it: readers see the old snapshot or the new one. ``refresh_profiles=False`` when the caller
    just ran :func:`refresh_segment_profiles` for this tenant.

    The evaluation runs under ``timeout_seconds`` (a ``statement_timeout``): past it, or when
    PostgreSQL refuses a pattern, :class:`SegmentBuildFailed` names the segment.
    """
    if refresh_profiles:
        refresh_segment_profiles(conn, tenant_id)
    select_sql, params = select_segment_sql(segment)
    digest = segment.definition_hash
    params = {**params, "tenant": tenant_id, **({"cap": segment.max_contacts} if segment.max_contacts else {})}
    # max_contacts: the first unsuppressed matches in contact-id order
    member = "NOT suppressed" if segment.max_contacts is None else (
        "NOT suppressed AND row_number() OVER (PARTITION BY suppressed ORDER BY contact_id) <= :cap"
    )
    conn.exec_driver_sql("DROP TABLE IF EXISTS pg_temp.segment_build")
    if timeout_seconds is not None:
        previous = conn.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one()
        limit = f"{max(1, round(timeout_seconds * 1000))}ms"
        conn.execute(sa.text("SELECT set_config('statement_timeout', :limit, true)"), {"limit": limit})
    try:
        # PostgreSQL compiles a pattern at its first use, which is where a pathological one spends its
        # time: compile each alone first, so it fails now even when no row reaches it yet.
        for pattern in regex_patterns(segment.all, segment.any, segment.exclude):
            conn.execute(sa.text("SELECT '' ~* :pattern"), {"pattern": pattern})
        conn.execute(
            sa.text(
                f"""CREATE TEMPORARY TABLE segment_build ON COMMIT DROP AS
                    WITH matched AS ({select_sql}),
                         flagged AS (SELECT m.*, EXISTS (SELECT 1 FROM suppressions s
                                                         WHERE s.tenant_id = :tenant AND s.email = m.email) AS suppressed
                                     FROM matched m)
                    SELECT contact_id, language, verdict, suppressed, {member} AS member FROM flagged"""
            ),
            params,
        )
    except sa.exc.DBAPIError as exc:
        code = getattr(exc.orig, "sqlstate", None)
        if code not in _EVALUATION_ERRORS:
            raise
        limit_text = f" after {timeout_seconds:g} s (segment_build.timeout_seconds of the tenant file)" if timeout_seconds else ""
        reason = (
            f"its evaluation was stopped{limit_text}; simplify its conditions (a regex with nested or large "
            "repetition counts is the usual cause)"
            if code == "57014" else f"PostgreSQL refused to evaluate it: {str(exc.orig).strip().splitlines()[0]}"
        )
        raise SegmentBuildFailed(segment.name, reason) from None
    if timeout_seconds is not None:
        conn.execute(sa.text("SELECT set_config('statement_timeout', :limit, true)"), {"limit": previous})
    conn.exec_driver_sql("CREATE INDEX ON segment_build (contact_id) WHERE member")
    conn.exec_driver_sql("ANALYZE segment_build")
    keys = {"tenant": tenant_id, "segment": segment.name, "hash": digest}
    counts = conn.execute(
        sa.text(
            """SELECT count(*) AS matched, count(*) FILTER (WHERE suppressed) AS suppressed_excluded,
                      count(*) FILTER (WHERE member) AS members,
                      coalesce((SELECT jsonb_object_agg(coalesce(language, ''), n) FROM
                                (SELECT language, count(*) AS n FROM segment_build WHERE member GROUP BY 1) l), '{}') AS per_language,
                      coalesce((SELECT jsonb_object_agg(verdict, n) FROM
                                (SELECT verdict, count(*) AS n FROM segment_build WHERE member GROUP BY 1) v), '{}') AS per_verdict
               FROM segment_build"""
        )
    ).one()._asdict()
    removed = conn.execute(
        sa.text(
            """DELETE FROM segment_members m WHERE m.tenant_id = :tenant AND m.segment = :segment
               AND (m.definition_hash <> :hash
                    OR NOT EXISTS (SELECT 1 FROM segment_build b WHERE b.member AND b.contact_id = m.contact_id))"""
        ),
        keys,
    ).rowcount
    conn.execute(
        sa.text(
            """INSERT INTO segment_snapshots AS s (tenant_id, segment, definition_hash, definition, built_at, matched,
                                                  suppressed_excluded, members, per_language, per_verdict)
               VALUES (:tenant, :segment, :hash, CAST(:definition AS jsonb), now(), :matched, :suppressed_excluded,
                       :members, CAST(:per_language AS jsonb), CAST(:per_verdict AS jsonb))
               ON CONFLICT (tenant_id, segment) DO UPDATE SET
                   definition_hash = EXCLUDED.definition_hash, definition = EXCLUDED.definition, built_at = now(),
                   matched = EXCLUDED.matched, suppressed_excluded = EXCLUDED.suppressed_excluded,
                   members = EXCLUDED.members, per_language = EXCLUDED.per_language, per_verdict = EXCLUDED.per_verdict"""
        ),
        {**keys, "definition": json.dumps(segment.definition()), "matched": counts["matched"],
         "suppressed_excluded": counts["suppressed_excluded"], "members": counts["members"],
         "per_language": json.dumps(counts["per_language"]), "per_verdict": json.dumps(counts["per_verdict"])},
    )
    added = conn.execute(
        sa.text(
            """INSERT INTO segment_members (tenant_id, segment, contact_id, definition_hash)
               SELECT :tenant, :segment, contact_id, :hash FROM segment_build WHERE member ORDER BY contact_id
               ON CONFLICT (tenant_id, segment, contact_id) DO NOTHING"""
        ),
        keys,
    ).rowcount
    conn.exec_driver_sql("DROP TABLE segment_build")
    return {**counts, "definition_hash": digest, "added": added, "removed": removed,
            "capped": counts["matched"] - counts["suppressed_excluded"] - counts["members"]}


def drop_segments_except(conn: sa.Connection, tenant_id: str, keep: Sequence[str]) -> list[str]:
    """Remove the snapshots (and members) of the tenant's segments no longer declared; their names."""
    return sorted(
        conn.execute(
            sa.text(
                """DELETE FROM segment_snapshots WHERE tenant_id = :t AND NOT (segment = ANY(CAST(:keep AS text[])))
                   RETURNING segment"""
            ),
            {"t": tenant_id, "keep": list(keep)},
        ).scalars()
    )


def current_snapshot(conn: sa.Connection, tenant_id: str, segment: str) -> SnapshotInfo | None:
    row = conn.execute(
        sa.text(
            """SELECT segment, definition_hash, members, matched, suppressed_excluded, built_at
               FROM segment_snapshots WHERE tenant_id = :t AND segment = :s"""
        ),
        {"t": tenant_id, "s": segment},
    ).one_or_none()
    return None if row is None else SnapshotInfo(**row._asdict())


def segment_input_changes(conn: sa.Connection, tenant_id: str) -> dict[str, datetime | None]:
    """When each input of the tenant's segments last changed (``freshness.SEGMENT_INPUTS``); ``None``: never.

    The newest row of each table (a removed tag rewrites ``contacts.tags``; a removed contact takes
    its snapshot rows with it), and for suppressions the later of the newest one and the last lift.
    """
    row = conn.execute(
        sa.text(
            """SELECT (SELECT max(updated_at) FROM contacts WHERE tenant_id = :t) AS contacts,
                      (SELECT max(checked_at) FROM email_validations WHERE tenant_id = :t) AS verdicts,
                      (SELECT max(updated_at) FROM contact_enrichment WHERE tenant_id = :t) AS enrichment,
                      (SELECT max(assigned_at) FROM tag_assignments WHERE tenant_id = :t) AS tags,
                      greatest((SELECT max(created_at) FROM suppressions WHERE tenant_id = :t),
                               (SELECT last_lifted_at FROM suppression_lifts WHERE tenant_id = :t)) AS suppressions"""
        ),
        {"t": tenant_id},
    ).one()
    return dict(row._mapping)


def segment_members(
    conn: sa.Connection,
    tenant_id: str,
    segment: str,
    *,
    after_contact_id: int = 0,
    limit: int = 10_000,
    definition_hash: str | None = None,
) -> list[int]:
    """The next ``limit`` member contact ids after ``after_contact_id``, in contact-id order.

    Read a snapshot in batches by passing the last id back; pass the ``definition_hash`` of
    :func:`current_snapshot` to make sure every batch comes from that definition: a short batch
    whose snapshot now has another definition raises :class:`SnapshotChanged`.
    """
    if not 1 <= limit <= 1_000_000:
        raise ValueError(f"limit must be between 1 and 1000000, got {limit}")
    ids = list(
        conn.execute(
            sa.text(
                f"""SELECT contact_id FROM segment_members
                    WHERE tenant_id = :t AND segment = :s AND contact_id > :after
                    {'AND definition_hash = :h' if definition_hash is not None else ''}
                    ORDER BY contact_id LIMIT :n"""
            ),
            {"t": tenant_id, "s": segment, "after": after_contact_id, "n": limit, "h": definition_hash},
        ).scalars()
    )
    if definition_hash is not None and len(ids) < limit:
        snapshot = current_snapshot(conn, tenant_id, segment)
        if snapshot is None or snapshot.definition_hash != definition_hash:
            raise SnapshotChanged(
                f"segment {segment!r} of tenant {tenant_id!r} was rebuilt with another definition "
                f"(expected {definition_hash[:12]}, now {snapshot.definition_hash[:12] if snapshot else 'none'})"
            )
    return ids
