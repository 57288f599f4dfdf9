"""SQL of the one-click unsubscribe: the ledger row a token names, and the opt-out in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from email_engine_assets.campaigns.store import suppress
from email_engine_assets.feedback.events import FeedbackEvent, events_frame
from email_engine_assets.feedback.store import record_events


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """What one POST did: the address key (None when the token names no row), whether it is newly suppressed."""

    email: str | None
    newly_suppressed: bool
    event_recorded: bool


def ledger_address(conn: sa.Connection, tenant_id: str, campaign: str, contact_id: int) -> tuple[str, str] | None:
    """``(email key, ledger token)`` of the contact's send row in the campaign; None when there is none."""
    row = conn.execute(
        sa.text("SELECT email, token FROM campaign_sends WHERE tenant_id = :t AND campaign = :c AND contact_id = :id"),
        {"t": tenant_id, "c": campaign, "id": contact_id},
    ).first()
    return (row.email, row.token) if row else None


def unsubscribe(conn: sa.Connection, tenant_id: str, campaign: str, contact_id: int, now: datetime) -> Unsubscribed:
    """Suppress the address of the ledger row (reason ``unsubscribed``) and record an ``unsubscribed``
    event (origin ``unsubscribe_link``), both in the caller's transaction. Idempotent: a second call
    finds the suppression there and the event's dedupe key taken."""
    found = ledger_address(conn, tenant_id, campaign, contact_id)
    if found is None:
        return Unsubscribed(None, False, False)
    email, token = found
    new = suppress(conn, tenant_id, email, "unsubscribed", f"one-click link of campaign {campaign}")
    event = FeedbackEvent(
        event_type="unsubscribed", origin="unsubscribe_link", occurred_at=now,
        dedupe_key=f"unsubscribe:{campaign}:{contact_id}", token=token, campaign=campaign, email=email,
    )
    counts = record_events(conn, tenant_id, events_frame([event]))
    return Unsubscribed(email, new, counts["inserted"] == 1)
