"""Webhook authentication: a shared token (MailWizz) and a signed body with a timestamp (contacts).

Tokens and signatures are compared in constant time. A refusal is a :class:`Unauthorized` whose
message says what is wrong (missing, malformed, stale, not matching) and never echoes the token,
the signature or the secret.

Signature recipe (``X-Signature`` header of ``POST /hooks/contacts/<tenant>/<source>``)::

    t  = unix seconds now
    v1 = hex(HMAC-SHA256(secret, f"{t}." + raw body))
    X-Signature: t=<t>,v1=<v1>

The timestamp must be within :data:`REPLAY_WINDOW_S` of the server's clock, in either direction,
so that a captured request cannot be replayed later. Several ``v1=`` values may be given (a
sender rotating its secret); one matching is enough. The header and its timestamp are checked
before the body is read (:func:`check_signature_header`), the HMAC once it is.

A token or secret shorter than :data:`MIN_SECRET_CHARS` is refused where it is resolved: the
route it guards is off, as if it were not configured.
"""

from __future__ import annotations

import hashlib
import hmac
import re

REPLAY_WINDOW_S = 300
MIN_SECRET_CHARS = 32
SIGNATURE_HEADER = "X-Signature"
TOKEN_HEADER = "X-Webhook-Token"
MAX_HEADER_CHARS = 1024
_HEX = re.compile(r"[0-9a-fA-F]{64}\Z")
_UNIX = re.compile(r"\d{1,12}\Z")


class Unauthorized(ValueError):
    """Authentication failed; the message is safe to send back (it holds no secret)."""


def check_token(given: str | None, expected: str) -> None:
    """``given`` must equal ``expected`` (constant-time compare); :class:`Unauthorized` otherwise."""
    if not given:
        raise Unauthorized(f"missing webhook token (query parameter token= or header {TOKEN_HEADER})")
    if len(given) > MAX_HEADER_CHARS or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise Unauthorized("webhook token does not match")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` value for ``body`` at ``timestamp`` (what a sender computes)."""
    return f"t={timestamp},v1={_mac(secret, str(timestamp), body)}"


def _mac(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def parse_signature(header: str | None) -> tuple[str, list[str]]:
    """``(timestamp as sent, [v1 hex, ...])`` of an ``X-Signature`` value; :class:`Unauthorized` when malformed."""
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header (t=<unix seconds>,v1=<hex HMAC-SHA256>)")
    if len(header) > MAX_HEADER_CHARS:
        raise Unauthorized(f"{SIGNATURE_HEADER} header is too long")
    timestamp: str | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq:
            raise Unauthorized(f"{SIGNATURE_HEADER} must look like t=<unix seconds>,v1=<hex HMAC-SHA256>")
        if key == "t":
            if timestamp is not None or not _UNIX.match(value):
                raise Unauthorized(f"{SIGNATURE_HEADER}: t must be one unix time in seconds")
            timestamp = value
        elif key == "v1":
            if not _HEX.match(value):
                raise Unauthorized(f"{SIGNATURE_HEADER}: v1 must be 64 hex digits (HMAC-SHA256)")
            macs.append(value.lower())
        # other schemes (v0, v2, ...) are ignored, as senders add them over time
    if timestamp is None or not macs:
        raise Unauthorized(f"{SIGNATURE_HEADER} must hold t=<unix seconds> and at least one v1=<hex HMAC-SHA256>")
    return timestamp, macs


def check_signature_header(header: str | None, now: float) -> tuple[str, list[str]]:
    """What can be checked without the body: the header's form and its timestamp, within
    :data:`REPLAY_WINDOW_S` seconds of ``now``; returns what :func:`parse_signature` does."""
    text, macs = parse_signature(header)
    if abs(now - int(text)) > REPLAY_WINDOW_S:
        raise Unauthorized(f"signature timestamp is outside the {REPLAY_WINDOW_S // 60}-minute window (check the sender's clock)")
    return text, macs


def verify_signature(header: str | None, secret: str, body: bytes, now: float) -> int:
    """Check ``header`` against ``body`` and ``secret`` at time ``now``; returns the timestamp.

    Refused (:class:`Unauthorized`): a malformed header, a timestamp more than
    :data:`REPLAY_WINDOW_S` seconds before or after ``now``, or no ``v1`` that matches.
    """
    text, macs = check_signature_header(header, now)
    expected = _mac(secret, text, body).encode("ascii")  # the digits as sent are what was signed
    # Every candidate is compared (no early exit): the time taken says nothing about which matched.
    matched = False
    for mac in macs:
        matched |= hmac.compare_digest(mac.encode("ascii"), expected)
    if not matched:
        raise Unauthorized("signature does not match the body")
    return int(text)
