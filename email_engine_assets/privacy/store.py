"""SQL of one person: read everything the tenant holds about an address, and erase it in one transaction.

Every statement is bounded by the tenant and the address key (or the contact id it keys). Raw
texts (a reject's raw line, a webhook body, a kept accounting line) are pre-filtered in SQL by a
piece of the local part and of the domain (:attr:`.matching.Person.probes`) or a JSON escape, and each candidate is
then parsed in its form and kept only when a value's email key is the person's
(:func:`.matching.holds`): ``joann@`` is not ``ann@``, ``ann\\u0040example.com`` is. A send's or an
event's detail is redacted by the same matcher (:func:`.matching.redact`); an event's url is cleared
(a personalised link may name the person in a way no matcher sees: an id, a hash). Tracking hits
name the person's ledger rows by token, not the address (:data:`_TRACKING_HITS_ERASED`).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.contacts.normalise import REASON_ERASED
from email_engine_assets.contacts.store import tenant_lock
from email_engine_assets.privacy.erasure import SALT_BYTES, erasure_hash
from email_engine_assets.privacy.matching import Person, holds, redact

_PRIMARY = ("primary_priority", "primary_file_id", "primary_line_no")


def email_sha256(email_key: str) -> str:
    """The digest ``mailwizz_subscribers`` keys an address by (``sync.store.EMAIL_DIGEST``)."""
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()


def _rows(conn: sa.Connection, sql: str, params: dict) -> list[dict]:
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


_BATCH = 1000


def _maybe(column: str) -> str:
    """SQL: ``column`` (text) may hold the person: it holds both probes (``:lp``, ``:dp``, lowercase,
    :attr:`.matching.Person.probes`), or a JSON escape (``\\u``) that may hide any character.
    Python decides (:func:`.matching.holds`)."""
    return (f"((strpos(lower({column}), :lp) > 0 AND strpos(lower({column}), :dp) > 0)"
            f" OR strpos({column}, '\\u') > 0)")


def _maybe_bytes(column: str) -> str:
    """:func:`_maybe` for raw bytes in any encoding (compared in their escaped text form)."""
    text = f"lower(encode({column}, 'escape'))"
    return (f"((strpos({text}, lower(encode(convert_to(:lp, 'UTF8'), 'escape'))) > 0"
            f" AND strpos({text}, lower(encode(convert_to(:dp, 'UTF8'), 'escape'))) > 0)"
            f" OR position(convert_to('\\u', 'UTF8') IN {column}) > 0)")


def _probes(person: Person) -> dict[str, str]:
    local, domain = person.probes
    return {"lp": local, "dp": domain}


def _streamed(conn: sa.Connection, sql: str, params: dict):
    """The rows of ``sql``, fetched in batches (a tenant may hold millions of candidates)."""
    result = conn.execute(sa.text(sql).execution_options(stream_results=True, max_row_buffer=_BATCH), params)
    yield from result


def body_text(body: bytes | memoryview) -> str:
    """A raw webhook body as text: UTF-8 (a byte that is not is replaced, the rest still read)."""
    return bytes(body).removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")


def _rejected_of(conn: sa.Connection, tenant_id: str, person: Person) -> list[dict]:
    """The tenant's rejected rows whose raw text (parsed as its file's format) or reason names the person."""
    rows = _streamed(
        conn,
        f"""SELECT r.file_id, f.source_id AS source, f.path, r.line_no AS line, r.reason, r.raw_text,
                   f.format, f.delimiter
            FROM rejected_rows r JOIN import_files f ON f.file_id = r.file_id
            WHERE r.tenant_id = :t AND {_maybe("r.raw_text || ' ' || r.reason")}
            ORDER BY r.file_id, r.line_no""",
        {"t": tenant_id, **_probes(person)},
    )
    return [
        {k: v for k, v in r._mapping.items() if k not in ("format", "delimiter")}
        for r in rows
        if holds(person, r.raw_text, r.format or "text", r.delimiter) or holds(person, r.reason)
    ]


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


def rejected_rows(conn: sa.Connection, tenant_id: str, person: Person) -> list[dict]:
    """The tenant's rejected rows naming the person (their raw text parsed, never searched)."""
    return _rejected_of(conn, tenant_id, person)


def dossier_rows(conn: sa.Connection, tenant_id: str, key: str, person: Person) -> dict:
    """Every row the tenant holds about the address, section by section (plain dicts, datetimes as they are)."""
    contact = contact_row(conn, tenant_id, key)
    cid = contact["contact_id"] if contact else None
    p = {"t": tenant_id, "c": cid, "e": key, "h": email_sha256(key)}
    by_contact = "tenant_id = :t AND contact_id = :c"
    out: dict = {
        "contact": contact,
        "staged_rows": staged_rows(conn, tenant_id, key),
        "rejected_rows": rejected_rows(conn, tenant_id, person),
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
            """SELECT event_id, event_type, bounce_class, origin, occurred_at, campaign, send_row_id, detail, url,
                      machine, classified_by, link_index
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


# Tracking hits (webhook_inbox kind 'tracking') name no address: their body names the ledger row by
# its token (JSON, "row": campaign_sends.token; the body may also hold the clicked URL, the
# client's address and user agent). Matched on the token's bytes anywhere in the body, whatever
# its exact layout: a token is 32 random hex digits, found in no other person's hit. A pending hit
# is closed as failed (applied, it would record an event with the URL back); an applied one keeps
# its outcome and loses its body.
_TRACKING_HITS_ERASED = """
    UPDATE webhook_inbox w SET body = ''::bytea,
           outcome = coalesce(w.outcome, 'failed'), applied_at = coalesce(w.applied_at, now()),
           detail = CASE WHEN w.outcome IS NULL THEN 'body erased: a tracking hit of an erased person' ELSE w.detail END
    WHERE w.tenant_id = :t AND w.kind = 'tracking' AND octet_length(w.body) > 0
      AND EXISTS (SELECT 1 FROM unnest(CAST(:tokens AS text[])) AS tok WHERE position(convert_to(tok, 'UTF8') IN w.body) > 0)
"""


def _redacted(conn: sa.Connection, person: Person, sql: str, params: dict, columns: tuple[str, ...]) -> list[dict]:
    """``{"id", column: redacted text}`` for each row of ``sql`` (``id`` and ``columns``) where the person is named."""
    out = []
    for row in conn.execute(sa.text(sql), params):
        changed = {c: redact(person, getattr(row, c)) for c in columns}
        if any(changed[c] != getattr(row, c) for c in columns):
            out.append({"id": row.id, **changed})
    return out


def erase(conn: sa.Connection, tenant_id: str, person: Person) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Forget the address in the tenant, in the caller's transaction: rows touched per table, and
    the (campaign, row id) of the person's sends (their outbox files go next).

    Under the tenant's import lock, so no import or merge of the tenant interleaves: a file
    finished after this commits rejects the address (:func:`contacts.store.finish_file`).
    """
    key = person.key
    tenant_lock(conn, tenant_id)
    contact = conn.execute(
        sa.text("SELECT contact_id FROM contacts WHERE tenant_id = :t AND email = :e FOR UPDATE"), {"t": tenant_id, "e": key}
    ).scalar_one_or_none()
    p = {"t": tenant_id, "c": contact, "e": key, "files": _tenant_file_ids(conn, tenant_id), **_probes(person)}

    def run(sql: str) -> int:
        return conn.execute(sa.text(sql), p).rowcount

    counts: dict[str, int] = {}
    sends = conn.execute(
        sa.text("SELECT row_id, campaign, token FROM campaign_sends WHERE tenant_id = :t AND (contact_id = :c OR email = :e) FOR UPDATE"), p
    ).all()
    rows = [s.row_id for s in sends]
    events = _redacted(
        conn, person,
        """SELECT event_id AS id, detail FROM delivery_events
           WHERE tenant_id = :t AND (contact_id = :c OR email = :e OR send_row_id = ANY(CAST(:rows AS bigint[]))) FOR UPDATE""",
        {**p, "rows": rows}, ("detail",),
    )
    if events:
        conn.execute(sa.text("UPDATE delivery_events SET detail = :detail WHERE event_id = :id"), events)
    # The events stay (they count), without the person: no address, no contact, and no url (a
    # clicked link may be personalised: ?u=<id>, ?email=..., a path of theirs).
    counts["delivery_events"] = conn.execute(
        sa.text("""UPDATE delivery_events SET email = NULL, contact_id = NULL, url = NULL
                   WHERE tenant_id = :t AND (contact_id = :c OR email = :e OR send_row_id = ANY(CAST(:rows AS bigint[])))"""),
        {**p, "rows": rows},
    ).rowcount
    details = _redacted(conn, person, "SELECT row_id AS id, detail FROM campaign_sends WHERE row_id = ANY(CAST(:rows AS bigint[]))",
                        {"rows": rows}, ("detail",))
    if details:
        conn.execute(sa.text("UPDATE campaign_sends SET detail = :detail WHERE row_id = :id"), details)
    # A queued row would be sent to nobody (its address is gone): it is settled as suppressed.
    counts["campaign_sends"] = conn.execute(
        sa.text(
            """UPDATE campaign_sends SET email = 'erased:' || row_id, contact_id = NULL,
                      state = CASE WHEN state = 'queued' THEN 'skipped_suppressed' ELSE state END,
                      settled_at = CASE WHEN state = 'queued' THEN now() ELSE settled_at END
               WHERE row_id = ANY(CAST(:rows AS bigint[]))"""
        ),
        {"rows": rows},
    ).rowcount
    for table in ("email_validations", "contact_enrichment", "tag_assignments", "segment_profiles", "segment_members"):
        counts[table] = run(f"DELETE FROM {table} WHERE tenant_id = :t AND contact_id = :c")
    counts["mailwizz_subscribers"] = run(
        "UPDATE mailwizz_subscribers SET contact_id = NULL WHERE tenant_id = :t AND contact_id = :c"
    )
    counts["contacts"] = run("DELETE FROM contacts WHERE tenant_id = :t AND contact_id = :c")
    counts["staged_rows"] = conn.execute(sa.text(_STAGED_TO_REJECTED), p).scalar_one()
    rejected = [{"f": r["file_id"], "l": r["line"], "reason": redact(person, r["reason"])} for r in _rejected_of(conn, tenant_id, person)]
    if rejected:
        conn.execute(sa.text("UPDATE rejected_rows SET raw_text = '', reason = :reason WHERE file_id = :f AND line_no = :l"), rejected)
    counts["rejected_rows"] = len(rejected)
    counts["suppressions"] = run("DELETE FROM suppressions WHERE tenant_id = :t AND email = :e")
    # A row not applied yet (it came in after forget applied the tenant's pending rows) is closed
    # as failed: it would bring the person back.
    bodies = [
        r.id for r in _streamed(
            conn, f"SELECT id, kind, body FROM webhook_inbox WHERE tenant_id = :t AND octet_length(body) > 0 AND {_maybe_bytes('body')}", p)
        if holds(person, body_text(r.body), "json")
    ]
    counts["webhook_inbox"] = conn.execute(
        sa.text("""UPDATE webhook_inbox SET body = ''::bytea,
                          outcome = coalesce(outcome, 'failed'), applied_at = coalesce(applied_at, now()),
                          detail = 'body erased: it held an erased address'
                   WHERE id = ANY(CAST(:ids AS bigint[]))"""),
        {"ids": bodies},
    ).rowcount
    counts["webhook_inbox"] += conn.execute(sa.text(_TRACKING_HITS_ERASED), {**p, "tokens": [s.token for s in sends]}).rowcount
    kept = [
        r.line_id for r in _streamed(
            conn, f"SELECT line_id, raw_line FROM accounting_kept_lines WHERE tenant_id = :t AND {_maybe('raw_line')}", p)
        if holds(person, r.raw_line, "csv", ",")
    ]
    counts["accounting_kept_lines"] = conn.execute(
        sa.text("UPDATE accounting_kept_lines SET raw_line = '' WHERE line_id = ANY(CAST(:ids AS bigint[]))"), {"ids": kept}
    ).rowcount
    salt = tenant_salt(conn, tenant_id)
    counts["erased_addresses"] = conn.execute(
        sa.text("INSERT INTO erased_addresses (tenant_id, email_hash) VALUES (:t, :h) ON CONFLICT DO NOTHING"),
        {"t": tenant_id, "h": erasure_hash(salt, key)},
    ).rowcount
    return counts, [(s.campaign, s.row_id) for s in sends]


def pushed_rows(conn: sa.Connection, tenant_id: str, source_id: str, row_ids: list[int]) -> set[int]:
    """Which of ``row_ids`` are contacts pushes of the tenant's source: their ``webhook-<id>`` files are the engine's."""
    return set(conn.execute(
        sa.text("""SELECT id FROM webhook_inbox WHERE tenant_id = :t AND kind = 'contacts' AND source_id = :s
                   AND id = ANY(CAST(:ids AS bigint[]))"""),
        {"t": tenant_id, "s": source_id, "ids": row_ids},
    ).scalars())


def rename_digest(conn: sa.Connection, tenant_id: str, source_id: str, old: str, new: str, size: int) -> int:
    """The import ledger's row of a file the engine rewrote names its new content, so that the
    importer does not take the rewritten file as new content (it would merge the others again).
    Nothing when no row holds ``old`` or one already holds ``new`` (then the importer skips it anyway)."""
    return conn.execute(
        sa.text("""UPDATE import_files f SET content_sha256 = :new, size_bytes = :size
                   WHERE tenant_id = :t AND source_id = :s AND content_sha256 = :old
                     AND NOT EXISTS (SELECT 1 FROM import_files o WHERE o.tenant_id = :t AND o.source_id = :s
                                     AND o.content_sha256 = :new)"""),
        {"t": tenant_id, "s": source_id, "old": old, "new": new, "size": size},
    ).rowcount


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
