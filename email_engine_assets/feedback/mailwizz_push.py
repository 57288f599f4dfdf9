"""Suppressions out to MailWizz: each suppressed address unsubscribed from every list of each instance, once.

The calls go out before their outcomes are written (one short transaction per chunk): a crash in
between leaves those addresses pending and they are pushed again, which MailWizz takes as a no-op.
An instance that does not answer (connection refused, 5xx or 429 after the client's retries) ends
its push at the first such address (``failed``, retried at the next run) instead of waiting on
every other one; an address MailWizz refuses outright (a 4xx) is ``refused`` and not tried again.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from email_engine_assets.feedback.mailwizz_store import (
    pending_pushes,
    push_states,
    record_pushes,
)
from email_engine_resources.mailwizz import MailwizzInstance
from email_engine_resources.mailwizz_client import MailwizzError

PUSH_CHUNK = 100
PUSH_LIMIT = 20_000  # per instance and run; the rest waits for the next run (hourly at least)


def push_suppressions(engine: sa.Engine, tenant_id: str, instance_name: str, mw: MailwizzInstance,
                      limit: int = PUSH_LIMIT) -> dict[str, int]:
    """Push the tenant's pending suppressions to one instance; counts: pushed, refused, failed, pending."""
    done: Counter[str] = Counter()
    stopped = False
    while not stopped and done.total() < limit:
        with engine.connect() as conn:
            emails = pending_pushes(conn, tenant_id, instance_name, min(PUSH_CHUNK, limit - done.total()))
        if not emails:
            break
        outcomes: list[tuple[str, str, str | None]] = []
        for email in emails:
            try:
                mw.unsubscribe_everywhere(email)
                outcomes.append((email, "pushed", None))
            except MailwizzError as exc:
                if exc.definitive:
                    outcomes.append((email, "refused", str(exc)))
                    continue
                outcomes.append((email, "failed", str(exc)))
                stopped = True
                break
        with engine.begin() as conn:
            record_pushes(conn, tenant_id, instance_name, outcomes)
        done.update(state for _, state, _ in outcomes)
        if len(emails) < PUSH_CHUNK:
            break
    with engine.connect() as conn:
        pending = len(pending_pushes(conn, tenant_id, instance_name, limit))
        states = push_states(conn, tenant_id, instance_name)
    return {"pushed": done["pushed"], "refused": done["refused"], "failed": done["failed"], "pending": pending,
            "pushed_total": states.get("pushed", 0)}
