"""The suppression policy over a large event table: incremental runs against a full recount, and a polars check.

    python benchmarks/suppression_policy.py --events 1000000 [--addresses 200000] [--new 10000] [--database-url URL]

Fills a scratch database ``email_engine_bench_policy`` (dropped at the end) with one tenant's
``--events`` delivery events over ``--addresses`` addresses spread over 60 days (delivered, soft,
hard and reputation bounces, complaints, unsubscribes), then times:

* **ours, first run**: :func:`suppression_apply.apply_rules` reading every event (watermark 0);
* **ours, incremental**: ``--new`` more events arrive, the next run reads them and the history it needs;
* **full recount** (the reference for the incremental run): the same run with the watermark put
  back to 0, i.e. what a policy without a watermark pays on every run;
* **polars reference**: all decisive events read into polars and decided there (rolling 7-day soft
  windows), checked to suppress exactly the addresses ours did.

Prints the times and full recount / incremental. Server: ``--database-url``, else
``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scratch import scratch_database  # noqa: E402
from email_engine_assets.feedback.suppression_apply import apply_rules  # noqa: E402
from email_engine_assets.tenancy.config import parse_tenant  # noqa: E402
from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.frames import read_frame  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_policy"
TENANT = "bench"

# Per 1000 events: how many of each kind (the rest are delivered).
_FILL = """
INSERT INTO delivery_events (tenant_id, event_type, bounce_class, origin, occurred_at, email, detail, dedupe_key)
SELECT :t,
       CASE WHEN b < 150 THEN 'bounced' WHEN b < 180 THEN 'bounced' WHEN b < 260 THEN 'bounced'
            WHEN b < 263 THEN 'complained' WHEN b < 273 THEN 'unsubscribed' ELSE 'delivered' END,
       CASE WHEN b < 150 THEN 'soft' WHEN b < 180 THEN 'hard' WHEN b < 260 THEN 'reputation' END,
       'powermta',
       timestamptz '2026-11-29 00:00+00' - make_interval(mins => ((i * 104729) % (60 * 24 * 60))::int),
       'p' || ((i * 7919) % :addresses) || '@example.com',
       '4.2.2 (mailbox full)',
       :prefix || i
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i, LATERAL (SELECT abs(hashtext(:prefix || i)) % 1000 AS b) AS bucket
"""


def server_url(given: str | None) -> str:
    return (given or os.environ.get(DATABASE_URL_ENV, "").strip()) or database.embedded_server_url()


def fill(engine: sa.Engine, first: int, last: int, addresses: int, prefix: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(_FILL), {"t": TENANT, "first": first, "last": last, "addresses": addresses, "prefix": prefix})
        conn.execute(sa.text("ANALYZE delivery_events"))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def polars_reference(engine: sa.Engine, soft_limit: int = 3, days: int = 7) -> set[str]:
    with engine.connect() as conn:
        events = read_frame(conn, """SELECT email, event_type, coalesce(bounce_class, '') AS bounce_class,
                                            CAST(extract(epoch FROM occurred_at) AS bigint) AS at
                                     FROM delivery_events WHERE tenant_id = :t AND email IS NOT NULL
                                       AND (event_type IN ('complained', 'unsubscribed') OR bounce_class IN ('hard', 'soft'))""",
                            {"t": TENANT}, {"email": pl.String, "event_type": pl.String, "bounce_class": pl.String, "at": pl.Int64})
    at_once = set(events.filter((pl.col("event_type") != "bounced") | (pl.col("bounce_class") == "hard"))["email"].to_list())
    soft = (
        events.filter(pl.col("bounce_class") == "soft").sort("email", "at")
        .rolling(index_column="at", period=f"{days * 86400 + 1}i", group_by="email")
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") >= soft_limit)
    )
    return at_once | set(soft["email"].to_list())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--addresses", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    args = parser.parse_args()
    with scratch_database(BENCH_DATABASE, server_url(args.database_url)) as engine:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x')"), {"t": TENANT})
        tenant = parse_tenant(Path(f"{TENANT}.yaml"), f"id: {TENANT}\nname: Bench\nsources:\n  - id: crm\n")
        fill_s, _ = timed(lambda: fill(engine, 1, args.events, args.addresses, "a"))
        print(f"filled {args.events:,} events over {args.addresses:,} addresses in {fill_s:.1f} s")

        first_s, first = timed(lambda: apply_rules(engine, tenant))
        print(f"ours, first run:   {first_s:7.2f} s  ({first['addresses_read']:,} addresses read, {first['suppressed']:,} suppressed)")
        ref_s, expected = timed(lambda: polars_reference(engine))
        with engine.connect() as conn:
            ours = set(conn.execute(sa.text("SELECT email FROM suppressions WHERE tenant_id = :t"), {"t": TENANT}).scalars())
        print(f"polars reference:  {ref_s:7.2f} s  (same addresses: {ours == expected}; {len(expected):,})")
        if ours != expected:
            print(f"  only ours: {sorted(ours - expected)[:5]}  only reference: {sorted(expected - ours)[:5]}")

        fill(engine, args.events + 1, args.events + args.new, args.addresses, "b")
        inc_s, inc = timed(lambda: apply_rules(engine, tenant))
        print(f"ours, incremental: {inc_s:7.2f} s  ({args.new:,} new events, {inc['addresses_read']:,} addresses read, "
              f"{inc['suppressed']:,} suppressed)")
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE feedback_policy_marks SET last_event_id = 0 WHERE tenant_id = :t"), {"t": TENANT})
        full_s, _ = timed(lambda: apply_rules(engine, tenant))
        print(f"full recount:      {full_s:7.2f} s")
        print(f"full recount / incremental: {full_s / inc_s:.1f}x")


if __name__ == "__main__":
    main()
