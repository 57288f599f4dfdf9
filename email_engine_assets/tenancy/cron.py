"""Per-tenant cron times: which tenants are due between two instants, and when each is due next.

Plain functions over ``(cron, time zone)`` pairs, used by the per-kind schedules
(:mod:`email_engine_assets.tenancy.tenant_schedules`) and by the tenant-file validation.

A cron expression has five fields (minute, hour, day of month, month, day of week) or is one of
``@hourly @daily @midnight @weekly @monthly @yearly @annually``; it is read on the wall clock of the
tenant's IANA time zone by ``croniter``. Across daylight-saving changes the rule is Dagster's own for
its schedules: a wall time that does not exist (the hour skipped in spring) runs when the clock
leaves the gap, and a wall time that happens twice (the hour repeated in autumn) runs once, on its
second occurrence.

Between two ticks of a schedule a tenant is due at most once, at its latest cron time in the
window: a due time missed while the daemon was down runs once, not once per missed time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

RECHECK = "recheck"
MAILWIZZ_POLL = "mailwizz_poll"
STATS_REFRESH = "stats_refresh"
KINDS: tuple[str, ...] = (RECHECK, MAILWIZZ_POLL, STATS_REFRESH)
# What each kind ran on before tenants could choose: a tenant file that sets nothing keeps it.
DEFAULT_CRONS: Mapping[str, str] = {RECHECK: "0 3 * * *", MAILWIZZ_POLL: "0 * * * *", STATS_REFRESH: "0 * * * *"}
DEFAULT_TIMEZONE = "UTC"

ALIASES = frozenset({"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"})
CRON_MAX_CHARS = 200
_HASHED_OR_RANDOM = re.compile(r"\b[HR]\b")  # croniter's H and R fields, not the H of THU or the R of MAR
# Far enough on either side of an instant to hold any daylight-saving shift of a wall clock.
_DST_MARGIN = timedelta(hours=3)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a cron expression a tenant may use (None: it is one)."""
    if not isinstance(expression, str) or not expression.strip():
        return "expected a cron expression such as '0 3 * * *' (minute hour day-of-month month day-of-week)"
    if len(expression) > CRON_MAX_CHARS:
        return f"a cron expression has at most {CRON_MAX_CHARS} characters"
    text = expression.strip()
    if text.startswith("@"):
        return None if text in ALIASES else f"unknown cron alias; expected one of {', '.join(sorted(ALIASES))}"
    fields = text.split()
    if len(fields) != 5:
        return f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), this one has {len(fields)}"
    if _HASHED_OR_RANDOM.search(text.upper()):
        return "hashed or random fields (H, R) are not supported"
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return "this cron expression never fires"
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        return f"not a valid cron expression: {exc}"
    return None


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone (None: it is one)."""
    if not isinstance(name, str) or not name or len(name) > 64 or name != name.strip():
        return "expected an IANA time zone name such as 'Europe/Paris' or 'UTC'"
    if name not in _zone_names():
        return "unknown time zone; expected an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown time zone; expected an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'"
    return None


_ZONES: frozenset[str] | None = None


def _zone_names() -> frozenset[str]:
    global _ZONES  # noqa: PLW0603 (read once: the tz database does not change while the process runs)
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


@dataclass(frozen=True)
class TenantCron:
    """When one tenant's work of one kind runs: a cron expression on a time zone's wall clock."""

    cron: str
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _utc(instant: datetime) -> datetime:
    """An aware instant in UTC; a naive one is read as UTC (Dagster hands schedules either)."""
    return instant.replace(tzinfo=timezone.utc) if instant.tzinfo is None else instant.astimezone(timezone.utc)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The wall clock of ``zone`` at ``instant`` (through UTC: ``astimezone`` to the zone a datetime
    already has would return it unchanged, gap or not)."""
    return instant.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None)


def instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a cron wall time of ``zone`` runs at: a skipped wall time when the clock
    leaves the gap, a repeated one on its second occurrence."""
    later = wall.replace(tzinfo=zone, fold=1)
    if _wall(later, zone) == wall:  # exists; fold=1 is the second occurrence when it is repeated
        return later.astimezone(timezone.utc)
    # In a gap: the clock jumps somewhere between these two readings of it; find the jump to the second.
    low = later.astimezone(timezone.utc)  # read with the offset after the gap: before the jump
    high = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)  # the offset before: after it
    if high < low:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if mid.astimezone(zone).utcoffset() == high.astimezone(zone).utcoffset():  # both UTC: converted for real
            high = mid
        else:
            low = mid
    return high


def _near_a_shift(instant: datetime, zone: ZoneInfo) -> bool:
    offsets = {(instant + d).astimezone(zone).utcoffset() for d in (-_DST_MARGIN, timedelta(0), _DST_MARGIN)}
    return len(offsets) > 1


def last_due(schedule: TenantCron, after: datetime, until: datetime) -> datetime | None:
    """The latest cron time of ``schedule`` in ``(after, until]`` (UTC), or None."""
    after, until = _utc(after), _utc(until)
    if until <= after:
        return None
    zone = schedule.zone
    it = croniter(schedule.cron.strip(), _wall(until, zone) + timedelta(minutes=1))
    while True:
        at = instant_of(it.get_prev(datetime), zone)
        if at <= after:
            return None
        if at <= until:
            return at


def next_due(schedule: TenantCron, after: datetime) -> datetime:
    """The first cron time of ``schedule`` strictly after ``after`` (UTC)."""
    after = _utc(after)
    zone = schedule.zone
    start = after - _DST_MARGIN if _near_a_shift(after, zone) else after
    it = croniter(schedule.cron.strip(), _wall(start, zone))
    while True:
        at = instant_of(it.get_next(datetime), zone)
        if at > after:
            return at


def due_between(plans: Mapping[str, TenantCron], after: datetime, until: datetime) -> dict[str, datetime]:
    """The tenants due in ``(after, until]``, each with the cron time it is due for (its latest one
    in the window), in tenant order."""
    due = {}
    for tenant_id in sorted(plans):
        at = last_due(plans[tenant_id], after, until)
        if at is not None:
            due[tenant_id] = at
    return due


def next_times(plans: Mapping[str, TenantCron], after: datetime) -> dict[str, datetime]:
    """Each tenant's next cron time strictly after ``after``, in tenant order."""
    return {tenant_id: next_due(plans[tenant_id], after) for tenant_id in sorted(plans)}


def tick_window(stored: tuple[datetime, datetime] | None, tick: datetime, previous_tick: datetime) -> tuple[datetime, bool]:
    """Where the window of the tick at ``tick`` starts, and whether ``(tick, start)`` is to be stored.

    ``stored`` is the last evaluated tick and its window start. A later tick starts where that one
    ended (a daemon down for hours evaluates the whole gap once); the same tick evaluated again (a
    retried tick) gets the same window; the first tick, or an earlier one evaluated out of order,
    covers the interval since the schedule's previous tick and moves nothing.
    """
    tick, previous_tick = _utc(tick), _utc(previous_tick)
    if stored is None:
        return previous_tick, True
    last_tick, last_start = _utc(stored[0]), _utc(stored[1])
    if tick > last_tick:
        return last_tick, True
    if tick == last_tick:
        return last_start, False
    return previous_tick, False


def previous_tick(tick_cron: str, tick: datetime) -> datetime:
    """The tick of ``tick_cron`` (UTC) before ``tick``."""
    tick = _utc(tick)
    return croniter(tick_cron, tick.replace(tzinfo=None)).get_prev(datetime).replace(tzinfo=timezone.utc)
