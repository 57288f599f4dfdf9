"""A scrape of ``email-engine metrics serve`` at scale: maintained counts vs plain GROUP BY counts.

    python benchmarks/metrics_scrape.py [--ledger 1000000] [--events 10000000] [--database-url URL]

In a scratch database ``email_engine_bench_metrics`` (dropped at the end): three tenants, twelve
campaigns on three transports, ``--ledger`` ledger rows over five states, ``--events`` delivery
events over every type (loaded in statements of a million rows, the way the feedback loop appends),
100k suppressions, 2k import files and 5k webhook rows not applied yet.

* **scrape**: ``GET /metrics`` over HTTP from ``metrics.serve`` (the command's server), the
  database part (the Dagster part reads a handful of sensor ticks and one run count; not here).
  The first scrape folds the deltas the load left (``sql/033_metric_counts.sql``); the figures are
  the median and worst of the scrapes after it, and of scrapes after a send-sized change
  (1000 ledger rows settled, 3000 events appended).
* **group by**: the same figures counted from the tables themselves (what the scrape would cost
  without maintained counts); the two must agree.
* **trigger cost**: one more million events appended in one statement with the counting trigger
  and without it (each rolled back).

Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.scratch import scratch_database  # noqa: E402
from email_engine_assets.metrics import families as f  # noqa: E402
from email_engine_assets.metrics.serve import registry_for  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_metrics"
TENANTS = ("acme", "globex", "initech")
TRANSPORTS = ("outbox", "powermta", "mailwizz")
STATES = ("sent", "sent", "sent", "handed_off", "failed", "queued", "unknown")
EVENTS = ("('delivered', NULL)", "('delivered', NULL)", "('delivered', NULL)", "('opened', NULL)", "('clicked', NULL)",
          "('deferred', NULL)", "('bounced', 'hard')", "('bounced', 'soft')", "('complained', NULL)", "('unsubscribed', NULL)")
CHUNK = 1_000_000

_LEDGER = """
INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], 'c' || (i % 12), 'p' || i || '@example.com',
       (ARRAY['sent', 'sent', 'sent', 'handed_off', 'failed', 'queued', 'unknown'])[1 + (i / 7) % 7], 't' || i
FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) i
"""
_EVENT_ROWS = f"""
INSERT INTO delivery_events (tenant_id, event_type, bounce_class, origin, occurred_at, dedupe_key)
SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], e.kind, e.cls, 'powermta', now(), 'e' || i
FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) i
JOIN (SELECT row_number() OVER () - 1 AS k, kind, cls FROM (VALUES {", ".join(EVENTS)}) v(kind, cls)) e ON e.k = i % {len(EVENTS)}
"""

GROUP_BY = {
    "ledger": """SELECT s.tenant_id, c.transport, s.state, count(*) FROM campaign_sends s
                 JOIN campaigns c USING (tenant_id, campaign) GROUP BY 1, 2, 3""",
    "events": "SELECT tenant_id, event_type, coalesce(bounce_class, ''), count(*) FROM delivery_events GROUP BY 1, 2, 3",
    "suppressions": "SELECT tenant_id, reason, count(*) FROM suppressions GROUP BY 1, 2",
}


def load(engine: sa.Engine, ledger: int, events: int) -> float:
    """Fill the database; returns the seconds the events took to load (triggers on)."""
    with engine.begin() as conn:
        for t in TENANTS:
            conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x')"), {"t": t})
            conn.execute(sa.text("INSERT INTO data_sources (tenant_id, source_id) VALUES (:t, 'crm')"), {"t": t})
            for c in range(12):
                conn.execute(sa.text(
                    """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                       VALUES (:t, :c, 'running', 'all', 'news', :tr, 'x')"""),
                    {"t": t, "c": f"c{c}", "tr": TRANSPORTS[c % 3]})
        conn.execute(sa.text(
            """INSERT INTO suppressions (tenant_id, email, reason)
               SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], 's' || i || '@example.com',
                      (ARRAY['unsubscribed', 'bounced', 'complained', 'manual'])[1 + i % 4]
               FROM generate_series(1, 100000) i"""))
        conn.execute(sa.text(
            """INSERT INTO import_files (tenant_id, source_id, path, content_sha256, size_bytes, status)
               SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], 'crm', 'f' || i, 'h' || i, 1,
                      (ARRAY['imported', 'imported', 'failed'])[1 + i % 3] FROM generate_series(1, 2000) i"""))
        conn.execute(sa.text(
            """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key)
               SELECT (ARRAY['acme', 'globex', 'initech'])[1 + i % 3], 'mailwizz', '\\x7b7d', 'w' || i
               FROM generate_series(1, 5000) i"""))
    for a in range(1, ledger + 1, CHUNK):
        with engine.begin() as conn:
            conn.execute(sa.text(_LEDGER), {"a": a, "b": min(a + CHUNK - 1, ledger)})
    started = time.perf_counter()
    for a in range(1, events + 1, CHUNK):
        with engine.begin() as conn:
            conn.execute(sa.text(_EVENT_ROWS), {"a": a, "b": min(a + CHUNK - 1, events)})
        print(f"  events loaded: {min(a + CHUNK - 1, events):,}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return seconds


def million_with_and_without_triggers(engine: sa.Engine, after: int) -> tuple[float, float]:
    """Seconds to append one more million events with the counting triggers, and without them
    (each in a transaction rolled back, so both start from the same table)."""
    took = []
    for triggers in (True, False):
        with engine.connect() as conn:
            with conn.begin() as tx:
                if not triggers:
                    conn.exec_driver_sql("ALTER TABLE delivery_events DISABLE TRIGGER delivery_events_counted_insert")
                started = time.perf_counter()
                conn.execute(sa.text(_EVENT_ROWS), {"a": after + 1, "b": after + CHUNK})
                took.append(time.perf_counter() - started)
                tx.rollback()
    return took[0], took[1]


def timed_scrape(client: httpx.Client, url: str) -> tuple[float, str]:
    started = time.perf_counter()
    got = client.get(url)
    got.raise_for_status()
    return time.perf_counter() - started, got.text


def figures(text: str) -> dict[str, dict[tuple, float]]:
    wanted = {f.LEDGER_ROWS: "ledger", f.DELIVERY_EVENTS: "events", f.SUPPRESSIONS: "suppressions"}
    out: dict[str, dict[tuple, float]] = {v: {} for v in wanted.values()}
    for fam in text_string_to_metric_families(text):
        if fam.name in wanted:
            for s in fam.samples:
                labels = s.labels
                key = {"ledger": ("tenant", "transport", "state"), "events": ("tenant", "type", "bounce_class"),
                       "suppressions": ("tenant", "reason")}[wanted[fam.name]]
                out[wanted[fam.name]][tuple(labels[k] for k in key)] = s.value
    return out


def settle_some(engine: sa.Engine, events_after: int) -> None:
    """A send-sized change: 1000 queued rows settled one statement each, 3000 events in three."""
    with engine.begin() as conn:
        ids = conn.execute(sa.text("SELECT row_id FROM campaign_sends WHERE state = 'queued' LIMIT 1000")).scalars().all()
    for row_id in ids:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE campaign_sends SET state = 'sent' WHERE row_id = :r"), {"r": row_id})
    for k in range(3):
        with engine.begin() as conn:
            conn.execute(sa.text(_EVENT_ROWS), {"a": events_after + 1 + k * 1000, "b": events_after + (k + 1) * 1000})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV))
    args = parser.parse_args()
    from prometheus_client import start_http_server

    with scratch_database(BENCH_DATABASE, args.database_url) as engine:
        started = time.perf_counter()
        events_s = load(engine, args.ledger, args.events)
        print(f"loaded {args.ledger:,} ledger rows and {args.events:,} events in {time.perf_counter() - started:.0f} s "
              f"(events: {events_s:.0f} s with the counting triggers, "
              f"{events_s / (args.events / 1e6):.1f} s per million)")
        on, off = million_with_and_without_triggers(engine, args.events + 10_000)
        print(f"one more million events in one statement: {on:.1f} s with the counting trigger, {off:.1f} s without")
        with engine.connect() as conn:
            deltas = conn.execute(sa.text("SELECT count(*) FROM metric_count_deltas")).scalar()
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry_for(engine, None))
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        try:
            with httpx.Client(timeout=60) as client:
                first, text = timed_scrape(client, url)
                print(f"first scrape (folds {deltas:,} delta rows left by the load): {first * 1000:.0f} ms")
                times = [timed_scrape(client, url)[0] for _ in range(args.scrapes)]
                print(f"scrape: median {statistics.median(times) * 1000:.1f} ms, worst {max(times) * 1000:.1f} ms "
                      f"over {args.scrapes} scrapes ({len(text):,} bytes)")
                settle_some(engine, args.events + 2_000_000)
                after, text = timed_scrape(client, url)
                print(f"scrape after 1000 settles and 3000 events (folds their deltas): {after * 1000:.1f} ms")
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        scraped = figures(text)
        with engine.connect() as conn:
            for name, sql in GROUP_BY.items():
                started = time.perf_counter()
                rows = conn.execute(sa.text(sql)).all()
                took = time.perf_counter() - started
                counted = {tuple(r[:-1]): float(r[-1]) for r in rows}
                same = "equal" if counted == scraped[name] else "DIFFERENT"
                print(f"group by {name:>12}: {took * 1000:8.0f} ms ({len(rows)} groups; {same} to the scrape)")
                if counted != scraped[name]:
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
