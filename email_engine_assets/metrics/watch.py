"""The alert watcher of ``email-engine metrics serve``: conditions the daemon cannot report itself.

Every ``EMAIL_ENGINE_ALERT_WATCH_INTERVAL_S`` seconds, in its own thread of the metrics process
(which runs apart from the daemon), it reads: the running sensors' last ticks and the daemon's
heartbeats (Dagster's storage), the webhook inbox backlog and the refused accounting files and
webhook rows (``input_problems``) from PostgreSQL. Each condition is an incident
(:mod:`email_engine_assets.feedback.incidents`): posted once when it opens and once when it clears,
through the alert settings of :mod:`email_engine_resources.alerts`. A part that cannot be read is
logged and its kinds are left as they are (neither opened nor cleared) until it can be read again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.feedback import incidents as inc
from email_engine_assets.feedback.incident_apply import post_decision, record
from email_engine_assets.metrics import store
from email_engine_assets.metrics.collector import STATEMENT_TIMEOUT_MS, sensor_last_ticks
from email_engine_assets.tenancy.input_problems_store import unread_inputs
from email_engine_resources.alerts import AlertPoster

log = logging.getLogger("email_engine.alerts")


def database_conditions(engine: sa.Engine, settings: inc.WatchSettings) -> list[inc.Condition]:
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        backlog = store.inbox_backlog(conn)
        refused = unread_inputs(conn, kinds=list(inc.REFUSED_INPUT_KINDS))
    return inc.inbox_backlogs(backlog, settings.inbox_backlog_max) + inc.refused_inputs(refused)


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
               settings: inc.WatchSettings, clock: Callable[[], float] = time.time) -> inc.Decision | None:
    """One evaluation: read the conditions, record the incidents, post what opened and cleared."""
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
    if not kinds:
        return None
    try:
        decision = record(engine, conditions, kinds)
    except sa.exc.SQLAlchemyError as exc:
        log.error("alert watch: recording incidents failed: %s", type(exc).__name__)
        return None
    post_decision(poster.post, decision)
    return decision


def start_watcher(engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None, poster: AlertPoster,
                  settings: inc.WatchSettings, stop: threading.Event) -> threading.Thread:
    """Evaluate now, then every ``settings.interval_s`` seconds until ``stop`` is set."""

    def loop() -> None:
        while True:
            try:
                watch_once(engine, instance, poster, settings)
            except Exception as exc:  # noqa: BLE001 (the watcher must outlive one bad evaluation)
                log.error("alert watch: evaluation failed: %s", type(exc).__name__)
            if stop.wait(settings.interval_s):
                return

    thread = threading.Thread(target=loop, name="alert-watch", daemon=True)
    thread.start()
    return thread
