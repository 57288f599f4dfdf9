"""Who may read the webhook app's ``/metrics`` (plain code, checked by the app per request).

The app faces the internet. A request is answered when it comes from loopback *directly*, or
carries ``Authorization: Bearer <EMAIL_ENGINE_METRICS_TOKEN>`` (compared in constant time).

"Directly" matters: behind a reverse proxy on the same host every request arrives from
127.0.0.1, and with ``--proxy-headers`` uvicorn replaces the client address by one taken from
``X-Forwarded-For``, which a remote client can write itself. So a request carrying any forwarding
header (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) never counts as loopback, whatever
address the server derived: it needs the token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

TOKEN_ENV = "EMAIL_ENGINE_METRICS_TOKEN"
MIN_TOKEN_CHARS = 32
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")


class Denied(Exception):
    """``/metrics`` refused: ``status`` 403 (no token configured) or 401 (token missing or wrong)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback IP address (``127.0.0.0/8``, ``::1``, ``::ffff:127.x``)."""
    try:
        address = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def direct_loopback(client_host: str | None, headers: Mapping[str, str]) -> bool:
    """A request from loopback that no proxy forwarded (``headers`` keyed in lower case)."""
    return is_loopback(client_host) and not any(name in headers for name in FORWARDING_HEADERS)


def usable_token(configured: str | None) -> str | None:
    """The configured token, or None when unset or shorter than :data:`MIN_TOKEN_CHARS` (too
    weak to expose the figures to the internet: only loopback is answered then)."""
    return configured if configured and len(configured) >= MIN_TOKEN_CHARS else None


def check_access(client_host: str | None, headers: Mapping[str, str], configured_token: str | None) -> None:
    """Raise :class:`Denied` unless the request may read the metrics."""
    if direct_loopback(client_host, headers):
        return
    token = usable_token(configured_token)
    if token is None:
        raise Denied(403, f"metrics are answered to loopback clients only ({TOKEN_ENV} is not set on this server)")
    given = headers.get("authorization") or ""
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Denied(401, "metrics need Authorization: Bearer <token>")
