"""End-to-end ingestion against the in-database floor and a naive pandas load, same file, same server.

    python benchmarks/ingest.py --rows 1000000 [--database-url URL] [--skip-pandas]

Generates a seeded messy CSV (about 5% repeated addresses in other case and spacing, about 3% bad
rows of several kinds, accents in composed and decomposed form, quoted fields with delimiters
and line breaks; columns Email, First Name, Last Name, Company, Phone, Country, Language, Tags)
in a scratch database ``email_engine_bench`` that is dropped at the end, then times:

* **floor**: ``COPY`` of the raw file into an unindexed table, then one
  ``INSERT … SELECT DISTINCT ON (lower(trim(email))) … ON CONFLICT DO UPDATE`` into the
  ``contacts`` table itself (same indexes: unique (tenant_id, email), GIN on tags; same foreign
  key to ``tenants``), for a tenant of its own; the table is emptied afterwards;
* **ours**: ``import_file`` then ``merge_staged`` on a fresh tenant, in a child process whose
  peak RSS is reported;
* **pandas**: ``read_csv`` in chunks + ``to_sql`` (the naive reference).

Prints the times, ours/floor and pandas/ours, the peak RSS of ours, and checks that every row
is accounted for (rows_total = new + merged + duplicates + rejected = data rows in the file).
Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench"
TENANT, SOURCE = "bench", "crm"
HEADER = ["Email", "First Name", "Last Name", "Company", "Phone", "Country", "Language", "Tags"]
TARGETS = {"ours_over_floor": 1.5, "peak_rss_bytes": 1 << 30}

FIRST = ["john", "marie", "li", "ahmed", "olga", "pierre", "anna", "josé", "wei", "fatima", "lucas", "zoë",
         "noah", "chloé", "ivan", "sara", "tom", "yuki", "omar", "nina", "françois", "søren", "łukasz", "renée"]
LAST = ["smith", "dupont", "wang", "khan", "ivanova", "martin", "garcia", "müller", "rossi", "kowalski",
        "silva", "nguyen", "jensen", "okafor", "tanaka", "cohen", "brown", "lee", "lefèvre", "núñez"]
DOMAINS = ["gmail.com", "yahoo.fr", "outlook.com", "hotmail.co.uk", "orange.fr", "gmx.de", "example-corp.com",
           "mail.univ-lyon1.fr", "acme.io", "shop.co.jp", "web.de", "free.fr", "bücher.de", "café.fr"]
COMPANIES = ["Acme", "Globex, Inc.", "Initech", "Société Générale", "Umbrella \"Corp\"", "Stark Industries",
             "Wayne Enterprises", "", "", "Müller GmbH", "Line\nBreak Ltd"]
COUNTRIES = ["FR", "France", "DE", "Deutschland", "us", "United States", "", "España", "jp", "UK"]
LANGUAGES = ["fr", "FR", "en", "English", "de-DE", "es", "", "ja", "français", "it"]
TAGS = ["VIP", "Newsletter; Salon Été 2024", "b2b|Lead", "", "", "Customer, vip", "Salon-Été", "  promo  ", "ÉVÉNEMENT"]
BROKEN = ["{l}{d}", "{l}@@{d}", "{l} @{d}", "{l}..x@{d}", ".{l}@{d}", "{l}@{d}.", "{l}@localhost",
          "{l}@{d},com", "\"{l}\"@{d}", "Name <{l}@{d}>", "{l}@{d}@{d}", "{l}@[10.0.0.1]", "", "   ", "n/a"]


# ---------------------------------------------------------------------------------------------
# The file


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(rng.integers(0, len(values), n))


def generate_frame(rows: int, seed: int) -> pl.DataFrame:
    """Seeded messy contact rows (see the module docstring for the mix)."""
    rng = np.random.default_rng(seed)
    first, last, domain = _pick(rng, FIRST, rows), _pick(rng, LAST, rows), _pick(rng, DOMAINS, rows)
    ids = np.arange(rows)
    repeat = rng.random(rows) < 0.05
    ids[repeat] = rng.integers(0, np.maximum(ids[repeat], 1))  # an earlier row's address
    frame = pl.DataFrame({"id": ids, "first": first, "last": last, "domain": domain, "roll": rng.random(rows)})
    frame = frame.with_columns(
        base_first=pl.col("first").gather(pl.col("id")),
        base_last=pl.col("last").gather(pl.col("id")),
        base_domain=pl.col("domain").gather(pl.col("id")),
    )
    local = pl.col("base_first") + "." + pl.col("base_last") + pl.col("id").cast(pl.String)
    ascii_local = local.str.normalize("NFKD").str.replace_all(r"[^\x00-\x7f]", "")
    local = pl.when(pl.col("id") % 50 == 0).then(local).otherwise(ascii_local)  # 2% accented local parts
    email = local + "@" + pl.col("base_domain")
    roll = pl.col("roll")
    email = (
        pl.when(roll < 0.08).then(email.str.to_uppercase())
        .when(roll < 0.12).then(pl.lit("  ") + email + " ")
        .when(roll < 0.14).then(email.str.to_titlecase())
        .otherwise(email)
    )
    bad = rng.random(rows) < 0.03
    templates = _pick(rng, BROKEN, rows)
    broken = pl.Series([t.format(l=l, d=d) for t, l, d in zip(
        templates.filter(bad).to_list(), frame["last"].filter(bad).to_list(), frame["domain"].filter(bad).to_list()
    )], dtype=pl.String)
    emails = frame.select(email).to_series().scatter(np.flatnonzero(bad), broken)
    decomposed = pl.Series([unicodedata.normalize("NFD", n) for n in FIRST], dtype=pl.String)
    first_name = pl.when(roll > 0.9).then(pl.col("first").str.to_uppercase()).otherwise(pl.col("first").str.to_titlecase())
    return frame.with_columns(
        pl.Series("Email", emails),
        first_name.alias("First Name"),
        pl.when(pl.Series(rng.random(rows) < 0.05)).then(decomposed.gather(rng.integers(0, len(FIRST), rows)))
        .otherwise(pl.col("last").str.to_titlecase()).alias("Last Name"),
        _pick(rng, COMPANIES, rows).alias("Company"),
        pl.Series("Phone", [f"+33 6 {n // 10000:04d} {n % 10000:04d}" for n in rng.integers(0, 10**8, rows).tolist()]),
        _pick(rng, COUNTRIES, rows).alias("Country"),
        _pick(rng, LANGUAGES, rows).alias("Language"),
        _pick(rng, TAGS, rows).alias("Tags"),
    ).select(HEADER)


def write_file(path: Path, rows: int, seed: int, batch: int = 1_000_000) -> None:
    with path.open("wb") as out:
        for start in range(0, rows, batch):
            frame = generate_frame(min(batch, rows - start), seed + start)
            if start:  # later batches draw addresses from their own range
                frame = frame.with_columns(pl.col("Email").str.replace(r"(\d+)@", f"${{1}}_{start}@"))
            frame.write_csv(out, include_header=start == 0)


# ---------------------------------------------------------------------------------------------
# Database


def server_url(given: str | None) -> str:
    return (given or os.environ.get(DATABASE_URL_ENV, "").strip()) or database.embedded_server_url()


def recreate_database(url: str) -> str:
    bench_url = database.with_database(url, BENCH_DATABASE)
    database.drop_database(bench_url)
    database.ensure_database(bench_url)
    return bench_url


def checkpoint(engine: sa.Engine) -> None:
    """Start each timed phase without the previous phase's dirty pages or WAL to flush."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")


FLOOR_TABLES = """
CREATE TABLE floor_raw (email text, first_name text, last_name text, company text, phone text,
                        country text, language text, tags text);
INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('floor', 'Floor', '-');
"""

FLOOR_MERGE = """
INSERT INTO contacts AS c (tenant_id, email, first_name, last_name, company, phone, country, language, tags, sources)
SELECT DISTINCT ON (lower(trim(email))) 'floor', lower(trim(email)), nullif(trim(first_name), ''),
       nullif(trim(last_name), ''), nullif(trim(company), ''), nullif(trim(phone), ''),
       nullif(trim(country), ''), nullif(trim(language), ''),
       coalesce(string_to_array(nullif(lower(trim(tags)), ''), ';'), '{}'), '{crm}'
FROM floor_raw
WHERE strpos(trim(email), '@') > 1
ORDER BY lower(trim(email))
ON CONFLICT (tenant_id, email) DO UPDATE SET
    first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, company = EXCLUDED.company,
    phone = EXCLUDED.phone, country = EXCLUDED.country, language = EXCLUDED.language,
    tags = EXCLUDED.tags, updated_at = now()
"""


def run_floor(engine: sa.Engine, path: Path) -> dict:
    checkpoint(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(FLOOR_TABLES)
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy("COPY floor_raw FROM STDIN (FORMAT csv, HEADER true)") as copy, path.open("rb") as fh:
            while block := fh.read(1 << 20):
                copy.write(block)
        copied = time.perf_counter()
        inserted = conn.exec_driver_sql(FLOOR_MERGE).rowcount
    done = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE floor_raw")
        conn.exec_driver_sql("TRUNCATE contacts CASCADE")
        conn.exec_driver_sql("DELETE FROM tenants WHERE tenant_id = 'floor'")
    return {"seconds": done - started, "copy_seconds": copied - started, "merge_seconds": done - copied, "contacts": inserted}


def run_ours(url: str, path: Path, profile: Path | None) -> dict:
    """The product's path in a child process (its own peak RSS, not the generator's)."""
    command = [sys.executable, __file__, "--ours-child", str(path), "--database-url", url]
    if profile:
        command += ["--profile", str(profile)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"ours failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def peak_rss_bytes() -> int:
    """Peak RSS of this process since it started running its own program.

    ``VmHWM`` (Linux) rather than ``ru_maxrss``: the latter keeps, across ``exec``, the peak of the
    parent that spawned the child (here the file generator), which would hide the child's own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ours_child(path: Path, url: str, profile: Path | None) -> None:
    from email_engine_assets.contacts.importer import import_file
    from email_engine_assets.contacts.merge_store import merge_staged
    from email_engine_assets.contacts.store import register_workspace
    from email_engine_assets.tenancy.config import SourceConfig, TenantConfig, Workspace

    engine = database.get_engine(url)
    upgrade(engine)
    source = SourceConfig(id=SOURCE, priority=10)
    tenant = TenantConfig(id=TENANT, name="Bench", sources=[source])
    with engine.begin() as conn:
        register_workspace(conn, Workspace(root=path.parent, tenants={TENANT: tenant}, digests={TENANT: "bench"}))
    checkpoint(engine)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    report = import_file(engine, tenant, source, path)
    imported = time.perf_counter()
    with engine.begin() as conn:
        merged = merge_staged(conn, TENANT)
    done = time.perf_counter()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    if report.status != "imported":
        raise SystemExit(f"import failed: {report.error}")
    with engine.connect() as conn:
        contacts = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": TENANT}).scalar_one()
    print(json.dumps({
        "seconds": done - started, "import_seconds": imported - started, "merge_seconds": done - imported,
        "counts": report.counts, "merge": merged, "contacts": contacts,
        "peak_rss_bytes": peak_rss_bytes(),
    }))


def run_pandas(engine: sa.Engine, path: Path) -> dict:
    import pandas as pd

    checkpoint(engine)
    started = time.perf_counter()
    rows = 0
    for chunk in pd.read_csv(path, chunksize=100_000, dtype=str, keep_default_na=False):
        chunk.to_sql("pandas_contacts", engine, if_exists="append", index=False, chunksize=10_000)
        rows += len(chunk)
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE pandas_contacts")
    return {"seconds": seconds, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Report


def data_rows(path: Path) -> int:
    """Records in the file (quoted line breaks included), by the same CSV rules as COPY."""
    return pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item()


def print_report(rows: int, records: int, floor: dict, ours: dict, pandas: dict | None) -> bool:
    counts = ours["counts"]
    accounted = counts["new"] + counts["merged"] + counts["duplicates"] + counts["rejected"]
    ratio = ours["seconds"] / floor["seconds"]
    rss = ours["peak_rss_bytes"]
    print(f"rows                 {rows:,} ({records:,} records in the file)")
    print(f"floor                {floor['seconds']:8.2f} s  (COPY {floor['copy_seconds']:.2f} s, "
          f"INSERT … ON CONFLICT {floor['merge_seconds']:.2f} s; {floor['contacts']:,} contacts)")
    print(f"ours                 {ours['seconds']:8.2f} s  (import_file {ours['import_seconds']:.2f} s, "
          f"merge_staged {ours['merge_seconds']:.2f} s; {ours['contacts']:,} contacts)")
    if pandas:
        print(f"pandas               {pandas['seconds']:8.2f} s  (read_csv + to_sql, no dedupe or checks)")
    print(f"ours / floor         {ratio:8.2f}   (target <= {TARGETS['ours_over_floor']})")
    if pandas:
        print(f"pandas / ours        {pandas['seconds'] / ours['seconds']:8.2f}")
    print(f"peak RSS of ours     {rss / 2**20:8.0f} MiB (target <= {TARGETS['peak_rss_bytes'] / 2**20:.0f} MiB)")
    balanced = counts["rows_total"] == accounted == records
    print(f"accounting           rows_total {counts['rows_total']:,} = new {counts['new']:,} + merged {counts['merged']:,}"
          f" + duplicates {counts['duplicates']:,} + rejected {counts['rejected']:,}: {'ok' if balanced else 'MISMATCH'}")
    return balanced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile dump of ours here")
    parser.add_argument("--ours-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_child:
        ours_child(args.ours_child, args.database_url, args.profile)
        return
    if args.rows < 1:
        parser.error("--rows must be positive")
    url = server_url(args.database_url)
    bench_url = recreate_database(url)
    try:
        with tempfile.TemporaryDirectory(prefix="email_engine_bench_") as folder:
            path = Path(folder) / "contacts.csv"
            write_file(path, args.rows, args.seed)
            records = data_rows(path)
            engine = database.get_engine(bench_url)
            upgrade(engine)
            floor = run_floor(engine, path)
            ours = run_ours(bench_url, path, args.profile)
            pandas = None if args.skip_pandas else run_pandas(engine, path)
            engine.dispose()
            balanced = print_report(args.rows, records, floor, ours, pandas)
    finally:
        database.drop_database(database.with_database(url, BENCH_DATABASE))
    if not balanced:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
