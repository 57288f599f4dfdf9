"""What erasure costs an import, and what `contact forget` costs, on one server side by side.

    python benchmarks/erasure.py --rows 500000 [--erased 1000] [--database-url URL]

The same generated file (``benchmarks/ingest.py``'s messy CSV) is imported and merged, each time on
a scratch database of its own (``email_engine_bench_erasure_<n>``, dropped after), for three tenants
(interleaved, ``--repeat`` times each, the best time counts):

* **reference**: the import without the erased-address step at all (``reject_erased`` made a no-op:
  the import as it was before erasure existed);
* **no erasures**: ours, for a tenant that never erased anyone (target: the same time, ratio ~1.0);
* **with erasures**: ours, for a tenant with ``--erased`` erased addresses, half of them in the file
  (every staged address is hashed with the tenant's salt and compared in SQL).

Then ``forget`` (the database transaction, :func:`privacy.store.erase`) of one address of the
imported tenant is timed. Prints the times and ratios, and checks that the rows of erased addresses
were rejected as ``erased`` with no raw text and that every file still adds up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import sqlalchemy as sa

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import server_url, write_file  # noqa: E402
from email_engine_assets.contacts import store as contacts_store  # noqa: E402
from email_engine_assets.contacts.importer import import_file  # noqa: E402
from email_engine_assets.contacts.merge_store import merge_staged, unbalanced_imports  # noqa: E402
from email_engine_assets.privacy import store as privacy_store  # noqa: E402
from email_engine_assets.privacy.erasure import erasure_hash  # noqa: E402
from email_engine_assets.privacy.matching import person_of  # noqa: E402
from email_engine_assets.tenancy.config import SourceConfig, TenantConfig, Workspace  # noqa: E402
from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_erasure"
SOURCE = SourceConfig(id="crm")


def tenant(tenant_id: str) -> TenantConfig:
    return TenantConfig(id=tenant_id, name=tenant_id, sources=[SOURCE])


def register(engine: sa.Engine, tenant_id: str, path: Path) -> TenantConfig:
    config = tenant(tenant_id)
    with engine.begin() as conn:
        contacts_store.register_workspace(conn, Workspace(root=path.parent, tenants={tenant_id: config}, digests={tenant_id: "b"}))
    return config


def timed_import(engine: sa.Engine, tenant_id: str, path: Path) -> tuple[float, dict]:
    config = register(engine, tenant_id, path)
    started = time.perf_counter()
    report = import_file(engine, config, SOURCE, path)
    with engine.begin() as conn:
        merge_staged(conn, tenant_id)
    elapsed = time.perf_counter() - started
    if report.status != "imported":
        raise SystemExit(f"{tenant_id}: import failed: {report.error}")
    return elapsed, report.counts


def erase_addresses(engine: sa.Engine, tenant_id: str, keys: list[str]) -> None:
    """Record ``keys`` as erased for the tenant (as ``forget`` leaves them), before the tenant imports anything."""
    with engine.begin() as conn:
        salt = privacy_store.tenant_salt(conn, tenant_id)
        conn.execute(sa.text("INSERT INTO erased_addresses (tenant_id, email_hash) VALUES (:t, :h)"),
                     [{"t": tenant_id, "h": erasure_hash(salt, k)} for k in keys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--erased", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant (the best one counts)")
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    args = parser.parse_args()
    url = server_url(args.database_url)
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="email_engine_bench_") as folder:
            path = Path(folder) / "contacts.csv"
            write_file(path, args.rows, args.seed)
            # Addresses of the file (the import's key is lowercase and trimmed, as here for plain ASCII ones).
            keys = (pl.read_csv(path, columns=["Email"], infer_schema=False)["Email"].str.strip_chars().str.to_lowercase()
                    .drop_nulls().unique(maintain_order=True))
            keys = [k for k in keys.to_list() if k.count("@") == 1][: args.erased // 2]
            keys += [f"absent{i}@nowhere.example" for i in range(args.erased - len(keys))]

            def fresh() -> sa.Engine:
                """Each import on a database of its own: no variant inherits the tables another one grew."""
                if made:
                    database.get_engine(made[-1]).dispose()
                    database.drop_database(made[-1])
                made.append(database.with_database(url, f"{BENCH_DATABASE}_{len(made)}"))
                database.ensure_database(made[-1])
                fresh_engine = database.get_engine(made[-1])
                upgrade(fresh_engine)
                return fresh_engine

            def reference_run() -> float:
                real = contacts_store.reject_erased
                contacts_store.reject_erased = lambda conn, tenant_id, file_id: 0
                try:
                    return timed_import(fresh(), "reference", path)[0]
                finally:
                    contacts_store.reject_erased = real

            def erasing_run() -> tuple[float, dict]:
                eng = fresh()
                register(eng, "erasing", path)
                erase_addresses(eng, "erasing", keys)
                return timed_import(eng, "erasing", path)

            times: dict[str, list[float]] = {"reference": [], "plain": [], "erasing": []}
            for _ in range(args.repeat):  # interleaved, best of each: the machine's noise hits all three alike
                times["reference"].append(reference_run())
                elapsed, plain_counts = timed_import(fresh(), "plain", path)
                times["plain"].append(elapsed)
                elapsed, erasing_counts = erasing_run()
                times["erasing"].append(elapsed)
            reference, plain, erasing = (min(times[k]) for k in ("reference", "plain", "erasing"))
            engine = database.get_engine(made[-1])  # holds the last erasing run; a tenant to forget someone from
            timed_import(engine, "plain", path)

            with engine.connect() as conn:
                erased_rows = conn.execute(sa.text(
                    "SELECT count(*), count(*) FILTER (WHERE raw_text <> '') FROM rejected_rows WHERE tenant_id = 'erasing' AND reason = 'erased'"
                )).one()
                victim = conn.execute(sa.text("SELECT email FROM contacts WHERE tenant_id = 'plain' ORDER BY contact_id LIMIT 1")).scalar_one()
            started = time.perf_counter()
            with engine.begin() as conn:
                counts, _sends = privacy_store.erase(conn, "plain", person_of(victim))
            forget = time.perf_counter() - started
            with engine.connect() as conn:
                balanced = not unbalanced_imports(conn, "plain") and not unbalanced_imports(conn, "erasing")
            engine.dispose()
    finally:
        for bench_url in made[-1:]:
            database.get_engine(bench_url).dispose()
            database.drop_database(bench_url)

    print(f"rows: {args.rows:,}; erased addresses: {args.erased:,} ({args.erased // 2:,} of them in the file)")
    print(f"reference (no erasure step)   {reference:8.2f} s")
    print(f"ours, tenant without erasures {plain:8.2f} s   ratio {plain / reference:5.2f} (target ~1.0)")
    print(f"ours, tenant with erasures    {erasing:8.2f} s   ratio {erasing / reference:5.2f}")
    print(f"rows rejected as erased: {erased_rows[0]:,} (with raw text: {erased_rows[1]}); "
          f"rejected {plain_counts['rejected']:,} -> {erasing_counts['rejected']:,}")
    print(f"forget of one address (database transaction) {forget * 1000:8.1f} ms: {counts}")
    if erased_rows[1] or not erased_rows[0] or not balanced:
        raise SystemExit("FAILED: erased rows kept raw text, none were rejected, or a file does not add up")


if __name__ == "__main__":
    main()
