"""The one guarded HTTP client of the outbound clients (MailWizz, PowerMTA's management API).

The host is resolved here and every address is checked by :func:`.network_policy.target_refusal`
before connecting to it (the checked address is the one connected to, so a DNS answer cannot
change between the check and the connection); proxies from the environment are not used and
redirects are not followed. A refused target raises ``httpcore.ConnectError`` whose text holds
:data:`REFUSED`.
"""

from __future__ import annotations

import socket

import httpcore
import httpx

from email_engine_resources.network_policy import target_refusal

REFUSED = "refused target"


def _shown(host: str, limit: int = 80) -> str:
    cut = host[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut) + ("..." if len(host) > limit else "")


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves the host, refuses non-public addresses (unless allowed), connects to the checked address."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {_shown(host)}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        last: Exception | None = None
        for address in addresses:
            refusal = target_refusal(address, allow_private=self.allow_private)
            if refusal:
                last = httpcore.ConnectError(f"{REFUSED}: {_shown(host)}: {refusal}")
                continue
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{_shown(host)} has no address")


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, allow_private: bool):
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedBackend(allow_private)
        )


def guarded_client(*, allow_private: bool, timeout: float) -> httpx.Client:
    """An ``httpx.Client`` that connects only where the network policy allows, without proxies or redirects."""
    return httpx.Client(transport=_GuardedTransport(allow_private), timeout=timeout, trust_env=False, follow_redirects=False)
