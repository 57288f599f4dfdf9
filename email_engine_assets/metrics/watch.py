"""The alert watcher of ``email-engine metrics serve``: conditions the daemon cannot report itself.

Every ``EMAIL_ENGINE_ALERT_WATCH_INTERVAL_S`` seconds, in its own thread of the metrics process
(which runs apart from the daemon), it reads: the running sensors' last ticks and the daemon's
heartbeats (Dagster's storage), the webhook inbox backlog and the refused accounting files and
webhook rows (``input_problems``) from PostgreSQL, and the queue of each PowerMTA the tenant files
name a ``management_url`` for (``GET /status``: recipients queued, REFERENCE.md "PowerMTA"; a
PowerMTA several tenants share is read once). Each condition is an incident
(:mod:`email_engine_assets.feedback.incidents`): posted once when it opens and once when it clears,
through the alert settings of :mod:`email_engine_resources.alerts`. A part that cannot be read is
logged and its kinds are left as they are (neither opened nor cleared) until it can be read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.feedback import incidents as inc
from email_engine_assets.feedback import incident_store
from email_engine_assets.feedback.incident_apply import post_decision, record
from email_engine_assets.metrics import store
from email_engine_assets.metrics.collector import STATEMENT_TIMEOUT_MS, sensor_last_ticks
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.input_problems_store import unread_inputs
from email_engine_resources.alerts import AlertPoster
from email_engine_resources.powermta_management import PowerMtaManagement, PowerMtaManagementError

MANAGEMENT_TIMEOUT_S = 5.0  # one PowerMTA that does not answer must not hold the other checks back for long

log = logging.getLogger("email_engine.alerts")


def database_conditions(engine: sa.Engine, settings: inc.WatchSettings) -> list[inc.Condition]:
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        backlog = store.inbox_backlog(conn)
        refused = unread_inputs(conn, kinds=list(inc.REFUSED_INPUT_KINDS))
    return inc.inbox_backlogs(backlog, settings.inbox_backlog_max) + inc.refused_inputs(refused)


@dataclass
class PowerMtaQueues:
    """The last queue reading of each PowerMTA (management URL -> (tenant transports, recipients)) and
    the reads that failed (URL -> count), kept by the watcher for the ``email_engine_powermta_queue_*`` gauges."""

    readings: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[dict[str, tuple[tuple[str, ...], int]], dict[str, int]]:
        with self.lock:
            return dict(self.readings), dict(self.failures)


def read_powermta_queues(root: Path, queues: PowerMtaQueues) -> tuple[list[tuple[str, tuple[str, ...], int]], dict[str, str]]:
    """Each PowerMTA's recipients queued, read once per management URL: (readings, {URL: why not read}).
    A broken tenant file is skipped (its own checks report it); a read that fails is counted and logged."""
    used: dict[str, tuple[object, list[str]]] = {}
    for tenant in load_workspace(root).tenants.values():
        for transport in tenant.transports:
            if transport.kind == "powermta" and transport.management_url:
                used.setdefault(transport.management_url, (transport, []))[1].append(f"{tenant.id}/{transport.name}")
    readings, failed = [], {}
    for url, (config, names) in sorted(used.items()):
        try:
            key = config.management_api_key.read() if config.management_api_key is not None else None
            with PowerMtaManagement(url, key, timeout=MANAGEMENT_TIMEOUT_S, allow_private=config.allow_private) as api:
                readings.append((url, tuple(sorted(names)), api.queued_recipients()))
        except (PowerMtaManagementError, LookupError) as exc:
            failed[url] = str(exc)[:300]
            log.error("alert watch: PowerMTA queue of %s not read: %s", url, failed[url])
    with queues.lock:
        queues.readings = {url: (names, n) for url, names, n in readings}
        queues.failures.update(failed.keys())
    return readings, failed


def powermta_evaluation(engine: sa.Engine, root: Path, queues: PowerMtaQueues,
                        settings: inc.WatchSettings) -> tuple[list[inc.Condition], list[str]]:
    """The PowerMTA queue conditions and the incident keys they cover: the PowerMTAs read now and those
    no tenant names any more; one that could not be read keeps its incident as it is."""
    readings, failed = read_powermta_queues(root, queues)
    read_keys = [f"{inc.POWERMTA_QUEUE}:{url}" for url, _, _ in readings]
    with engine.connect() as conn:
        gone = [i.key for i in incident_store.open_incidents(conn, [inc.POWERMTA_QUEUE])
                if i.key.split(":", 1)[1] not in failed and i.key not in read_keys]
    return inc.powermta_queues(readings, settings.powermta_queue_max), read_keys + gone


def dagster_conditions(instance: dg.DagsterInstance, now: float,
                       settings: inc.WatchSettings) -> tuple[list[inc.Condition], list[str]]:
    """The conditions and the kinds they cover. While the daemon is silent every sensor is: then
    only the daemon is reported, and the sensors' incidents are left as they are."""
    heartbeats = {name: beat.timestamp for name, beat in instance.get_daemon_heartbeats().items()}
    daemon = inc.silent_daemon(heartbeats, now, settings.silent_after_s)
    if daemon:
        return daemon, [inc.DAEMON_SILENT]
    return inc.silent_sensors(sensor_last_ticks(instance), now, settings.silent_after_s), [inc.DAEMON_SILENT, inc.SENSOR_SILENT]


def watch_once(engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None, poster: AlertPoster,
               settings: inc.WatchSettings, clock: Callable[[], float] = time.time, *,
               workspace_root: Path | None = None, queues: PowerMtaQueues | None = None) -> inc.Decision | None:
    """One evaluation: read the conditions, record the incidents, post what opened and cleared.
    ``workspace_root``: the tenant files naming the PowerMTAs whose queue is watched (None: not watched)."""
    conditions: list[inc.Condition] = []
    kinds: list[str] = []
    try:
        conditions += database_conditions(engine, settings)
        kinds += [inc.INBOX_BACKLOG, inc.INPUT_REFUSED]
    except sa.exc.SQLAlchemyError as exc:
        log.error("alert watch: reading the database failed: %s", type(exc).__name__)
    if instance is not None:
        try:
            found, covered = dagster_conditions(instance(), clock(), settings)
            conditions += found
            kinds += covered
        except Exception as exc:  # the storage down or unreadable: its kinds wait for the next evaluation
            log.error("alert watch: reading the Dagster instance failed: %s", type(exc).__name__)
    queue_part: tuple[list[inc.Condition], list[str]] | None = None
    if workspace_root is not None:
        try:
            queue_part = powermta_evaluation(engine, workspace_root, queues or PowerMtaQueues(), settings)
        except Exception as exc:  # noqa: BLE001 (the workspace unreadable, the database down): waits for the next evaluation
            log.error("alert watch: reading the PowerMTA queues failed: %s: %s", type(exc).__name__, str(exc)[:200])
    if not kinds and queue_part is None:
        return None
    try:
        decision = record(engine, conditions, kinds) if kinds else inc.Decision([], [], [])
        if queue_part is not None and queue_part[1]:
            # scoped to the PowerMTAs read: one that could not be read neither opens nor clears
            more = record(engine, queue_part[0], [inc.POWERMTA_QUEUE], queue_part[1])
            decision = inc.Decision(decision.opened + more.opened, decision.cleared + more.cleared, decision.held + more.held)
    except sa.exc.SQLAlchemyError as exc:
        log.error("alert watch: recording incidents failed: %s", type(exc).__name__)
        return None
    post_decision(poster.post, decision)
    return decision


def start_watcher(engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None, poster: AlertPoster,
                  settings: inc.WatchSettings, stop: threading.Event, *, workspace_root: Path | None = None,
                  queues: PowerMtaQueues | None = None) -> threading.Thread:
    """Evaluate now, then every ``settings.interval_s`` seconds until ``stop`` is set."""

    def loop() -> None:
        while True:
            try:
                watch_once(engine, instance, poster, settings, workspace_root=workspace_root, queues=queues)
            except Exception as exc:  # noqa: BLE001 (the watcher must outlive one bad evaluation)
                log.error("alert watch: evaluation failed: %s", type(exc).__name__)
            if stop.wait(settings.interval_s):
                return

    thread = threading.Thread(target=loop, name="alert-watch", daemon=True)
    thread.start()
    return thread
