"""Applying the tenant's suppression policy to its delivery events, then pushing suppressions to MailWizz.

The policy step is one transaction per range of new events: the counts of the addresses with new
events, the decisions (:mod:`email_engine_assets.feedback.policy`), the suppressions and the
watermark commit together, so a crash leaves a range either applied or not at all (the next run
reads it again). Suppressions
take effect for sending at once: the campaign ledger's claim re-checks the table in the claiming
transaction, so queued rows of a running campaign are skipped from the next batch on.

Then each mailwizz transport of the tenant gets the suppressions it has not taken yet (made by the
policy, the one-click route or an operator); an instance that fails is reported in the counts and
retried at the next run, the policy's suppressions stay written.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from email_engine_assets.feedback.mailwizz_push import push_suppressions
from email_engine_assets.feedback.policy import POLICY_REASONS, decide
from email_engine_assets.feedback.policy_store import (
    address_counts,
    event_horizon,
    insert_suppressions,
    policy_mark,
    set_policy_mark,
)
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.transports import MailwizzResource

EVENTS_PER_CHUNK = 500_000


def apply_policy(engine: sa.Engine, tenant: TenantConfig, *, mailwizz: MailwizzResource | None) -> dict[str, int | str]:
    """Suppress the addresses the tenant's policy says to; counts for the run's metadata.

    ``addresses_read``: addresses with new decisive events; ``suppressed_<reason>``: suppressions
    made now; ``mailwizz_*``: the push to the tenant's MailWizz instances through the ``mailwizz``
    resource (``None``: no push, the policy step alone).
    """
    counts: dict[str, int | str] = apply_rules(engine, tenant)
    if mailwizz is not None:
        counts.update(push_to_mailwizz(engine, tenant, mailwizz))
    return counts


def apply_rules(engine: sa.Engine, tenant: TenantConfig) -> dict[str, int]:
    """The policy step alone (no network): new events -> suppressions, watermark moved when final.

    Event ids are read in ranges of ``EVENTS_PER_CHUNK`` (memory stays bounded on a first run over
    millions of events); each range commits with its watermark, and sees every event up to its end,
    so ranges decide what one pass over them would.
    """
    upto, final = event_horizon(engine)
    with engine.connect() as conn:
        after = policy_mark(conn, tenant.id)
    read, made = 0, Counter()
    low = after
    while low < upto:
        high = min(low + EVENTS_PER_CHUNK, upto)
        with engine.begin() as conn:
            counts = address_counts(conn, tenant.id, low, high, tenant.feedback.soft_bounce_days)
            made.update(insert_suppressions(conn, tenant.id, decide(counts, tenant.feedback)))
            if final:
                set_policy_mark(conn, tenant.id, high)
        read += counts.height
        low = high
    return {
        "addresses_read": read,
        "suppressed": sum(made.values()),
        **{f"suppressed_{reason}": made.get(reason, 0) for reason in POLICY_REASONS},
        "events_from": after,
        "events_to": max(upto, after) if final else after,
    }


def push_to_mailwizz(engine: sa.Engine, tenant: TenantConfig, mailwizz: MailwizzResource) -> dict[str, int | str]:
    """Each mailwizz transport of the tenant gets its pending suppressions; totals, and the errors as text."""
    totals = {"mailwizz_pushed": 0, "mailwizz_refused": 0, "mailwizz_failed": 0, "mailwizz_pending": 0}
    errors = []
    for transport in (t for t in tenant.transports if isinstance(t, MailwizzTransport)):
        try:
            with mailwizz.instance(transport) as mw:
                done = push_suppressions(engine, tenant.id, transport.name, mw)
        except (LookupError, MailwizzError) as exc:
            errors.append(f"{transport.name}: {exc}")
            continue
        for key in ("pushed", "refused", "failed", "pending"):
            totals[f"mailwizz_{key}"] += done[key]
        if done["failed"]:
            errors.append(f"{transport.name}: a push failed; {done['pending']} address(es) wait for the next run")
    return {**totals, **({"mailwizz_errors": "; ".join(errors)[:1000]} if errors else {})}
