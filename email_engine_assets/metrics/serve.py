"""``email-engine metrics serve``: the engine's figures over HTTP for Prometheus (``GET /metrics``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import dagster as dg
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server

from email_engine_assets.metrics.collector import EngineCollector

log = logging.getLogger("email_engine.metrics")


def cached_instance() -> Callable[[], dg.DagsterInstance]:
    """The Dagster instance of ``DAGSTER_HOME``, made on the first scrape and kept."""
    made: list[dg.DagsterInstance] = []

    def get() -> dg.DagsterInstance:
        if not made:
            made.append(dg.DagsterInstance.get())
        return made[0]

    return get


def registry_for(engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, instance))
    return registry


def serve(engine: sa.Engine, host: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve until ``stop`` is set (or for ever)."""
    server, thread = start_http_server(port, addr=host, registry=registry_for(engine, cached_instance()))
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    print(f"serving metrics on http://{host}:{port}/metrics", flush=True)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
