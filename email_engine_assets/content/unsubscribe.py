"""Unsubscribe tokens: ``<base_url>/u/<token>``, signed over (tenant, campaign, contact).

A token is ``<payload>.<mac>``, both URL-safe base64 without padding: the payload is
``v1 NUL tenant NUL campaign NUL contact_id`` in UTF-8, the MAC the first 16 bytes of
HMAC-SHA256 under a key derived from the project's signing key for this use only (a MAC made for
something else never verifies here). Verification compares in constant time and refuses anything
malformed, oversized or forged with :class:`BadToken`, whose message never echoes the token.
"""

from __future__ import annotations

from email_engine_assets.content.signed_tokens import BadToken, sign, verify

__all__ = ["BadToken", "TOKEN_MAX_CHARS", "unsubscribe_token", "unsubscribe_url", "verify_unsubscribe_token"]

TOKEN_MAX_CHARS = 400
_PURPOSE = b"email-engine/unsubscribe/v1"
_VERSION = "v1"
_SEP = "\x00"
_PART_MAX_CHARS = 128


def unsubscribe_token(key: bytes, tenant_id: str, campaign: str, contact_id: int) -> str:
    """The URL-safe token naming (tenant, campaign, contact), signed with ``key``."""
    for label, value in (("tenant_id", tenant_id), ("campaign", campaign)):
        if not value or _SEP in value or len(value) > _PART_MAX_CHARS:
            raise ValueError(f"{label} must be 1 to {_PART_MAX_CHARS} characters without NUL")
    if not isinstance(contact_id, int) or isinstance(contact_id, bool) or contact_id < 0:
        raise ValueError("contact_id must be a non-negative integer")
    return sign(key, _PURPOSE, _SEP.join((_VERSION, tenant_id, campaign, str(contact_id))).encode("utf-8"))


def verify_unsubscribe_token(key: bytes, token: str) -> tuple[str, str, int]:
    """``(tenant_id, campaign, contact_id)`` of a token this key signed; :class:`BadToken` otherwise."""
    payload = verify(key, _PURPOSE, token, max_chars=TOKEN_MAX_CHARS, what="unsubscribe")
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
