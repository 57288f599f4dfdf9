"""MailWizz's own unsubscribes and bounces as delivery events.

A campaign we handed to MailWizz is named ``<tenant>.<campaign>.<template>``
(:mod:`email_engine_assets.campaigns.sender`); its records link to our ledger by (campaign,
address). MailWizz's bounce types: ``hard`` -> hard, ``soft`` -> soft, ``internal`` (MailWizz's own
refusal: the sender's problem) -> reputation; a type it may add later counts as soft (towards the
threshold only, never at once). Dedupe keys are stable across polls: MailWizz keeps at most one
bounce and one unsubscribe per (campaign, subscriber), so the key is the instance, the campaign
uid, the kind and the subscriber.

A bounce record carries no date: it is dated when first polled. An unsubscribe's ``date_added``
is the raw database value, in UTC (MailWizz runs its database session at ``+00:00``); only a
campaign's ``send_at`` is in the customer's time zone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from email_engine_assets.audiences.suppressions import suppression_key
from email_engine_assets.feedback.events import FeedbackEvent, dedupe_digest

MAILWIZZ_BOUNCE_CLASSES: dict[str, str] = {"hard": "hard", "soft": "soft", "internal": "reputation"}
UNKNOWN_BOUNCE_CLASS = "soft"
DETAIL_CHARS = 300
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_CAMPAIGN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a campaign slug (tenancy.strict.Slug): any other name is not ours


def campaign_of(name: str, tenant_id: str) -> str | None:
    """Our campaign in a MailWizz campaign name ``<tenant>.<campaign>.<template>``; ``None`` when not the tenant's."""
    prefix = f"{tenant_id}."
    if not name.startswith(prefix):
        return None
    campaign, dot, template = name[len(prefix):].partition(".")
    return campaign if dot and template and _CAMPAIGN.fullmatch(campaign) else None


def _text(value, limit: int = DETAIL_CHARS) -> str:
    text = " ".join(str(value or "").split())
    return "".join(c for c in text if c.isprintable())[:limit]


def _utc_date(value, fallback: datetime) -> datetime:
    try:
        return datetime.strptime(str(value), DATE_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return fallback


def feedback_event(
    kind: str, record: dict, *, instance: str, campaign_uid: str, campaign: str, polled_at: datetime
) -> FeedbackEvent | str:
    """The event of one ``unsubscribes`` / ``bounces`` record, or why it cannot be one (a short reason)."""
    subscriber = record.get("subscriber") if isinstance(record.get("subscriber"), dict) else {}
    try:
        email = suppression_key(str(subscriber.get("email") or ""))
    except ValueError:
        return "no usable email address"
    who = str(subscriber.get("subscriber_uid") or "") or email
    key = dedupe_digest("mailwizz", instance, campaign_uid, kind, who)
    if kind == "unsubscribes":
        why = "; ".join(t for t in (_text(record.get("reason"), 140), _text(record.get("note"), 140)) if t)
        return FeedbackEvent(
            "unsubscribed", "mailwizz", _utc_date(record.get("date_added"), polled_at), key,
            campaign=campaign, email=email, detail=why or None,
        )
    if kind == "bounces":
        kind_given = _text(record.get("bounce_type"), 40).lower()
        klass = MAILWIZZ_BOUNCE_CLASSES.get(kind_given, UNKNOWN_BOUNCE_CLASS)
        message = _text(record.get("message"))
        detail = message if kind_given in MAILWIZZ_BOUNCE_CLASSES else f"MailWizz bounce type {kind_given or 'missing'}: {message}"
        return FeedbackEvent("bounced", "mailwizz", polled_at, key, bounce_class=klass, campaign=campaign, email=email,
                             detail=detail or None)
    raise ValueError(f"unknown MailWizz feedback kind {kind!r}")
