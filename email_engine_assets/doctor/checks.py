"""What a probe found, how it is printed, and which changes are worth an alert (no I/O here).

A probe has a name that says what was reached (``database``, ``resolver``, ``outbox``, ``webhook``,
``powermta acme.pmta smtp``, ``mailwizz acme.mw api``, ...), a status (``ok``, ``fail``, ``skip``:
nothing to probe, e.g. no webhook URL set) and a reason. The doctor sensor alerts on a change of
state only: a probe that starts failing, or one that recovers, not every tick a probe still fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from email_engine_assets.feedback.alerts import PRODUCT, scrub

OK, FAIL, SKIP = "ok", "fail", "skip"
REASON_MAX_CHARS = 300


@dataclass(frozen=True)
class Probe:
    name: str
    status: str  # OK, FAIL or SKIP
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        """``OK database: schema current`` / ``FAIL mailwizz acme.mw api: ...``: one line, never a secret."""
        return f"{self.status.upper()} {self.name}: {self.reason}" if self.reason else f"{self.status.upper()} {self.name}"

    def as_json(self) -> dict:
        return {"name": self.name, "status": self.status, "reason": self.reason}


def ok(name: str, reason: str = "") -> Probe:
    return Probe(name, OK, shown(reason))


def fail(name: str, reason: str) -> Probe:
    return Probe(name, FAIL, shown(reason) or "failed")


def skip(name: str, reason: str) -> Probe:
    return Probe(name, SKIP, shown(reason))


def shown(text: str) -> str:
    """One line, cut short, any credential-looking part of a URL masked (a second guard: errors carry none)."""
    text = " ".join(str(text).split())
    text = scrub("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def failing(probes: Iterable[Probe]) -> dict[str, str]:
    """The failing probes: name -> reason (what the sensor remembers between ticks)."""
    return {p.name: p.reason for p in probes if p.failed}


@dataclass(frozen=True)
class Change:
    started: list[Probe]  # failing now, not failing at the last tick
    recovered: list[str]  # failing at the last tick, passing (or gone) now

    def __bool__(self) -> bool:
        return bool(self.started or self.recovered)


def change(previous: Mapping[str, str], probes: Sequence[Probe]) -> Change:
    now = failing(probes)
    return Change(started=[p for p in probes if p.failed and p.name not in previous],
                  recovered=sorted(name for name in previous if name not in now))


def alert_text(c: Change) -> str:
    """The alert of a change: each probe that started failing with why, each that recovered."""
    lines = [f"{PRODUCT}: doctor found {len(c.started)} failing probe(s)" if c.started
             else f"{PRODUCT}: doctor probes recovered"]
    lines += [f"- FAIL {p.name}: {p.reason}" for p in c.started]
    lines += [f"- OK again: {name}" for name in c.recovered]
    lines.append("details: email-engine doctor")
    text = "\n".join(lines)
    return text if len(text) <= 1000 else text[:999] + "…"
