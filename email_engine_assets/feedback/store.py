"""SQL of the feedback loop: recording delivery events against the send ledger, and the timing
rules of our own tracking hits (too soon after the hand-off, bursts of links)."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from email_engine_assets.feedback.events import EVENT_FRAME_SCHEMA, with_event_columns
from email_engine_assets.feedback.tracking_rules import SCANNER_BURST, TOO_SOON
from email_engine_assets.tenancy.tracking_settings import MachineRules
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
    frame = with_event_columns(frame).unique(subset="dedupe_key", keep="first", maintain_order=True)
    conn.execute(sa.text(
        f"""CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
                event_type text, origin text, occurred_at timestamptz, dedupe_key text, bounce_class text,
                token text, campaign text, email text, detail text, url text,
                machine boolean, classified_by text, link_index integer) ON COMMIT DELETE ROWS"""
    ))
    conn.execute(sa.text(f"TRUNCATE {_STAGE}"))
    copy_frame(conn, _STAGE, frame, list(EVENT_FRAME_SCHEMA))
    if frame.height >= ANALYZE_ROWS:
        # Only the join columns: the row count comes with any ANALYZE, and the statistics of the
        # long text columns (detail) cost most of a full one and serve no plan.
        conn.execute(sa.text(f"ANALYZE {_STAGE} (token, campaign, email)"))
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
                                                 send_row_id, contact_id, email, detail, url, dedupe_key,
                                                 machine, classified_by, link_index)
                    SELECT :t, event_type, bounce_class, origin, occurred_at, campaign_of, row_id, contact_of,
                           email_of, detail, url, dedupe_key, machine, classified_by, link_index
                    FROM linked
                    ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
                    RETURNING send_row_id
                )
                SELECT count(*) AS inserted, count(send_row_id) AS linked FROM written"""
        ),
        {"t": tenant_id},
    ).one()
    return {"inserted": row.inserted, "linked": row.linked, "duplicates": given - row.inserted}


def apply_timing_rules(conn: sa.Connection, tenant_id: str, dedupe_keys: list[str], rules: MachineRules) -> dict[str, int]:
    """The timing rules over the tracking events just recorded (``dedupe_keys``) and, for bursts,
    the other clicks of the same messages, whenever they were applied. Set-based, in the caller's
    transaction; returns how many events each rule turned into machines.

    - ``too_soon``: a hit less than ``too_soon_s`` after its ledger row was handed off
      (``campaign_sends.settled_at`` of a ``sent`` row);
    - ``scanner_burst``: ``burst_links`` or more different links of one message clicked within
      ``burst_window_s``: every click of such a window, also one an earlier batch applied, and the
      message's opens from ``burst_window_s`` before the burst to its end (scanners fetch the pixel too).

    Only events classed as people change: a request-time machine keeps its rule (never the
    reverse), and a ``too_soon`` click stays ``too_soon``. ``0`` seconds turns a rule off.
    """
    counts = {TOO_SOON: 0, SCANNER_BURST: 0}
    if not dedupe_keys:
        return counts
    if rules.too_soon_s > 0:
        counts[TOO_SOON] = conn.execute(
            sa.text(
                """UPDATE delivery_events e SET machine = true, classified_by = :rule
                   FROM campaign_sends s
                   WHERE e.tenant_id = :t AND e.dedupe_key = ANY(:keys) AND e.origin = 'tracking'
                     AND e.machine IS FALSE AND s.row_id = e.send_row_id AND s.tenant_id = :t
                     AND s.state = 'sent' AND s.settled_at IS NOT NULL
                     AND e.occurred_at < s.settled_at + make_interval(secs => :window)"""
            ),
            {"t": tenant_id, "keys": dedupe_keys, "rule": TOO_SOON, "window": rules.too_soon_s},
        ).rowcount
    if rules.burst_window_s > 0:
        counts[SCANNER_BURST] = conn.execute(
            sa.text(
                """WITH touched AS (
                       SELECT DISTINCT send_row_id FROM delivery_events
                       WHERE tenant_id = :t AND dedupe_key = ANY(:keys)
                         AND origin = 'tracking' AND send_row_id IS NOT NULL
                   ), clicks AS (
                       SELECT e.event_id, e.send_row_id, e.occurred_at, e.link_index
                       FROM delivery_events e JOIN touched USING (send_row_id)
                       WHERE e.tenant_id = :t AND e.event_type = 'clicked' AND e.origin = 'tracking'
                         AND e.link_index IS NOT NULL
                   ), bursts AS (  -- windows opened by a click that hold enough different links
                       SELECT a.send_row_id, a.occurred_at AS opened
                       FROM clicks a JOIN clicks b ON b.send_row_id = a.send_row_id
                        AND b.occurred_at >= a.occurred_at
                        AND b.occurred_at <= a.occurred_at + make_interval(secs => :window)
                       GROUP BY a.event_id, a.send_row_id, a.occurred_at
                       HAVING count(DISTINCT b.link_index) >= :links
                   ), in_burst AS (
                       SELECT DISTINCT c.event_id FROM bursts w JOIN clicks c ON c.send_row_id = w.send_row_id
                        AND c.occurred_at >= w.opened AND c.occurred_at <= w.opened + make_interval(secs => :window)
                       UNION  -- the pixel the scanner fetched with the links, just before or during the burst
                       SELECT o.event_id FROM bursts w JOIN delivery_events o ON o.send_row_id = w.send_row_id
                        AND o.tenant_id = :t AND o.origin = 'tracking' AND o.event_type = 'opened'
                        AND o.occurred_at >= w.opened - make_interval(secs => :window)
                        AND o.occurred_at <= w.opened + make_interval(secs => :window)
                   )
                   UPDATE delivery_events e SET machine = true, classified_by = :rule
                   FROM in_burst WHERE e.event_id = in_burst.event_id AND e.machine IS FALSE"""
            ),
            {"t": tenant_id, "keys": dedupe_keys, "rule": SCANNER_BURST, "window": rules.burst_window_s,
             "links": rules.burst_links},
        ).rowcount
    return counts
