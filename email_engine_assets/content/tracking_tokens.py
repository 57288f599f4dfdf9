"""Tracking tokens: ``<base_url>/o/<token>`` (the pixel) and ``<base_url>/c/<token>`` (a link).

A token names the tenant, the ledger row (its ``token``, the ENVID the feedback loop already links
events by) and, for a link, the link's index in the message and the address the template had. It is
signed (:mod:`signed_tokens`, a purpose of its own), so the click route redirects only to an address
our composer wrote: a forged or altered token answers 400 and nothing is recorded, and there is no
open redirect. Payload: ``v1 NUL kind NUL tenant NUL row NUL index NUL url`` in UTF-8, with kind
``o`` (open, no index or url) or ``c`` (click).
"""

from __future__ import annotations

from dataclasses import dataclass

from email_engine_assets.content.signed_tokens import BadToken, sign, verify

__all__ = ["BadToken", "Hit", "TOKEN_MAX_CHARS", "click_token", "open_token", "verify_tracking_token"]

_PURPOSE = b"email-engine/tracking/v1"
_VERSION = "v1"
_SEP = "\x00"
TOKEN_MAX_CHARS = 8192
URL_MAX_CHARS = 4096
_PART_MAX_CHARS = 128
KINDS = {"o": "open", "c": "click"}


@dataclass(frozen=True, slots=True)
class Hit:
    """What a verified token names."""

    kind: str  # "open" or "click"
    tenant_id: str
    row_token: str  # campaign_sends.token
    link_index: int | None  # clicks only
    url: str | None  # clicks only: where the template's link pointed


def _check(label: str, value: str) -> None:
    if not value or _SEP in value or len(value) > _PART_MAX_CHARS:
        raise ValueError(f"{label} must be 1 to {_PART_MAX_CHARS} characters without NUL")


def open_token(key: bytes, tenant_id: str, row_token: str) -> str:
    _check("tenant_id", tenant_id)
    _check("row_token", row_token)
    return sign(key, _PURPOSE, _SEP.join((_VERSION, "o", tenant_id, row_token, "", "")).encode("utf-8"))


def click_token(key: bytes, tenant_id: str, row_token: str, link_index: int, url: str) -> str:
    _check("tenant_id", tenant_id)
    _check("row_token", row_token)
    if not isinstance(link_index, int) or isinstance(link_index, bool) or not 0 <= link_index < 10_000:
        raise ValueError("link_index must be an integer from 0 to 9999")
    if not url or _SEP in url or len(url) > URL_MAX_CHARS:
        raise ValueError(f"url must be 1 to {URL_MAX_CHARS} characters without NUL")
    return sign(key, _PURPOSE, _SEP.join((_VERSION, "c", tenant_id, row_token, str(link_index), url)).encode("utf-8"))


def verify_tracking_token(key: bytes, token: str, kind: str) -> Hit:
    """The :class:`Hit` of a token this key signed for ``kind`` (``open`` / ``click``); :class:`BadToken` otherwise
    (also an open token used as a click, or the other way round)."""
    payload = verify(key, _PURPOSE, token, max_chars=TOKEN_MAX_CHARS, what="tracking")
    try:
        version, short, tenant_id, row_token, index, url = payload.decode("utf-8").split(_SEP)
    except ValueError:
        raise BadToken("tracking token payload is not understood") from None
    if version != _VERSION or KINDS.get(short) != kind:
        raise BadToken("tracking token payload is not understood")
    if kind == "open":
        if index or url:
            raise BadToken("tracking token payload is not understood")
        return Hit("open", tenant_id, row_token, None, None)
    if not index.isdigit() or not url:
        raise BadToken("tracking token payload is not understood")
    return Hit("click", tenant_id, row_token, int(index), url)


def open_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/o/{token}"


def click_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/c/{token}"
