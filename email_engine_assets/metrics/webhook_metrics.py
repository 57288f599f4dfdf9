"""The webhook app's own figures and its ``/metrics`` route (the shell around ``families``,
``access`` and ``store``): requests by route, method and status, latency per route, tracking hits
answered but not stored, and the inbox backlog read at scrape time. Each app has a registry of its own."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from email_engine_assets.metrics import families as f
from email_engine_assets.metrics import store
from email_engine_assets.metrics.access import TOKEN_ENV, Denied, check_access
from email_engine_assets.metrics.exposition import to_prometheus

log = logging.getLogger("email_engine.webhooks")


class InboxBacklog(Collector):
    """The webhook inbox rows not applied yet, per tenant, read when scraped."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterator:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.engine.connect() as conn:
                backlog = store.inbox_backlog(conn)
        except sa.exc.SQLAlchemyError as exc:  # the request figures are still answered; the backlog has no samples
            log.error("metrics: reading the webhook inbox failed: %s", type(exc).__name__)
            backlog = []
        for family in f.backlog_families(backlog):
            yield to_prometheus(family)


class WebhookMetrics:
    """The registry of one app, and the ASGI middleware that counts and times its requests."""

    def __init__(self, engine: sa.Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(f.WEBHOOK_REQUESTS, f.HELP[f.WEBHOOK_REQUESTS], ("route", "method", "status"),
                                registry=self.registry)
        self.latency = Histogram(f.WEBHOOK_LATENCY, f.HELP[f.WEBHOOK_LATENCY], ("route",),
                                 buckets=f.WEBHOOK_LATENCY_BUCKETS, registry=self.registry)
        self.lost_hits = Counter(f.TRACKING_HITS_LOST, f.HELP[f.TRACKING_HITS_LOST], ("kind",), registry=self.registry)
        self.registry.register(InboxBacklog(engine))
        self.routes: list = []  # the app's routes, set once it is built

    def route_of(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f.route_label(route.path)
        return f.route_label(None)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = [500]  # an exception that escapes is answered 500 by the server error middleware

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = self.route_of(scope)
                self.requests.labels(route, scope.get("method", ""), str(status[0])).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return measured

    async def endpoint(self, request: Request) -> Response:
        client = request.client.host if request.client else None
        try:
            check_access(client, request.headers, os.environ.get(TOKEN_ENV))
        except Denied as exc:
            headers = {"Connection": "close"}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
