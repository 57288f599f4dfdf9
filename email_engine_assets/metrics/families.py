"""The metric names the engine exports, and the mapping of counted rows to samples (plain code:
no Prometheus client, no database). The Grafana dashboard (``deploy/grafana/``) queries these names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "email_engine_"

# Figures of `email-engine metrics serve`, read from PostgreSQL (and Dagster's storage) at scrape time.
LEDGER_ROWS = PREFIX + "ledger_rows"
DELIVERY_EVENTS = PREFIX + "delivery_events"
SUPPRESSIONS = PREFIX + "suppressions"
IMPORT_FILES = PREFIX + "import_files"
INBOX_PENDING = PREFIX + "webhook_inbox_pending"
INBOX_OLDEST_AGE = PREFIX + "webhook_inbox_oldest_pending_age_seconds"
SENSOR_TICK_AGE = PREFIX + "sensor_last_tick_age_seconds"
RUNS_FAILED = PREFIX + "dagster_runs_failed"
SOURCE_UP = PREFIX + "metrics_source_up"
SCRAPE_SECONDS = PREFIX + "metrics_scrape_duration_seconds"
POWERMTA_QUEUE = PREFIX + "powermta_queue_recipients"
POWERMTA_QUEUE_READ_FAILURES = PREFIX + "powermta_queue_read_failures"

# Figures of the webhook app's /metrics (kept in its process).
WEBHOOK_REQUESTS = PREFIX + "webhook_requests"  # a counter: exposed as ..._total
WEBHOOK_LATENCY = PREFIX + "webhook_request_duration_seconds"
TRACKING_HITS_LOST = PREFIX + "tracking_hits_lost"  # a counter: exposed as ..._total
WEBHOOK_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HELP = {
    LEDGER_ROWS: "Campaign ledger rows by tenant, transport (the campaign's) and state.",
    DELIVERY_EVENTS: "Delivery events by tenant, type, bounce class ('' unless bounced) and, for opens and clicks, "
                     "who made them (classified: machine, person or unclassified; '' for other types).",
    SUPPRESSIONS: "Suppressed addresses by tenant and reason.",
    IMPORT_FILES: "Imported files by tenant and status.",
    INBOX_PENDING: "Webhook inbox rows not applied yet, by tenant.",
    INBOX_OLDEST_AGE: "Seconds since the oldest webhook inbox row not applied yet was received, by tenant.",
    SENSOR_TICK_AGE: "Seconds since the sensor's last tick (running sensors of the Dagster instance).",
    RUNS_FAILED: "Dagster runs that ended in failure (all time; use increase()).",
    SOURCE_UP: "1 when the part was read at this scrape, 0 when reading it failed (database, dagster).",
    SCRAPE_SECONDS: "Seconds this scrape took to read its figures.",
    POWERMTA_QUEUE: "Recipients in the PowerMTA's queue (its management /status) at the alert watcher's last reading.",
    POWERMTA_QUEUE_READ_FAILURES: "Readings of the PowerMTA's queue that failed since metrics serve started (use increase()).",
    WEBHOOK_REQUESTS: "Requests answered by the webhook app, by route, method and status.",
    WEBHOOK_LATENCY: "Seconds from a request's headers to the end of its answer, by route.",
    TRACKING_HITS_LOST: "Open and click hits answered but not stored (the database failed), by kind.",
}


@dataclass(frozen=True)
class Family:
    """One gauge family: its name, label names and samples ``(label values, value)``."""

    name: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    @property
    def help(self) -> str:
        return HELP[self.name]


def engine_names() -> tuple[str, ...]:
    """Every family ``metrics serve`` exports (also when a part could not be read: then without samples)."""
    return (LEDGER_ROWS, DELIVERY_EVENTS, SUPPRESSIONS, IMPORT_FILES, INBOX_PENDING, INBOX_OLDEST_AGE,
            SENSOR_TICK_AGE, RUNS_FAILED, SOURCE_UP, SCRAPE_SECONDS, POWERMTA_QUEUE, POWERMTA_QUEUE_READ_FAILURES)


def database_families(ledger: Iterable[tuple[str, str, str, int]], events: Iterable[tuple[str, str, str, int]],
                      suppressions: Iterable[tuple[str, str, int]], import_files: Iterable[tuple[str, str, int]],
                      backlog: Iterable[tuple[str, int, float]]) -> list[Family]:
    """The families read from the application database, from the rows of ``metrics.store``."""
    return [
        Family(LEDGER_ROWS, ("tenant", "transport", "state"), [((t, tr, s), float(n)) for t, tr, s, n in sorted(ledger)]),
        Family(DELIVERY_EVENTS, ("tenant", "type", "bounce_class", "classified"),
               [((t, e, *event_labels(e, k2)), float(n)) for t, e, k2, n in sorted(events)]),
        Family(SUPPRESSIONS, ("tenant", "reason"), [((t, r), float(n)) for t, r, n in sorted(suppressions)]),
        Family(IMPORT_FILES, ("tenant", "status"), [((t, s), float(n)) for t, s, n in sorted(import_files)]),
        *backlog_families(backlog),
    ]


# Opens and clicks by who made them, as campaign stats count them (feedback.stats: a person's is
# ``machine IS NOT TRUE``, so people = classified!="machine"). The counted key (sql/039) is 'machine'
# or 'person' as tracking classed the event, '' where nobody did (MailWizz's).
CLASSIFIED_TYPES = frozenset({"opened", "clicked"})
CLASSIFIED = {"machine": "machine", "person": "person", "": "unclassified"}


def event_labels(event_type: str, k2: str) -> tuple[str, str]:
    """``(bounce_class, classified)`` of a counted events key (``metric_counts`` family 'events')."""
    if event_type in CLASSIFIED_TYPES:
        return "", CLASSIFIED.get(k2, k2)
    return k2, ""


def backlog_families(backlog: Iterable[tuple[str, int, float]]) -> list[Family]:
    """The webhook inbox rows not applied yet ``(tenant, rows, age of the oldest)``: both endpoints export them."""
    backlog = sorted(backlog)
    return [Family(INBOX_PENDING, ("tenant",), [((t,), float(n)) for t, n, _ in backlog]),
            Family(INBOX_OLDEST_AGE, ("tenant",), [((t,), round(age, 3)) for t, _, age in backlog])]


def dagster_families(last_ticks: Mapping[str, float | None], failed_runs: int, now: float) -> list[Family]:
    """Sensor tick ages (``{sensor: unix time of its last tick or None}``; a sensor that never
    ticked has no sample) and the failed runs."""
    ages = [((name,), round(max(now - at, 0.0), 3)) for name, at in sorted(last_ticks.items()) if at is not None]
    return [Family(SENSOR_TICK_AGE, ("sensor",), ages), Family(RUNS_FAILED, (), [((), float(failed_runs))])]


def powermta_families(readings: Mapping[str, tuple[tuple[str, ...], int]], failures: Mapping[str, int]) -> list[Family]:
    """The alert watcher's last PowerMTA queue readings (management URL -> (tenant transports, recipients))
    and its failed readings by URL. Labelled by the management URL, never by tenant: one PowerMTA, one series."""
    return [Family(POWERMTA_QUEUE, ("management_url",), [((url,), float(n)) for url, (_, n) in sorted(readings.items())]),
            Family(POWERMTA_QUEUE_READ_FAILURES, ("management_url",), [((url,), float(n)) for url, n in sorted(failures.items())])]


def status_families(up: Mapping[str, bool], seconds: float) -> list[Family]:
    """Which parts were read, and how long the scrape took."""
    return [Family(SOURCE_UP, ("source",), [((name,), 1.0 if ok else 0.0) for name, ok in sorted(up.items())]),
            Family(SCRAPE_SECONDS, (), [((), round(seconds, 6))])]


def empty(names: Iterable[str], labels: Mapping[str, tuple[str, ...]]) -> list[Family]:
    """Families without samples (a part that could not be read still declares its names)."""
    return [Family(name, labels.get(name, ())) for name in names]


def route_label(path_template: str | None) -> str:
    """The route a request matched, as its template (``/hooks/mailwizz/{tenant}``): never the
    path itself, which holds tenants and tokens and would make a series per request."""
    return path_template or "unmatched"
