"""Webhook payloads, checked: MailWizz open / click hits and contacts pushed to a source.

The app validates a body here before it stores it (a malformed body is answered 422 and stored
nowhere); the apply step reads the stored body with the same functions, so what was accepted is
what is applied. Errors are :class:`MalformedPayload` with a message naming the field or line.

MailWizz (REFERENCE.md): ``{"event": {"type": "open"|"click", "date_added", "clicked_url", ...},
"timestamp", "subscriber": {"attributes": {"email", ...}, "fields": {"EMAIL"}}, "campaign":
{"attributes": {"campaign_uid", "name"}}}``. Our campaigns are named
``<tenant>.<campaign>.<template>`` in MailWizz; the ``<campaign>`` part links the hit to the ledger.
The subscriber's IP address and user agent are personal data we do not need: they are not kept.

One-click unsubscribe (RFC 8058): the POST body holds ``List-Unsubscribe=One-Click``, form-encoded
(``application/x-www-form-urlencoded``) or as a ``multipart/form-data`` field.

Contacts: a JSON object, a JSON array of objects, or NDJSON (one object per line), UTF-8. The
body becomes an inbox file (:func:`contacts_file`) that the ordinary importer reads.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs

from email_engine_assets.audiences.suppressions import suppression_key
from email_engine_assets.feedback.events import FeedbackEvent
from email_engine_assets.tenancy.strict import is_slug

MAILWIZZ_EVENT_TYPES = {"open": "opened", "click": "clicked"}
MAX_URL_CHARS = 2048
MAX_NAME_CHARS = 200
_BOM = b"\xef\xbb\xbf"


class MalformedPayload(ValueError):
    """A body that is not what the route takes; the message names the field or line."""


@dataclass(frozen=True, slots=True)
class MailwizzHit:
    """One open or click reported by MailWizz, reduced to what the feedback loop keeps."""

    event_type: str
    occurred_at: datetime
    email: str
    campaign: str | None
    mailwizz_campaign: str | None
    url: str | None

    def event(self, row_id: int) -> FeedbackEvent:
        """The delivery event of this hit, stored as inbox row ``row_id`` (its dedupe key)."""
        return FeedbackEvent(
            event_type=self.event_type, origin="mailwizz", occurred_at=self.occurred_at,
            dedupe_key=f"webhook:{row_id}", campaign=self.campaign, email=self.email, url=self.url,
            detail=f"mailwizz campaign {self.mailwizz_campaign}" if self.mailwizz_campaign else None,
        )


def _json(body: bytes):
    try:
        text = body.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError):
        raise MalformedPayload("body is not JSON this server reads (a number too long or values nested too deeply)") from None


def _field(obj, path: str, *, required: bool = True):
    """The value at a dotted ``path`` of nested objects; None (or :class:`MalformedPayload`) when absent."""
    value = obj
    for key in path.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            if required:
                raise MalformedPayload(f"{path} is missing")
            return None
        value = value[key]
    return value


def _text(obj, path: str, *, required: bool = True, limit: int = MAX_NAME_CHARS) -> str | None:
    value = _field(obj, path, required=required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{path} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise MalformedPayload(f"{path} is longer than {limit} characters")
    return value


def _when(payload) -> datetime:
    """``event.date_added`` (MailWizz's UTC ``YYYY-MM-DD HH:MM:SS``), else ``timestamp`` (unix seconds)."""
    added = _text(payload, "event.date_added", required=False, limit=40)
    if added:
        try:
            when = datetime.fromisoformat(added.strip())
        except ValueError:
            raise MalformedPayload("event.date_added must be a date and time such as 2026-11-29 12:00:00") from None
        return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    stamp = _field(payload, "timestamp", required=False)
    if isinstance(stamp, str) and stamp.isdigit() and len(stamp) <= 12:
        stamp = int(stamp)
    if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 < stamp < 1 << 35:
        return datetime.fromtimestamp(stamp, timezone.utc)
    raise MalformedPayload("event.date_added or timestamp (unix seconds) is needed")


def campaign_of(mailwizz_name: str | None, tenant_id: str) -> str | None:
    """The ``<campaign>`` of a MailWizz campaign named ``<tenant>.<campaign>.<template>`` for this
    tenant; None for any other name (a campaign made by hand in MailWizz, another tenant's)."""
    if not mailwizz_name:
        return None
    parts = mailwizz_name.split(".", 2)
    if len(parts) == 3 and parts[0] == tenant_id and is_slug(parts[1]):
        return parts[1]
    return None


def parse_mailwizz(body: bytes, tenant_id: str) -> MailwizzHit:
    """A MailWizz open / click webhook body; :class:`MalformedPayload` naming the field otherwise."""
    payload = _json(body)
    if not isinstance(payload, dict):
        raise MalformedPayload(f"body must be a JSON object, not {type(payload).__name__}")
    kind = _text(payload, "event.type", limit=20)
    if kind not in MAILWIZZ_EVENT_TYPES:
        raise MalformedPayload(f"event.type must be one of {', '.join(MAILWIZZ_EVENT_TYPES)}")
    address = _text(payload, "subscriber.attributes.email", required=False, limit=320) \
        or _text(payload, "subscriber.fields.EMAIL", required=False, limit=320)
    if not address:
        raise MalformedPayload("subscriber.attributes.email is missing")
    try:
        email = suppression_key(address)
    except ValueError as exc:
        raise MalformedPayload(f"subscriber.attributes.email: {exc}") from None
    name = _text(payload, "campaign.attributes.name", required=False)
    url = _text(payload, "event.clicked_url", required=False, limit=MAX_URL_CHARS) if kind == "click" else None
    return MailwizzHit(
        event_type=MAILWIZZ_EVENT_TYPES[kind], occurred_at=_when(payload), email=email,
        campaign=campaign_of(name, tenant_id), mailwizz_campaign=name, url=url,
    )


@dataclass(frozen=True, slots=True)
class ContactsPush:
    """A checked contacts body: how many records, and in which file form it joins the inbox."""

    records: int
    suffix: str  # ".json" (an object or an array) or ".ndjson"


def _kind_of(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_contacts(body: bytes) -> ContactsPush:
    """A contacts push: a JSON object, a JSON array of objects, or NDJSON; :class:`MalformedPayload` otherwise."""
    stripped = body.removeprefix(_BOM).lstrip(b" \t\r\n")
    if not stripped:
        raise MalformedPayload("body is empty; expected a JSON object, a JSON array of objects or NDJSON")
    if stripped[:1] == b"[":
        items = _json(body)
        if not isinstance(items, list) or not items:
            raise MalformedPayload("the JSON array holds no contacts")
        for i, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise MalformedPayload(f"item {i} of the array is {_kind_of(item)}, expected an object")
        return ContactsPush(records=len(items), suffix=".json")
    if stripped[:1] != b"{":
        raise MalformedPayload("expected a JSON object, a JSON array of objects or NDJSON (one object per line)")
    try:
        text = body.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, dict):
        return ContactsPush(records=1, suffix=".json")
    records = 0
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedPayload(f"NDJSON line {number} is not JSON: {exc.msg} at column {exc.colno}") from None
        except (ValueError, RecursionError):
            raise MalformedPayload(f"NDJSON line {number}: a number too long or values nested too deeply") from None
        if not isinstance(item, dict):
            raise MalformedPayload(f"NDJSON line {number} is {_kind_of(item)}, expected an object")
        records += 1
    return ContactsPush(records=records, suffix=".ndjson")


def contacts_file(body: bytes) -> tuple[str, bytes]:
    """``(suffix, bytes)`` of the inbox file a checked contacts body becomes.

    An array or NDJSON is written as it came (the importer's line and item numbers are the
    sender's); a single object is wrapped into a one-item array, which the JSON reader takes.
    """
    push = parse_contacts(body)
    if push.suffix == ".json" and body.removeprefix(_BOM).lstrip(b" \t\r\n")[:1] == b"{":
        return ".json", b"[" + body.removeprefix(_BOM) + b"\n]\n"
    return push.suffix, body


ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"


def is_one_click(content_type: str | None, body: bytes) -> bool:
    """Whether an unsubscribe POST carries ``List-Unsubscribe=One-Click`` (RFC 8058 3.1)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        try:
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            parts = list(message.iter_parts()) if message.is_multipart() else []
            return any(
                part.get_param("name", header="content-disposition") == ONE_CLICK_FIELD
                and str(part.get_content()).strip() == ONE_CLICK_VALUE
                for part in parts
            )
        except (ValueError, LookupError, TypeError, AttributeError):
            return False
    try:
        fields = parse_qs(body.decode("latin-1").strip(), keep_blank_values=True, max_num_fields=20)
    except ValueError:
        return False
    return ONE_CLICK_VALUE in fields.get(ONE_CLICK_FIELD, [])
