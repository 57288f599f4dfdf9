"""SQL of campaigns and the send ledger (``sql/009_campaigns.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.campaigns.files import (
    SEND_NOW,
    Campaign,
    campaign_key,
    check_schedule,
)
from email_engine_assets.campaigns.gates import LastCampaign
from email_engine_assets.campaigns.guard_rail import FeedbackSample
from email_engine_assets.campaigns.lifecycle import (
    EDITABLE_STATES,
    initial_state,
    next_state,
)

_CAMPAIGN_COLUMNS = """tenant_id, campaign, state, segment, category, transport, send_at, rate_per_minute,
    config_sha256, snapshot_hash, audience_frozen_at, started_at, completed_at, hard_bounces, complaints,
    paused_reason, guard_rail_overridden"""


def sync_campaign(conn: sa.Connection, campaign: Campaign, now: datetime) -> str | None:
    """Record a campaign file: a new campaign starts as draft or scheduled; a draft or scheduled one
    follows its file (nothing has been claimed yet); a started one keeps what it was started with.

    Returns the problem when the file schedules the campaign in the past: a known campaign is then
    left as it was, a new one is recorded as a draft. ``send_at: now`` schedules it at ``now`` when
    the file is first seen (due at once); a later read keeps that moment.
    """
    f = campaign.file
    row = conn.execute(
        sa.text("SELECT state, send_at, config_sha256 FROM campaigns WHERE tenant_id = :t AND campaign = :c FOR UPDATE"),
        {"t": campaign.tenant_id, "c": campaign.name},
    ).first()
    if row is not None and (row.state not in EDITABLE_STATES or row.config_sha256 == campaign.sha256):
        return None
    send_at = f.send_at
    if send_at == SEND_NOW:  # scheduled when first seen (a scheduled campaign keeps that moment), so due at once
        send_at = row.send_at if row is not None and row.state == "scheduled" and row.send_at is not None else now
    newly_scheduled = send_at is not None and (row is None or row.send_at != send_at)
    problem = check_schedule(campaign, now) if newly_scheduled else None
    if problem and row is not None:
        return problem
    # A new file scheduled in the past is recorded as a draft: it never starts by itself.
    state = "draft" if problem else initial_state(send_at)
    params = {
        "t": campaign.tenant_id, "c": campaign.name, "state": state, "segment": f.segment,
        "category": f.category, "transport": f.transport, "send_at": send_at, "rate": f.rate_per_minute,
        "sha": campaign.sha256,
    }
    conn.execute(
        sa.text(
            """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, send_at, rate_per_minute, config_sha256)
               VALUES (:t, :c, :state, :segment, :category, :transport, :send_at, :rate, :sha)
               ON CONFLICT (tenant_id, campaign) DO UPDATE SET state = EXCLUDED.state, segment = EXCLUDED.segment,
                   category = EXCLUDED.category, transport = EXCLUDED.transport, send_at = EXCLUDED.send_at,
                   rate_per_minute = EXCLUDED.rate_per_minute, config_sha256 = EXCLUDED.config_sha256, updated_at = now()"""
        ),
        params,
    )
    return problem


def campaign_row(conn: sa.Connection, tenant_id: str, name: str) -> dict | None:
    row = conn.execute(
        sa.text(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE tenant_id = :t AND campaign = :c"), {"t": tenant_id, "c": name}
    ).mappings().first()
    return dict(row) if row else None


def list_campaigns(conn: sa.Connection, tenant_id: str | None = None) -> list[dict]:
    rows = conn.execute(
        sa.text(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE (CAST(:t AS text) IS NULL OR tenant_id = :t) ORDER BY tenant_id, campaign"),
        {"t": tenant_id},
    ).mappings().all()
    return [dict(r) for r in rows]


def due_campaigns(conn: sa.Connection, now: datetime) -> list[str]:
    """Keys of the scheduled campaigns whose time has come."""
    return list(
        conn.execute(
            sa.text(
                """SELECT tenant_id || '.' || campaign FROM campaigns
                   WHERE state = 'scheduled' AND send_at <= :now
                   ORDER BY send_at, tenant_id, campaign"""
            ),
            {"now": now},
        ).scalars()
    )


def interrupted_campaigns(conn: sa.Connection) -> list[str]:
    """Keys of the campaigns still ``running``: a run that died (or a release owed to a list
    transport) left work. Sending them again goes on with the queued rows; rows left ``sending``
    become ``unknown``, never resent."""
    return list(
        conn.execute(
            sa.text("SELECT tenant_id || '.' || campaign FROM campaigns WHERE state = 'running' ORDER BY tenant_id, campaign")
        ).scalars()
    )


def transition(conn: sa.Connection, tenant_id: str, name: str, action: str) -> tuple[str, str]:
    """Apply ``action`` under the campaign row's lock: (state before, state after).

    ``LookupError`` for an unknown campaign, ``LifecycleError`` when the state does not allow it.
    Cancelling settles the rows still queued as ``skipped_cancelled`` in the same transaction.
    """
    before = conn.execute(
        sa.text("SELECT state FROM campaigns WHERE tenant_id = :t AND campaign = :c FOR UPDATE"), {"t": tenant_id, "c": name}
    ).scalar()
    if before is None:
        raise LookupError(f"no campaign {campaign_key(tenant_id, name)!r} (its file is read when it is listed, sent or due)")
    after = next_state(before, action)
    conn.execute(
        sa.text(
            """UPDATE campaigns SET state = :s, updated_at = now(),
                   started_at = CASE WHEN :s = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
                   completed_at = CASE WHEN :s = 'completed' THEN now() ELSE completed_at END,
                   paused_reason = CASE WHEN :s = 'running' THEN NULL ELSE paused_reason END
               WHERE tenant_id = :t AND campaign = :c"""
        ),
        {"s": after, "t": tenant_id, "c": name},
    )
    if after == "cancelled":
        conn.execute(
            sa.text(
                """UPDATE campaign_sends SET state = 'skipped_cancelled', settled_at = now()
                   WHERE tenant_id = :t AND campaign = :c AND state = 'queued'"""
            ),
            {"t": tenant_id, "c": name},
        )
    return before, after


def audience_claimed(conn: sa.Connection, tenant_id: str, name: str) -> bool:
    """Whether any row of the campaign has ever been claimed (its audience can no longer change)."""
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM campaign_sends WHERE tenant_id = :t AND campaign = :c AND claimed_at IS NOT NULL)"),
            {"t": tenant_id, "c": name},
        ).scalar()
    )


def clear_audience(conn: sa.Connection, tenant_id: str, name: str) -> None:
    """Forget an audience nothing was claimed from (the segment changed before the first send)."""
    conn.execute(sa.text("DELETE FROM campaign_sends WHERE tenant_id = :t AND campaign = :c AND claimed_at IS NULL"),
                 {"t": tenant_id, "c": name})


def freeze_members(conn: sa.Connection, tenant_id: str, name: str, contact_ids: Sequence[int]) -> int:
    """Ledger rows for these contacts: ``queued``, or ``skipped_suppressed`` when the address is suppressed.

    Each row gets a random token (the ENVID; the Message-ID derives from it). Contacts already in
    the ledger keep their row; ids of another tenant or of no contact are ignored.
    """
    return conn.execute(
        sa.text(
            """INSERT INTO campaign_sends (tenant_id, campaign, contact_id, email, state, token, detail, settled_at)
               SELECT ct.tenant_id, :c, ct.contact_id, ct.email,
                      CASE WHEN sp.email IS NULL THEN 'queued' ELSE 'skipped_suppressed' END,
                      replace(gen_random_uuid()::text, '-', ''),
                      CASE WHEN sp.email IS NULL THEN NULL ELSE 'suppressed (' || sp.reason || ') when the audience was frozen' END,
                      CASE WHEN sp.email IS NULL THEN NULL ELSE now() END
               FROM contacts ct
               LEFT JOIN suppressions sp ON sp.tenant_id = ct.tenant_id AND sp.email = ct.email
               WHERE ct.tenant_id = :t AND ct.contact_id = ANY(:ids)
               ORDER BY ct.contact_id
               ON CONFLICT DO NOTHING"""
        ),
        {"t": tenant_id, "c": name, "ids": list(contact_ids)},
    ).rowcount


def mark_frozen(conn: sa.Connection, tenant_id: str, name: str, snapshot_hash: str) -> None:
    conn.execute(
        sa.text("UPDATE campaigns SET snapshot_hash = :h, audience_frozen_at = now(), updated_at = now() WHERE tenant_id = :t AND campaign = :c"),
        {"h": snapshot_hash, "t": tenant_id, "c": name},
    )


def suppressed_at_freeze(conn: sa.Connection, tenant_id: str, name: str) -> int:
    return conn.execute(
        sa.text("""SELECT count(*) FROM campaign_sends WHERE tenant_id = :t AND campaign = :c
                   AND state = 'skipped_suppressed' AND claimed_at IS NULL"""),
        {"t": tenant_id, "c": name},
    ).scalar_one()


def recover_interrupted(conn: sa.Connection, tenant_id: str, name: str) -> int:
    """Rows left ``sending`` by a run that died become ``unknown``. Call only while holding the campaign's send lock."""
    return conn.execute(
        sa.text(
            """UPDATE campaign_sends SET state = 'unknown', settled_at = now(),
                   detail = 'the run sending it ended before recording the outcome'
               WHERE tenant_id = :t AND campaign = :c AND state = 'sending'"""
        ),
        {"t": tenant_id, "c": name},
    ).rowcount


def requeue_unknown(conn: sa.Connection, tenant_id: str, name: str) -> int:
    """The operator's ``--resend-unknown``: unknown rows are queued again (they may be received twice)."""
    return conn.execute(
        sa.text(
            """UPDATE campaign_sends SET state = 'queued', settled_at = NULL,
                   detail = 'queued again by --resend-unknown after: ' || coalesce(detail, 'unknown')
               WHERE tenant_id = :t AND campaign = :c AND state = 'unknown'"""
        ),
        {"t": tenant_id, "c": name},
    ).rowcount


_CLAIM = """
WITH live AS (
    SELECT 1 FROM campaigns WHERE tenant_id = :t AND campaign = :c AND state = 'running' FOR SHARE
), picked AS (
    SELECT s.row_id, s.contact_id, s.email, s.token, (sp.email IS NOT NULL) AS suppressed, sp.reason
    FROM campaign_sends s
    LEFT JOIN suppressions sp ON sp.tenant_id = s.tenant_id AND sp.email = s.email
    WHERE s.tenant_id = :t AND s.campaign = :c AND s.state = 'queued' AND s.row_id > :after AND EXISTS (SELECT 1 FROM live)
      AND NOT (email_domain(s.email) = ANY(CAST(:held AS text[])))
    ORDER BY s.row_id
    LIMIT :n
), settled AS (
    UPDATE campaign_sends s
    SET state = 'skipped_suppressed', claimed_at = now(), settled_at = now(),
        detail = 'suppressed (' || p.reason || ') at send time'
    FROM picked p
    WHERE s.row_id = p.row_id AND p.suppressed
)
SELECT row_id, contact_id, email, token, suppressed FROM picked ORDER BY row_id
"""

# Rows are found by their key alone: the ids are the campaign's own, from claim_batch (which filters
# by tenant and campaign). A tenant/campaign condition here would let the planner, before the new
# audience is analyzed, scan the campaign's rows for every call instead of looking up a few keys.
_EXCHANGE = """
WITH settled AS (
    UPDATE campaign_sends s
    SET state = v.state, detail = nullif(v.detail, ''), template = v.template, rule = v.rule,
        message_id = v.message_id, settled_at = now(), claimed_at = coalesce(s.claimed_at, now())
    FROM unnest(CAST(:row_id AS bigint[]), CAST(:from_state AS text[]), CAST(:state AS text[]), CAST(:detail AS text[]),
                CAST(:template AS text[]), CAST(:rule AS text[]), CAST(:message_id AS text[]))
         AS v(row_id, from_state, state, detail, template, rule, message_id)
    WHERE s.row_id = v.row_id AND s.state = v.from_state
    RETURNING s.row_id
), live AS (
    SELECT 1 FROM campaigns WHERE tenant_id = :t AND campaign = :c AND state = 'running' FOR SHARE
), picked AS (
    SELECT s.row_id, (sp.email IS NOT NULL) AS suppressed, sp.reason
    FROM campaign_sends s
    LEFT JOIN suppressions sp ON sp.tenant_id = s.tenant_id AND sp.email = s.email
    WHERE s.row_id = ANY(CAST(:ids AS bigint[])) AND s.state = 'queued' AND EXISTS (SELECT 1 FROM live)
    FOR UPDATE OF s
), marked AS (
    UPDATE campaign_sends s
    SET state = CASE WHEN p.suppressed THEN 'skipped_suppressed' ELSE 'sending' END,
        claimed_at = now(), attempts = s.attempts + 1,
        settled_at = CASE WHEN p.suppressed THEN now() END,
        detail = CASE WHEN p.suppressed THEN 'suppressed (' || p.reason || ') at send time' ELSE s.detail END
    FROM picked p
    WHERE s.row_id = p.row_id
    RETURNING s.row_id, s.state
)
SELECT EXISTS (SELECT 1 FROM live) AS running,
       (SELECT count(*) FROM settled) AS settled,
       coalesce((SELECT array_agg(row_id ORDER BY row_id) FROM marked WHERE state = 'sending'), '{}') AS in_flight,
       (SELECT count(*) FROM marked WHERE state = 'skipped_suppressed') AS suppressed
"""

_CONTACTS = """
SELECT ct.contact_id, to_jsonb(ct) - 'field_sources' - 'sources' AS contact,
       e.language AS detected_language, e.country AS detected_country
FROM unnest(CAST(:ids AS bigint[])) AS claimed (contact_id)
JOIN contacts ct ON ct.tenant_id = :t AND ct.contact_id = claimed.contact_id
LEFT JOIN contact_enrichment e ON e.tenant_id = ct.tenant_id AND e.contact_id = ct.contact_id
"""


def contact_by_email(conn: sa.Connection, tenant_id: str, email_key: str) -> dict | None:
    """The contact of the tenant with this address key, as a campaign sees it (enriched language and
    country when its own are empty), with its ``contact_id``; None when the tenant has no such contact."""
    row = conn.execute(
        sa.text(
            """SELECT ct.contact_id, to_jsonb(ct) - 'field_sources' - 'sources' AS contact,
                      e.language AS detected_language, e.country AS detected_country
               FROM contacts ct
               LEFT JOIN contact_enrichment e ON e.tenant_id = ct.tenant_id AND e.contact_id = ct.contact_id
               WHERE ct.tenant_id = :t AND ct.email = :e"""
        ),
        {"t": tenant_id, "e": email_key},
    ).mappings().first()
    if row is None:
        return None
    contact = dict(row["contact"])
    contact["language"] = contact.get("language") or row["detected_language"]
    contact["country"] = contact.get("country") or row["detected_country"]
    return contact


def ledger_token(conn: sa.Connection, tenant_id: str, name: str, contact_id: int) -> str | None:
    """The token of the contact's ledger row in the campaign (its Message-ID derives from it), if it has one."""
    return conn.execute(
        sa.text("SELECT token FROM campaign_sends WHERE tenant_id = :t AND campaign = :c AND contact_id = :id"),
        {"t": tenant_id, "c": name, "id": contact_id},
    ).scalar()


def claim_batch(conn: sa.Connection, tenant_id: str, name: str, limit: int, *, after_row_id: int = 0,
                held: Sequence[str] = ()) -> tuple[list[dict], int]:
    """The next ``limit`` queued rows of a running campaign after ``after_row_id``, for this run to
    compose: (rows, rows skipped as suppressed).

    In one statement, so in the caller's transaction: the campaign must be ``running`` (a pause or
    a cancel committed before takes effect here), and an address suppressed by then is settled
    ``skipped_suppressed``. The rows returned stay ``queued``: a row is in flight only once
    :func:`record_and_mark` hands it to a connection (the campaign's send lock keeps other runs
    away). Each row comes with its contact's fields. Rows whose recipient domain is in ``held`` (a
    destination that throttles) are passed over: they stay ``queued`` for a later run.
    """
    rows = conn.execute(sa.text(_CLAIM), {"t": tenant_id, "c": name, "n": limit, "after": after_row_id,
                                          "held": list(held)}).mappings().all()
    claimed = [dict(r) for r in rows if not r["suppressed"]]
    ids = [r["contact_id"] for r in claimed if r["contact_id"] is not None]
    contacts = {}
    if ids:
        for r in conn.execute(sa.text(_CONTACTS), {"t": tenant_id, "ids": ids}).mappings():
            contact = dict(r["contact"])
            contact["language"] = contact.get("language") or r["detected_language"]
            contact["country"] = contact.get("country") or r["detected_country"]
            contacts[r["contact_id"]] = contact
    for r in claimed:
        del r["suppressed"]
        r["contact"] = contacts.get(r["contact_id"]) or {"email": r["email"]}
    return claimed, len(rows) - len(claimed)


@dataclass(frozen=True)
class Exchanged:
    running: bool  # False: the campaign was paused or cancelled, nothing was marked
    settled: int  # rows whose outcome was recorded
    in_flight: list[int]  # row ids now ``sending``
    suppressed: int  # rows settled ``skipped_suppressed`` instead


def record_and_mark(conn: sa.Connection, tenant_id: str, name: str, results: Sequence[dict], row_ids: Sequence[int]) -> Exchanged:
    """In one statement (so atomic even on an autocommit connection): record ``results`` and mark
    the claimed rows ``row_ids`` ``sending`` as a connection takes them.

    Each result dict has row_id, state, detail, template, rule, message_id and ``from_state``: the
    state the row must still be in (``sending`` for a transport's outcome, ``queued`` for a row the
    composer skipped); a row settled by another path meanwhile keeps its state. The marking does
    the send-time checks again: a pause or cancel committed before marks nothing (``running`` is
    False), an address suppressed since the claim is settled ``skipped_suppressed``, and a row no
    longer ``queued`` (cancelled) is left as it is.
    """
    cols = ("row_id", "from_state", "state", "detail", "template", "rule", "message_id")
    params = {col: [r.get(col) for r in results] for col in cols}
    row = conn.execute(sa.text(_EXCHANGE), {**params, "t": tenant_id, "c": name, "ids": list(row_ids)}).one()
    return Exchanged(bool(row.running), int(row.settled), list(row.in_flight), int(row.suppressed))


def reopen_for_resend(conn: sa.Connection, tenant_id: str, name: str) -> bool:
    """A completed campaign with ``unknown`` rows runs again for ``--resend-unknown`` (nothing else is queued)."""
    return bool(
        conn.execute(
            sa.text(
                """UPDATE campaigns SET state = 'running', completed_at = NULL, updated_at = now()
                   WHERE tenant_id = :t AND campaign = :c AND state = 'completed'
                     AND EXISTS (SELECT 1 FROM campaign_sends WHERE tenant_id = :t AND campaign = :c AND state = 'unknown')"""
            ),
            {"t": tenant_id, "c": name},
        ).rowcount
    )


def state_counts(conn: sa.Connection, tenant_id: str, name: str) -> dict[str, int]:
    return dict(
        conn.execute(
            sa.text("SELECT state, count(*) FROM campaign_sends WHERE tenant_id = :t AND campaign = :c GROUP BY state"),
            {"t": tenant_id, "c": name},
        ).all()
    )


def complete_if_settled(conn: sa.Connection, tenant_id: str, name: str) -> bool:
    """A running campaign with no row queued or sending is completed."""
    return bool(
        conn.execute(
            sa.text(
                """UPDATE campaigns SET state = 'completed', completed_at = now(), updated_at = now()
                   WHERE tenant_id = :t AND campaign = :c AND state = 'running'
                     AND NOT EXISTS (SELECT 1 FROM campaign_sends WHERE tenant_id = :t AND campaign = :c
                                     AND state IN ('queued', 'sending'))"""
            ),
            {"t": tenant_id, "c": name},
        ).rowcount
    )


def sample_contacts(conn: sa.Connection, tenant_id: str, name: str, limit: int) -> list[dict]:
    """Contacts of the queued rows for the preflight render, spread over the audience's categories and languages."""
    rows = conn.execute(
        sa.text(
            """SELECT DISTINCT ON (coalesce(ct.category, ''), coalesce(ct.language, e.language, ''))
                      to_jsonb(ct) - 'field_sources' - 'sources' AS contact, e.language AS detected_language
               FROM campaign_sends s JOIN contacts ct ON ct.tenant_id = s.tenant_id AND ct.contact_id = s.contact_id
               LEFT JOIN contact_enrichment e ON e.tenant_id = ct.tenant_id AND e.contact_id = ct.contact_id
               WHERE s.tenant_id = :t AND s.campaign = :c AND s.state = 'queued'
               ORDER BY coalesce(ct.category, ''), coalesce(ct.language, e.language, ''), s.row_id
               LIMIT :n"""
        ),
        {"t": tenant_id, "c": name, "n": limit},
    ).mappings()
    out = []
    for r in rows:
        contact = dict(r["contact"])
        contact["language"] = contact.get("language") or r["detected_language"]
        out.append(contact)
    return out


def last_completed(conn: sa.Connection, tenant_id: str, exclude: str) -> LastCampaign | None:
    """The tenant's last completed campaign (other than ``exclude``) with the hard bounces and
    complaints its stats counted (``feedback.stats_refresh`` keeps them current)."""
    row = conn.execute(
        sa.text(
            """SELECT c.campaign, c.hard_bounces, c.complaints,
                      (SELECT count(*) FROM campaign_sends s WHERE s.tenant_id = c.tenant_id AND s.campaign = c.campaign
                       AND s.state IN ('sent', 'handed_off')) AS sent
               FROM campaigns c WHERE c.tenant_id = :t AND c.campaign <> :c AND c.state = 'completed'
               ORDER BY c.completed_at DESC NULLS LAST LIMIT 1"""
        ),
        {"t": tenant_id, "c": exclude},
    ).first()
    if row is None:
        return None
    return LastCampaign(campaign_key(tenant_id, row.campaign), int(row.sent), row.hard_bounces, row.complaints)


def suppress(conn: sa.Connection, tenant_id: str, email_key: str, reason: str, detail: str | None) -> bool:
    """Suppress an address; an existing suppression keeps its reason. True when it is new."""
    return bool(
        conn.execute(
            sa.text("""INSERT INTO suppressions (tenant_id, email, reason, detail) VALUES (:t, :e, :r, :d)
                       ON CONFLICT (tenant_id, email) DO NOTHING"""),
            {"t": tenant_id, "e": email_key, "r": reason, "d": detail},
        ).rowcount
    )


def unsuppress(conn: sa.Connection, tenant_id: str, email_key: str) -> str | None:
    """Lift a suppression; returns its reason, or None when there was none. An ``erased`` one stays."""
    return conn.execute(
        sa.text("DELETE FROM suppressions WHERE tenant_id = :t AND email = :e AND reason <> 'erased' RETURNING reason"),
        {"t": tenant_id, "e": email_key},
    ).scalar()


def guard_sample(conn: sa.Connection, tenant_id: str, name: str) -> FeedbackSample:
    """The campaign's ledger rows with feedback (delivered, bounced, complained), and among them those
    hard-bounced and those complained (each row counted once)."""
    row = conn.execute(
        sa.text(
            """SELECT count(*) AS sample,
                      count(*) FILTER (WHERE hard) AS hard_bounces,
                      count(*) FILTER (WHERE complained) AS complaints
               FROM (SELECT send_row_id,
                            bool_or(event_type = 'bounced' AND bounce_class = 'hard') AS hard,
                            bool_or(event_type = 'complained') AS complained
                     FROM delivery_events
                     WHERE tenant_id = :t AND campaign = :c AND send_row_id IS NOT NULL
                       AND event_type IN ('delivered', 'bounced', 'complained')
                     GROUP BY send_row_id) per_row"""
        ),
        {"t": tenant_id, "c": name},
    ).one()
    return FeedbackSample(int(row.sample), int(row.hard_bounces), int(row.complaints))


def guarded_campaigns(conn: sa.Connection, tenant_id: str) -> list[str]:
    """The tenant's running campaigns its guard rail watches (not resumed with ``--override guard_rail``)."""
    return list(conn.execute(
        sa.text("""SELECT campaign FROM campaigns WHERE tenant_id = :t AND state = 'running'
                   AND NOT guard_rail_overridden ORDER BY campaign"""), {"t": tenant_id}).scalars())


def handed_to_mailwizz(conn: sa.Connection, tenant_id: str, transports: list[str], since: datetime) -> list[str]:
    """The tenant's campaigns completed here (every row handed off) since ``since`` through one of the
    ``transports`` (its MailWizz ones), not overridden: MailWizz may still be sending them."""
    if not transports:
        return []
    return list(conn.execute(
        sa.text("""SELECT campaign FROM campaigns WHERE tenant_id = :t AND state = 'completed' AND transport = ANY(:tr)
                   AND completed_at >= :since AND NOT guard_rail_overridden ORDER BY campaign"""),
        {"t": tenant_id, "tr": transports, "since": since}).scalars())


def guard_rail_paused(conn: sa.Connection, tenant_id: str, name: str) -> bool:
    """Whether the campaign is paused by its guard rail now (not resumed, not cancelled since)."""
    return bool(conn.execute(
        sa.text("""SELECT 1 FROM campaigns WHERE tenant_id = :t AND campaign = :c AND state = 'paused'
                   AND paused_reason IS NOT NULL"""), {"t": tenant_id, "c": name}).first())


def pause_by_guard_rail(conn: sa.Connection, tenant_id: str, name: str, reason: str, *,
                        handed_off: bool = False) -> bool:
    """A running campaign (not overridden) becomes ``paused`` with ``reason``; False when it was not running.

    ``handed_off``: a campaign completed here whose MailWizz campaigns still send is paused too
    (``resume --override guard_rail`` then unpauses them and completes it again)."""
    states = ["running", "completed"] if handed_off else ["running"]
    return bool(conn.execute(
        sa.text("""UPDATE campaigns SET state = 'paused', paused_reason = :r, updated_at = now()
                   WHERE tenant_id = :t AND campaign = :c AND state = ANY(:s) AND NOT guard_rail_overridden"""),
        {"t": tenant_id, "c": name, "r": reason, "s": states},
    ).rowcount)


def override_guard_rail(conn: sa.Connection, tenant_id: str, name: str) -> None:
    """The operator resumed after review: the guard rail no longer pauses this campaign."""
    conn.execute(sa.text("UPDATE campaigns SET guard_rail_overridden = true, updated_at = now() WHERE tenant_id = :t AND campaign = :c"),
                 {"t": tenant_id, "c": name})


# PowerMTA accounting details that say a destination throttles the sender (not the recipient's fault):
# an enhanced status 4.7.x, a 421, or PowerMTA's policy- / spam-related bounce categories.
_THROTTLE_PATTERN = r"(^|[^0-9.])4\.7\.[0-9]+|(^|[^0-9])421([^0-9]|$)|policy-related|spam-related"


def throttling_domains(conn: sa.Connection, tenant_id: str, at_least: int, window_s: int) -> dict[str, int]:
    """Recipient domains of the tenant with at least ``at_least`` deferrals or refusals that say they
    throttle (``_THROTTLE_PATTERN``) in the last ``window_s`` seconds: {domain: how many}."""
    return {d: int(n) for d, n in conn.execute(
        sa.text("""SELECT email_domain(email) AS domain, count(*) FROM delivery_events
                   WHERE tenant_id = :t AND origin = 'powermta' AND event_type IN ('deferred', 'bounced')
                     AND occurred_at > now() - make_interval(secs => :w) AND email IS NOT NULL
                     AND detail ~* :p
                   GROUP BY 1 HAVING count(*) >= :n ORDER BY 1"""),
        {"t": tenant_id, "w": window_s, "p": _THROTTLE_PATTERN, "n": at_least}).all()}


def queued_by_domain(conn: sa.Connection, tenant_id: str, name: str, domains: Sequence[str]) -> dict[str, int]:
    """The campaign's rows still ``queued`` for each of ``domains``."""
    return {d: int(n) for d, n in conn.execute(
        sa.text("""SELECT email_domain(email), count(*) FROM campaign_sends
                   WHERE tenant_id = :t AND campaign = :c AND state = 'queued'
                     AND email_domain(email) = ANY(CAST(:d AS text[])) GROUP BY 1 ORDER BY 1"""),
        {"t": tenant_id, "c": name, "d": list(domains)}).all()}
