"""Unsubscribe tokens: ``<base_url>/u/<token>``, signed over (tenant, campaign, contact).

A token is ``<payload>.<mac>``, both URL-safe base64 without padding: the payload is
``v1 NUL tenant NUL campaign NUL contact_id`` in UTF-8, the MAC the first 16 bytes of
HMAC-SHA256 under a key derived from the project's signing key for this use only (a MAC made for
something else never verifies here). Verification compares in constant time and refuses anything
malformed, oversized or forged with :class:`BadToken`, whose message never echoes the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

TOKEN_MAX_CHARS = 400
_VERSION = "v1"
_MAC_BYTES = 16
_SEP = "\x00"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
_PART_MAX_CHARS = 128


class BadToken(ValueError):
    """A token that is not one of ours: garbled, truncated or forged."""


def _purpose_key(key: bytes) -> bytes:
    if len(key) < 16:
        raise ValueError("the signing key must hold at least 16 bytes")
    return hmac.new(key, b"email-engine/unsubscribe/v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsubscribe_token(key: bytes, tenant_id: str, campaign: str, contact_id: int) -> str:
    """The URL-safe token naming (tenant, campaign, contact), signed with ``key``."""
    for label, value in (("tenant_id", tenant_id), ("campaign", campaign)):
        if not value or _SEP in value or len(value) > _PART_MAX_CHARS:
            raise ValueError(f"{label} must be 1 to {_PART_MAX_CHARS} characters without NUL")
    if not isinstance(contact_id, int) or isinstance(contact_id, bool) or contact_id < 0:
        raise ValueError("contact_id must be a non-negative integer")
    payload = _SEP.join((_VERSION, tenant_id, campaign, str(contact_id))).encode("utf-8")
    mac = hmac.new(_purpose_key(key), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_unsubscribe_token(key: bytes, token: str) -> tuple[str, str, int]:
    """``(tenant_id, campaign, contact_id)`` of a token this key signed; :class:`BadToken` otherwise."""
    if not isinstance(token, str) or len(token) > TOKEN_MAX_CHARS or not _TOKEN.match(token):
        raise BadToken("malformed unsubscribe token")
    payload_text, mac_text = token.split(".")
    try:
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise BadToken("malformed unsubscribe token") from None
    expected = hmac.new(_purpose_key(key), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise BadToken("unsubscribe token signature does not match")
    try:
        version, tenant_id, campaign, contact = payload.decode("utf-8").split(_SEP)
        contact_id = int(contact)
    except ValueError:
        raise BadToken("unsubscribe token payload is not understood") from None
    if version != _VERSION or not contact.isdigit():
        raise BadToken("unsubscribe token payload is not understood")
    return tenant_id, campaign, contact_id


def unsubscribe_url(base_url: str, token: str) -> str:
    """``<base_url>/u/<token>`` (the tenant's ``unsubscribe.base_url``, no trailing slash needed)."""
    return f"{base_url.rstrip('/')}/u/{token}"
