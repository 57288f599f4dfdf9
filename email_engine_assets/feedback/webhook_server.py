"""How the webhook app is served: uvicorn, with the limits a slow or hostile peer cannot get round.

- **Header deadline.** A request's headers must be complete within ``header_timeout_s`` of the
  connection being opened (or of the first byte of the next request on a kept-alive connection);
  otherwise the peer gets a 408 and the connection is closed. uvicorn has no such deadline: its
  ``timeout_keep_alive`` only closes a connection left idle *after* a response, so 200 sockets
  each sending half a header would otherwise stay open for ever.
- **Header size cap.** More than ``max_header_bytes`` before the end of the headers (request line
  included): 431, closed. (uvicorn's ``h11_max_incomplete_event_size`` only applies to its h11
  protocol; the server runs on httptools, which has no cap of its own.)
- **Body deadline.** A body must be read within ``body_timeout_s`` (``webhook_app.read_body``:
  408); a refusal answered before the body is read closes the connection (``Connection: close``),
  so a peer trickling an unwanted body holds nothing. Such a close lingers: the answer is followed
  by a half-close, what the peer still sends is read and dropped for up to :data:`LINGER_S`, then
  the socket is closed. (Closing a socket with unread data sends a reset, which can destroy the
  answer before the peer has read it.)
- **Requests in flight.** At most ``max_in_flight`` requests are handled at once (from complete
  headers to the end of the response); one more is answered 503 with ``Retry-After`` at once.
  Connections still sending their headers, or idle, are not counted: uvicorn's own
  ``limit_concurrency`` counts every open connection, so half-open sockets would turn every valid
  request into a 503.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("email_engine.webhooks")

LINGER_S = 2.0
# The connection's own peer, kept in each request's scope: uvicorn's ``--proxy-headers`` replaces
# ``scope["client"]`` with an address taken from X-Forwarded-For (by default for any request from
# 127.0.0.1), and the tracking rules decide themselves which proxies they trust.
PEER_EXTENSION = "email_engine.peer"
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class WebhookLimits:
    """The limits of ``email-engine webhooks serve`` (its ``--header-timeout`` and other options)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16 << 10
    max_in_flight: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.header_timeout_s <= 30:
            raise ValueError("the header deadline must be more than 0 and at most 30 seconds")
        if not 0 < self.body_timeout_s <= 300:
            raise ValueError("the body deadline must be more than 0 and at most 300 seconds")
        if not 1 << 10 <= self.max_header_bytes <= 1 << 20:
            raise ValueError("the header cap must be between 1 KiB and 1 MiB")
        if self.max_in_flight < 1:
            raise ValueError("at least one request must be allowed in flight")


def _answer(status: int, message: str) -> bytes:
    """A complete JSON error response that closes the connection (written before any app runs)."""
    body = json.dumps({"error": message}).encode()
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _refusal(status: int, message: str) -> ASGIApp:
    """An ASGI app that answers every request ``status`` with ``{"error": message}`` and closes."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
    if status == 503:
        headers.append((b"retry-after", b"1"))

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


class _LingeringTransport:
    """The connection's transport, whose ``close`` lingers while a request is still arriving.

    Writes made in one turn of the event loop go out as one (uvicorn writes a response's head and
    its body separately): one send per answer instead of two, which was a third of the app's time
    under load on loopback. Whatever is held is written before a close or a half-close.
    """

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport, self._protocol = transport, protocol
        self.lingering = False
        self._held: list[bytes] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.lingering:  # nothing follows the answer once the half-close is sent
            return
        if self._held is None:
            self._held = [data]
            self._protocol.loop.call_soon(self._flush)
        else:
            self._held.append(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held or ()))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def close(self) -> None:
        self._flush()
        if self.lingering or self._transport.is_closing():
            return  # the linger timer (or the peer's own close) ends it
        if not self._protocol.request_open() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # after what is buffered: the peer reads the answer, then EOF
        self._transport.resume_reading()  # read and drop the rest, so no reset is sent
        self._protocol.loop.call_later(LINGER_S, self._transport.close)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request's headers."""

    limits: ClassVar[WebhookLimits] = WebhookLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_open = False
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._start_header_deadline()

    def request_open(self) -> bool:
        """Whether the peer is still sending a request (its headers or its body)."""
        return self._request_open

    def on_message_begin(self) -> None:
        self._request_open = True
        super().on_message_begin()
        self.scope["extensions"] = {**(self.scope.get("extensions") or {}), PEER_EXTENSION: {"client": self.client}}

    def on_message_complete(self) -> None:
        self._request_open = False
        super().on_message_complete()

    def _awaiting_headers(self) -> bool:
        # ``cycle`` is the request whose headers were read last: none yet, or already answered.
        return self.cycle is None or self.cycle.response_complete

    def _start_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_deadline_passed)

    def _stop_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = 0

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self._refuse(408, f"request headers not complete within {self.limits.header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        log.debug("connection from %s refused: %s", self.client, message)
        self.transport.write(_answer(status, message))
        self.transport.close()
        self._stop_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:
            return  # the rest of a refused request: read so the socket closes cleanly, and dropped
        if self._awaiting_headers():  # bytes of a new request: its headers are on the clock
            self._start_header_deadline()
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            self._stop_header_deadline()
        elif not self._awaiting_headers():
            self._stop_header_deadline()
        elif self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request headers are over {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        # A head that arrived whole in one read is measured here, once parsed; it is answered by a
        # small app in place of ours (as uvicorn does for its own 503), then the connection closes.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size <= self.limits.max_header_bytes:
            super().on_headers_complete()
            return
        app = self.app
        self.app = _refusal(431, f"request headers are over {self.limits.max_header_bytes} bytes")
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        super().connection_lost(exc)


def freeze_startup_heap() -> None:
    """Put every object alive now (the imported libraries, the app) out of the garbage collector's
    reach; called once, just before serving. A full collection otherwise walks those ~100,000
    objects with the event loop stopped: 100-280 ms, about once a second under load, and every
    request in flight waits for it (it was the p99). After the freeze it walks only what was
    allocated since: a few ms."""
    gc.collect()
    gc.freeze()


def uvicorn_settings(limits: WebhookLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` / ``uvicorn.run`` arguments that put ``limits`` in force."""
    protocol = type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
    # No websockets (an upgrade would leave the guarded protocol); no access log: MailWizz may send
    # its token as ?token=, and a URL in a log is a leaked secret.
    return {"http": protocol, "ws": "none", "access_log": False, "lifespan": "off"}


def peer_host(scope: Scope) -> str | None:
    """The address of the connection's peer: as the guarded protocol recorded it, else the scope's client."""
    peer = ((scope.get("extensions") or {}).get(PEER_EXTENSION) or {}).get("client") or scope.get("client")
    return peer[0] if peer else None


class InFlightLimit:
    """ASGI middleware: at most ``limit`` requests handled at once; past it 503 with Retry-After."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0
        self.busy = _refusal(503, "the server is handling as many requests as it takes; try again later")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await self.busy(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
