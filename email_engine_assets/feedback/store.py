"""SQL of the feedback loop: recording delivery events against the send ledger."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from email_engine_assets.feedback.events import EVENT_FRAME_SCHEMA
from email_engine_resources.frames import copy_frame

_STAGE = "feedback_events_stage"
# A stage this large is analyzed before the join, so the planner sees its size (the accounting
# chunks); a few events (an unsubscribe, a page of webhook rows) join well on the default estimate
# and are not worth an ANALYZE on the request path.
ANALYZE_ROWS = 10_000


def record_events(conn: sa.Connection, tenant_id: str, frame: pl.DataFrame) -> dict[str, int]:
    """Record an events frame (:func:`email_engine_assets.feedback.events.events_frame` columns) for a tenant.

    Set-based: the frame is COPYed into a temporary table, then one ``INSERT ... SELECT`` links each
    event to its ledger row of this tenant -- by ``token`` (the ENVID), else by (campaign, email) --
    and skips dedupe keys already recorded (a line or payload applied twice counts once). Events
    that match no row are recorded unlinked. Returns ``inserted``, ``linked`` and ``duplicates``.
    """
    if frame.height == 0:
        return {"inserted": 0, "linked": 0, "duplicates": 0}
    given = frame.height
    frame = frame.select(list(EVENT_FRAME_SCHEMA)).unique(subset="dedupe_key", keep="first", maintain_order=True)
    conn.execute(sa.text(
        f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
                event_type text, origin text, occurred_at timestamptz, dedupe_key text, bounce_class text,
                token text, campaign text, email text, detail text, url text) ON COMMIT DELETE ROWS"""
    ))
    conn.execute(sa.text(f"TRUNCATE {_STAGE}"))
    copy_frame(conn, _STAGE, frame, list(EVENT_FRAME_SCHEMA))
    if frame.height >= ANALYZE_ROWS:
        conn.execute(sa.text(f"ANALYZE {_STAGE}"))
    # Events that carry a token link by it alone; the (campaign, email) join is only planned when
    # some event has none (it would scan the ledger a second time for nothing).
    by_address = (
        """LEFT JOIN campaign_sends by_address
                   ON st.token IS NULL AND by_address.tenant_id = :t
                  AND by_address.campaign = st.campaign AND by_address.email = st.email"""
        if frame.get_column("token").null_count() else
        "LEFT JOIN (SELECT NULL::bigint AS row_id, NULL::text AS campaign, NULL::bigint AS contact_id, "
        "NULL::text AS email) by_address ON false"
    )
    row = conn.execute(
        sa.text(
            f"""WITH linked AS (
                    SELECT st.*, coalesce(by_token.row_id, by_address.row_id) AS row_id,
                           coalesce(by_token.campaign, by_address.campaign, st.campaign) AS campaign_of,
                           coalesce(by_token.contact_id, by_address.contact_id) AS contact_of,
                           coalesce(by_token.email, by_address.email, st.email) AS email_of
                    FROM {_STAGE} st
                    LEFT JOIN campaign_sends by_token
                           ON by_token.token = st.token AND by_token.tenant_id = :t
                    {by_address}
                ), written AS (
                    INSERT INTO delivery_events (tenant_id, event_type, bounce_class, origin, occurred_at, campaign,
                                                 send_row_id, contact_id, email, detail, url, dedupe_key)
                    SELECT :t, event_type, bounce_class, origin, occurred_at, campaign_of, row_id, contact_of,
                           email_of, detail, url, dedupe_key
                    FROM linked
                    ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
                    RETURNING send_row_id
                )
                SELECT count(*) AS inserted, count(send_row_id) AS linked FROM written"""
        ),
        {"t": tenant_id},
    ).one()
    return {"inserted": row.inserted, "linked": row.linked, "duplicates": given - row.inserted}
