"""The collector of ``email-engine metrics serve``: reads the engine's figures when scraped.

Database part: one short transaction (maintained counts folded and read, small tables counted;
``metrics.store``). Dagster part: the running sensors' last ticks and the failed runs, from the
instance's storage. A part that fails is logged, its families are exported without samples and
``email_engine_metrics_source_up{source=...}`` is 0: the scrape itself still answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import dagster as dg
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from email_engine_assets.metrics import families as f
from email_engine_assets.metrics import store
from email_engine_assets.metrics.exposition import to_prometheus

log = logging.getLogger("email_engine.metrics")

STATEMENT_TIMEOUT_MS = 5000
_DATABASE = (f.LEDGER_ROWS, f.DELIVERY_EVENTS, f.SUPPRESSIONS, f.IMPORT_FILES, f.INBOX_PENDING, f.INBOX_OLDEST_AGE)
_DAGSTER = (f.SENSOR_TICK_AGE, f.RUNS_FAILED)
_LABELS = {f.LEDGER_ROWS: ("tenant", "transport", "state"), f.DELIVERY_EVENTS: ("tenant", "type", "bounce_class", "classified"),
           f.SUPPRESSIONS: ("tenant", "reason"), f.IMPORT_FILES: ("tenant", "status"), f.INBOX_PENDING: ("tenant",),
           f.INBOX_OLDEST_AGE: ("tenant",), f.SENSOR_TICK_AGE: ("sensor",)}


def read_database(engine: sa.Engine) -> list[f.Family]:
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        store.compact_counts(conn)
        return f.database_families(store.ledger_counts(conn), store.event_counts(conn), store.suppression_counts(conn),
                                   store.import_file_counts(conn), store.inbox_backlog(conn))


def sensor_last_ticks(instance: dg.DagsterInstance) -> dict[str, float | None]:
    """The running sensors of the instance and the time of each one's last tick (None: never ticked)."""
    from dagster._core.scheduler.instigation import InstigatorType

    last_ticks: dict[str, float | None] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if not state.is_running:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        name = state.instigator_name
        at = ticks[0].timestamp if ticks else None
        last_ticks[name] = max(filter(None, (at, last_ticks.get(name))), default=None)
    return last_ticks


def read_dagster(instance: dg.DagsterInstance, now: float) -> list[f.Family]:
    last_ticks = sensor_last_ticks(instance)
    failed = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    return f.dagster_families(last_ticks, failed, now)


class EngineCollector(Collector):
    """Queries at scrape time. ``instance`` gives the Dagster instance (None: no Dagster part)."""

    def __init__(self, engine: sa.Engine, instance: Callable[[], dg.DagsterInstance] | None = None,
                 clock: Callable[[], float] = time.time, powermta: Callable[[], tuple[dict, dict]] | None = None) -> None:
        """``powermta``: the alert watcher's last PowerMTA queue readings and failures (never read at scrape time)."""
        self.engine, self.instance, self.clock, self.powermta = engine, instance, clock, powermta

    def describe(self) -> Iterator:
        return iter(())  # registering must not query

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        up: dict[str, bool] = {}
        out: list[f.Family] = []
        try:
            out += read_database(self.engine)
            up["database"] = True
        except sa.exc.SQLAlchemyError as exc:
            log.error("metrics: reading the database failed: %s", type(exc).__name__)
            out += f.empty(_DATABASE, _LABELS)
            up["database"] = False
        if self.instance is not None:
            try:
                out += read_dagster(self.instance(), self.clock())
                up["dagster"] = True
            except Exception as exc:  # the storage down or unreadable: reported, the scrape still answers
                log.error("metrics: reading the Dagster instance failed: %s", type(exc).__name__)
                out += f.empty(_DAGSTER, _LABELS)
                up["dagster"] = False
        else:
            out += f.empty(_DAGSTER, _LABELS)
        out += f.powermta_families(*(self.powermta() if self.powermta is not None else ({}, {})))
        out += f.status_families(up, time.perf_counter() - started)
        for family in out:
            yield to_prometheus(family)
