"""One evaluation of incidents against the database: decide, record, then post.

The incidents are recorded (opened, seen, cleared) in one transaction under an advisory lock, so two
evaluations at once never open the same incident twice; the alerts are posted after the commit. A
post that fails is logged and not retried: the incident stays recorded (posting never blocks the
record, and an unreachable chat does not turn into a storm once it is back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from email_engine_assets.feedback import incident_store as store
from email_engine_assets.feedback.alerts import incident_text, resolved_text
from email_engine_assets.feedback.incidents import Condition, Decision, OpenIncident, decide

log = logging.getLogger("email_engine.alerts")


def record(engine: sa.Engine, conditions: Iterable[Condition], kinds: Sequence[str],
           keys: Sequence[str] | None = None) -> Decision:
    """Compare ``conditions`` with the open incidents of ``kinds`` (only ``keys`` when given: the
    scope that was evaluated) and record what opened, held and cleared."""
    conditions = list(conditions)
    with engine.begin() as conn:
        store.lock_evaluation(conn)
        decision = decide(conditions, store.open_incidents(conn, kinds, keys))
        store.open_new(conn, decision.opened)
        store.touch(conn, [c.key for c in decision.held])
        store.clear(conn, [i.key for i in decision.cleared])
    return decision


def post_decision(post: Callable[[str], bool], decision: Decision,
                  opened_text: Callable[[Condition], str] | None = None) -> int:
    """Post one alert per opened incident and one "resolved" per cleared one; the number not posted."""
    texts = [(opened_text or _opened)(c) for c in decision.opened] + [_resolved(i) for i in decision.cleared]
    failed = sum(1 for text in texts if not post(text))
    if failed:
        log.warning("%d incident alert(s) not posted", failed)
    return failed


def _opened(condition: Condition) -> str:
    return incident_text(condition.kind, condition.tenant, condition.detail)


def _resolved(incident: OpenIncident) -> str:
    return resolved_text(incident.kind, incident.tenant, incident.detail, incident.opened_at)
