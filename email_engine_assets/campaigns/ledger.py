"""The send ledger's vocabulary: the state of each (campaign, contact) row, and how counts add up.

``queued`` -> ``sending`` (in flight: a connection holds it) -> ``sent`` | ``failed`` | ``unknown`` |
``handed_off`` (MailWizz), or ``skipped_<reason>``. A run claims and composes queued rows without
changing their state; a row becomes ``sending`` only when a connection takes it, and only from
``queued``, so it is never sent twice. A row left ``sending`` by a run that died becomes ``unknown``
(sent or not, nobody knows) -- reported, and queued again only when the operator asks
(``campaign send --resend-unknown``); a row claimed but not yet in flight is still ``queued``.
"""

from __future__ import annotations

from collections.abc import Mapping

from email_engine_assets.content.composer import SKIP_REASONS as COMPOSE_SKIP_REASONS
from email_engine_resources.delivery import DELIVERY_STATUSES

# suppressed: on the suppression list (at freeze or at claim time); then the composer's reasons
# (no_template, render_error, bad_address: see email_engine_assets.content.composer); cancelled:
# still queued when the campaign was cancelled.
SKIP_REASONS: tuple[str, ...] = ("suppressed", *COMPOSE_SKIP_REASONS, "cancelled")
SKIPPED_STATES: tuple[str, ...] = tuple(f"skipped_{r}" for r in SKIP_REASONS)
SEND_STATES: tuple[str, ...] = ("queued", "sending", *DELIVERY_STATUSES, *SKIPPED_STATES)
SETTLED_STATES: tuple[str, ...] = (*DELIVERY_STATUSES, *SKIPPED_STATES)


def skipped_state(reason: str) -> str:
    """The ledger state of a row skipped for ``reason``; ``ValueError`` for a reason outside the
    vocabulary (a composer and the ledger that disagree is a bug to see, not a row to hide)."""
    if reason not in SKIP_REASONS:
        raise ValueError(f"skip reason {reason[:64]!r} is not one of {', '.join(SKIP_REASONS)}")
    return f"skipped_{reason}"


def campaign_counts(key: str, state: str, by_state: Mapping[str, int]) -> dict:
    """The operator's summary: ``audience`` is the number of ledger rows and equals the sum of the others."""
    counts = {s: int(by_state.get(s, 0)) for s in ("queued", "sent", "handed_off", "failed", "unknown")}
    counts["queued"] += int(by_state.get("sending", 0))  # claimed by a run in progress
    skipped = {r: int(by_state.get(f"skipped_{r}", 0)) for r in SKIP_REASONS}
    return {"campaign": key, "state": state, "audience": sum(int(v) for v in by_state.values()), **counts, "skipped": skipped}
