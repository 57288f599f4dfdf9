"""SQL of one person: read everything the tenant holds about an address, and erase it in one transaction.

Every statement is bounded by the tenant and the address key (or the contact id it keys). The
person's free text (a reject's raw line, a send's or an event's detail) is found by the lowercase
forms of the address (:func:`.erasure.needles`), case-insensitively.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.contacts.normalise import REASON_ERASED
from email_engine_assets.contacts.store import tenant_lock
from email_engine_assets.privacy.erasure import (
    REDACTED,
    SALT_BYTES,
    erasure_hash,
    literal_pattern,
)

_PRIMARY = ("primary_priority", "primary_file_id", "primary_line_no")


def email_sha256(email_key: str) -> str:
    """The digest ``mailwizz_subscribers`` keys an address by (``sync.store.EMAIL_DIGEST``)."""
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()


def _rows(conn: sa.Connection, sql: str, params: dict) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def _holds(column: str) -> str:
    """SQL: ``column`` holds one of the needles (``:needles``, lowercase), case-insensitively."""
    return f"EXISTS (SELECT 1 FROM unnest(CAST(:needles AS text[])) n WHERE strpos(lower({column}), n) > 0)"


def _scrubbed(column: str, patterns: int) -> str:
    """SQL: ``column`` with each needle (``:p0``, ``:p1`` ..., literal regexes) replaced by the redaction mark."""
    expr = column
    for i in range(patterns):
        expr = f"regexp_replace({expr}, :p{i}, '{REDACTED}', 'gi')"
    return f"CASE WHEN {_holds(column)} THEN {expr} ELSE {column} END"


# ---------------------------------------------------------------------------------------------
# Reading: the dossier


def file_names(conn: sa.Connection, file_ids: set[int]) -> dict[int, dict]:
    """{file_id: {"source", "path"}} of the tenant's import ledger rows."""
    if not file_ids:
        return {}
    rows = conn.execute(
        sa.text("SELECT file_id, source_id, path FROM import_files WHERE file_id = ANY(:ids)"), {"ids": sorted(file_ids)}
    )
    return {r.file_id: {"source": r.source_id, "path": r.path} for r in rows}


def contact_row(conn: sa.Connection, tenant_id: str, key: str) -> dict | None:
    row = conn.execute(
        sa.text(
            f"""SELECT contact_id, email, {", ".join(TEXT_FIELDS)}, tags, sources, field_sources,
                       {", ".join(_PRIMARY)}, created_at, updated_at
                FROM contacts WHERE tenant_id = :t AND email = :e"""
        ),
        {"t": tenant_id, "e": key},
    ).first()
    return dict(row._mapping) if row else None


def _tenant_file_ids(conn: sa.Connection, tenant_id: str) -> list[int]:
    return list(conn.execute(sa.text("SELECT file_id FROM import_files WHERE tenant_id = :t ORDER BY file_id"), {"t": tenant_id}).scalars())


def staged_rows(conn: sa.Connection, tenant_id: str, key: str) -> list[dict]:
    """Every staged row of the address in the tenant's files (staged_rows is indexed by file only)."""
    return _rows(
        conn,
        f"""SELECT s.file_id, f.source_id AS source, f.path, s.line_no AS line, s.is_duplicate, s.email_raw,
                   {", ".join("s." + f for f in TEXT_FIELDS)}, s.tags
            FROM staged_rows s JOIN import_files f ON f.file_id = s.file_id
            WHERE s.file_id = ANY(CAST(:files AS bigint[])) AND s.email = :e ORDER BY s.file_id, s.line_no""",
        {"files": _tenant_file_ids(conn, tenant_id), "e": key},
    )


def rejected_rows(conn: sa.Connection, tenant_id: str, needles: list[str]) -> list[dict]:
    return _rows(
        conn,
        f"""SELECT r.file_id, f.source_id AS source, f.path, r.line_no AS line, r.reason, r.raw_text
            FROM rejected_rows r JOIN import_files f ON f.file_id = r.file_id
            WHERE r.tenant_id = :t AND {_holds("r.raw_text")} ORDER BY r.file_id, r.line_no""",
        {"t": tenant_id, "needles": needles},
    )


def dossier_rows(conn: sa.Connection, tenant_id: str, key: str, needles: list[str]) -> dict:
    """Every row the tenant holds about the address, section by section (plain dicts, datetimes as they are)."""
    contact = contact_row(conn, tenant_id, key)
    cid = contact["contact_id"] if contact else None
    p = {"t": tenant_id, "c": cid, "e": key, "h": email_sha256(key), "needles": needles}
    by_contact = "tenant_id = :t AND contact_id = :c"
    out: dict = {
        "contact": contact,
        "staged_rows": staged_rows(conn, tenant_id, key),
        "rejected_rows": rejected_rows(conn, tenant_id, needles),
        "tags": _rows(conn, f"SELECT tag, provenance, assigned_at FROM tag_assignments WHERE {by_contact} ORDER BY tag, provenance", p),
        "validation": next(iter(_rows(conn, f"SELECT * FROM email_validations WHERE {by_contact}", p)), None),
        "enrichment": next(iter(_rows(conn, f"SELECT * FROM contact_enrichment WHERE {by_contact}", p)), None),
        "segments": _rows(
            conn,
            """SELECT m.segment, m.definition_hash, s.built_at FROM segment_members m
               JOIN segment_snapshots s USING (tenant_id, segment, definition_hash)
               WHERE m.tenant_id = :t AND m.contact_id = :c ORDER BY m.segment""",
            p,
        ),
        "sends": _rows(
            conn,
            """SELECT row_id, campaign, state, token, message_id, template, rule, detail, attempts,
                      queued_at, claimed_at, settled_at
               FROM campaign_sends WHERE tenant_id = :t AND (contact_id = :c OR email = :e) ORDER BY row_id""",
            p,
        ),
        "events": _rows(
            conn,
            """SELECT event_id, event_type, bounce_class, origin, occurred_at, campaign, send_row_id, detail, url
               FROM delivery_events WHERE tenant_id = :t AND (contact_id = :c OR email = :e) ORDER BY occurred_at, event_id""",
            p,
        ),
        "suppression": next(iter(_rows(conn, "SELECT reason, detail, created_at FROM suppressions WHERE tenant_id = :t AND email = :e", p)), None),
        "mailwizz": _rows(
            conn,
            """SELECT instance, list_name, list_uid, subscriber_uid, state, detail, pushed_at FROM mailwizz_subscribers
               WHERE tenant_id = :t AND (contact_id = :c OR email_sha256 = :h) ORDER BY instance, list_name""",
            p,
        ),
        "erased_at": erased_at(conn, tenant_id, key),
    }
    ids = {r["file_id"] for r in out["staged_rows"] + out["rejected_rows"]}
    if contact:
        ids |= {contact["primary_file_id"]} - {None}
        ids |= {int(e["file_id"]) for e in (contact["field_sources"] or {}).values() if isinstance(e, dict) and e.get("file_id")}
    out["files"] = file_names(conn, ids)
    return out


def erased_at(conn: sa.Connection, tenant_id: str, key: str) -> datetime | None:
    """When the address was erased from the tenant, or None."""
    return conn.execute(
        sa.text(
            """SELECT e.erased_at FROM erased_addresses e JOIN erasure_salts k USING (tenant_id)
               WHERE e.tenant_id = :t AND e.email_hash = sha256(k.salt || convert_to(:e, 'UTF8'))"""
        ),
        {"t": tenant_id, "e": key},
    ).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------
# Erasing


def tenant_salt(conn: sa.Connection, tenant_id: str) -> bytes:
    """The tenant's erasure salt, made (random, :data:`.erasure.SALT_BYTES`) by its first erasure."""
    conn.execute(
        sa.text("INSERT INTO erasure_salts (tenant_id, salt) VALUES (:t, :s) ON CONFLICT (tenant_id) DO NOTHING"),
        {"t": tenant_id, "s": secrets.token_bytes(SALT_BYTES)},
    )
    return bytes(conn.execute(sa.text("SELECT salt FROM erasure_salts WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one())


# The person's staged rows become rejected rows 'erased' with no raw text, and each file's counts
# move with them: a repeat in the file was a duplicate, the first sighting of the address in the
# tenant (its earliest file) was new, a later one merged. rows_total is unchanged.
_STAGED_TO_REJECTED = f"""
    WITH gone AS (
        DELETE FROM staged_rows s WHERE s.file_id = ANY(CAST(:files AS bigint[])) AND s.email = :e
        RETURNING s.file_id, s.line_no, s.is_duplicate
    ), rejected AS (
        INSERT INTO rejected_rows (tenant_id, file_id, line_no, raw_text, reason)
        SELECT :t, file_id, line_no, '', '{REASON_ERASED}' FROM gone
    ), per_file AS (
        SELECT file_id, count(*) FILTER (WHERE is_duplicate) AS dup, count(*) FILTER (WHERE NOT is_duplicate) AS kept,
               file_id = (SELECT min(file_id) FROM gone WHERE NOT is_duplicate) AS first
        FROM gone GROUP BY file_id
    ), counted AS (
        UPDATE import_files f SET
            duplicates = f.duplicates - p.dup,
            new = f.new - CASE WHEN p.first AND f.new >= p.kept OR f.merged < p.kept THEN p.kept ELSE 0 END,
            merged = f.merged - CASE WHEN p.first AND f.new >= p.kept OR f.merged < p.kept THEN 0 ELSE p.kept END,
            rejected = f.rejected + p.dup + p.kept
        FROM per_file p WHERE f.file_id = p.file_id AND f.status = 'imported'
    )
    SELECT count(*) FROM gone
"""


def erase(conn: sa.Connection, tenant_id: str, key: str, needles: list[str]) -> dict[str, int]:
    """Forget the address in the tenant, in the caller's transaction; rows touched per table.

    Under the tenant's import lock, so no import or merge of the tenant interleaves: a file
    finished after this commits rejects the address (:func:`contacts.store.finish_file`).
    """
    tenant_lock(conn, tenant_id)
    contact = conn.execute(
        sa.text("SELECT contact_id FROM contacts WHERE tenant_id = :t AND email = :e FOR UPDATE"), {"t": tenant_id, "e": key}
    ).scalar_one_or_none()
    p = {"t": tenant_id, "c": contact, "e": key, "needles": needles, "files": _tenant_file_ids(conn, tenant_id),
         **{f"p{i}": literal_pattern(n) for i, n in enumerate(needles)}}

    def scrubbed(column: str) -> str:
        return _scrubbed(column, len(needles))

    def run(sql: str) -> int:
        return conn.execute(sa.text(sql), p).rowcount

    counts: dict[str, int] = {}
    sends = list(conn.execute(
        sa.text("SELECT row_id FROM campaign_sends WHERE tenant_id = :t AND (contact_id = :c OR email = :e) FOR UPDATE"), p
    ).scalars())
    counts["delivery_events"] = conn.execute(
        sa.text(
            f"""UPDATE delivery_events SET email = NULL, contact_id = NULL,
                       detail = {scrubbed("detail")}, url = {scrubbed("url")}
                WHERE tenant_id = :t AND (contact_id = :c OR email = :e OR send_row_id = ANY(CAST(:rows AS bigint[])))"""
        ),
        {**p, "rows": sends},
    ).rowcount
    # A queued row would be sent to nobody (its address is gone): it is settled as suppressed.
    counts["campaign_sends"] = conn.execute(
        sa.text(
            f"""UPDATE campaign_sends SET email = 'erased:' || row_id, contact_id = NULL, detail = {scrubbed("detail")},
                       state = CASE WHEN state = 'queued' THEN 'skipped_suppressed' ELSE state END,
                       settled_at = CASE WHEN state = 'queued' THEN now() ELSE settled_at END
                WHERE row_id = ANY(CAST(:rows AS bigint[]))"""
        ),
        {**p, "rows": sends},
    ).rowcount
    for table in ("email_validations", "contact_enrichment", "tag_assignments", "segment_profiles", "segment_members"):
        counts[table] = run(f"DELETE FROM {table} WHERE tenant_id = :t AND contact_id = :c")
    counts["mailwizz_subscribers"] = run(
        "UPDATE mailwizz_subscribers SET contact_id = NULL WHERE tenant_id = :t AND contact_id = :c"
    )
    counts["contacts"] = run("DELETE FROM contacts WHERE tenant_id = :t AND contact_id = :c")
    counts["staged_rows"] = conn.execute(sa.text(_STAGED_TO_REJECTED), p).scalar_one()
    counts["rejected_rows"] = run(
        f"""UPDATE rejected_rows SET raw_text = '', reason = {scrubbed("reason")}
            WHERE tenant_id = :t AND {_holds("raw_text || ' ' || reason")}"""
    )
    counts["suppressions"] = run("DELETE FROM suppressions WHERE tenant_id = :t AND email = :e")
    # Raw webhook bodies are bytes in any encoding: compared in their escaped text form (ASCII kept,
    # other bytes as octal escapes), the needles in the same form. A row not applied yet (it came in
    # after forget applied the tenant's pending rows) is closed as failed: it would bring the person back.
    counts["webhook_inbox"] = run(
        """UPDATE webhook_inbox SET body = ''::bytea,
                  outcome = coalesce(outcome, 'failed'), applied_at = coalesce(applied_at, now()),
                  detail = 'body erased: it held an erased address'
           WHERE tenant_id = :t AND octet_length(body) > 0
             AND EXISTS (SELECT 1 FROM unnest(CAST(:needles AS text[])) n
                         WHERE strpos(lower(encode(body, 'escape')), lower(encode(convert_to(n, 'UTF8'), 'escape'))) > 0)"""
    )
    counts["accounting_kept_lines"] = run(
        f"UPDATE accounting_kept_lines SET raw_line = '' WHERE tenant_id = :t AND {_holds('raw_line')}"
    )
    salt = tenant_salt(conn, tenant_id)
    counts["erased_addresses"] = conn.execute(
        sa.text("INSERT INTO erased_addresses (tenant_id, email_hash) VALUES (:t, :h) ON CONFLICT DO NOTHING"),
        {"t": tenant_id, "h": erasure_hash(salt, key)},
    ).rowcount
    return counts


def mailwizz_rows(conn: sa.Connection, tenant_id: str, instance: str, key: str) -> int:
    """The ``mailwizz_subscribers`` rows of the address still kept for ``instance``."""
    return conn.execute(
        sa.text("SELECT count(*) FROM mailwizz_subscribers WHERE tenant_id = :t AND instance = :i AND email_sha256 = :h"),
        {"t": tenant_id, "i": instance, "h": email_sha256(key)},
    ).scalar_one()


def drop_mailwizz_rows(conn: sa.Connection, tenant_id: str, instance: str, key: str) -> int:
    """Forget what was pushed to ``instance`` for the address, once MailWizz holds no subscriber of it."""
    return conn.execute(
        sa.text("DELETE FROM mailwizz_subscribers WHERE tenant_id = :t AND instance = :i AND email_sha256 = :h"),
        {"t": tenant_id, "i": instance, "h": email_sha256(key)},
    ).rowcount
