"""Alert incidents: which conditions open an incident (one alert) and which open incidents clear
(one "resolved" alert), so a condition that holds over many evaluations is posted once.

Plain code: the conditions of one evaluation come in, the open incidents of the same scope (read by
``incident_store``) come in, and :func:`decide` says what to open, what to clear and what still
holds. The watcher of ``email-engine metrics serve`` (``metrics.watch``) and the sensor
``alert_on_unread_inputs`` apply it. Thresholds are environment settings next to the alert
settings of :mod:`email_engine_resources.alerts` (:func:`watch_settings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from email_engine_assets.tenancy.input_problems import InputProblem

# Incident kinds.
SENSOR_SILENT = "sensor_silent"          # a running sensor has not ticked for longer than the limit
DAEMON_SILENT = "daemon_silent"          # the Dagster daemon's last heartbeat is older than the limit
INBOX_BACKLOG = "inbox_backlog"          # a tenant's webhook inbox holds more unapplied rows than the limit
POWERMTA_QUEUE = "powermta_queue"        # a PowerMTA's queue (its /status: recipients queued) holds more than the limit
INPUT_REFUSED = "input_refused"          # accounting files or webhook rows of a tenant refused (input_problems)
INPUTS_NOT_READ = "inputs_not_read"      # a run succeeded but an asset's inputs_read check failed
GUARD_RAIL_PAUSED = "guard_rail_paused"  # a campaign paused by its guard rail (campaigns.guard_rail_apply)
GUARD_RAIL_MAILWIZZ = "guard_rail_mailwizz"  # ... whose MailWizz campaigns could not be paused yet (retried each cycle)
WATCHED_KINDS = (SENSOR_SILENT, DAEMON_SILENT, INBOX_BACKLOG, INPUT_REFUSED, POWERMTA_QUEUE)  # evaluated by metrics serve
REFUSED_INPUT_KINDS = ("accounting_file", "webhook_row")

SILENT_AFTER_ENV = "EMAIL_ENGINE_ALERT_SILENT_AFTER_S"
INBOX_BACKLOG_ENV = "EMAIL_ENGINE_ALERT_INBOX_BACKLOG"
WATCH_INTERVAL_ENV = "EMAIL_ENGINE_ALERT_WATCH_INTERVAL_S"
POWERMTA_QUEUE_ENV = "EMAIL_ENGINE_ALERT_POWERMTA_QUEUE"
SILENT_AFTER_S = 900.0
INBOX_BACKLOG_MAX = 1000
WATCH_INTERVAL_S = 60.0
POWERMTA_QUEUE_MAX = 100_000  # recipients queued in one PowerMTA

DETAIL_MAX = 600


@dataclass(frozen=True)
class Condition:
    """A condition that holds now: ``key`` names it across evaluations."""

    key: str
    kind: str
    tenant: str
    detail: str


@dataclass(frozen=True)
class OpenIncident:
    key: str
    kind: str
    tenant: str
    detail: str
    opened_at: str = ""  # ISO 8601, UTC


@dataclass(frozen=True)
class Decision:
    opened: list[Condition]       # new incidents: post an alert
    cleared: list[OpenIncident]   # open incidents whose condition no longer holds: post "resolved"
    held: list[Condition]         # open incidents whose condition still holds: post nothing


def decide(conditions: Iterable[Condition], open_incidents: Iterable[OpenIncident]) -> Decision:
    """``open_incidents`` must be those of the scope the conditions were evaluated over (the kinds a
    watcher evaluates, the assets a run checked): an open incident without a condition clears."""
    now: dict[str, Condition] = {}
    for condition in conditions:
        now.setdefault(condition.key, condition)
    known = {incident.key: incident for incident in open_incidents}
    return Decision(
        opened=[c for k, c in now.items() if k not in known],
        cleared=[i for k, i in known.items() if k not in now],
        held=[c for k, c in now.items() if k in known],
    )


# -- settings -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchSettings:
    silent_after_s: float = SILENT_AFTER_S
    inbox_backlog_max: int = INBOX_BACKLOG_MAX
    interval_s: float = WATCH_INTERVAL_S
    powermta_queue_max: int = POWERMTA_QUEUE_MAX


def watch_settings(environ: Mapping[str, str]) -> WatchSettings:
    """The thresholds of the environment (defaults when unset); a bad value raises ValueError naming the variable."""

    def number(name: str, default: float, kind: type) -> float:
        raw = environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name} must be a positive {'whole ' if kind is int else ''}number") from None
        if value <= 0:
            raise ValueError(f"{name} must be a positive {'whole ' if kind is int else ''}number")
        return value

    return WatchSettings(number(SILENT_AFTER_ENV, SILENT_AFTER_S, float),
                         int(number(INBOX_BACKLOG_ENV, INBOX_BACKLOG_MAX, int)),
                         number(WATCH_INTERVAL_ENV, WATCH_INTERVAL_S, float),
                         int(number(POWERMTA_QUEUE_ENV, POWERMTA_QUEUE_MAX, int)))


# -- conditions -----------------------------------------------------------------------------------

def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def silent_sensors(last_ticks: Mapping[str, float | None], now: float, limit_s: float) -> list[Condition]:
    """Running sensors whose last tick is older than ``limit_s`` (a sensor that never ticked is the daemon's matter)."""
    out = []
    for name, at in sorted(last_ticks.items()):
        if at is not None and now - at > limit_s:
            out.append(Condition(f"{SENSOR_SILENT}:{name}", SENSOR_SILENT, "",
                                 _clip(f"sensor {name}: last tick {now - at:.0f} s ago (limit {limit_s:.0f} s)")))
    return out


def silent_daemon(heartbeats: Mapping[str, float], now: float, limit_s: float) -> list[Condition]:
    """The daemon, when its newest heartbeat (any of its daemons) is older than ``limit_s``. A daemon
    that never ran (no heartbeat: CLI-only use) is not taken for a silent one."""
    if not heartbeats:
        return []
    newest = max(heartbeats.values())
    if now - newest <= limit_s:
        return []
    return [Condition(DAEMON_SILENT, DAEMON_SILENT, "",
                      _clip(f"dagster daemon: last heartbeat {now - newest:.0f} s ago (limit {limit_s:.0f} s)"))]


def inbox_backlogs(backlog: Iterable[tuple[str, int, float]], limit: int) -> list[Condition]:
    """Tenants whose webhook inbox holds more than ``limit`` rows not applied yet (``(tenant, rows, oldest age s)``)."""
    return [Condition(f"{INBOX_BACKLOG}:{tenant}", INBOX_BACKLOG, tenant,
                      _clip(f"webhook inbox of {tenant}: {n} rows not applied (limit {limit}), oldest {age:.0f} s"))
            for tenant, n, age in sorted(backlog) if n > limit]


def powermta_queues(readings: Iterable[tuple[str, Sequence[str], int]], limit: int) -> list[Condition]:
    """PowerMTAs whose queue holds more than ``limit`` recipients: ``(management URL, the tenant
    transports that use it as "tenant/transport", recipients queued)``. One condition per PowerMTA,
    however many tenants send through it (the tenant is named when only one does)."""
    out = []
    for url, used_by, queued in sorted(readings):
        if queued > limit:
            tenants = sorted({name.split("/", 1)[0] for name in used_by})
            out.append(Condition(f"{POWERMTA_QUEUE}:{url}", POWERMTA_QUEUE, tenants[0] if len(tenants) == 1 else "",
                                 _clip(f"PowerMTA {url} ({', '.join(sorted(used_by))}): {queued} recipients queued "
                                       f"(limit {limit})")))
    return out


def refused_inputs(problems: Mapping[str, Sequence[InputProblem]]) -> list[Condition]:
    """One condition per tenant and input kind (accounting files, webhook rows) with refused inputs."""
    out = []
    for tenant in sorted(problems):
        for kind in REFUSED_INPUT_KINDS:
            mine = [p for p in problems[tenant] if p.kind == kind]
            if mine:
                more = f" (and {len(mine) - 3} more)" if len(mine) > 3 else ""
                listed = "; ".join(f"{p.name}: {p.reason}" for p in mine[:3])
                out.append(Condition(f"{INPUT_REFUSED}:{tenant}:{kind}", INPUT_REFUSED, tenant,
                                     _clip(f"{kind} refused for {tenant} ({len(mine)}): {listed}{more}")))
    return out


def tenant_of(partition: str | None) -> str:
    """The tenant a run's partition names: ``acme``, ``acme.spring``, ``crm|acme`` -> ``acme``."""
    if not partition:
        return ""
    if "|" in partition:
        return partition.rsplit("|", 1)[1]
    return partition.split(".", 1)[0] if "=" not in partition else ""


def unread_inputs_conditions(partition: str | None, checked: Iterable[tuple[str, bool, str]]) -> tuple[list[Condition], set[str]]:
    """A run's ``inputs_read`` checks ``(asset, passed, description)``: the conditions (failed checks)
    and the keys the run covered (every asset it checked, so one that passes again clears)."""
    conditions, covered = [], set()
    for asset, passed, description in checked:
        key = f"{INPUTS_NOT_READ}:{partition or ''}:{asset}"
        covered.add(key)
        if not passed:
            conditions.append(Condition(key, INPUTS_NOT_READ, tenant_of(partition), _clip(f"{asset}: {description}")))
    return conditions, covered
