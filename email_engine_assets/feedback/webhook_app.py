"""The webhook app (Starlette): MailWizz hits, contacts pushes, one-click unsubscribe, health.

Routes (status codes are the contract senders rely on; every refusal stores nothing):

- ``POST /hooks/mailwizz/<tenant>``: token ``?token=`` or ``X-Webhook-Token``;
- ``POST /hooks/contacts/<tenant>/<source>``: ``X-Signature: t=<unix>,v1=<hex>`` (webhook_auth);
- ``POST /u/<token>``: RFC 8058 one-click unsubscribe; ``GET /u/<token>``: a page with a button;
- ``GET`` / ``HEAD /o/<token>``: the open pixel (a 43-byte transparent GIF), ``GET`` / ``HEAD
  /c/<token>``: a click, answered 302 to the address the signed token carries (http / https only),
  both ``Cache-Control: no-store``; the hit is classed (:mod:`tracking_rules`) and committed to
  the inbox as kind ``tracking`` (:mod:`tracking_hits`) before the answer. When storing fails or
  takes over :data:`TRACKING_STORE_TIMEOUT_S`, the person still gets the pixel or reaches the link:
  the answer goes out anyway, and a hit that is not stored is logged and counted
  (``email_engine_tracking_hits_lost_total``). A forged, altered, truncated or wrong-kind token is
  400 and stores nothing. The client address the rules read is the connection's peer, or
  X-Forwarded-For through the proxies of ``EMAIL_ENGINE_TRUSTED_PROXIES`` (uvicorn's
  ``--proxy-headers`` is not needed for it); it and the user agent are never stored;
- ``GET /health``;
- ``GET /metrics``: Prometheus figures of this process (requests by route and status, latency,
  inbox backlog), answered to loopback or with ``EMAIL_ENGINE_METRICS_TOKEN``
  (:mod:`email_engine_assets.metrics.access`: 403 / 401 otherwise).

200 for every accepted request (also a byte-identical retry, which stores nothing new; MailWizz
counts only 200 as success), 404 unknown tenant or source (or one whose token / secret is unset in
the file or under 32 characters), 413 body over the cap (Content-Length checked before reading, a
chunked body cut off while streaming), 408 body not received in time, 401 bad token, signature or
timestamp (the token, and the signature header with its timestamp, checked before the body is
read), 422 malformed body, 400 bad unsubscribe or tracking token, 503 when the server cannot take the request
now (its database, a secret missing from its environment, a broken tenant file, too many requests
in flight): the sender retries. Errors are ``{"error": "..."}``, never echo a token, signature or
secret, and close the connection. Header deadline and cap: :mod:`webhook_server`.

The body is committed to ``webhook_inbox`` before the 200 (``synchronous_commit`` as the server
is set; concurrent bodies share a commit, :class:`GroupCommit`); the ``delivery_events`` asset
applies it later. The inbox insert runs on asyncio psycopg connections of the group commit, on the
event loop; other database calls (health, unsubscribe, metrics) run in Starlette's thread pool on a
small connection pool, so the event loop keeps serving while PostgreSQL answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from email_engine_assets.content.tracking_tokens import verify_tracking_token
from email_engine_assets.content.unsubscribe import BadToken, verify_unsubscribe_token
from email_engine_assets.feedback.inbox_store import store_bodies_async
from email_engine_assets.feedback.tracking_hits import CONTENT_TYPE as HIT_CONTENT_TYPE
from email_engine_assets.feedback.tracking_hits import PIXEL_GIF, hit_body, redirect_location
from email_engine_assets.feedback.tracking_rules import TRUSTED_PROXIES_ENV, classify, client_address, trusted_networks
from email_engine_assets.feedback.unsubscribe_store import unsubscribe
from email_engine_assets.feedback.webhook_auth import (
    MIN_SECRET_CHARS,
    SIGNATURE_HEADER,
    TOKEN_HEADER,
    Unauthorized,
    check_signature_header,
    check_token,
    verify_signature,
)
from email_engine_assets.feedback.webhook_payloads import (
    MalformedPayload,
    is_one_click,
    parse_contacts,
    parse_mailwizz,
)
from email_engine_assets.tenancy.config import (
    ConfigError,
    TenantConfig,
    read_tenant_file,
)
from email_engine_assets.feedback.webhook_server import InFlightLimit, WebhookLimits, peer_host
from email_engine_assets.metrics.webhook_metrics import WebhookMetrics
from email_engine_assets.tenancy.strict import is_slug
from email_engine_assets.tenancy.tracking_settings import MachineRules

MAX_BODY_BYTES = 1 << 20
UNSUBSCRIBE_MAX_BODY_BYTES = 16 << 10
# A tracking hit waits this long for its commit; then the person gets the answer anyway (the write
# goes on, and counts as lost only if it fails).
TRACKING_STORE_TIMEOUT_S = 3.0
_PIXEL_HEADERS = {"Cache-Control": "no-store"}
_CLICK_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
log = logging.getLogger("email_engine.webhooks")


@functools.lru_cache(maxsize=8)
def trusted_proxies(text: str) -> tuple:
    """The networks of ``EMAIL_ENGINE_TRUSTED_PROXIES`` (read per request, parsed once per value); a
    value that does not parse is logged and trusts nobody (``webhooks serve`` refuses it at start)."""
    try:
        return trusted_networks(text)
    except ValueError as exc:
        log.error("%s; X-Forwarded-For is ignored", exc)
        return ()

# (tenant, kind, source, body, content type) -> stored as new? The durable default is
# :class:`GroupCommit`; the benchmark swaps in one that stores nothing to measure the cost of durability.
StoreBody = Callable[[str, str, "str | None", bytes, "str | None"], Awaitable[bool]]


class Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TenantFiles:
    """Tenant files of the workspace, each parsed once and parsed again when it changes on disk.

    A file is known by (inode, size, mtime) of ``tenants/<id>.yaml`` (or ``.yml``); a request costs a
    ``stat``, an edited file is read on the next request. Thread-safe (called from the thread pool).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._dir = os.path.join(self.root, "tenants")  # a str: pathlib costs more than the stat itself
        self._cache: dict[str, tuple[tuple, TenantConfig | ConfigError]] = {}
        self._lock = threading.Lock()

    def _path(self, tenant_id: str) -> tuple[str, os.stat_result] | None:
        for ext in (".yaml", ".yml"):
            path = f"{self._dir}/{tenant_id}{ext}"
            try:
                return path, os.stat(path)  # the operator's files: a link is read, as load_workspace does
            except (FileNotFoundError, NotADirectoryError):
                continue
        return None

    def cached(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's config when its file is unchanged since it was parsed; None when unsure."""
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is None or not isinstance(cached[1], TenantConfig):
            return None
        found = self._path(tenant_id)
        if found is None or (found[1].st_ino, found[1].st_size, found[1].st_mtime_ns) != cached[0]:
            return None
        return cached[1]

    def get(self, tenant_id: str) -> TenantConfig | None:
        """The tenant's config; None when there is no such tenant; :class:`ConfigError` when its file is broken."""
        if not is_slug(tenant_id):
            return None
        found = self._path(tenant_id)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        path, info = found
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is None or cached[0] != signature:
            try:
                loaded: TenantConfig | ConfigError = read_tenant_file(Path(path))[0]
            except ConfigError as exc:
                loaded = exc
            cached = (signature, loaded)
            with self._lock:
                self._cache[tenant_id] = cached
        if isinstance(cached[1], ConfigError):
            raise cached[1]
        return cached[1]


def app_engine(url: str, pool_size: int = 8) -> sa.Engine:
    """A small pool of its own for the app, without a ping per checkout (a round trip per request):
    a connection the server dropped fails one request with 503, and SQLAlchemy then renews the pool."""
    from email_engine_resources.postgres import sqlalchemy_url

    return sa.create_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=2, pool_recycle=3600)


CONNECT_TIMEOUT_S = 10


def driver_connect_args(engine: sa.Engine) -> dict:
    """psycopg's own connect arguments for the database of ``engine`` (host, port, database, user,
    password and URL options), with a connect timeout: a server that accepts and never answers
    fails the batch instead of holding it."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters: the inbox insert needs psycopg's defaults only
    return {"connect_timeout": CONNECT_TIMEOUT_S, **params}


class GroupCommit:
    """Bodies of concurrent requests committed together (group commit).

    A request's body joins a queue; up to ``writers`` transactions run at once, each inserting up to
    ``max_batch`` queued bodies in one statement. A request is answered only after the transaction
    holding its body committed (or failed: then every request of that batch gets the error, a 503,
    and nothing of the batch is stored; when the commit itself fails its outcome is unknown, and
    the sender's retry is stored once by the dedupe key). Under load, bodies that arrive while a
    transaction commits wait for the next one instead of each paying a commit of its own.

    The writers use asyncio psycopg connections of their own, on the event loop: a thread would
    wait for the interpreter lock at each round trip while the loop is busy (up to the 5 ms switch
    interval each), which capped ingest near 1,000 bodies a second. A connection that failed is
    closed; the next batch opens a new one.
    """

    def __init__(self, engine: sa.Engine, writers: int = 2, max_batch: int = 200) -> None:
        self.connect_args = driver_connect_args(engine)
        self.writers, self.max_batch = writers, max_batch
        self._queue: list[tuple[tuple, asyncio.Future]] = []
        self._idle: list[psycopg.AsyncConnection] = []
        self._tasks: set[asyncio.Task] = set()  # strong references to the running drains
        self._active = 0  # counted by the drains themselves: a drain that found the queue empty is gone

    async def __call__(self, tenant_id: str, kind: str, source_id: str | None, body: bytes, content_type: str | None) -> bool:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(((tenant_id, kind, source_id, body, content_type), future))
        if self._active < self.writers:
            self._active += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)  # a client that hangs up does not cancel its batch

    async def _write(self, items: list[tuple]) -> list[bool]:
        """One statement in autocommit: it is its own transaction, committed by the server (WAL
        flushed as ``synchronous_commit`` says) before its ReadyForQuery, which psycopg waits for
        before it returns; a failed commit is an error here. One round trip instead of three
        (BEGIN, INSERT, COMMIT)."""
        conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(autocommit=True, **self.connect_args)
        try:
            results = await store_bodies_async(conn, items)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._idle.append(conn)
        return results

    async def _drain(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # one turn of the loop: bodies already read join this batch
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if not batch:  # another writer took them during that turn
                    break
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:  # the requests answer 503 (or 500); the senders retry
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), new in zip(batch, results):
                        if not future.done():
                            future.set_result(new)
        finally:
            self._active -= 1  # no await since the queue was seen empty: nothing can be left behind


def check_declared_length(request: Request, cap: int) -> None:
    """A Content-Length over ``cap`` is refused (413) before a byte of the body is read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise Refused(400, "Content-Length is not a number")
        if int(declared) > cap:
            raise Refused(413, f"body is {declared} bytes; at most {cap} bytes are taken")


async def read_body(request: Request, cap: int, timeout_s: float) -> bytes:
    """The body, at most ``cap`` bytes, all of it within ``timeout_s`` (else 408): a larger
    Content-Length is refused before anything is read, and a body without one (chunked) is cut
    off as soon as it passes the cap."""
    check_declared_length(request, cap)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise Refused(413, f"body is over {cap} bytes; at most {cap} bytes are taken")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, f"body not received within {timeout_s:g} s") from None
    return b"".join(chunks)


def _secret(read: Callable[[], str], what: str, where: str, route_off: str) -> str:
    """The secret a route checks against. Unset: 503 (the sender retries). Shorter than
    :data:`MIN_SECRET_CHARS`: the route is off, answered ``route_off`` (404) as if unconfigured,
    and the reason is logged; the tenant's other routes are not affected."""
    try:
        value = read()
    except LookupError as exc:
        log.error("%s (%s): %s", what, where, exc)  # names the environment variable, never a value
        raise Refused(503, f"{what} is not available on this server; try again later") from None
    if len(value) < MIN_SECRET_CHARS:
        log.error("%s (%s) is shorter than %d characters: this route answers 404 until it is longer",
                  what, where, MIN_SECRET_CHARS)
        raise Refused(404, route_off)
    return value


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;line-height:1.5}}
button{{font-size:1.1em;padding:.5em 1.5em;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
}


_CLOSE = {"Connection": "close"}


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), headers=_PAGE_HEADERS)


def build_app(
    workspace_root: Path,
    engine: sa.Engine,
    *,
    signing_key: Callable[[], bytes] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    store: StoreBody | None = None,
    clock: Callable[[], float] = time.time,
    limits: WebhookLimits = WebhookLimits(),
    tracking_store_timeout_s: float = TRACKING_STORE_TIMEOUT_S,
) -> Starlette:
    """The ASGI app for the workspace at ``workspace_root`` and the application database ``engine``.

    ``limits`` gives the body deadline and the number of requests handled at once (the server's
    part of them is :func:`email_engine_assets.feedback.webhook_server.uvicorn_settings`).

    ``tracking_store_timeout_s``: how long a tracking hit waits for its commit before it is answered anyway.

    ``signing_key`` gives the project's key for unsubscribe and tracking tokens (default
    :func:`email_engine_resources.signing_key.signing_key`, read once, on first use).
    """
    tenants = TenantFiles(workspace_root)
    store = store or GroupCommit(engine)
    metrics = WebhookMetrics(engine)
    key_cache: list[bytes] = []

    def key() -> bytes:
        if not key_cache:
            if signing_key is None:
                from email_engine_resources.signing_key import (
                    signing_key as project_key,
                )

                key_cache.append(project_key())
            else:
                key_cache.append(signing_key())
        return key_cache[0]

    async def tenant_of(request: Request) -> TenantConfig:
        tenant_id = request.path_params["tenant"]
        try:
            # A stat on the event loop is cheaper than a thread hop; a changed file is parsed in a thread.
            tenant = tenants.cached(tenant_id) or await run_in_threadpool(tenants.get, tenant_id)
        except ConfigError as exc:
            log.error("tenant file of %s is invalid: %s", tenant_id, exc)
            raise Refused(503, f"the configuration of tenant {tenant_id} is invalid on this server; try again later") from None
        if tenant is None:
            raise Refused(404, "unknown tenant")
        return tenant

    async def accept(tenant_id: str, kind: str, source_id: str | None, body: bytes, request: Request) -> JSONResponse:
        new = await store(tenant_id, kind, source_id, body, request.headers.get("content-type"))
        return JSONResponse({"status": "stored" if new else "duplicate"})

    async def mailwizz_hook(request: Request) -> Response:
        tenant = await tenant_of(request)
        off = "tenant takes no MailWizz webhooks (no webhooks.mailwizz_token)"
        if tenant.webhooks.mailwizz_token is None:
            raise Refused(404, off)
        expected = _secret(tenant.webhooks.mailwizz_token.read, "the MailWizz webhook token",
                           f"tenant {tenant.id}, webhooks.mailwizz_token", off)
        check_declared_length(request, max_body_bytes)
        try:
            check_token(request.query_params.get("token") or request.headers.get(TOKEN_HEADER), expected)
        except Unauthorized as exc:
            raise Refused(401, str(exc)) from None
        body = await read_body(request, max_body_bytes, limits.body_timeout_s)
        try:
            parse_mailwizz(body, tenant.id)
        except MalformedPayload as exc:
            raise Refused(422, str(exc)) from None
        return await accept(tenant.id, "mailwizz", None, body, request)

    async def contacts_hook(request: Request) -> Response:
        tenant = await tenant_of(request)
        source = tenant.source(request.path_params["source"])
        if source is None:
            raise Refused(404, "unknown source")
        off = "source takes no webhook pushes (no webhook_secret)"
        if source.webhook_secret is None:
            raise Refused(404, off)
        secret = _secret(source.webhook_secret.read, "the source's webhook secret",
                         f"tenant {tenant.id}, source {source.id}, webhook_secret", off)
        check_declared_length(request, max_body_bytes)
        try:
            # The header and its timestamp before a byte of the body: an unsigned or stale push costs no read.
            check_signature_header(request.headers.get(SIGNATURE_HEADER), clock())
            body = await read_body(request, max_body_bytes, limits.body_timeout_s)
            verify_signature(request.headers.get(SIGNATURE_HEADER), secret, body, clock())
        except Unauthorized as exc:
            raise Refused(401, str(exc)) from None
        try:
            # A large body is parsed in a thread: a megabyte of JSON would hold up every other request.
            await run_in_threadpool(parse_contacts, body) if len(body) > 64 << 10 else parse_contacts(body)
        except MalformedPayload as exc:
            raise Refused(422, str(exc)) from None
        return await accept(tenant.id, "contacts", source.id, body, request)

    def token_parts(request: Request) -> tuple[str, str, int]:
        try:
            return verify_unsubscribe_token(key(), request.path_params["token"])
        except BadToken as exc:
            raise Refused(400, str(exc)) from None

    async def machine_rules(tenant_id: str) -> MachineRules:
        """The tenant's rules; the defaults when its file is gone or broken (the hit is still answered and kept)."""
        try:
            tenant = tenants.cached(tenant_id) or await run_in_threadpool(tenants.get, tenant_id)
        except ConfigError as exc:
            log.error("tenant file of %s is invalid (tracking hits are classed by the default rules): %s", tenant_id, exc)
            tenant = None
        return tenant.tracking.machines if tenant is not None else MachineRules()

    def hit_lost(kind: str, tenant_id: str, job: asyncio.Future) -> None:
        error = None if job.cancelled() else job.exception()
        if job.cancelled() or error is not None:
            log.error("a tracking %s hit of tenant %s was answered but not stored: %s", kind, tenant_id,
                      type(error).__name__ if error is not None else "cancelled")
            metrics.lost_hits.labels(kind).inc()

    async def track(request: Request, kind: str) -> str | None:
        """Verify, class and store one hit; the click's ``Location`` (None for an open)."""
        if not key_cache:
            await run_in_threadpool(key)
        try:
            hit = verify_tracking_token(key(), request.path_params["token"], kind)
        except BadToken as exc:
            raise Refused(400, str(exc)) from None
        location = None
        if kind == "click":
            location = redirect_location(hit.url)
            if location is None:
                raise Refused(400, "the tracked link is not an http or https address")
        rules = await machine_rules(hit.tenant_id)
        client = client_address(peer_host(request.scope),
                                request.headers.getlist("x-forwarded-for"),
                                trusted_proxies(os.environ.get(TRUSTED_PROXIES_ENV, "")))
        verdict = classify(kind, request.method, request.headers, client, rules)
        body = hit_body(hit.row_token, kind, hit.link_index, hit.url, int(clock() * 1000), request.method, verdict)
        job = asyncio.ensure_future(store(hit.tenant_id, "tracking", None, body, HIT_CONTENT_TYPE))
        job.add_done_callback(functools.partial(hit_lost, kind, hit.tenant_id))
        try:
            await asyncio.wait_for(asyncio.shield(job), tracking_store_timeout_s)
        except Exception:  # noqa: BLE001 - counted by hit_lost (or still being written): the person is answered
            pass
        return location

    async def open_pixel(request: Request) -> Response:
        await track(request, "open")
        return Response(PIXEL_GIF, media_type="image/gif", headers=_PIXEL_HEADERS)

    async def click(request: Request) -> Response:
        location = await track(request, "click")
        return Response(status_code=302, headers={"Location": location, **_CLICK_HEADERS})

    async def unsubscribe_page(request: Request) -> Response:
        await run_in_threadpool(token_parts, request)
        return _page(
            "Unsubscribe",
            "<p>Press the button to stop receiving these emails.</p>"
            '<form method="post" action=""><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def unsubscribe_post(request: Request) -> Response:
        tenant_id, campaign, contact_id = await run_in_threadpool(token_parts, request)
        body = await read_body(request, UNSUBSCRIBE_MAX_BODY_BYTES, limits.body_timeout_s)
        if not is_one_click(request.headers.get("content-type"), body):
            raise Refused(422, "body must be List-Unsubscribe=One-Click (RFC 8058)")

        def write():
            with engine.begin() as conn:
                return unsubscribe(conn, tenant_id, campaign, contact_id, datetime.now(timezone.utc))

        done = await run_in_threadpool(write)
        if done.email is None:
            return _page("Unsubscribed", "<p>This address is not on the list any more.</p>")
        return _page("Unsubscribed", "<p>You will not receive these emails any more.</p>")

    async def health(request: Request) -> Response:
        def ping() -> None:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        await run_in_threadpool(ping)
        return JSONResponse({"status": "ok"})

    # A refusal closes the connection: its body may be unread, and a peer trickling it holds nothing.
    async def refused(request: Request, exc: Refused) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=_CLOSE)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers={**(getattr(exc, "headers", None) or {}), **_CLOSE})

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("webhook request failed")
        return JSONResponse({"error": "internal error; nothing was stored"}, status_code=500, headers=_CLOSE)

    async def database_down(request: Request, exc: sa.exc.SQLAlchemyError | psycopg.Error) -> Response:
        log.error("database error: %s", type(exc).__name__)
        return JSONResponse({"error": "the database is not available; try again later"}, status_code=503, headers=_CLOSE)

    routes = [
        Route("/hooks/mailwizz/{tenant}", mailwizz_hook, methods=["POST"]),
        Route("/hooks/contacts/{tenant}/{source}", contacts_hook, methods=["POST"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe_post, methods=["POST"]),
        Route("/o/{token}", open_pixel, methods=["GET", "HEAD"]),
        Route("/c/{token}", click, methods=["GET", "HEAD"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    metrics.routes = routes
    app = Starlette(
        routes=routes,
        # Measured outside the in-flight limit: its 503s are counted too.
        middleware=[Middleware(metrics.middleware), Middleware(InFlightLimit, limit=limits.max_in_flight)],
        exception_handlers={Refused: refused, HTTPException: http_error, sa.exc.SQLAlchemyError: database_down,
                            psycopg.Error: database_down, Exception: internal_error},
    )
    # No redirect from /path/ to /path: Starlette builds it from the Host header, and the 307
    # echoed a ?token= to whatever host the peer named. A trailing slash is simply no such route.
    app.router.redirect_slashes = False
    return app
