"""A segment over a large tenant: evaluated in PostgreSQL against loading the tenant into polars.

    python benchmarks/segments.py --contacts 1000000 [--database-url URL] [--repeats 3]

Fills a scratch database ``email_engine_bench_segments`` (dropped at the end) with one tenant of
``--contacts`` contacts (tags, country, language, category), their verdicts and flags, enrichment
for half of them, and 1% of their addresses suppressed; then, for one segment with tags ALL / ANY /
EXCLUDE + country + language + verdict, times:

* **ours, evaluation**: the segment's SQL (:func:`store.select_segment_sql`) with the suppression
  anti-join, counting members, on fresh profiles;
* **ours, build**: :func:`store.build_segment` writing the snapshot (first build, then a rebuild
  with nothing changed);
* **reference**: reading the tenant the way the matcher reads it (:func:`store.contacts_for_rules`
  plus tags) into polars and filtering with the same conditions (:func:`matcher.match_expr`),
  suppressions removed with a join.

Also prints the one-off profile refresh (a first fill, and a refresh with nothing changed), checks
that both sides select the same contacts, and prints reference / ours. Server: ``--database-url``,
else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import polars as pl
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_assets.audiences import store  # noqa: E402
from email_engine_assets.audiences.matcher import match_expr, with_contact_fields  # noqa: E402
from email_engine_assets.audiences.segments import Segment  # noqa: E402
from email_engine_assets.audiences.selection import Condition  # noqa: E402
from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_segments"
TENANT = "bench"
TARGETS = {"evaluation_s": 1.0, "reference_over_ours": 5.0}

SEGMENT = Segment.model_validate(
    {
        "name": "fr_vip_events",
        "all": [
            {"field": "tags", "contains_all": ["vip"]},
            {"field": "country", "in": ["FR", "BE"]},
            {"field": "language", "equals": "fr"},
        ],
        "any": [{"field": "tags", "contains_any": ["salon_2024", "webinar"]}],
        "exclude": [{"field": "tags", "contains_any": ["competitor"]}],
        "verdicts": ["valid"],
    }
)

FILL = """
SELECT setseed(0.42);
INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('bench', 'Bench', 'x');
INSERT INTO contacts (tenant_id, email, first_name, country, language, category, tags, sources)
SELECT 'bench', 'user' || i || '@' || (ARRAY['gmail.com','orange.fr','web.de','acme.io','free.fr'])[1 + i % 5],
       'Name' || i % 1000,
       (ARRAY['FR','fr','BE','DE','US','ES','IT', NULL])[1 + floor(random() * 8)::int],
       (ARRAY['fr','en','de','es', NULL])[1 + floor(random() * 5)::int],
       (ARRAY['b2b','b2c','pro'])[1 + floor(random() * 3)::int],
       ARRAY(SELECT t FROM unnest(ARRAY['vip','salon_2024','webinar','competitor','newsletter','lead','customer']) t
             WHERE random() < 0.25 + 0 * i),
       ARRAY['crm']
FROM generate_series(1, :n) AS i;
INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok, free_mail)
SELECT tenant_id, contact_id, email,
       (ARRAY['valid','valid','valid','valid','valid','risky','invalid','unknown'])[1 + floor(random() * 8)::int],
       true, email LIKE '%gmail.com'
FROM contacts WHERE tenant_id = 'bench';
INSERT INTO contact_enrichment (tenant_id, contact_id, language, language_rule, country, inputs_sha256)
SELECT tenant_id, contact_id, coalesce(language, 'fr'), 'bench', upper(country), 'x'
FROM contacts WHERE tenant_id = 'bench' AND contact_id % 2 = 0;
INSERT INTO suppressions (tenant_id, email, reason)
SELECT tenant_id, email, 'unsubscribed' FROM contacts WHERE tenant_id = 'bench' AND contact_id % 100 = 7;
"""


def server_url(given: str | None) -> str:
    return (given or os.environ.get(DATABASE_URL_ENV, "").strip()) or database.embedded_server_url()


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def ours_evaluation(engine: sa.Engine) -> list[int]:
    sql, params = store.select_segment_sql(SEGMENT)
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    f"""SELECT m.contact_id FROM ({sql}) m
                        WHERE NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = :tenant AND s.email = m.email)
                        ORDER BY m.contact_id"""
                ),
                {**params, "tenant": TENANT},
            ).scalars()
        )


def reference(engine: sa.Engine) -> list[int]:
    """The tenant loaded the way the matcher reads it, filtered in polars."""
    with engine.connect() as conn:
        first, last = conn.execute(sa.text("SELECT min(contact_id), max(contact_id) FROM contacts WHERE tenant_id = :t"),
                                   {"t": TENANT}).one()
        fields = store.contacts_for_rules(conn, TENANT, (first, last))
        tags = pl.read_database(
            "SELECT contact_id, tags FROM contacts WHERE tenant_id = 'bench'", conn,
            schema_overrides={"contact_id": pl.Int64, "tags": pl.List(pl.String)},
        )
        suppressed = pl.read_database("SELECT email FROM suppressions WHERE tenant_id = 'bench'", conn,
                                      schema_overrides={"email": pl.String})
    verdicts = Condition(field="verdict", **{"in": SEGMENT.verdicts})
    frame = with_contact_fields(fields.join(tags, on="contact_id"))
    selected = frame.filter(match_expr([*SEGMENT.all, verdicts], SEGMENT.any, SEGMENT.exclude))
    return selected.join(suppressed, on="email", how="anti")["contact_id"].sort().to_list()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (to look at plans)")
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    args = parser.parse_args()

    url = database.with_database(server_url(args.database_url), BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    try:
        engine = database.get_engine(url)
        upgrade(engine)
        fill_s, _ = timed(lambda: _fill(engine, args.contacts))
        print(f"filled {args.contacts:,} contacts (+ verdicts, enrichment, suppressions) in {fill_s:.1f} s")
        with engine.begin() as conn:
            first_refresh = timed(lambda: store.refresh_segment_profiles(conn, TENANT))
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE segment_profiles")
            again_refresh = timed(lambda: store.refresh_segment_profiles(conn, TENANT))
        print(f"profile refresh: first fill {first_refresh[0]:.2f} s ({first_refresh[1]:,} rows), "
              f"nothing changed {again_refresh[0]:.2f} s ({again_refresh[1]:,} rows)")

        ours = [timed(lambda: ours_evaluation(engine)) for _ in range(args.repeats)]
        with engine.begin() as conn:
            first_build = timed(lambda: store.build_segment(conn, TENANT, SEGMENT, refresh_profiles=False))
        with engine.begin() as conn:
            rebuild = timed(lambda: store.build_segment(conn, TENANT, SEGMENT, refresh_profiles=False))
        ref = [timed(lambda: reference(engine)) for _ in range(args.repeats)]
    finally:
        engine.dispose()
        if not args.keep:
            database.drop_database(url)

    ours_s = statistics.median(t for t, _ in ours)
    ref_s = statistics.median(t for t, _ in ref)
    members = ours[0][1]
    same = all(value == members for _, value in ours + ref)
    print(f"segment {SEGMENT.name}: {len(members):,} members of {args.contacts:,} contacts; "
          f"both sides select the same contacts: {same}")
    print(f"ours, evaluation (median of {args.repeats}): {ours_s:.3f} s   target < {TARGETS['evaluation_s']} s")
    print(f"ours, build_segment: first {first_build[0]:.2f} s ({first_build[1]['added']:,} added), "
          f"rebuild unchanged {rebuild[0]:.2f} s ({rebuild[1]['added']} added, {rebuild[1]['removed']} removed)")
    print(f"reference, load into polars + filter (median of {args.repeats}): {ref_s:.3f} s")
    print(f"reference / ours (evaluation): {ref_s / ours_s:.1f}x   target >= {TARGETS['reference_over_ours']}x")
    print(f"reference / ours (build, unchanged): {ref_s / rebuild[0]:.1f}x")
    ok = same and ours_s < TARGETS["evaluation_s"] and ref_s / ours_s >= TARGETS["reference_over_ours"]
    print("targets met" if ok else "TARGETS MISSED")
    sys.exit(0 if ok else 1)


def _fill(engine: sa.Engine, contacts: int) -> None:
    with engine.begin() as conn:
        for statement in filter(str.strip, FILL.split(";\n")):
            conn.execute(sa.text(statement), {"n": contacts})
        conn.exec_driver_sql("ANALYZE")


if __name__ == "__main__":
    main()
