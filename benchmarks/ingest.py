"""End-to-end ingestion against the in-database floor, same file, same server, sides interleaved.

    python benchmarks/ingest.py --rows 1000000 [--repeat 3] [--database-url URL] [--library] [--pandas]
                                [--file PATH] [--cli-timeout SECONDS]
    python benchmarks/ingest.py --rows 100000 --repeat 1      # a quick check

Generates a seeded messy CSV (about 5% repeated addresses in other case and spacing, about 3% bad
rows of several kinds, accents in composed and decomposed form, quoted fields with delimiters
and line breaks; columns Email, First Name, Last Name, Company, Phone, Country, Language, Tags),
then, ``--repeat`` times, each round in a fresh scratch database ``email_engine_bench`` (dropped at
the end) and the sides' order alternating from round to round, times:

* **floor**: in one transaction on one connection, ``COPY`` of the raw file into an unindexed
  table, then one ``INSERT … SELECT DISTINCT ON (lower(trim(email))) … ON CONFLICT DO UPDATE``
  into the ``contacts`` table itself (so with its indexes: primary key, unique (tenant_id, email),
  unique (tenant_id, contact_id), GIN on tags, and its foreign key to ``tenants``) for a tenant of its own, keeping rows whose
  trimmed email has an ``@`` after its first character; then the commit. No rejects recorded, no
  ledger, no provenance. The table is emptied afterwards;
* **cli**: ``email-engine import FILE --tenant cliN --source crm --json --no-quality`` as a
  subprocess (Python start-up included), from its start to the merge commit, seen from outside by
  a connection that polls the file's ``merged_at`` every 50 ms; also reported: the moment its
  JSON counts reach stdout (after the ``contacts`` checks that follow the commit) and its exit.
  The scratch database is also its Dagster storage, created before the round by a small warm-up
  import (as on any installation after its first run);
* **library** (``--library``): ``import_file`` then ``merge_staged`` in a child process (no CLI,
  no Dagster run), with its peak RSS;
* **pandas** (``--pandas``, once): ``read_csv`` in chunks + ``to_sql`` (the naive reference).

Prints each round, then the medians, cli/floor and the load average, and checks that every row
is accounted for (rows_total = new + merged + duplicates + rejected = data rows in the file).
``--file`` keeps the generated file (reused when it exists); ``--cli-timeout`` stops a CLI still
running that long after its merge commit (the commit is timed, the counts come from the ledger).
Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server; the
scratch database's name can be changed with ``EMAIL_ENGINE_BENCH_DATABASE``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources import migrations  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = os.environ.get("EMAIL_ENGINE_BENCH_DATABASE", "email_engine_bench")
TENANT, SOURCE = "bench", "crm"
HEADER = ["Email", "First Name", "Last Name", "Company", "Phone", "Country", "Language", "Tags"]
TARGETS = {"cli_over_floor": 1.5, "peak_rss_bytes": 1 << 30}
PROJECT_ROOT = Path(__file__).resolve().parents[1]

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
        merged = time.perf_counter()
    done = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE floor_raw")
        conn.exec_driver_sql("TRUNCATE contacts CASCADE")
        conn.exec_driver_sql("DELETE FROM tenants WHERE tenant_id = 'floor'")
    return {"seconds": done - started, "copy_seconds": copied - started, "merge_seconds": merged - copied,
            "commit_seconds": done - merged, "contacts": inserted}


TENANT_FILE = """id: {tenant}
name: Bench {tenant}
sources:
  - id: crm
    priority: 10
"""


def cli_environment(url: str, folder: Path) -> dict:
    """``email-engine``'s environment: the scratch database as the application and Dagster storage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_ENGINE_", "DAGSTER_"))}
    return {**env, DATABASE_URL_ENV: url, "EMAIL_ENGINE_HOME": str(folder / "home"),
            "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}


def make_workspace(folder: Path, tenants: list[str]) -> Path:
    workspace = folder / "workspace"
    (workspace / "tenants").mkdir(parents=True, exist_ok=True)
    for tenant in tenants:
        (workspace / "tenants" / f"{tenant}.yaml").write_text(TENANT_FILE.format(tenant=tenant))
    return workspace


def run_cli(url: str, path: Path, folder: Path, tenant: str, timeout: float) -> dict:
    """``email-engine import`` in a subprocess, timed from outside: start -> merge commit, counts on stdout, exit.

    A CLI still running ``timeout`` seconds after the merge commit (its checks, say) is killed: the
    commit is timed, its counts and exit are not; the file's counts then come from the ledger.
    """
    workspace = make_workspace(folder, [tenant])
    command = [sys.executable, "-m", "email_engine_assets.cli", "--workspace", str(workspace),
               "import", str(path), "--tenant", tenant, "--source", SOURCE, "--json", "--no-quality"]
    with tempfile.TemporaryFile() as stderr, MergeWatch(url, tenant) as watch:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=cli_environment(url, folder), cwd=folder, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        killer = threading.Thread(target=_kill_late, args=(proc, watch, timeout), daemon=True)
        killer.start()
        first = proc.stdout.readline()
        counted = time.perf_counter()
        rest = proc.stdout.read()
        code = proc.wait()
        done = time.perf_counter()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if watch.seen is None:
        raise SystemExit(f"email-engine import: no merge commit seen for {tenant}:\n{first}{rest}\n{errors}")
    if watch.killed:
        return {"seconds": watch.seen - started, "counts_seconds": None, "exit_seconds": None,
                "counts": ledger_counts(url, tenant), "killed_after": timeout}
    if code != 0 or not first.strip():
        raise SystemExit(f"email-engine import failed ({code}):\n{first}{rest}\n{errors}")
    counts = json.loads(first)
    if counts["status"] != "imported":
        raise SystemExit(f"email-engine import: {counts}")
    return {"seconds": watch.seen - started, "counts_seconds": counted - started, "exit_seconds": done - started,
            "counts": counts}


def _kill_late(proc: subprocess.Popen, watch: MergeWatch, timeout: float) -> None:
    while proc.poll() is None:
        if watch.seen is not None and time.perf_counter() - watch.seen > timeout:
            watch.killed = True
            proc.kill()
            end_statements(watch.url)  # the server would go on with the killed CLI's statement
            return
        time.sleep(0.2)


def end_statements(url: str) -> None:
    """End every statement still running in the scratch database (this benchmark is its only user)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'")


def ledger_counts(url: str, tenant: str) -> dict:
    engine = database.get_engine(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT rows_total, new, merged, duplicates, rejected FROM import_files "
                                   "WHERE tenant_id = :t AND status = 'imported'"), {"t": tenant}).one()
        total = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": tenant}).scalar_one()
    return {**row._asdict(), "contacts_total": total}


class MergeWatch:
    """Sees the merge commit from outside: polls, on a connection of its own, until the tenant's file
    has ``merged_at`` (set by the merge's transaction, so visible once it committed)."""

    POLL_SECONDS = 0.05

    def __init__(self, url: str, tenant: str) -> None:
        self.url, self.tenant, self.seen, self.killed = database.sqlalchemy_url(url).replace("+psycopg", ""), tenant, None, False
        self._stop = threading.Event()

    def __enter__(self) -> MergeWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                merged = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM import_files WHERE tenant_id = %s AND merged_at IS NOT NULL)", [self.tenant]
                ).fetchone()[0]
                if merged:
                    self.seen = time.perf_counter()
                    return
                self._stop.wait(self.POLL_SECONDS)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def warm_up(url: str, folder: Path) -> None:
    """A small import first: Dagster's storage schema, the instance and the page cache are ready before the clock."""
    path = folder / "warm.csv"
    path.write_text("email,first_name\n" + "".join(f"w{i}@example.com,W\n" for i in range(100)))
    run_cli(url, path, folder, "warm", 600)


def run_library(url: str, path: Path, profile: Path | None) -> dict:
    """``import_file`` + ``merge_staged`` in a child process (its own peak RSS, not the generator's)."""
    command = [sys.executable, __file__, "--library-child", str(path), "--database-url", url]
    if profile:
        command += ["--profile", str(profile)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"library failed:\n{completed.stderr}")
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


def library_child(path: Path, url: str, profile: Path | None) -> None:
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


def accounted(counts: dict, records: int) -> bool:
    return counts["rows_total"] == counts["new"] + counts["merged"] + counts["duplicates"] + counts["rejected"] == records


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def _shown(seconds: float | None, cli: dict) -> str:
    return f"{seconds:.2f}" if seconds is not None else f"killed {cli['killed_after']:.0f} s after the commit"


def print_round(number: int, results: dict) -> None:
    floor = results["floor"]
    if "cli" not in results:
        print(f"round {number}: floor {floor['seconds']:6.2f} s   library {results['library']['seconds']:.2f} s "
              f"(import_file {results['library']['import_seconds']:.2f} + merge_staged {results['library']['merge_seconds']:.2f})"
              f"   [{load()}]", flush=True)
        return
    cli = results["cli"]
    print(f"round {number}: floor {floor['seconds']:6.2f} s (COPY {floor['copy_seconds']:.2f} + INSERT {floor['merge_seconds']:.2f} "
          f"+ commit {floor['commit_seconds']:.2f})   cli {cli['seconds']:6.2f} s (counts {_shown(cli['counts_seconds'], cli)}, "
          f"exit {_shown(cli['exit_seconds'], cli)})   "
          f"cli/floor {cli['seconds'] / floor['seconds']:.2f}"
          + (f"   library {results['library']['seconds']:.2f} s" if "library" in results else "") + f"   [{load()}]", flush=True)


def print_summary(rows: int, records: int, rounds: list[dict], pandas: dict | None) -> bool:
    def median(side: str, key: str = "seconds") -> float:
        values = [r[side][key] for r in rounds if r[side].get(key) is not None]
        return statistics.median(values) if values else float("nan")

    floor, cli = median("floor"), median("cli")
    counts = rounds[-1]["cli"]["counts"]
    print(f"\nrows                 {rows:,} ({records:,} records in the file), median of {len(rounds)} round(s)")
    print(f"floor                {floor:8.2f} s  (COPY {median('floor', 'copy_seconds'):.2f} s, INSERT … ON CONFLICT "
          f"{median('floor', 'merge_seconds'):.2f} s; {rounds[-1]['floor']['contacts']:,} contacts)")
    print(f"cli                  {cli:8.2f} s  (start -> merge commit seen; counts printed {median('cli', 'counts_seconds'):.2f} s,"
          f" exit {median('cli', 'exit_seconds'):.2f} s; {counts['contacts_total']:,} contacts)")
    counted_ratios = [r["cli"]["counts_seconds"] / r["floor"]["seconds"] for r in rounds if r["cli"]["counts_seconds"] is not None]
    counted = statistics.median(counted_ratios) if counted_ratios else float("nan")
    ratios = sorted(r["cli"]["seconds"] / r["floor"]["seconds"] for r in rounds)
    print(f"cli / floor          {statistics.median(ratios):8.2f}   (per round: {', '.join(f'{x:.2f}' for x in ratios)};"
          f" target <= {TARGETS['cli_over_floor']})")
    print(f"counts / floor       {counted:8.2f}   (to the counts on stdout, after the contacts checks;"
          f" {sum(r['cli']['counts_seconds'] is None for r in rounds)} round(s) killed before)")
    balanced = all(accounted(r["cli"]["counts"], records) for r in rounds)
    if "library" in rounds[-1]:
        library = median("library")
        rss = max(r["library"]["peak_rss_bytes"] for r in rounds)
        print(f"library              {library:8.2f} s  (import_file {median('library', 'import_seconds'):.2f} s, "
              f"merge_staged {median('library', 'merge_seconds'):.2f} s); library / floor {library / floor:.2f}")
        print(f"peak RSS of library  {rss / 2**20:8.0f} MiB (target <= {TARGETS['peak_rss_bytes'] / 2**20:.0f} MiB)")
        balanced = balanced and all(accounted(r["library"]["counts"], records) for r in rounds)
    if pandas:
        print(f"pandas               {pandas['seconds']:8.2f} s  (read_csv + to_sql, no dedupe or checks); pandas / cli {pandas['seconds'] / cli:.2f}")
    print(f"accounting           rows_total {counts['rows_total']:,} = new {counts['new']:,} + merged {counts['merged']:,}"
          f" + duplicates {counts['duplicates']:,} + rejected {counts['rejected']:,}: {'ok' if balanced else 'MISMATCH'}")
    print(f"load                 {load()}")
    return balanced


def one_round(number: int, url: str, path: Path, folder: Path, library: bool, profile: Path | None, cli: bool = True,
              cli_timeout: float = 600) -> dict:
    """A fresh scratch database, the CLI warmed up on it, then the sides in an order that alternates by round."""
    bench_url = recreate_database(url)
    engine = database.get_engine(bench_url)
    migrations._UP_TO_DATE.clear()  # a process migrates a database once: this one is new
    upgrade(engine)
    if cli:
        warm_up(bench_url, folder)
    sides = ["floor", *(["cli"] if cli else []), *(["library"] if library else [])]
    if number % 2 == 0:
        sides.reverse()
    results = {}
    for side in sides:
        checkpoint(engine)
        if side == "floor":
            results[side] = run_floor(engine, path)
        elif side == "cli":
            results[side] = run_cli(bench_url, path, folder, f"cli{number}", cli_timeout)
        else:
            results[side] = run_library(bench_url, path, profile)
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (fresh database each); medians are reported")
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    parser.add_argument("--library", action="store_true", help="also time import_file + merge_staged in process")
    parser.add_argument("--no-cli", action="store_true", help=argparse.SUPPRESS)  # profiling the library side alone
    parser.add_argument("--pandas", action="store_true", help="also time read_csv + to_sql once")
    parser.add_argument("--cli-timeout", type=float, default=600, help="kill the CLI this long after its merge commit")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile dump of the library side here")
    parser.add_argument("--file", type=Path, default=None, help="keep the generated file here (reused when it exists)")
    parser.add_argument("--library-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_child:
        library_child(args.library_child, args.database_url, args.profile)
        return
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")
    url = server_url(args.database_url)
    print(f"server {database.with_database(url, BENCH_DATABASE).rsplit('@', 1)[-1]}; {load()}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="email_engine_bench_") as name:
            folder = Path(name)
            path = args.file or folder / "contacts.csv"
            if not path.exists():
                write_file(path, args.rows, args.seed)
            records = data_rows(path)
            rounds = []
            for number in range(1, args.repeat + 1):
                rounds.append(one_round(number, url, path, folder, args.library, args.profile, not args.no_cli, args.cli_timeout))
                print_round(number, rounds[-1])
                shutil.rmtree(folder / "workspace", ignore_errors=True)
            pandas = None
            if args.pandas:
                engine = database.get_engine(database.with_database(url, BENCH_DATABASE))
                pandas = run_pandas(engine, path)
                engine.dispose()
            balanced = args.no_cli or print_summary(args.rows, records, rounds, pandas)
    finally:
        database.drop_database(database.with_database(url, BENCH_DATABASE))
    if not balanced:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
