"""The rules that block a send, as plain functions of counts: one result per check.

Each check is named (the name an operator gives to ``--override``) and says why it failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NO_SUPPRESSED_MEMBERS = "no_suppressed_members"
PREFLIGHT_RENDERS = "preflight_renders"
AUDIENCE_NOT_EMPTY = "audience_not_empty"
SENDER_REPUTATION = "sender_reputation"
POWERMTA_HEADERS = "powermta_headers"
CHECK_NAMES: tuple[str, ...] = (NO_SUPPRESSED_MEMBERS, PREFLIGHT_RENDERS, AUDIENCE_NOT_EMPTY, SENDER_REPUTATION,
                                POWERMTA_HEADERS)

MAX_HARD_BOUNCE_RATE = 0.02
MAX_COMPLAINT_RATE = 0.001


@dataclass(frozen=True)
class Gate:
    check: str
    passed: bool
    reason: str
    overridden: bool = False


@dataclass(frozen=True)
class LastCampaign:
    """The tenant's last completed campaign: messages out (``sent`` or ``handed_off`` rows) and the
    feedback counts of its stats (None: no data yet)."""

    campaign: str
    sent: int
    hard_bounces: int | None
    complaints: int | None


def suppressed_members(segment: str, suppressed: int) -> Gate:
    if suppressed:
        return Gate(NO_SUPPRESSED_MEMBERS, False,
                    f"{suppressed} member(s) of segment {segment!r} are suppressed: the snapshot is older than the "
                    "suppressions; rebuild the segment (they are never mailed either way)")
    return Gate(NO_SUPPRESSED_MEMBERS, True, "no suppressed member in the snapshot")


def preflight(problems: Sequence[object], shown: int = 5) -> Gate:
    if problems:
        listed = "; ".join(_problem_text(p) for p in problems[:shown])
        more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
        return Gate(PREFLIGHT_RENDERS, False, f"{len(problems)} rendering problem(s): {listed}{more}")
    return Gate(PREFLIGHT_RENDERS, True, "the templates render for the sample contacts")


def _problem_text(p: object) -> str:
    file, line, variable, message = (getattr(p, k, None) for k in ("file", "line", "variable", "message"))
    where = f"{file}:{line}" if line else str(file)
    return f"{where}: {variable + ': ' if variable else ''}{str(message)[:200]}"


def audience_not_empty(segment: str, audience: int) -> Gate:
    if audience == 0:
        return Gate(AUDIENCE_NOT_EMPTY, False, f"segment {segment!r} has no member to send to")
    return Gate(AUDIENCE_NOT_EMPTY, True, f"{audience} member(s)")


def sender_reputation(last: LastCampaign | None, max_hard_bounce_rate: float = MAX_HARD_BOUNCE_RATE,
                      max_complaint_rate: float = MAX_COMPLAINT_RATE, unread_feedback: Sequence[str] = ()) -> Gate:
    """The last completed campaign of the tenant: hard bounces and complaints at most the tenant's
    limits (``feedback.max_hard_bounce_rate`` 2%, ``feedback.max_complaint_rate`` 0.1% by default);
    and no feedback input of the tenant left unread (``unread_feedback``: an accounting file, a
    webhook row, a MailWizz poll the engine could not read, each named with why): a send must not
    go out on complaints and bounces it could not read."""
    problems = []
    if unread_feedback:
        listed = "; ".join(unread_feedback[:3]) + (f" (and {len(unread_feedback) - 3} more)" if len(unread_feedback) > 3 else "")
        problems.append(f"{len(unread_feedback)} feedback input(s) not read: {listed}")
    if last is None or last.sent == 0 or (last.hard_bounces is None and last.complaints is None):
        if problems:
            return Gate(SENDER_REPUTATION, False, problems[0])
        return Gate(SENDER_REPUTATION, True, "no feedback data on the last completed campaign")
    rates = []
    for label, count, limit in (("hard bounces", last.hard_bounces, max_hard_bounce_rate),
                                ("complaints", last.complaints, max_complaint_rate)):
        if count is not None and count / last.sent > limit:
            rates.append(f"{label} {count}/{last.sent} = {count / last.sent:.2%} > {_percent(limit)}")
    if rates:
        problems.append(f"last completed campaign {last.campaign}: " + ", ".join(rates))
    if problems:
        return Gate(SENDER_REPUTATION, False, "; ".join(problems))
    return Gate(SENDER_REPUTATION, True, f"last completed campaign {last.campaign} within the limits")


def _percent(rate: float) -> str:
    """``0.02`` -> ``2.0%``, ``0.001`` -> ``0.1%``, ``0.0005`` -> ``0.05%`` (never rounded to a different limit)."""
    shown = f"{rate:.1%}"
    return shown if abs(float(shown[:-1]) / 100 - rate) < 1e-12 else f"{rate * 100:.6g}%"


def powermta_headers(transport: str | None, address: str | None = None, source: str | None = None,
                     missing: Sequence[str] = (), problem: str | None = None) -> Gate:
    """The ``<source>`` block of PowerMTA's config that matches the engine's connecting ``address`` sets
    what the injection headers need (``missing``: the settings it lacks; ``source``: the block, None when
    no block matches). Without them PowerMTA passes ``x-job`` / ``x-virtual-mta`` on to the recipients
    and ``jobId`` stays empty. ``transport`` None: no PowerMTA transport with a config file to check."""
    if transport is None:
        return Gate(POWERMTA_HEADERS, True, "no PowerMTA config file to check")
    if problem:
        return Gate(POWERMTA_HEADERS, False, f"transport {transport!r}: {problem}")
    if missing:
        settings = ", ".join(f"{m} yes" for m in missing)
        where = (f"its {source} lacks {settings}" if source
                 else f"no <source> block matches it; add one that sets {settings}")
        return Gate(POWERMTA_HEADERS, False, f"transport {transport!r}: PowerMTA sees the engine connect from {address}: "
                                             f"{where} (else x-job and x-virtual-mta reach the recipients and jobId is empty)")
    return Gate(POWERMTA_HEADERS, True, f"transport {transport!r}: {source} processes the injection headers")


def apply_overrides(gates: Sequence[Gate], overrides: Sequence[str]) -> list[Gate]:
    """A failed gate named in ``overrides`` passes, marked as overridden (recorded with the run)."""
    return [Gate(g.check, True, f"overridden by the operator: {g.reason}", True) if not g.passed and g.check in overrides else g
            for g in gates]


def parse_overrides(text: str) -> list[str]:
    """The run tag's comma-separated check names; an unknown name is an error naming it."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown:
        raise ValueError(f"unknown check(s) to override: {', '.join(n[:64] for n in unknown)}; known: {', '.join(CHECK_NAMES)}")
    return names
