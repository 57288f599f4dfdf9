"""``email-engine metrics serve``: the engine's figures over HTTP for Prometheus (``GET /metrics``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import dagster as dg
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, start_http_server

from email_engine_assets.feedback.incidents import WatchSettings
from email_engine_assets.metrics.collector import EngineCollector
from email_engine_assets.metrics.watch import PowerMtaQueues, start_watcher
from email_engine_resources.workspace import WorkspaceResource
from email_engine_resources.alerts import AlertPoster

log = logging.getLogger("email_engine.metrics")


def cached_instance() -> Callable[[], dg.DagsterInstance]:
    """The Dagster instance of ``DAGSTER_HOME``, made on first use (a scrape or the alert watcher) and kept."""
    made: list[dg.DagsterInstance] = []
    lock = threading.Lock()

    def get() -> dg.DagsterInstance:
        with lock:
            if not made:
                made.append(dg.DagsterInstance.get())
            return made[0]

    return get


def registry_for(engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None,
                 queues: PowerMtaQueues | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, instance, powermta=queues.snapshot if queues is not None else None))
    return registry


def serve(engine: sa.Engine, host: str, port: int, stop: threading.Event | None = None,
          watch: WatchSettings | None = None, poster: AlertPoster | None = None) -> None:
    """Serve until ``stop`` is set (or for ever); with ``watch`` and a configured ``poster``, the
    alert watcher runs alongside (``metrics.watch``)."""
    stop = stop or threading.Event()
    instance = cached_instance()
    queues = PowerMtaQueues()  # filled by the watcher, exported by the collector
    server, thread = start_http_server(port, addr=host, registry=registry_for(engine, instance, queues))
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    print(f"serving metrics on http://{host}:{port}/metrics", flush=True)
    watcher = None
    if watch is not None and poster is not None and poster.settings is not None:
        watcher = start_watcher(engine, instance, poster, watch, stop, workspace_root=_workspace_root(), queues=queues)
        print(f"watching for alerts every {watch.interval_s:g} s ({poster.settings.kind})", flush=True)
    try:
        stop.wait()
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if watcher is not None:
            watcher.join(timeout=10)


def _workspace_root():
    """The workspace whose tenant files name the PowerMTAs to watch; None (not watched) when unset or missing."""
    try:
        root = WorkspaceResource().root()
    except Exception as exc:  # noqa: BLE001 -- metrics and the other alerts do not need a workspace
        log.warning("metrics serve: no workspace (%s): PowerMTA queues not watched", exc)
        return None
    return root if root.is_dir() else None
