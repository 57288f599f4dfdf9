"""The guard rail applied: a tenant's running campaigns checked against their own feedback, paused
when a rate is over the limit (:mod:`.guard_rail`), with one ``guard_rail_paused`` alert each.

Called where feedback arrives: by the sending run itself between batches (:class:`SendGuard`, so a
CLI send without a daemon stops too), and after the ``delivery_events`` / ``mailwizz_feedback`` /
``campaign_stats`` runs that apply feedback (:func:`check_feedback`). The pause is the same state as
an operator's: the send re-checks the state each time it marks rows, so nothing is marked after the
pause; the rows stay ``queued``.

A campaign sent through MailWizz is sent by MailWizz once every row is on its lists (completed here,
MailWizz sending on): the feedback path also watches those, on MailWizz's own figures, and pauses
its MailWizz campaigns too (:func:`pause_in_mailwizz`: each status read first, ``pause-unpause`` only
for one that sends). The local pause comes first and never waits for MailWizz: when MailWizz cannot
be reached the campaign stays paused here, a ``guard_rail_mailwizz`` incident alerts once, and every
later feedback cycle tries again until MailWizz is paused (the incident then clears).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.files import campaign_key, split_key
from email_engine_assets.campaigns.guard_rail import FeedbackSample, mailwizz_sample, trip
from email_engine_assets.feedback import incident_store
from email_engine_assets.feedback.incident_apply import post_decision, record
from email_engine_assets.feedback.incidents import GUARD_RAIL_MAILWIZZ, GUARD_RAIL_PAUSED, Condition
from email_engine_assets.feedback.stats_refresh import apply_pending_feedback, fetch_mailwizz
from email_engine_assets.feedback.stats_store import stored_mailwizz
from email_engine_resources.alerts import AlertPoster
from email_engine_resources.mailwizz import FINISHED, PAUSABLE
from email_engine_resources.mailwizz_client import MailwizzError, excerpt

log = logging.getLogger("email_engine.campaigns")

# How long after its last hand-off a MailWizz campaign is still watched (MailWizz may still be sending it).
HANDED_OFF_WATCH = timedelta(days=14)


def incident_key(key: str) -> str:
    return f"{GUARD_RAIL_PAUSED}:{key}"


def mailwizz_incident_key(key: str) -> str:
    return f"{GUARD_RAIL_MAILWIZZ}:{key}"


@dataclass
class GuardOutcome:
    """One guard-rail check of a tenant on the feedback path."""

    paused: dict[str, str] = field(default_factory=dict)               # campaign key -> reason, paused now
    mailwizz: dict[str, dict[str, str]] = field(default_factory=dict)   # key -> MailWizz status of each of its campaigns
    mailwizz_failed: dict[str, str] = field(default_factory=dict)       # key -> why MailWizz is not paused yet (retried)
    unread: dict[str, str] = field(default_factory=dict)                # key -> MailWizz figures that could not be read


def check_running(engine: sa.Engine, tenant, *, only: str | None = None,
                  post: Callable[[str], bool] | None = None) -> dict[str, str]:
    """Check the tenant's running campaigns (only ``only`` when given); pause those over a limit.
    Returns {campaign key: reason} of those paused now; each gets one ``guard_rail_paused`` alert."""
    return _check(engine, tenant, only=only, post=post, mailwizz=None).paused


def check_feedback(engine: sa.Engine, tenant, *, mailwizz, post: Callable[[str], bool] | None = None) -> GuardOutcome:
    """The feedback path's check: the running campaigns and the MailWizz campaigns still sending, each
    paused when over a limit, and then paused in MailWizz (those paused earlier whose MailWizz pause
    failed are tried again). ``mailwizz``: the ``mailwizz`` resource (``None``: MailWizz not called)."""
    outcome = _check(engine, tenant, only=None, post=post, mailwizz=mailwizz)
    if mailwizz is not None:
        outcome.mailwizz, outcome.mailwizz_failed = pause_in_mailwizz(engine, tenant, mailwizz, outcome.paused, post=post)
    return outcome


def _check(engine: sa.Engine, tenant, *, only: str | None, post, mailwizz) -> GuardOutcome:
    outcome = GuardOutcome()
    mailwizz_names = [t.name for t in tenant.transports if t.kind == "mailwizz"]
    with engine.connect() as conn:
        names = [n for n in store.guarded_campaigns(conn, tenant.id) if only is None or n == only]
        handed = [] if mailwizz is None or only is not None else store.handed_to_mailwizz(
            conn, tenant.id, mailwizz_names, datetime.now(UTC) - HANDED_OFF_WATCH)
        # a campaign whose MailWizz campaigns were all last seen finished (sent) is not asked about again
        handed = [n for n in handed if not _finished_in_mailwizz(stored_mailwizz(conn, tenant.id, n)[0])]
        transports = {n: store.campaign_row(conn, tenant.id, n)["transport"] for n in names + handed}
    for name in names + handed:
        key, handed_off = campaign_key(tenant.id, name), name in handed
        theirs: FeedbackSample | None = None
        if mailwizz is not None and transports[name] in mailwizz_names:
            try:
                figures = fetch_mailwizz(mailwizz, tenant.transport(transports[name]), key)
            except (MailwizzError, LookupError, ValueError) as exc:
                outcome.unread[key] = excerpt(str(exc), 300)
                log.warning("campaign %s: MailWizz figures not read for its guard rail: %s", key, outcome.unread[key])
                if handed_off:
                    continue
            else:
                if handed_off and not PAUSABLE & set(figures["statuses"].values()):
                    continue  # MailWizz sends none of them (sent, paused, draft): nothing to stop
                theirs = mailwizz_sample(figures["templates"])
        with engine.begin() as conn:
            ours = store.guard_sample(conn, tenant.id, name)
            sample = theirs if theirs is not None and theirs.sample >= ours.sample else ours
            reason = trip(sample, min_sample=tenant.guard_rails.min_sample,
                          max_hard_bounce_rate=tenant.feedback.max_hard_bounce_rate,
                          max_complaint_rate=tenant.feedback.max_complaint_rate)
            if reason and store.pause_by_guard_rail(conn, tenant.id, name, reason, handed_off=handed_off):
                outcome.paused[key] = reason
    for key, reason in outcome.paused.items():
        log.warning("campaign %s paused: %s", key, reason)
        condition = Condition(incident_key(key), GUARD_RAIL_PAUSED, tenant.id, f"campaign {key} paused: {reason}")
        decision = record(engine, [condition], [GUARD_RAIL_PAUSED], [condition.key])
        post_decision(post or AlertPoster.from_environment().post, decision)
    return outcome


def _finished_in_mailwizz(figures: dict | None) -> bool:
    statuses = (figures or {}).get("statuses") or {}
    return bool(statuses) and all(status in FINISHED for status in statuses.values())


def pause_in_mailwizz(engine: sa.Engine, tenant, mailwizz, paused: dict[str, str], *,
                      post: Callable[[str], bool] | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Pause the MailWizz campaigns (``<key>.<template>``) of the campaigns in ``paused`` sent through
    MailWizz, and of those paused earlier whose MailWizz pause failed (an open ``guard_rail_mailwizz``
    incident) and still paused here. Returns ({key: MailWizz status by campaign}, {key: why not paused}).

    Each MailWizz campaign's status is read first and ``pause-unpause`` called only for one that sends
    (the call toggles). A failure opens one incident (one alert); a later success clears it."""
    mailwizz_names = {t.name for t in tenant.transports if t.kind == "mailwizz"}
    with engine.connect() as conn:
        pending = [i.key.split(":", 1)[1] for i in incident_store.open_incidents(conn, [GUARD_RAIL_MAILWIZZ])
                   if i.tenant == tenant.id]
        targets = []
        for key in sorted(set(paused) | set(pending)):
            name = split_key(key)[1]
            row = store.campaign_row(conn, tenant.id, name)
            if row and row["transport"] in mailwizz_names and store.guard_rail_paused(conn, tenant.id, name):
                targets.append((key, tenant.transport(row["transport"])))
    done: dict[str, dict[str, str]] = {}
    failed: dict[str, str] = {}
    conditions = []
    for key, transport in targets:
        try:
            with mailwizz.instance(transport) as mw:
                statuses = {n: mw.pause_if_sending(n) for n in mw.campaigns_named(f"{key}.")}
            sending = sorted(n for n, s in statuses.items() if s in PAUSABLE)
            if not sending:
                done[key] = statuses
                continue
            # the toggle's answer lost or refused (5xx): read back, the campaign still sends
            failed[key] = f"{', '.join(sending)} still {statuses[sending[0]]} after pause-unpause"
        except (MailwizzError, LookupError) as exc:
            failed[key] = excerpt(str(exc), 300)
        log.error("campaign %s paused by its guard rail, not yet in MailWizz (transport %s): %s", key, transport.name, failed[key])
        conditions.append(Condition(mailwizz_incident_key(key), GUARD_RAIL_MAILWIZZ, tenant.id,
                                    f"campaign {key} paused by its guard rail but its MailWizz campaigns not paused "
                                    f"(transport {transport.name}): {failed[key]}; tried again at the next feedback cycle"))
    scope = sorted({mailwizz_incident_key(k) for k in [*paused, *pending]})
    if scope:
        post_decision(post or AlertPoster.from_environment().post, record(engine, conditions, [GUARD_RAIL_MAILWIZZ], scope))
    return done, failed


def guard_metadata(log_to, outcome: GuardOutcome) -> dict:
    """What a feedback run shows of its guard-rail check (logged too): the campaigns paused now, their
    MailWizz pauses, and the MailWizz pauses that failed (their incident alerts; retried next cycle)."""
    for key, reason in outcome.paused.items():
        log_to.warning(f"campaign {key} paused by its guard rail: {reason}")
    for key, why in outcome.mailwizz_failed.items():
        log_to.error(f"campaign {key} paused here, its MailWizz campaigns not paused: {why}; tried again at the next cycle")
    for key, why in outcome.unread.items():
        log_to.warning(f"campaign {key}: MailWizz figures not read for its guard rail: {why}")
    return {"guard_rail_paused": outcome.paused,
            **({"guard_rail_mailwizz": outcome.mailwizz} if outcome.mailwizz else {}),
            **({"guard_rail_mailwizz_failed": outcome.mailwizz_failed} if outcome.mailwizz_failed else {})}


def resolve(engine: sa.Engine, key: str, *, post: Callable[[str], bool] | None = None) -> None:
    """The campaign was resumed after review: its ``guard_rail_paused`` incident clears (one "resolved"
    alert), and so does a pending MailWizz pause (resume unpauses MailWizz itself)."""
    decision = record(engine, [], [GUARD_RAIL_PAUSED, GUARD_RAIL_MAILWIZZ], [incident_key(key), mailwizz_incident_key(key)])
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
