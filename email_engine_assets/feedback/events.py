"""The delivery-event vocabulary and the bounce rule: what happened to a message, and whose fault.

One place for the words every feedback path writes (``delivery_events`` holds them under CHECK
constraints) and for the rule that decides whether a bounce counts against the contact (``hard``,
``soft``) or against the sender (``reputation``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

import polars as pl

EVENT_TYPES: tuple[str, ...] = ("delivered", "deferred", "bounced", "complained", "opened", "clicked", "unsubscribed")
BOUNCE_CLASSES: tuple[str, ...] = ("hard", "soft", "reputation")
# powermta: accounting files; mailwizz: its webhooks and polled bounces / unsubscribes;
# unsubscribe_link: our own one-click route; operator: the CLI; tracking: our own /o/ and /c/ routes.
EVENT_ORIGINS: tuple[str, ...] = ("powermta", "mailwizz", "unsubscribe_link", "operator", "tracking")

# PowerMTA's bounceCat values (REFERENCE): the address is bad, the address may recover, or the
# message / sender was refused (never held against the contact).
HARD_BOUNCE_CATEGORIES = frozenset({"bad-mailbox", "inactive-mailbox", "bad-domain"})
SOFT_BOUNCE_CATEGORIES = frozenset({"quota-issues", "no-answer-from-host", "relaying-issues", "routing-errors", "message-expired"})
REPUTATION_BOUNCE_CATEGORIES = frozenset({
    "spam-related", "policy-related", "content-related", "bad-configuration", "invalid-sender",
    "virus-related", "bad-connection", "protocol-errors",
})
BOUNCE_CATEGORIES = HARD_BOUNCE_CATEGORIES | SOFT_BOUNCE_CATEGORIES | REPUTATION_BOUNCE_CATEGORIES | {"other"}

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# Enhanced status codes (RFC 3463) that say the address itself is bad: 5.1.x addressing
# (bad mailbox 5.1.1, bad domain 5.1.2, ...) and 5.2.1 (mailbox disabled).
_HARD_STATUS = re.compile(r"^5\.1\.\d+\Z|^5\.2\.1\Z")
_SENDER_STATUS = re.compile(r"^5\.7\.\d+\Z")  # security / policy: the sender, not the address


def bounce_class(bounce_cat: str | None, dsn_status: str | None) -> str:
    """``hard``, ``soft`` or ``reputation`` for a bounce, from PowerMTA's ``bounceCat`` and the DSN status.

    ``bounceCat`` decides when it names a known category; otherwise (missing, ``other``, unknown)
    the enhanced status code does: 5.1.x and 5.2.1 are hard, 5.7.x reputation, anything else soft
    (a bounce we cannot place counts only towards the soft threshold, never at once).
    """
    cat = (bounce_cat or "").strip().lower()
    if cat in HARD_BOUNCE_CATEGORIES:
        return "hard"
    if cat in SOFT_BOUNCE_CATEGORIES:
        return "soft"
    if cat in REPUTATION_BOUNCE_CATEGORIES:
        return "reputation"
    code = enhanced_status(dsn_status)
    if code and _HARD_STATUS.match(code):
        return "hard"
    if code and _SENDER_STATUS.match(code):
        return "reputation"
    return "soft"


def enhanced_status(text: str | None) -> str | None:
    """The first ``x.y.z`` status code in a DSN field (``"5.7.1 (delivery not authorized)"`` -> ``5.7.1``)."""
    match = _STATUS.search(text or "")
    return match.group(0) if match else None


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One event to record. It is linked to the send ledger by ``token`` (the ENVID we sent), else by
    ``campaign`` + ``email`` (the address key); what matches nothing is recorded unlinked.

    ``dedupe_key`` names the event's origin uniquely (an accounting line's digest, a webhook row's
    id and position): recording it twice records it once.
    """

    event_type: str
    origin: str
    occurred_at: datetime
    dedupe_key: str
    bounce_class: str | None = None
    token: str | None = None
    campaign: str | None = None
    email: str | None = None
    detail: str | None = None
    url: str | None = None
    # Our own tracking hits (origin 'tracking') only; None elsewhere (nobody classed the hit).
    machine: bool | None = None
    classified_by: str | None = None  # the rule that decided (feedback.tracking_rules)
    link_index: int | None = None

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
        if self.origin not in EVENT_ORIGINS:
            raise ValueError(f"unknown event origin {self.origin!r}; expected one of {', '.join(EVENT_ORIGINS)}")
        if (self.event_type == "bounced") != (self.bounce_class is not None):
            raise ValueError("a bounce needs a bounce class, and only a bounce has one")
        if self.bounce_class is not None and self.bounce_class not in BOUNCE_CLASSES:
            raise ValueError(f"unknown bounce class {self.bounce_class!r}")


def dedupe_digest(*parts: str | bytes) -> str:
    """A stable key for an event source: SHA-256 over the parts, NUL-separated."""
    h = hashlib.sha256()
    for i, part in enumerate(parts):
        if i:
            h.update(b"\x00")
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
    return h.hexdigest()


# The columns of an events frame (:func:`events_frame`), as :func:`email_engine_assets.feedback.store.record_events` reads them.
EVENT_FRAME_SCHEMA = {
    "event_type": "String", "origin": "String", "occurred_at": "Datetime", "dedupe_key": "String",
    "bounce_class": "String", "token": "String", "campaign": "String", "email": "String",
    "detail": "String", "url": "String", "machine": "Boolean", "classified_by": "String", "link_index": "Int32",
}
# The tracking classification: a frame without these columns (accounting, MailWizz) records them NULL.
CLASSIFICATION_COLUMNS: tuple[str, ...] = ("machine", "classified_by", "link_index")
_DTYPES = {"String": pl.String, "Boolean": pl.Boolean, "Int32": pl.Int32}


def event_frame_dtypes() -> dict[str, pl.DataType]:
    """:data:`EVENT_FRAME_SCHEMA` as polars types."""
    return {name: (pl.Datetime("us", "UTC") if kind == "Datetime" else _DTYPES[kind]) for name, kind in EVENT_FRAME_SCHEMA.items()}


def with_event_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the columns of :data:`EVENT_FRAME_SCHEMA`, in order; a missing classification column is NULL."""
    dtypes = event_frame_dtypes()
    missing = [pl.lit(None, dtype=dtypes[name]).alias(name) for name in CLASSIFICATION_COLUMNS if name not in frame.columns]
    return (frame.with_columns(missing) if missing else frame).select(list(EVENT_FRAME_SCHEMA))


def events_frame(events) -> pl.DataFrame:
    """A polars frame of :class:`FeedbackEvent`\\ s with the columns :data:`EVENT_FRAME_SCHEMA` names."""
    schema = event_frame_dtypes()
    return pl.DataFrame([{name: getattr(e, name) for name in schema} for e in events], schema=schema, orient="row")
