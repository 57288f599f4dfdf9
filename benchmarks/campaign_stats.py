"""Campaign stats: one set-based statement in PostgreSQL vs reading the rows out and counting in polars.

    python benchmarks/campaign_stats.py [--rows 200000] [--database-url URL]

In a scratch database ``email_engine_bench_stats`` (dropped at the end): one campaign with ``--rows``
ledger rows over four templates and about three delivery events per row (delivered 95%, opens on
40% of rows, one to three each, clicks on 10%, hard bounces 2%, soft 1%, reputation 0.5%,
complaints 0.1%, unsubscribes 0.3%, plus unmatched events). Opens and clicks are a third each machine,
person and unclassified; clicks name one of four links, with a personalised URL.

* **ours**: ``feedback.stats_store.local_counts`` (the per-row / per-template aggregate in the
  database), ``link_counts`` (clicks per template and link) and ``feedback.stats.campaign_stats``
  (rates, languages, links);
* **reference**: the ledger rows and the campaign's events read into polars (the same two filters)
  and counted there with the same rules; the results must be equal.

Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.scratch import scratch_database  # noqa: E402
from email_engine_assets.feedback import stats_store  # noqa: E402
from email_engine_assets.feedback.stats import COUNT_KEYS, campaign_stats  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_stats"
LANGUAGES = {"news_en": "en", "news_fr": "fr", "news_de": "de", "news_es": "es"}

_EVENTS = """
INSERT INTO delivery_events (tenant_id, event_type, bounce_class, origin, occurred_at, campaign, send_row_id, email, dedupe_key,
                             machine, link_index, url)
SELECT 'acme', kind, cls, 'powermta', now(), 'spring', s.row_id, s.email, kind || coalesce(cls, '') || ':' || s.row_id || ':' || n,
       CASE WHEN kind IN ('opened', 'clicked') THEN (ARRAY[true, false, NULL])[1 + (s.row_id + n) % 3] END,
       CASE WHEN kind = 'clicked' THEN (s.row_id / 10) % 4 END,
       CASE WHEN kind = 'clicked' THEN 'https://shop.example/l' || (s.row_id / 10) % 4 || '?u=' || s.row_id END
FROM campaign_sends s
CROSS JOIN LATERAL (VALUES
    ('delivered', NULL, 1, s.row_id % 100 < 95),
    ('opened', NULL, 1 + s.row_id % 3, s.row_id % 10 < 4),
    ('clicked', NULL, 1, s.row_id % 10 = 0),
    ('deferred', NULL, 2, s.row_id % 50 = 7),
    ('bounced', 'hard', 1, s.row_id % 100 IN (95, 96)),
    ('bounced', 'soft', 1, s.row_id % 100 = 97),
    ('bounced', 'reputation', 1, s.row_id % 200 = 199),
    ('complained', NULL, 1, s.row_id % 1000 = 3),
    ('unsubscribed', NULL, 1, s.row_id % 1000 IN (5, 6, 8))
) AS e(kind, cls, times, wanted)
CROSS JOIN LATERAL generate_series(1, e.times) AS n
WHERE s.tenant_id = 'acme' AND s.campaign = 'spring' AND e.wanted
"""


def setup(engine: sa.Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x')"))
        conn.execute(sa.text("""INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                                VALUES ('acme', 'spring', 'completed', 'all', 'news', 'outbox', 'x')"""))
        conn.execute(sa.text(
            """INSERT INTO campaign_sends (tenant_id, campaign, email, state, token, template, rule)
               SELECT 'acme', 'spring', 'u' || g || '@example.com', 'sent', 'tok' || g,
                      (ARRAY['news_en', 'news_fr', 'news_de', 'news_es'])[1 + g % 4], 'category_language'
               FROM generate_series(1, :n) g"""), {"n": rows})
        conn.execute(sa.text(_EVENTS))
        conn.execute(sa.text(
            """INSERT INTO delivery_events (tenant_id, event_type, origin, occurred_at, campaign, email, dedupe_key)
               SELECT 'acme', 'opened', 'mailwizz', now(), 'spring', 'x' || g || '@example.com', 'unmatched' || g
               FROM generate_series(1, :n / 100) g"""), {"n": rows})
        conn.execute(sa.text("ANALYZE campaign_sends"))
        conn.execute(sa.text("ANALYZE delivery_events"))


def ours(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        totals, templates = stats_store.local_counts(conn, "acme", "spring")
        links = stats_store.link_counts(conn, "acme", "spring")
    return campaign_stats("acme.spring", totals, templates, LANGUAGES, links=links)


def reference(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        sends = pl.read_database(
            "SELECT row_id, template, state FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = 'spring'", conn, infer_schema_length=None)
        events = pl.read_database(
            "SELECT send_row_id, event_type, bounce_class, machine, link_index FROM delivery_events "
            "WHERE tenant_id = 'acme' AND campaign = 'spring'", conn, infer_schema_length=None)
    events = events.with_columns(human=pl.col("machine").fill_null(False).not_())
    key = (pl.when(pl.col("event_type") == "bounced").then(pl.lit("bounced_") + pl.col("bounce_class"))
           .otherwise(pl.col("event_type")))
    events = events.with_columns(key.alias("key"))
    linked = events.filter(pl.col("send_row_id").is_not_null())
    per_row = linked.group_by("send_row_id", "key").agg(pl.len().alias("n"), pl.col("human").sum().alias("h"))
    joined = per_row.join(sends.select("row_id", "template"), left_on="send_row_id", right_on="row_id")
    totals = dict.fromkeys(COUNT_KEYS, 0)
    totals["sent"] = sends.filter(pl.col("state").is_in(["sent", "handed_off"])).height
    for row in joined.group_by("key").agg(pl.len().alias("rows"), pl.col("n").sum().alias("events"), pl.col("h").sum().alias("human"),
                                          (pl.col("h") > 0).sum().alias("human_rows")).iter_rows(named=True):
        if row["key"] in ("opened", "clicked"):
            totals[row["key"]] += row["events"]
            totals[f"unique_{row['key']}"] += row["rows"]
            totals[f"{row['key']}_human"] += row["human"]
            totals[f"unique_{row['key']}_human"] += row["human_rows"]
        else:
            totals[row["key"]] += row["rows"]
    unmatched = events.filter(pl.col("send_row_id").is_null()).group_by("key").agg(pl.len().alias("n"), pl.col("human").sum().alias("h"))
    for row in unmatched.iter_rows(named=True):
        totals[row["key"]] += row["n"]
        if row["key"] in ("opened", "clicked"):
            totals[f"{row['key']}_human"] += row["h"]
    clicks = (linked.filter((pl.col("event_type") == "clicked") & pl.col("link_index").is_not_null())
              .join(sends.select("row_id", "template"), left_on="send_row_id", right_on="row_id"))
    links = clicks.group_by("template", "link_index").agg(
        pl.len().alias("clicked"), pl.col("send_row_id").n_unique().alias("unique_clicked"),
        pl.col("human").sum().alias("clicked_human"),
        pl.col("send_row_id").filter(pl.col("human")).n_unique().alias("unique_clicked_human"))
    totals["by_link"] = {(r.pop("template"), r.pop("link_index")): r for r in links.iter_rows(named=True)}
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    args = parser.parse_args()
    with scratch_database(BENCH_DATABASE, args.database_url) as engine:
        setup(engine, args.rows)
        with engine.connect() as conn:
            n_events = conn.execute(sa.text("SELECT count(*) FROM delivery_events")).scalar_one()
        ours(engine)  # warm the cache for both sides
        started = time.perf_counter()
        stats = ours(engine)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        ref = reference(engine)
        ref_s = time.perf_counter() - started
        ref_links = ref.pop("by_link")
        assert {k: stats[k] for k in COUNT_KEYS} == ref, (stats, ref)
        ours_links = {(t, ln.pop("link")): ln for t, rows in stats["by_link"].items() for ln in rows}
        assert {k: {c: v for c, v in ln.items() if c != "url"} for k, ln in ours_links.items()} == ref_links
        assert {ln["url"] for ln in ours_links.values()} == {f"https://shop.example/l{i}" for i in range(4)}
        print(f"campaign stats, {args.rows:,} ledger rows, {n_events:,} events: ours {ours_s:.2f} s; "
              f"rows read into polars and counted {ref_s:.2f} s; ratio {ref_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
