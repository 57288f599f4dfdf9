"""The Dagster side of per-tenant schedules: one schedule per kind, each tenant on its own cron.

A kind's schedule ticks every :data:`TICK_MINUTES` minutes (UTC). Each tick reads the cursor of
the schedule (``tenant_schedule_ticks``), evaluates every tenant's cron of the kind, in the tenant's
time zone, over ``(previous evaluated tick, this tick]`` (:mod:`.cron`), and requests one run per
due tenant, keyed by the tenant and the cron time it is due for: the same due time is never run
twice, and a window that spans a daemon outage runs each tenant once.

Dagster 1.13 schedule ticks carry no metadata (a schedule returns run requests or a skip reason,
nothing else), so what a tick decided is shown where the UI shows ticks and runs: the tick's logs
(the window, the tenants started with their due times, the next time of every tenant, the tenants
whose file is invalid), the skip reason of a tick that starts nothing (the same facts, shortened),
and the tags of each run (``email_engine/due_at``, ``email_engine/next_at``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.tenancy.config import TenantConfig, load_tenants
from email_engine_assets.tenancy.cron import (
    due_between,
    next_times,
    previous_tick,
    tick_window,
)
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_assets.tenancy.schedule_store import last_tick, save_tick

# Every 5 minutes: a tenant's cron time runs at most 5 minutes late, and the tenant files are read
# 12 times an hour per kind rather than 60 (1,000 tenant files are parsed in each tick). A cron
# firing more often than that runs at most once per tick.
TICK_MINUTES = 5
TICK_CRON = f"*/{TICK_MINUTES} * * * *"
DUE_AT_TAG = "email_engine/due_at"
NEXT_AT_TAG = "email_engine/next_at"
SKIP_MESSAGE_MAX = 2000


def stamp(instant: datetime) -> str:
    """An instant as the UI and the run keys show it: UTC to the minute, ``2026-12-08T03:00Z``."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class DueTick:
    """What one tick of a kind decided."""

    kind: str
    window_start: datetime
    tick: datetime
    due: dict[str, datetime]  # tenant -> the cron time it runs for
    next_at: dict[str, datetime]  # tenant -> its next cron time after this tick
    refused: dict[str, str]  # tenant -> why its tenant file was not used

    def run_key(self, tenant_id: str, *parts: str) -> str:
        return ":".join((self.kind, tenant_id, *parts, stamp(self.due[tenant_id])))

    def tags(self, tenant_id: str) -> dict[str, str]:
        return {"tenant": tenant_id, DUE_AT_TAG: stamp(self.due[tenant_id]), NEXT_AT_TAG: stamp(self.next_at[tenant_id])}

    def lines(self) -> list[str]:
        """The tick's report, one fact a line: window, tenants started, next times, refused files."""
        started = ", ".join(f"{t} (due {stamp(at)})" for t, at in self.due.items()) or "none"
        out = [f"{self.kind}: window ({stamp(self.window_start)}, {stamp(self.tick)}]; tenants started: {started}"]
        by_time: dict[datetime, list[str]] = {}
        for tenant_id, at in self.next_at.items():
            by_time.setdefault(at, []).append(tenant_id)
        out += [f"{self.kind}: next at {stamp(at)}: {', '.join(tenants)}" for at, tenants in sorted(by_time.items())]
        out += [f"{self.kind}: tenant {t} not scheduled, its tenant file is invalid: {why}" for t, why in self.refused.items()]
        return out

    def skip_reason(self, note: str | None = None) -> dg.SkipReason:
        text = "; ".join([*([note] if note else []), *self.lines()])
        if len(text) > SKIP_MESSAGE_MAX:
            text = text[:SKIP_MESSAGE_MAX] + " ... (the whole list is in the tick's logs)"
        return dg.SkipReason(text)


def evaluate_kind(context: dg.ScheduleEvaluationContext, engine: sa.Engine, root: Path, kind: str,
                  schedule_name: str, include: Callable[[TenantConfig], bool] = lambda _tenant: True) -> DueTick:
    """Which registered tenants of ``kind`` (those ``include`` keeps) are due at this tick; the tick's
    report is logged. The cursor moves only once the tick is fully evaluated."""
    tick = context.scheduled_execution_time
    tick = tick.replace(tzinfo=timezone.utc) if tick.tzinfo is None else tick.astimezone(timezone.utc)
    keys = tenant_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    with engine.begin() as conn:  # the row stays locked while the tick is evaluated
        start, move = tick_window(last_tick(conn, schedule_name), tick, previous_tick(TICK_CRON, tick))
        ws = load_tenants(root, keys)
        plans = {t: config.schedules.of(kind) for t, config in ws.tenants.items() if include(config)}
        result = DueTick(kind=kind, window_start=start, tick=tick, due=due_between(plans, start, tick),
                         next_at=next_times(plans, tick), refused=dict(sorted(ws.errors.items())))
        if move:
            save_tick(conn, schedule_name, tick, start)
    for line in result.lines():
        context.log.info(line)
    return result
