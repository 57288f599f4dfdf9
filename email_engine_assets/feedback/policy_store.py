"""SQL of the suppression policy: the per-address counts over ``delivery_events``, the suppressions
it writes, the per-tenant watermark, and contact statuses.

Incremental: a run reads the events above the tenant's watermark (``feedback_policy_marks``) up to
the horizon, and for the addresses among them only the history the rules need (their complaints
or hard bounces when a new one came, their soft bounces within the window around the new ones).
"""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from email_engine_assets.feedback.policy import COUNTS_SCHEMA, DECISIONS_SCHEMA
from email_engine_resources.frames import copy_frame, read_frame

HORIZON_LOCK_TIMEOUT_MS = 1000
_STAGE = "policy_decisions_stage"


def event_horizon(engine: sa.Engine, lock_timeout_ms: int | None = None) -> tuple[int, bool]:
    """(highest event id, whether every event at or below it is final).

    Event ids come from a sequence when a row is inserted, but transactions commit in any order:
    a watermark moved past an id whose transaction has not committed yet would skip that event
    for ever. A ``SHARE`` lock on the table waits for every transaction that is inserting to end
    (and is released at once); the ids handed out after it are all higher. When the lock is not
    granted within ``lock_timeout_ms`` (a long import holds the table), the id is returned as not
    final: the run reads up to it but leaves the watermark where it was, and the next run reads
    those events again (applying them twice changes nothing).
    """
    timeout = HORIZON_LOCK_TIMEOUT_MS if lock_timeout_ms is None else lock_timeout_ms
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL lock_timeout = {int(timeout)}"))
        try:
            with conn.begin_nested():
                conn.execute(sa.text("LOCK TABLE delivery_events IN SHARE MODE"))
            final = True
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            final = False
        top = conn.execute(sa.text("SELECT coalesce(max(event_id), 0) FROM delivery_events")).scalar_one()
    return int(top), final


def policy_mark(conn: sa.Connection, tenant_id: str) -> int:
    """The highest event id the tenant's policy has read (0 before its first run)."""
    found = conn.execute(sa.text("SELECT last_event_id FROM feedback_policy_marks WHERE tenant_id = :t"), {"t": tenant_id}).scalar()
    return int(found or 0)


def set_policy_mark(conn: sa.Connection, tenant_id: str, event_id: int) -> None:
    conn.execute(
        sa.text("""INSERT INTO feedback_policy_marks (tenant_id, last_event_id)
                   SELECT :t, :e WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant_id = :t)
                   ON CONFLICT (tenant_id) DO UPDATE
                   SET last_event_id = greatest(feedback_policy_marks.last_event_id, excluded.last_event_id), applied_at = now()"""),
        {"t": tenant_id, "e": event_id},
    )


_COUNTS_SQL = """
WITH fresh AS (
    SELECT email,
           bool_or(event_type = 'unsubscribed') AS new_unsubscribe,
           bool_or(event_type = 'complained') AS new_complaint,
           bool_or(bounce_class = 'hard') AS new_hard,
           min(occurred_at) FILTER (WHERE bounce_class = 'soft') AS soft_from,
           max(occurred_at) FILTER (WHERE bounce_class = 'soft') AS soft_to
    FROM delivery_events
    WHERE tenant_id = :t AND event_id > :after AND event_id <= :upto AND email IS NOT NULL
      AND (event_type IN ('unsubscribed', 'complained') OR bounce_class IN ('hard', 'soft'))
    GROUP BY email
), history AS (
    SELECT e.email, e.event_type, e.bounce_class, e.occurred_at, e.event_id > :after AS is_new,
           CASE WHEN e.event_type = 'unsubscribed' THEN 'via ' || e.origin || coalesce(', campaign ' || e.campaign, '')
                ELSE e.detail END AS detail
    FROM fresh f
    JOIN delivery_events e ON e.tenant_id = :t AND e.email = f.email AND e.event_id <= :upto
    WHERE (e.event_type = 'unsubscribed' AND e.event_id > :after)
       OR (e.event_type = 'complained' AND f.new_complaint)
       OR (e.bounce_class = 'hard' AND f.new_hard)
       OR (e.bounce_class = 'soft' AND e.occurred_at BETWEEN f.soft_from - make_interval(days => :days)
                                                         AND f.soft_to + make_interval(days => :days))
), soft_windows AS (
    -- every window of :days days that ends at a soft bounce and holds at least one new one
    SELECT email, occurred_at, detail, in_window
    FROM (SELECT email, occurred_at, detail,
                 count(*) OVER w AS in_window, bool_or(is_new) OVER w AS touches_new
          FROM history WHERE bounce_class = 'soft'
          WINDOW w AS (PARTITION BY email ORDER BY occurred_at
                       RANGE BETWEEN make_interval(days => :days) PRECEDING AND CURRENT ROW)) windows
    WHERE touches_new
), soft AS (
    SELECT DISTINCT ON (email) email, in_window, detail
    FROM soft_windows ORDER BY email, in_window DESC, occurred_at DESC
), others AS (
    SELECT email,
           count(*) FILTER (WHERE event_type = 'unsubscribed') AS unsubscribes,
           (array_agg(detail ORDER BY occurred_at DESC) FILTER (WHERE event_type = 'unsubscribed'))[1] AS unsubscribe_detail,
           count(*) FILTER (WHERE event_type = 'complained') AS complaints,
           (array_agg(detail ORDER BY occurred_at DESC) FILTER (WHERE event_type = 'complained'))[1] AS complaint_detail,
           count(*) FILTER (WHERE bounce_class = 'hard') AS hard_bounces,
           (array_agg(detail ORDER BY occurred_at DESC) FILTER (WHERE bounce_class = 'hard'))[1] AS hard_detail
    FROM history WHERE bounce_class IS DISTINCT FROM 'soft'
    GROUP BY email
)
SELECT f.email, coalesce(o.unsubscribes, 0) AS unsubscribes, o.unsubscribe_detail,
       coalesce(o.complaints, 0) AS complaints, o.complaint_detail,
       coalesce(o.hard_bounces, 0) AS hard_bounces, o.hard_detail,
       coalesce(s.in_window, 0) AS soft_in_window, s.detail AS soft_detail
FROM fresh f
LEFT JOIN others o ON o.email = f.email
LEFT JOIN soft s ON s.email = f.email
"""


def address_counts(conn: sa.Connection, tenant_id: str, after: int, upto: int, soft_days: int) -> pl.DataFrame:
    """Per address with a decisive event in ``(after, upto]``: the counts of ``COUNTS_SCHEMA``.

    Counted: the new unsubscribes; all complaints (hard bounces) of an address with a new
    complaint (hard bounce); the most soft bounces in one ``soft_days`` window holding a new one.
    Reputation bounces, and events whose address was erased, are never read.
    """
    return read_frame(conn, _COUNTS_SQL, {"t": tenant_id, "after": after, "upto": upto, "days": soft_days}, COUNTS_SCHEMA)


def insert_suppressions(conn: sa.Connection, tenant_id: str, decisions: pl.DataFrame) -> dict[str, int]:
    """Suppress the decided addresses in one ``INSERT ... ON CONFLICT DO NOTHING`` (an existing
    suppression keeps its reason and detail); how many were new, per reason."""
    if decisions.height == 0:
        return {}
    conn.execute(sa.text(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (email text, reason text, detail text) ON COMMIT DELETE ROWS"))
    conn.execute(sa.text(f"TRUNCATE {_STAGE}"))
    copy_frame(conn, _STAGE, decisions.select(list(DECISIONS_SCHEMA)), list(DECISIONS_SCHEMA))
    rows = conn.execute(
        sa.text(f"""WITH written AS (
                       INSERT INTO suppressions (tenant_id, email, reason, detail)
                       SELECT :t, email, reason, detail FROM {_STAGE}
                       ON CONFLICT (tenant_id, email) DO NOTHING
                       RETURNING reason)
                   SELECT reason, count(*) FROM written GROUP BY reason"""),
        {"t": tenant_id},
    ).all()
    return {reason: int(n) for reason, n in rows}


def contact_status(conn: sa.Connection, tenant_id: str, email_key: str) -> dict | None:
    """``status`` (active, unsubscribed, bounced, complained, manual, erased), ``detail``, ``since``
    and ``contact_id`` of the tenant's contact with this address key; ``None`` when there is none."""
    row = conn.execute(
        sa.text("""SELECT contact_id, status, status_detail AS detail, status_since AS since
                   FROM contact_statuses WHERE tenant_id = :t AND email = :e"""),
        {"t": tenant_id, "e": email_key},
    ).mappings().first()
    return dict(row) if row else None


def status_counts(conn: sa.Connection, tenant_id: str) -> dict[str, int]:
    """How many of the tenant's contacts are in each status."""
    rows = conn.execute(
        sa.text("SELECT status, count(*) FROM contact_statuses WHERE tenant_id = :t GROUP BY status"), {"t": tenant_id}
    ).all()
    return {status: int(n) for status, n in rows}
