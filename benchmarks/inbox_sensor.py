"""The inbox sensor and the import runs it requests, at the scale of many tenants × sources.

    python benchmarks/inbox_sensor.py [--tenants 1000] [--sources 20] [--import-runs N] [--downstream-tenants 5 | --no-downstream] [--database-url URL]

Builds a temporary workspace of ``tenants`` tenant files with ``sources`` sources each and one small
settled file per (tenant, source), in a scratch database ``email_engine_bench_inbox`` (dropped at
the end) and a temporary Dagster instance whose run and event storage is PostgreSQL (database
``email_engine_bench_inbox_dagster``, dropped too), as in a deployment. Then:

* **ticks**: the inbox sensor ticks (``build_sensor_context``) until it requests nothing more;
  prints each tick's time, its run requests and the cursor size (targets: a tick under 10 s,
  at most ``MAX_RUNS_PER_TICK`` requests, a cursor well under 1 MB);
* **imports**: executes the requested runs (``import_job`` over blocks of tenants × sources, up to
  ``MAX_PARTITIONS_PER_RUN`` partitions each) and, side by side, two references on tenants of the
  last block (imported first, so that block finds them in the ledger): one run per tenant over its
  sources (what the sensor asked for before) and one run per (tenant, source) partition; prints
  files per second of each, ours / each, and the time all the files would take at that rate;
* the fixed cost of a run: the first block again when the ledger holds all its files;
* **downstream**: ``tenant_job`` (tenant files, contacts merge, validations, enrichment, tags,
  segments) first one run per tenant for ``--downstream-tenants`` tenants (the reference: how it
  ran before), then over ranges of all the other tenants, up to ``MAX_TENANTS_PER_RUN`` a run, as
  the backfill automation emits after the imports launches them (single-run backfill policy) and
  ``email-engine run`` executes them (DNS cache warmed, resolver on a closed port); prints both,
  then import, downstream and total time for every tenant;
* a last tick after the imports, from an empty cursor: the ledger alone must make it request nothing.

Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import (  # noqa: E402
    DAGSTER_ENV_DEFAULTS,
    DATABASE_URL_ENV,
    WORKSPACE_ENV,
)

BENCH_DATABASE = "email_engine_bench_inbox"
REFERENCE_TENANTS = 5
TICK_TARGET_S = 10.0


def build_workspace(root: Path, tenants: int, sources: int) -> None:
    (root / "tenants").mkdir(parents=True)
    old = time.time() - 3600
    for t in range(tenants):
        tenant = f"tenant{t:04}"
        lines = [f"id: {tenant}", f"name: Tenant {t}", "sources:"]
        lines += [f"  - id: source{s:02}\n    priority: {100 - s}" for s in range(sources)]
        (root / "tenants" / f"{tenant}.yaml").write_text("\n".join(lines) + "\n")
        for s in range(sources):
            folder = root / "inbox" / tenant / f"source{s:02}"
            folder.mkdir(parents=True)
            path = folder / "contacts.csv"
            path.write_text(f"email,first_name\nu{s}a@{tenant}.example,A\nu{s}b@{tenant}.example,B\nshared@example.org,S\n")
            # files arrive at different times: each has its own (size, mtime) signature in the cursor
            os.utime(path, (old - t * sources - s, old - t * sources - s))


def tick(instance, cursor):
    from email_engine_assets.contacts.sensors import inbox_sensor
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.workspace import WorkspaceResource

    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"workspace": WorkspaceResource(), "db": PostgresResource()})
    started = time.perf_counter()
    result = inbox_sensor(context)
    seconds = time.perf_counter() - started
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--import-runs", type=int, default=None, help="execute only the first N requested runs (default: all)")
    parser.add_argument("--downstream-tenants", type=int, default=5,
                        help="tenants run one run each first, for reference; then tenant_job over ranges of all the others")
    parser.add_argument("--no-downstream", dest="downstream_tenants", action="store_const", const=None, help="skip the downstream")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    for key, value in DAGSTER_ENV_DEFAULTS.items():  # as `email-engine` sets them for the UI, daemon and runs
        os.environ.setdefault(key, value)
    server = args.database_url or os.environ.get(DATABASE_URL_ENV) or database.embedded_server_url()
    url = database.with_database(server, BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    os.environ[DATABASE_URL_ENV] = url
    upgrade(database.get_engine(url))
    # Dagster's run and event storage in PostgreSQL, as a deployment has it (dagster.yaml): each
    # partition of a run writes its events there.
    dagster_url = database.with_database(server, BENCH_DATABASE + "_dagster")
    database.drop_database(dagster_url)
    database.ensure_database(dagster_url)
    storage = {"storage": {"postgres": {"postgres_url": database.dagster_driver_url(dagster_url)}}}
    try:
        with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test(overrides=storage) as instance:
            root = Path(tmp) / "workspace"
            started = time.perf_counter()
            build_workspace(root, args.tenants, args.sources)
            os.environ[WORKSPACE_ENV] = str(root)
            files = args.tenants * args.sources
            print(f"workspace: {args.tenants} tenants x {args.sources} sources = {files} files ({time.perf_counter() - started:.1f}s to build)")
            return run(instance, args, files)
    finally:
        database.get_engine(url).dispose()
        database.drop_database(url)
        database.drop_database(dagster_url)


def covered_tenants(instance, request) -> list[str]:
    """The tenants a run request covers: its ``tenant`` tag, or the tenant dimension between its range's corners."""
    from email_engine_assets.tenancy.partitions import (
        RANGE_END_TAG,
        RANGE_START_TAG,
        tenant_and_source,
    )

    if "tenant" in request.tags:
        return [request.tags["tenant"]]
    first, last = (tenant_and_source(request.tags[tag])[0] for tag in (RANGE_START_TAG, RANGE_END_TAG))
    order = list(instance.get_dynamic_partitions("tenant"))
    return order[order.index(first) : order.index(last) + 1]


def imported_files(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM import_files WHERE status = 'imported'").scalar_one()


def timed_runs(job, instance, runs: list[dict], label: str | None = None) -> float:
    """Seconds to execute ``runs`` one after the other; with ``label``, each run's time is printed
    (a per-file cost that grows with the staged rows shows as blocks that get slower)."""
    started = time.perf_counter()
    for n, run in enumerate(runs, 1):
        run_started = time.perf_counter()
        assert job.execute_in_process(instance=instance, **run).success
        if label:
            print(f"{label} {n:>3}/{len(runs)}: {time.perf_counter() - run_started:6.1f}s", flush=True)
    return time.perf_counter() - started


def run(instance, args, files: int) -> int:
    from email_engine_assets.contacts.sensors import (
        MAX_PARTITIONS_PER_RUN,
        MAX_RUNS_PER_TICK,
    )
    from email_engine_assets.definitions import defs
    from email_engine_assets.tenancy.partitions import import_key, import_run_request
    from email_engine_resources.postgres import get_engine

    engine = get_engine()
    requests, cursor, ticks = [], None, []
    while True:
        result, seconds = tick(instance, cursor)
        cursor = result.cursor
        ticks.append((seconds, len(result.run_requests), len(cursor)))
        print(f"tick {len(ticks):>3}: {seconds:6.2f}s  {len(result.run_requests):>5} run requests  cursor {len(cursor) / 1024:7.1f} KiB")
        if not result.run_requests:
            break
        requests += result.run_requests
    worst = max(t[0] for t in ticks)
    print(f"ticks: {len(ticks)}, slowest {worst:.2f}s (target < {TICK_TARGET_S:.0f}s), "
          f"most requests in a tick {max(t[1] for t in ticks)} (cap {MAX_RUNS_PER_TICK}), {len(requests)} runs for {files} files "
          f"(at most {MAX_PARTITIONS_PER_RUN} partitions a run)")

    job = defs.resolve_job_def("import_job")
    chosen = requests[: args.import_runs] if args.import_runs else requests
    # The references import tenants of the last block first; that block then finds their files in the ledger.
    spare = covered_tenants(instance, chosen[-1])[-2 * REFERENCE_TENANTS :]
    per_source, per_tenant = spare[:REFERENCE_TENANTS], spare[REFERENCE_TENANTS:]
    sources = [f"source{s:02}" for s in range(args.sources)]
    before = imported_files(engine)
    per_source_s = timed_runs(job, instance, [
        {"partition_key": import_key(t, s), "tags": {"tenant": t}} for t in per_source for s in sources
    ])
    tenant_requests = [import_run_request(t, sources[0], sources[-1], run_key="", tags={"tenant": t}) for t in per_tenant]
    per_tenant_s = timed_runs(job, instance, [{"partition_key": r.partition_key, "tags": r.tags} for r in tenant_requests])
    reference_files = imported_files(engine) - before
    before = imported_files(engine)
    ours_s = timed_runs(job, instance, [{"partition_key": r.partition_key, "tags": r.tags} for r in chosen], label="block")
    ours_files = imported_files(engine) - before
    rates = {
        "one run per block of tenants (ours)": (len(chosen), ours_files, ours_s),
        "one run per tenant (before)": (len(per_tenant), len(per_tenant) * args.sources, per_tenant_s),
        "one run per (tenant, source) (reference)": (len(per_source) * args.sources, len(per_source) * args.sources, per_source_s),
    }
    assert reference_files == 2 * REFERENCE_TENANTS * args.sources, reference_files
    ours_rate = ours_files / ours_s
    for name, (runs, n, seconds) in rates.items():
        rate = n / seconds
        print(f"{name:<42} {runs:>5} runs, {n:>6} files in {seconds:7.1f}s = {rate:7.1f} files/s"
              f"  ours/this {ours_rate / rate:5.1f}x  all {files} files: {files / rate / 60:5.1f} min")

    # The fixed cost of a run: the first block again, every file of it already in the ledger.
    started = time.perf_counter()
    assert job.execute_in_process(instance=instance, partition_key=chosen[0].partition_key, tags=chosen[0].tags).success
    fixed_s = time.perf_counter() - started
    print(f"fixed cost of a run of {len(covered_tenants(instance, chosen[0]))} tenant(s) with nothing new: {fixed_s:.2f}s, in process")

    if args.downstream_tenants is not None:
        downstream_s = downstream(instance, engine, defs, covered_tenants(instance, chosen[0])[: args.downstream_tenants], args.tenants)
        ticks_s = sum(t[0] for t in ticks)
        import_s = files / ours_rate
        print(f"import {(ticks_s + import_s) / 60:.1f} min (sensor ticks {ticks_s:.0f}s + import runs over blocks at their rate for all {files} files), "
              f"downstream {downstream_s / 60:.1f} min, total {(ticks_s + import_s + downstream_s) / 60:.1f} min "
              f"for {args.tenants} tenants x {args.sources} sources")

    if not args.import_runs:
        after, seconds = tick(instance, None)
        print(f"tick from an empty cursor after the imports: {seconds:.2f}s, {len(after.run_requests)} run requests (expected 0)")
        if after.run_requests:
            return 1
    return 0 if worst < TICK_TARGET_S and max(t[1] for t in ticks) <= MAX_RUNS_PER_TICK else 1


def downstream(instance, engine, defs, reference: list[str], all_tenants: int) -> float:
    """What follows the imports: ``tenant_job`` (tenant files, contacts merge, validations, enrichment,
    tags, segments) for every tenant, over ranges of tenants (``MAX_TENANTS_PER_RUN`` a run): the runs
    the backfill automation emits launch (single-run backfill policy), and ``email-engine run`` executes.
    For reference, the same job one run per tenant (as it ran before) on ``reference`` tenants, first.

    The DNS cache is warmed with the tenants' domains and the resolver points at a closed port, so
    the time is ours, not the network's. Returns the seconds of the runs over ranges.
    """
    from email_engine_assets.definitions import DOMAINS
    from email_engine_assets.jobs import tenant_job
    from email_engine_assets.main_job import MAX_TENANTS_PER_RUN
    from email_engine_assets.tenancy.partitions import tenant_range_tags, tenant_ranges
    from email_engine_resources.dns import DnsResolverResource
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.smtp_probe import SmtpProbeResource
    from email_engine_resources.workspace import WorkspaceResource
    from email_engine_tests.smtp_server import free_port

    with engine.begin() as conn:
        conn.exec_driver_sql(
            """INSERT INTO dns_cache (domain, status, mx_hosts, ttl_s, expires_at)
               SELECT DISTINCT split_part(email, '@', 2), 'mx', ARRAY['mx.' || split_part(email, '@', 2)], 86400, now() + interval '1 day'
               FROM staged_rows ON CONFLICT (domain) DO NOTHING"""
        )
    dns = DnsResolverResource(nameservers=["127.0.0.1"], port=free_port("127.0.0.1"), timeout_s=0.2, retries=0)
    resources = {"db": PostgresResource(), "workspace": WorkspaceResource(), "dns": dns, "smtp_probe": SmtpProbeResource()}
    job = dg.Definitions.merge(*DOMAINS, dg.Definitions(jobs=[tenant_job], resources=resources)).resolve_job_def("tenant_job")
    order = list(instance.get_dynamic_partitions("tenant"))
    if reference:
        seconds = timed_runs(job, instance, [{"partition_key": t, "tags": {"tenant": t}} for t in reference])
        per_run = seconds / len(reference)
        print(f"downstream, one run per tenant (before): {len(reference)} runs in {seconds:.1f}s = {per_run:.2f}s a run; "
              f"{all_tenants} tenants: {all_tenants * per_run / 60:.1f} min in process")
    rest = [t for t in order if t not in set(reference)]
    ranges = tenant_ranges(order, rest, max_tenants=MAX_TENANTS_PER_RUN)
    seconds = timed_runs(job, instance, [{"tags": tenant_range_tags(r)} for r in ranges], label="downstream run")
    print(f"downstream, runs over ranges of tenants (ours): {len(ranges)} runs for {len(rest)} tenants in {seconds:.1f}s "
          f"= {seconds / len(rest):.3f}s a tenant; {all_tenants} tenants: {all_tenants * seconds / len(rest) / 60:.1f} min in process")
    return seconds * all_tenants / len(rest)


if __name__ == "__main__":
    sys.exit(main())
