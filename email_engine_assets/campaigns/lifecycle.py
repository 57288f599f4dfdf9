"""The campaign lifecycle: states, operator actions and the transitions between them.

A file without ``send_at`` is a ``draft`` (only ``campaign send`` starts it); with ``send_at`` it
is ``scheduled`` and becomes due at that time (``send_at: now``: the time the file is first read). Sending makes it ``running``; ``pause`` and
``resume`` move between ``paused`` and ``running``; when every ledger row is settled it is
``completed``; ``cancel`` ends it for good (``cancelled``).
"""

from __future__ import annotations

from datetime import datetime

CAMPAIGN_STATES: tuple[str, ...] = ("draft", "scheduled", "running", "paused", "completed", "cancelled")
# States in which the campaign file may still change what the campaign is (nothing claimed yet).
EDITABLE_STATES: tuple[str, ...] = ("draft", "scheduled")
FINAL_STATES: tuple[str, ...] = ("completed", "cancelled")

# action -> (states it applies to, resulting state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "send": (("draft", "scheduled", "running"), "running"),
    "due": (("scheduled",), "running"),
    "pause": (("running",), "paused"),  # a scheduled campaign is cancelled or rescheduled in its file
    "resume": (("paused",), "running"),
    "cancel": (("draft", "scheduled", "running", "paused"), "cancelled"),
    "complete": (("running",), "completed"),
}


class LifecycleError(ValueError):
    """An action the campaign's state does not allow; ``str()`` says which and why."""


def next_state(state: str, action: str) -> str:
    """The state after ``action``; :class:`LifecycleError` when ``state`` does not allow it."""
    allowed, target = TRANSITIONS[action]
    if state not in allowed:
        raise LifecycleError(refusal(state, action))
    return target


def refusal(state: str, action: str) -> str:
    if action == "send" and state == "paused":
        return "the campaign is paused: `campaign resume` goes on sending"
    if action == "send" and state == "cancelled":
        return "the campaign is cancelled: it sends nothing more"
    allowed = TRANSITIONS[action][0]
    return f"cannot {action} a {state} campaign (only {', '.join(allowed)})"


def initial_state(send_at: datetime | None) -> str:
    return "draft" if send_at is None else "scheduled"


def is_due(state: str, send_at: datetime | None, now: datetime) -> bool:
    return state == "scheduled" and send_at is not None and send_at <= now
