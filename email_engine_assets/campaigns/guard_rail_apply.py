"""The guard rail applied: a tenant's running campaigns checked against their own feedback, paused
when a rate is over the limit (:mod:`.guard_rail`), with one ``guard_rail_paused`` alert each.

Called where feedback arrives: by the sending run itself between batches (:class:`SendGuard`, so a
CLI send without a daemon stops too), and after the ``delivery_events`` / ``campaign_stats`` runs
that apply feedback. The pause is the same state as an operator's: the send re-checks the state
each time it marks rows, so nothing is marked after the pause; the rows stay ``queued``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.files import campaign_key
from email_engine_assets.campaigns.guard_rail import trip
from email_engine_assets.feedback.incident_apply import post_decision, record
from email_engine_assets.feedback.incidents import GUARD_RAIL_PAUSED, Condition
from email_engine_assets.feedback.stats_refresh import apply_pending_feedback
from email_engine_resources.alerts import AlertPoster

log = logging.getLogger("email_engine.campaigns")


def incident_key(key: str) -> str:
    return f"{GUARD_RAIL_PAUSED}:{key}"


def check_running(engine: sa.Engine, tenant, *, only: str | None = None,
                  post: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Check the tenant's running campaigns (only ``only`` when given); pause those over a limit.
    Returns {campaign key: reason} of those paused now; each gets one ``guard_rail_paused`` alert."""
    with engine.connect() as conn:
        names = [n for n in store.guarded_campaigns(conn, tenant.id) if only is None or n == only]
    paused: dict[str, str] = {}
    for name in names:
        with engine.begin() as conn:
            reason = trip(store.guard_sample(conn, tenant.id, name), min_sample=tenant.guard_rails.min_sample,
                          max_hard_bounce_rate=tenant.feedback.max_hard_bounce_rate,
                          max_complaint_rate=tenant.feedback.max_complaint_rate)
            if reason and store.pause_by_guard_rail(conn, tenant.id, name, reason):
                paused[campaign_key(tenant.id, name)] = reason
    for key, reason in paused.items():
        log.warning("campaign %s paused: %s", key, reason)
        condition = Condition(incident_key(key), GUARD_RAIL_PAUSED, tenant.id, f"campaign {key} paused: {reason}")
        decision = record(engine, [condition], [GUARD_RAIL_PAUSED], [condition.key])
        post_decision(post or AlertPoster.from_environment().post, decision)
    return paused


def resolve(engine: sa.Engine, key: str, *, post: Callable[[str], bool] | None = None) -> None:
    """The campaign was resumed after review: its ``guard_rail_paused`` incident clears (one "resolved" alert)."""
    decision = record(engine, [], [GUARD_RAIL_PAUSED], [incident_key(key)])
    if decision.cleared:
        post_decision(post or AlertPoster.from_environment().post, decision)


class SendGuard:
    """What a sending run calls between batches: every ``guard_rails.check_every_s`` seconds (at the
    next batch boundary) the tenant's pending feedback is applied and this campaign checked.

    Time, not a number of batches: a batch lasts milliseconds unthrottled and minutes under a
    ``rate_per_minute``, so a period in seconds bounds both how late a pause comes and how often
    the accounting files are read, whatever the rate."""

    def __init__(self, engine: sa.Engine, root: Path, tenant, name: str, *, powermta, mailwizz,
                 clock: Callable[[], float] = time.monotonic):
        self.engine, self.root, self.tenant, self.name = engine, root, tenant, name
        self.powermta, self.mailwizz, self.clock = powermta, mailwizz, clock
        self.every_s = tenant.guard_rails.check_every_s
        self.last = clock()
        self.paused: dict[str, str] = {}

    def __call__(self, batches: int) -> None:
        if self.clock() - self.last < self.every_s:
            return
        self.last = self.clock()
        try:
            apply_pending_feedback(self.engine, self.root, self.tenant, powermta=self.powermta, mailwizz=self.mailwizz)
        except Exception as exc:  # noqa: BLE001 -- the check goes on with the feedback already applied
            # Raised here it would stop the send mid-batch and leave its rows in flight unknown; the
            # delivery_events run reports the input it could not read.
            log.warning("campaign %s.%s: pending feedback not applied before the guard-rail check: %s: %s",
                        self.tenant.id, self.name, type(exc).__name__, str(exc)[:200])
        self.paused.update(check_running(self.engine, self.tenant, only=self.name))
