"""SQL of the MailWizz sync: the candidates of a contact range and the state last pushed."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from email_engine_assets.quality.store import ContactRange
from email_engine_assets.sync.diff import CANDIDATE_SCHEMA, STATE_SCHEMA
from email_engine_resources.frames import copy_frame, read_frame

# The digest of what a subscriber row carries to MailWizz; a change in it is pushed again.
_ROW_DIGEST = """encode(sha256(convert_to(concat_ws(chr(31), c.email, coalesce(c.first_name, ''),
                                                  coalesce(c.last_name, '')), 'UTF8')), 'hex')"""
EMAIL_DIGEST = "encode(sha256(convert_to({email}, 'UTF8')), 'hex')"

WRITTEN_COLUMNS = ["list_name", "email_sha256", "contact_id", "list_uid", "subscriber_uid", "state", "row_sha256", "detail"]
WRITTEN_SCHEMA = {"list_name": pl.String, "email_sha256": pl.String, "contact_id": pl.Int64, "list_uid": pl.String,
                  "subscriber_uid": pl.String, "state": pl.String, "row_sha256": pl.String, "detail": pl.String}


def sync_candidates(conn: sa.Connection, tenant_id: str, default_language: str, default_category: str | None,
                    ids: ContactRange) -> pl.DataFrame:
    """Every contact of the range: its pushed fields, category, language, digests, sendable and suppressed.

    Sendable: the latest verdict is ``valid``. Suppressed: the address is in ``suppressions``,
    read in this statement (suppression wins over what any earlier step computed).
    """
    return read_frame(
        conn,
        f"""SELECT c.contact_id, c.email, {EMAIL_DIGEST.format(email="c.email")} AS email_sha256,
                   c.first_name, c.last_name, coalesce(c.category, :category) AS category,
                   coalesce(e.language, c.language, :language) AS language, {_ROW_DIGEST} AS row_sha256,
                   coalesce(v.verdict = 'valid', false) AS sendable, s.email IS NOT NULL AS suppressed
            FROM contacts c
            LEFT JOIN email_validations v ON v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id AND v.email = c.email
            LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
            LEFT JOIN suppressions s ON s.tenant_id = c.tenant_id AND s.email = c.email
            WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last ORDER BY c.contact_id""",
        {"t": tenant_id, "first": ids[0], "last": ids[1], "language": default_language, "category": default_category},
        CANDIDATE_SCHEMA,
    )


def pushed_state(conn: sa.Connection, tenant_id: str, instance: str, ids: ContactRange) -> pl.DataFrame:
    return read_frame(
        conn,
        """SELECT contact_id, list_name, email_sha256, list_uid, subscriber_uid, state, row_sha256
           FROM mailwizz_subscribers
           WHERE tenant_id = :t AND instance = :i AND contact_id BETWEEN :first AND :last""",
        {"t": tenant_id, "i": instance, "first": ids[0], "last": ids[1]},
        STATE_SCHEMA,
    )


def erased_state(conn: sa.Connection, tenant_id: str, instance: str) -> pl.DataFrame:
    """Rows whose contact was erased since they were pushed (their contact_id was set NULL)."""
    return read_frame(
        conn,
        """SELECT contact_id, list_name, email_sha256, list_uid, subscriber_uid, state, row_sha256
           FROM mailwizz_subscribers WHERE tenant_id = :t AND instance = :i AND contact_id IS NULL""",
        {"t": tenant_id, "i": instance},
        STATE_SCHEMA,
    )


def write_state(conn: sa.Connection, tenant_id: str, instance: str, rows: pl.DataFrame) -> int:
    """Upsert pushed rows (``WRITTEN_COLUMNS``) in one statement."""
    if rows.height == 0:
        return 0
    conn.exec_driver_sql(
        "CREATE TEMP TABLE pushed_rows (list_name text, email_sha256 text, contact_id bigint, list_uid text,"
        " subscriber_uid text, state text, row_sha256 text, detail text) ON COMMIT DROP"
    )
    copy_frame(conn, "pushed_rows", rows.select(WRITTEN_COLUMNS).cast(WRITTEN_SCHEMA), WRITTEN_COLUMNS)
    count = conn.execute(
        sa.text(
            """INSERT INTO mailwizz_subscribers
                   (tenant_id, instance, list_name, email_sha256, contact_id, list_uid, subscriber_uid, state, row_sha256, detail)
               SELECT :t, :i, list_name, email_sha256, contact_id, list_uid, subscriber_uid, state, row_sha256, detail
               FROM pushed_rows
               ON CONFLICT (tenant_id, instance, list_name, email_sha256) DO UPDATE SET
                   contact_id = excluded.contact_id, list_uid = excluded.list_uid,
                   subscriber_uid = excluded.subscriber_uid, state = excluded.state,
                   row_sha256 = excluded.row_sha256, detail = excluded.detail, pushed_at = now()"""
        ),
        {"t": tenant_id, "i": instance},
    ).rowcount
    conn.exec_driver_sql("DROP TABLE pushed_rows")
    return count


def delete_state(conn: sa.Connection, tenant_id: str, instance: str, rows: pl.DataFrame) -> int:
    """Forget the rows (``list_name``, ``email_sha256``) removed from MailWizz."""
    if rows.height == 0:
        return 0
    return conn.execute(
        sa.text(
            """DELETE FROM mailwizz_subscribers m
               USING unnest(CAST(:lists AS text[]), CAST(:emails AS text[])) AS r(list_name, email_sha256)
               WHERE m.tenant_id = :t AND m.instance = :i AND m.list_name = r.list_name AND m.email_sha256 = r.email_sha256"""
        ),
        {"t": tenant_id, "i": instance, "lists": rows["list_name"].to_list(), "emails": rows["email_sha256"].to_list()},
    ).rowcount
