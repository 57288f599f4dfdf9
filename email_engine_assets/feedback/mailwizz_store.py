"""SQL of the MailWizz feedback: which suppressions each instance still needs, and how far a poll got."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

PUSH_STATES: tuple[str, ...] = ("pushed", "failed", "refused")


def pending_pushes(conn: sa.Connection, tenant_id: str, instance: str, limit: int) -> list[str]:
    """Suppressed addresses of the tenant the instance has not taken yet (never tried, or failed), oldest first.

    ``erased`` suppressions are left to the forget path (it removes the subscribers themselves).
    """
    return list(conn.execute(
        sa.text("""SELECT s.email FROM suppressions s
                   LEFT JOIN mailwizz_suppression_pushes p
                          ON p.tenant_id = s.tenant_id AND p.instance = :i AND p.email = s.email
                   WHERE s.tenant_id = :t AND s.reason <> 'erased' AND (p.state IS NULL OR p.state = 'failed')
                   ORDER BY s.created_at, s.email
                   LIMIT :n"""),
        {"t": tenant_id, "i": instance, "n": limit},
    ).scalars())


def record_pushes(conn: sa.Connection, tenant_id: str, instance: str, outcomes: Sequence[tuple[str, str, str | None]]) -> None:
    """Record (email, state, detail) outcomes of push calls; a retried address counts its attempts."""
    if not outcomes:
        return
    conn.execute(
        sa.text("""INSERT INTO mailwizz_suppression_pushes (tenant_id, instance, email, state, detail)
                   SELECT :t, :i, :e, :s, :d WHERE EXISTS (SELECT 1 FROM suppressions WHERE tenant_id = :t AND email = :e)
                   ON CONFLICT (tenant_id, instance, email) DO UPDATE
                   SET state = excluded.state, detail = excluded.detail, updated_at = now(),
                       attempts = mailwizz_suppression_pushes.attempts + 1"""),
        [{"t": tenant_id, "i": instance, "e": email, "s": state, "d": detail} for email, state, detail in outcomes],
    )


def push_states(conn: sa.Connection, tenant_id: str, instance: str) -> dict[str, int]:
    rows = conn.execute(
        sa.text("SELECT state, count(*) FROM mailwizz_suppression_pushes WHERE tenant_id = :t AND instance = :i GROUP BY state"),
        {"t": tenant_id, "i": instance},
    ).all()
    return {state: int(n) for state, n in rows}


def known_dedupe_keys(conn: sa.Connection, tenant_id: str, keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` already recorded as the tenant's delivery events."""
    given = list(dict.fromkeys(keys))
    if not given:
        return set()
    return set(conn.execute(
        sa.text("SELECT dedupe_key FROM delivery_events WHERE tenant_id = :t AND dedupe_key = ANY(CAST(:k AS text[]))"),
        {"t": tenant_id, "k": given},
    ).scalars())


def poll_was_complete(conn: sa.Connection, tenant_id: str, instance: str, campaign_uid: str, kind: str) -> bool:
    """Whether the last poll of this campaign's ``kind`` read every page (so a known page ends the next one)."""
    return bool(conn.execute(
        sa.text("""SELECT complete FROM mailwizz_feedback_polls
                   WHERE tenant_id = :t AND instance = :i AND campaign_uid = :c AND kind = :k"""),
        {"t": tenant_id, "i": instance, "c": campaign_uid, "k": kind},
    ).scalar())


def set_poll(conn: sa.Connection, tenant_id: str, instance: str, campaign_uid: str, kind: str, *, complete: bool, records: int) -> None:
    conn.execute(
        sa.text("""INSERT INTO mailwizz_feedback_polls (tenant_id, instance, campaign_uid, kind, complete, records)
                   VALUES (:t, :i, :c, :k, :done, :n)
                   ON CONFLICT (tenant_id, instance, campaign_uid, kind) DO UPDATE
                   SET complete = excluded.complete, records = excluded.records, polled_at = now()"""),
        {"t": tenant_id, "i": instance, "c": campaign_uid, "k": kind, "done": complete, "n": records},
    )
