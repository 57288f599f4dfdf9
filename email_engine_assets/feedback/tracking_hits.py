"""A tracking hit as the webhook inbox keeps it (kind ``tracking``), and the event it becomes.

The body is a small JSON object, written by the app when the hit arrives:

    {"v": 1, "row": "<ledger row token>", "kind": "open"|"click", "link": <index>|null,
     "url": "<signed target>"|null, "at": <unix ms>, "method": "GET"|"HEAD",
     "machine": true|false, "rule": "<tracking_rules rule>", "nonce": "<16 hex>"}

Never the client's address or user agent: they are read when the hit arrives, for the verdict,
and dropped. The inbox deduplicates rows by a digest of the body: ``at`` and a random ``nonce``
per request keep two hits apart (two clicks in the same millisecond included), while storing the
same body again (a retried write) still stores it once. Once applied the body is emptied (the url
may be personalised).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

from email_engine_assets.feedback.events import FeedbackEvent
from email_engine_assets.feedback.tracking_rules import REQUEST_RULES, Verdict
from email_engine_assets.feedback.webhook_payloads import MalformedPayload

BODY_VERSION = 1
EVENT_TYPES = {"open": "opened", "click": "clicked"}
METHODS = ("GET", "HEAD")
MAX_ROW_TOKEN_CHARS = 128
MAX_URL_CHARS = 4096
CONTENT_TYPE = "application/json"
# The answer of /o/<token>: a transparent 1x1 GIF (43 bytes: GIF89a, one colour, transparent).
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
             b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
REDIRECT_SCHEMES = ("http", "https")
# Printable ASCII (not the space) stays as written in Location; anything else is percent-encoded (UTF-8).
_LOCATION_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def redirect_location(url: str | None) -> str | None:
    """The ``Location`` of a click on ``url``: the address itself (non-ASCII characters and spaces
    percent-encoded), or None unless it is an absolute http / https address with a host and no
    control characters or surrounding blanks (nothing else is ever redirected to)."""
    if not url or url != url.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in REDIRECT_SCHEMES or not host:
        return None
    return quote(url, safe=_LOCATION_SAFE)


def hit_body(row_token: str, kind: str, link_index: int | None, url: str | None, at_ms: int, method: str,
             verdict: Verdict, nonce: str | None = None) -> bytes:
    """The inbox body of one hit (``nonce``: a fresh random one unless given)."""
    return json.dumps(
        {"v": BODY_VERSION, "row": row_token, "kind": kind, "link": link_index, "url": url, "at": at_ms,
         "method": method, "machine": verdict.machine, "rule": verdict.rule,
         "nonce": nonce if nonce is not None else secrets.token_hex(8)},
        separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise MalformedPayload(message)


def hit_event(body: bytes, row_id: int) -> FeedbackEvent:
    """The ``opened`` / ``clicked`` event (origin ``tracking``) of inbox row ``row_id``'s body;
    :class:`MalformedPayload` naming the field that is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedPayload("tracking body is not UTF-8 JSON") from None
    _need(isinstance(data, dict), "tracking body must be a JSON object")
    _need(data.get("v") == BODY_VERSION, f"tracking body version must be {BODY_VERSION}")
    kind, row, link, url, at = data.get("kind"), data.get("row"), data.get("link"), data.get("url"), data.get("at")
    _need(kind in EVENT_TYPES, "kind must be open or click")
    _need(isinstance(row, str) and 0 < len(row) <= MAX_ROW_TOKEN_CHARS, "row must be a ledger row token")
    _need(isinstance(at, int) and not isinstance(at, bool) and 0 < at < 1 << 45, "at must be a time in unix milliseconds")
    _need(data.get("method") in METHODS, "method must be GET or HEAD")
    _need(isinstance(data.get("machine"), bool), "machine must be true or false")
    _need(data.get("rule") in REQUEST_RULES, "rule must be a request rule of feedback.tracking_rules")
    if kind == "click":
        _need(isinstance(link, int) and not isinstance(link, bool) and 0 <= link < 10_000, "link must be a link index")
        _need(isinstance(url, str) and 0 < len(url) <= MAX_URL_CHARS, "url must be the link's address")
    else:
        _need(link is None and url is None, "an open has no link or url")
    return FeedbackEvent(
        event_type=EVENT_TYPES[kind], origin="tracking",
        occurred_at=datetime.fromtimestamp(at // 1000, timezone.utc) + timedelta(milliseconds=at % 1000),
        dedupe_key=f"webhook:{row_id}", token=row, url=url,
        machine=data["machine"], classified_by=data["rule"], link_index=link,
    )
