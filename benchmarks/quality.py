"""Quality assets on a large tenant: chunked by contact id against the same work on the whole tenant at once.

    python benchmarks/quality.py --contacts 1000000 [--chunk 100000] [--writers 2] [--database-url URL] [--skip-reference]

Builds a tenant through the real import path (the messy file of ``benchmarks/ingest.py``,
``import_file`` + ``merge_staged``) in a scratch database ``email_engine_bench_quality`` that is
dropped at the end, warms the shared ``dns_cache`` with every domain of the tenant (the resolver
points at a closed port: a cache miss would show as ``unknown``), then materializes
``email_validations``, ``contact_enrichment`` and ``tag_assignments`` with ``dg.materialize``:

* **ours**: ``contacts_per_chunk`` = ``--chunk``, ``chunk_writers`` = ``--writers`` (chunks written at once);
* **reference**: one chunk holding the whole tenant (the work as it was done before chunking).

Each side starts from no verdict, enrichment or tag and runs in a child process whose peak RSS is
reported. Prints seconds per asset, the total, peak RSS, and reference/ours.
Targets (BRIEF §4): < 60 s in all on 1M contacts, and linear above (< 600 s on 10M), peak RSS <= 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import peak_rss_bytes, server_url, write_file  # noqa: E402

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_quality"
TENANT, SOURCE = "bench", "crm"
TARGETS = {"total_seconds": 60.0, "peak_rss_bytes": 1 << 30}
QUALITY_TABLES = "email_validations, contact_enrichment, tag_assignments, validation_runs"
TENANT_YAML = f"""
id: {TENANT}
name: Bench
sources:
  - id: {SOURCE}
    priority: 10
tag_rules:
  - name: french
    tag: marche fr
    all: [{{field: country, equals: FR}}]
  - name: companies
    tag: b2b
    all: [{{field: company, exists: true}}]
    exclude: [{{field: tags, contains: vip}}]
  - name: bad_addresses
    tag: do not mail
    any: [{{field: verdict, in: [invalid]}}, {{field: flags, contains: disposable}}]
"""


def build_tenant(engine: sa.Engine, workspace: Path, contacts: int, seed: int) -> int:
    """Import the generated file for the tenant and warm the DNS cache; returns the contact count."""
    from email_engine_assets.contacts.importer import import_file
    from email_engine_assets.contacts.merge_store import merge_staged
    from email_engine_assets.contacts.store import register_workspace
    from email_engine_assets.tenancy.config import load_workspace

    (workspace / "tenants").mkdir(parents=True)
    (workspace / "tenants" / f"{TENANT}.yaml").write_text(textwrap.dedent(TENANT_YAML), encoding="utf-8")
    ws = load_workspace(workspace)
    tenant = ws.tenants[TENANT]
    path = workspace / "contacts.csv"
    write_file(path, contacts, seed)
    with engine.begin() as conn:
        register_workspace(conn, ws)
    report = import_file(engine, tenant, tenant.source(SOURCE), path)
    if report.status != "imported":
        raise SystemExit(f"import failed: {report.error}")
    path.unlink()
    with engine.begin() as conn:
        merge_staged(conn, TENANT)
        conn.exec_driver_sql(
            """INSERT INTO dns_cache (domain, status, mx_hosts, ttl_s, expires_at)
               SELECT DISTINCT split_part(email, '@', 2), 'mx', ARRAY['mx.' || split_part(email, '@', 2)], 86400,
                      now() + interval '1 day'
               FROM contacts ON CONFLICT (domain) DO NOTHING"""
        )
        conn.exec_driver_sql("ANALYZE")
        return conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": TENANT}).scalar_one()


def run_side(url: str, workspace: Path, chunk: int, writers: int) -> dict:
    """One side in a child process (its own peak RSS)."""
    engine = database.get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {QUALITY_TABLES}")
        conn.exec_driver_sql("UPDATE contacts SET tags = '{}' WHERE tags <> '{}'")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE contacts")
        conn.exec_driver_sql("CHECKPOINT")
    command = [sys.executable, __file__, "--side-child", str(workspace), "--database-url", url, "--chunk", str(chunk),
               "--writers", str(writers)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"side failed:\n{completed.stderr[-5000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def side_child(workspace: Path, url: str, chunk: int, writers: int) -> None:
    import dagster as dg

    from email_engine_assets.audiences.assets import tag_assignments
    from email_engine_assets.quality.assets import contact_enrichment, email_validations
    from email_engine_resources.dns import DnsResolverResource
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.smtp_probe import SmtpProbeResource
    from email_engine_resources.workspace import WorkspaceResource
    from email_engine_tests.smtp_server import free_port

    resources = {
        "db": PostgresResource(url=url),
        "workspace": WorkspaceResource(path=str(workspace)),
        "dns": DnsResolverResource(nameservers=["127.0.0.1"], port=free_port("127.0.0.1"), timeout_s=0.2, retries=0),
        "smtp_probe": SmtpProbeResource(),
    }
    seconds, metadata = {}, {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", [TENANT])
        for asset in (email_validations, contact_enrichment, tag_assignments):
            name = asset.op.name
            started = time.perf_counter()
            result = dg.materialize(
                [asset], partition_key=TENANT, instance=instance, resources=resources,
                run_config={"ops": {name: {"config": {"contacts_per_chunk": chunk, "chunk_writers": writers}}},
                            "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            seconds[name] = time.perf_counter() - started
            meta = result.asset_materializations_for_node(name)[0].metadata
            metadata[name] = {k: v.value for k, v in meta.items() if isinstance(v.value, int | float)}
    print(json.dumps({"seconds": seconds, "metadata": metadata, "peak_rss_bytes": peak_rss_bytes()}))


def print_side(label: str, side: dict) -> None:
    total = sum(side["seconds"].values())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in side["seconds"].items())
    print(f"{label:<20} {total:8.1f} s  ({parts}); peak RSS {side['peak_rss_bytes'] / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000, help="rows of the generated file (about 93%% become contacts)")
    parser.add_argument("--chunk", type=int, default=100_000, help="contacts per chunk of ours")
    parser.add_argument("--writers", type=int, default=2, help="chunks of ours written at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help=f"server URL (default: ${DATABASE_URL_ENV}, else embedded)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--side-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side_child:
        side_child(args.side_child, args.database_url, args.chunk, args.writers)
        return
    url = server_url(args.database_url)
    bench_url = database.with_database(url, BENCH_DATABASE)
    database.drop_database(bench_url)
    database.ensure_database(bench_url)
    try:
        with tempfile.TemporaryDirectory(prefix="email_engine_bench_quality_") as folder:
            workspace = Path(folder)
            engine = database.get_engine(bench_url)
            upgrade(engine)
            started = time.perf_counter()
            contacts = build_tenant(engine, workspace, args.contacts, args.seed)
            print(f"tenant               {contacts:,} contacts (built in {time.perf_counter() - started:.0f} s)")
            ours = run_side(bench_url, workspace, args.chunk, args.writers)
            reference = None if args.skip_reference else run_side(bench_url, workspace, max(contacts, 1), 1)
            engine.dispose()
    finally:
        database.drop_database(bench_url)
    total = sum(ours["seconds"].values())
    print_side(f"ours (chunk {args.chunk:,} x{args.writers})", ours)
    if reference:
        print_side("reference (1 chunk)", reference)
        print(f"reference / ours     {sum(reference['seconds'].values()) / total:8.2f}   "
              f"(RSS {reference['peak_rss_bytes'] / ours['peak_rss_bytes']:.1f}x)")
    target = TARGETS["total_seconds"] * max(1.0, args.contacts / 1_000_000)  # linear above 1M
    print(f"ours total           {total:8.1f} s  (target < {target:.0f} s)")
    print(f"ours peak RSS        {ours['peak_rss_bytes'] / 2**20:8.0f} MiB (target <= {TARGETS['peak_rss_bytes'] / 2**20:.0f} MiB)")
    checked = ours["metadata"]["email_validations"]
    print(f"verdicts             checked {checked.get('checked', 0):,}, dns lookups {checked.get('dns_lookups', 0):,}, "
          f"unknown {checked.get('unknown', 0):,}")


if __name__ == "__main__":
    main()
