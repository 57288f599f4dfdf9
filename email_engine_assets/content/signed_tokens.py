"""Signed URL tokens: ``<payload>.<mac>``, both URL-safe base64 without padding.

The MAC is the first 16 bytes of HMAC-SHA256 under a key derived from the project's signing key for
one purpose only (a token made for unsubscribing never verifies as a tracking token, and the other
way round). Verification compares in constant time and refuses anything malformed, oversized or
forged with :class:`BadToken`, whose message never echoes the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

_MAC_BYTES = 16
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")


class BadToken(ValueError):
    """A token that is not one of ours: garbled, truncated or forged."""


def purpose_key(key: bytes, purpose: bytes) -> bytes:
    if len(key) < 16:
        raise ValueError("the signing key must hold at least 16 bytes")
    return hmac.new(key, purpose, hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, purpose: bytes, payload: bytes) -> str:
    """The token carrying ``payload``, signed for ``purpose``."""
    mac = hmac.new(purpose_key(key, purpose), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return f"{b64(payload)}.{b64(mac)}"


def verify(key: bytes, purpose: bytes, token: str, *, max_chars: int, what: str) -> bytes:
    """The payload of a token signed for ``purpose``; :class:`BadToken` (naming ``what``) otherwise."""
    if not isinstance(token, str) or len(token) > max_chars or not _TOKEN.match(token):
        raise BadToken(f"malformed {what} token")
    payload_text, mac_text = token.split(".")
    try:
        payload, mac = unb64(payload_text), unb64(mac_text)
    except (binascii.Error, ValueError):
        raise BadToken(f"malformed {what} token") from None
    expected = hmac.new(purpose_key(key, purpose), payload, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise BadToken(f"{what} token signature does not match")
    return payload
