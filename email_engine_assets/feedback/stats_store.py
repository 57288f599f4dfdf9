"""SQL of campaign stats: counts over the send ledger and its delivery events, and the stored stats.

One statement per campaign counts everything (``campaign_sends`` joined to its events by ledger
row, grouped by the template each row got); the campaign's events that matched no row are counted
by a second one, and the clicks per template and link (``by_link``) by a third, which reads the
campaign's click events only (index ``delivery_events_campaign``). A person's event is one with
``machine IS NOT TRUE`` (unclassified MailWizz events count as people's: :mod:`.stats`). The stats object itself is built by :mod:`email_engine_assets.feedback.stats`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.feedback.stats import COUNT_KEYS, HUMAN_OF, LINK_COUNT_KEYS, LinkCounts, TemplateCounts

# Per ledger row: which events it has (and how many opens / clicks); then per template and rule (a
# few groups, hashed: grouping by template alone with array_agg(DISTINCT rule) sorted every row).
_BY_TEMPLATE = """
WITH per_row AS (
    SELECT e.send_row_id,
           bool_or(e.event_type = 'delivered') AS delivered,
           bool_or(e.event_type = 'deferred') AS deferred,
           bool_or(e.event_type = 'bounced' AND e.bounce_class = 'hard') AS bounced_hard,
           bool_or(e.event_type = 'bounced' AND e.bounce_class = 'soft') AS bounced_soft,
           bool_or(e.event_type = 'bounced' AND e.bounce_class = 'reputation') AS bounced_reputation,
           bool_or(e.event_type = 'complained') AS complained,
           bool_or(e.event_type = 'unsubscribed') AS unsubscribed,
           count(*) FILTER (WHERE e.event_type = 'opened') AS opens,
           count(*) FILTER (WHERE e.event_type = 'opened' AND e.machine IS NOT TRUE) AS opens_human,
           count(*) FILTER (WHERE e.event_type = 'clicked') AS clicks,
           count(*) FILTER (WHERE e.event_type = 'clicked' AND e.machine IS NOT TRUE) AS clicks_human
    FROM delivery_events e
    WHERE e.tenant_id = :t AND e.campaign = :c AND e.send_row_id IS NOT NULL
    GROUP BY e.send_row_id
)
SELECT s.template, s.rule,
       count(*) FILTER (WHERE s.state IN ('sent', 'handed_off')) AS sent,
       count(*) FILTER (WHERE p.delivered) AS delivered,
       count(*) FILTER (WHERE p.deferred) AS deferred,
       count(*) FILTER (WHERE p.bounced_hard) AS bounced_hard,
       count(*) FILTER (WHERE p.bounced_soft) AS bounced_soft,
       count(*) FILTER (WHERE p.bounced_reputation) AS bounced_reputation,
       count(*) FILTER (WHERE p.complained) AS complained,
       coalesce(sum(p.opens), 0) AS opened,
       count(*) FILTER (WHERE p.opens > 0) AS unique_opened,
       coalesce(sum(p.opens_human), 0) AS opened_human,
       count(*) FILTER (WHERE p.opens_human > 0) AS unique_opened_human,
       coalesce(sum(p.clicks), 0) AS clicked,
       count(*) FILTER (WHERE p.clicks > 0) AS unique_clicked,
       coalesce(sum(p.clicks_human), 0) AS clicked_human,
       count(*) FILTER (WHERE p.clicks_human > 0) AS unique_clicked_human,
       count(*) FILTER (WHERE p.unsubscribed) AS unsubscribed
FROM campaign_sends s
LEFT JOIN per_row p ON p.send_row_id = s.row_id
WHERE s.tenant_id = :t AND s.campaign = :c
GROUP BY s.template, s.rule
ORDER BY s.template NULLS FIRST, s.rule
"""

_UNMATCHED = """
SELECT CASE WHEN event_type = 'bounced' THEN 'bounced_' || bounce_class ELSE event_type END AS key, count(*) AS n,
       count(*) FILTER (WHERE machine IS NOT TRUE) AS human
FROM delivery_events
WHERE tenant_id = :t AND campaign = :c AND send_row_id IS NULL
GROUP BY 1
"""

# The part of an http(s) URL that names the page and never the person: scheme://host/path, without
# a user, query or fragment (NULL for any other URL: mailto:, tel:). Which URL a link's stats show is
# stats.shown_url's rule; this only gives it the candidates. split_part before the one regexp: it is
# the cost of the statement (a regexp over the whole URL took twice as long on the benchmark).
_URL_BASE = r"""CASE WHEN e.url ILIKE 'http://%' OR e.url ILIKE 'https://%'
    THEN regexp_replace(split_part(split_part(e.url, '#', 1), '?', 1), '^([a-z]+://)[^/]*@', '\1', 'i') END"""

_BY_LINK = f"""
WITH clicks AS (
    SELECT s.template, e.link_index, e.send_row_id, e.machine IS NOT TRUE AS human, e.url, {_URL_BASE} AS base
    FROM delivery_events e JOIN campaign_sends s ON s.row_id = e.send_row_id
    WHERE e.tenant_id = :t AND e.campaign = :c AND e.event_type = 'clicked' AND e.link_index IS NOT NULL
)
SELECT template, link_index,
       count(*) AS clicked,
       count(DISTINCT send_row_id) AS unique_clicked,
       count(*) FILTER (WHERE human) AS clicked_human,
       count(DISTINCT send_row_id) FILTER (WHERE human) AS unique_clicked_human,
       CASE WHEN min(url) = max(url) THEN min(url) END AS url,
       CASE WHEN min(base) = max(base) THEN min(base) END AS base,
       count(DISTINCT send_row_id) FILTER (WHERE url IS NOT NULL) AS url_rows
FROM clicks
GROUP BY template, link_index
"""


def campaign_info(conn: sa.Connection, tenant_id: str, name: str) -> dict | None:
    """The campaign's ``state``, ``transport`` and ``completed_at``; None when there is no such campaign."""
    row = conn.execute(
        sa.text("SELECT state, transport, completed_at FROM campaigns WHERE tenant_id = :t AND campaign = :c"),
        {"t": tenant_id, "c": name},
    ).mappings().first()
    return dict(row) if row else None


@contextmanager
def _serial(conn: sa.Connection):
    """Run the statement without parallel workers, in the caller's transaction (``SET LOCAL``, put
    back after; a failed statement ends the transaction, which undoes it anyway). A parallel plan of
    :data:`_BY_TEMPLATE` has every worker compute the whole per-row aggregate again under its share
    of the ledger: three times the work, and slower (benchmarks/campaign_stats.py)."""
    before = conn.execute(sa.text("SELECT current_setting('max_parallel_workers_per_gather')")).scalar()
    conn.execute(sa.text("SELECT set_config('max_parallel_workers_per_gather', '0', true)"))
    yield
    conn.execute(sa.text("SELECT set_config('max_parallel_workers_per_gather', :v, true)"), {"v": before})


def local_counts(conn: sa.Connection, tenant_id: str, name: str) -> tuple[dict[str, int], list[TemplateCounts]]:
    """(the campaign's totals, the counts per template and choice rule) from the ledger and the delivery events.

    The totals add the events of the campaign that matched no ledger row (``opened`` / ``clicked``
    and the per-message counts alike; never the unique counts, which count ledger rows).
    """
    templates = []
    totals = dict.fromkeys(COUNT_KEYS, 0)
    with _serial(conn):
        rows = conn.execute(sa.text(_BY_TEMPLATE), {"t": tenant_id, "c": name}).mappings().all()
    for r in rows:
        counts = {k: int(r[k]) for k in COUNT_KEYS}
        templates.append(TemplateCounts(r["template"], counts, (r["rule"],) if r["rule"] else ()))
        for k in COUNT_KEYS:
            totals[k] += counts[k]
    for key, n, human in conn.execute(sa.text(_UNMATCHED), {"t": tenant_id, "c": name}).all():
        if key in totals:
            totals[key] += int(n)
        if key in HUMAN_OF:
            totals[HUMAN_OF[key]] += int(human)
    return totals, templates


def link_counts(conn: sa.Connection, tenant_id: str, name: str) -> list[LinkCounts]:
    """The campaign's clicks per template and link index (our tracking's clicks, linked to a ledger row)."""
    return [
        LinkCounts(r["template"], int(r["link_index"]), {k: int(r[k]) for k in LINK_COUNT_KEYS},
                   r["url"], r["base"], int(r["url_rows"]))
        for r in conn.execute(sa.text(_BY_LINK), {"t": tenant_id, "c": name}).mappings()
    ]


def stored_mailwizz(conn: sa.Connection, tenant_id: str, name: str) -> tuple[dict | None, datetime | None]:
    """MailWizz's figures per template as last fetched for the campaign, and when (None: never)."""
    row = conn.execute(
        sa.text("SELECT mailwizz, mailwizz_fetched_at FROM campaign_stats WHERE tenant_id = :t AND campaign = :c"),
        {"t": tenant_id, "c": name},
    ).first()
    return (row.mailwizz, row.mailwizz_fetched_at) if row else (None, None)


def stored_stats(conn: sa.Connection, tenant_id: str, name: str) -> dict | None:
    return conn.execute(
        sa.text("SELECT stats FROM campaign_stats WHERE tenant_id = :t AND campaign = :c"), {"t": tenant_id, "c": name}
    ).scalar()


def save_stats(conn: sa.Connection, tenant_id: str, name: str, stats: dict, mailwizz: dict | None,
               mailwizz_fetched_at: datetime | None) -> None:
    """Replace the campaign's stored stats, and set ``campaigns.hard_bounces`` / ``complaints`` from them.

    Those two columns never go down: a count an earlier computation made with figures this one
    lacks (MailWizz unreachable and never fetched, an operator's correction) is kept.
    """
    conn.execute(
        sa.text(
            """INSERT INTO campaign_stats (tenant_id, campaign, stats, mailwizz, mailwizz_fetched_at, computed_at)
               VALUES (:t, :c, CAST(:s AS jsonb), CAST(:m AS jsonb), :f, now())
               ON CONFLICT (tenant_id, campaign) DO UPDATE SET stats = EXCLUDED.stats, mailwizz = EXCLUDED.mailwizz,
                   mailwizz_fetched_at = EXCLUDED.mailwizz_fetched_at, computed_at = EXCLUDED.computed_at"""
        ),
        {"t": tenant_id, "c": name, "s": json.dumps(stats), "m": json.dumps(mailwizz) if mailwizz is not None else None,
         "f": mailwizz_fetched_at},
    )
    conn.execute(
        sa.text(
            """UPDATE campaigns SET hard_bounces = greatest(coalesce(hard_bounces, 0), :h),
                   complaints = greatest(coalesce(complaints, 0), :x)
               WHERE tenant_id = :t AND campaign = :c"""
        ),
        {"t": tenant_id, "c": name, "h": int(stats["bounced_hard"]), "x": int(stats["complained"])},
    )


def last_completed_campaign(conn: sa.Connection, tenant_id: str, exclude: str) -> str | None:
    """The name of the tenant's most recently completed campaign other than ``exclude``."""
    return conn.execute(
        sa.text(
            """SELECT campaign FROM campaigns WHERE tenant_id = :t AND campaign <> :c AND state = 'completed'
               ORDER BY completed_at DESC NULLS LAST LIMIT 1"""
        ),
        {"t": tenant_id, "c": exclude},
    ).scalar()


def campaigns_receiving_feedback(conn: sa.Connection, completed_since: datetime) -> list[str]:
    """Keys of the campaigns whose stats still change: started and not yet completed (running,
    paused, cancelled after a start), or completed since ``completed_since``."""
    return list(conn.execute(
        sa.text(
            """SELECT tenant_id || '.' || campaign FROM campaigns
               WHERE started_at IS NOT NULL AND (completed_at IS NULL OR completed_at >= :since)
               ORDER BY tenant_id, campaign"""
        ),
        {"since": completed_since},
    ).scalars())
