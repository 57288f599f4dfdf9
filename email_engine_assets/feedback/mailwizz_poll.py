"""MailWizz's own unsubscribes and bounces in: the tenant's MailWizz campaigns polled page by page.

Each page is recorded in its own transaction (:func:`~email_engine_assets.feedback.store.record_events`,
deduplicated by key), so a crash loses no page already read and a page read twice counts once. A
poll first marks the campaign's pass incomplete and marks it complete only after its last page:
MailWizz lists newest first, so after a complete pass the next poll stops at the first page it
knows entirely; after an interrupted one it reads every page again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.feedback.events import FeedbackEvent, events_frame
from email_engine_assets.feedback.mailwizz_events import campaign_of, feedback_event
from email_engine_assets.feedback.mailwizz_store import (
    known_dedupe_keys,
    poll_was_complete,
    set_poll,
)
from email_engine_assets.feedback.store import record_events
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.input_problems import MAILWIZZ_POLL
from email_engine_assets.tenancy.input_problems_store import forget_other_scopes
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz import FEEDBACK_KINDS, MailwizzInstance


def forget_removed_transports(conn: sa.Connection, tenant: TenantConfig) -> None:
    """A failed poll of a transport the tenant file no longer has: no poll will read it again."""
    forget_other_scopes(conn, tenant.id, MAILWIZZ_POLL, [t.name for t in tenant.transports if isinstance(t, MailwizzTransport)])


def poll_instance(engine: sa.Engine, tenant_id: str, transport: MailwizzTransport, mw: MailwizzInstance,
                  now: datetime) -> dict[str, int]:
    """Record the unsubscribes and bounces of every ``<tenant>.<campaign>.<template>`` campaign of one instance."""
    totals: Counter[str] = Counter()
    for name in mw.campaigns_named(f"{tenant_id}."):
        campaign = campaign_of(name, tenant_id)
        uid = mw.find_campaign(name)
        if campaign is None or uid is None:
            continue
        totals["campaigns"] += 1
        for kind in FEEDBACK_KINDS:
            totals.update(_poll(engine, tenant_id, transport, mw, uid, campaign, kind, now))
    return {k: totals[k] for k in ("campaigns", "pages", "records", "inserted", "linked", "duplicates", "unusable")}


def _poll(engine, tenant_id: str, transport: MailwizzTransport, mw: MailwizzInstance, uid: str, campaign: str,
          kind: str, now: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    with engine.begin() as conn:
        may_stop_early = poll_was_complete(conn, tenant_id, transport.name, uid, kind)
        set_poll(conn, tenant_id, transport.name, uid, kind, complete=False, records=0)
    for records in mw.campaign_feedback(uid, kind):
        counts["pages"] += 1
        counts["records"] += len(records)
        events: list[FeedbackEvent] = []
        for record in records:
            made = feedback_event(kind, record, instance=transport.name, campaign_uid=uid, campaign=campaign,
                                  polled_at=now)
            if isinstance(made, str):
                counts["unusable"] += 1
            else:
                events.append(made)
        with engine.begin() as conn:
            known = known_dedupe_keys(conn, tenant_id, (e.dedupe_key for e in events))
            counts.update(record_events(conn, tenant_id, events_frame(events)))
        if may_stop_early and all(e.dedupe_key in known for e in events):
            break  # newest first: every older page was read by the last complete pass
    with engine.begin() as conn:
        set_poll(conn, tenant_id, transport.name, uid, kind, complete=True, records=counts["records"])
    return counts
