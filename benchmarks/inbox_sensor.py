"""The inbox sensor and the import runs it requests, at the scale of many tenants × sources.

    python benchmarks/inbox_sensor.py [--tenants 1000] [--sources 20] [--import-tenants N] [--database-url URL]

Builds a temporary workspace of ``tenants`` tenant files with ``sources`` sources each and one small
settled file per (tenant, source), in a scratch database ``email_engine_bench_inbox`` (dropped at
the end) and a temporary Dagster instance. Then:

* **ticks**: the inbox sensor ticks (``build_sensor_context``) until it requests nothing more;
  prints each tick's time, its run requests and the cursor size (targets: a tick under 10 s,
  at most ``MAX_RUNS_PER_TICK`` requests, a cursor well under 1 MB);
* **imports**: executes the requested runs (``import_job``, one per tenant over its sources) for
  the first ``--import-tenants`` tenants (all by default), and, as the reference, one run per
  (tenant, source) partition (what the sensor asked for before) for a few tenants; prints files
  per second of both and the ratio;
* the fixed cost of a run: a tenant's run again when the ledger holds all its files;
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
from email_engine_resources.settings import DATABASE_URL_ENV, WORKSPACE_ENV  # noqa: E402

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
    parser.add_argument("--import-tenants", type=int, default=None, help="import the runs of this many tenants (default: all)")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    server = args.database_url or os.environ.get(DATABASE_URL_ENV) or database.embedded_server_url()
    url = database.with_database(server, BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    os.environ[DATABASE_URL_ENV] = url
    upgrade(database.get_engine(url))
    try:
        with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
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


def run(instance, args, files: int) -> int:
    from email_engine_assets.contacts.sensors import MAX_RUNS_PER_TICK
    from email_engine_assets.definitions import defs

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
          f"most requests in a tick {max(t[1] for t in ticks)} (cap {MAX_RUNS_PER_TICK}), {len(requests)} runs for {files} files")

    job = defs.resolve_job_def("import_job")
    chosen = requests if args.import_tenants is None else requests[: args.import_tenants]
    reference_tenants = sorted({r.tags["tenant"] for r in requests})[-REFERENCE_TENANTS:]
    chosen = [r for r in chosen if r.tags["tenant"] not in reference_tenants]
    started = time.perf_counter()
    for request in chosen:
        assert job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags).success
    ours_s = time.perf_counter() - started
    ours_files = len(chosen) * args.sources
    # reference: one run per (tenant, source) partition
    from email_engine_assets.tenancy.partitions import import_key

    started = time.perf_counter()
    for tenant in reference_tenants:
        for s in range(args.sources):
            key = import_key(tenant, f"source{s:02}")
            assert job.execute_in_process(instance=instance, partition_key=key, tags={"tenant": tenant}).success
    reference_s = time.perf_counter() - started
    reference_files = len(reference_tenants) * args.sources
    ours_rate, reference_rate = ours_files / ours_s, reference_files / reference_s
    print(f"imports, one run per tenant:   {len(chosen)} runs, {ours_files} files in {ours_s:.1f}s = {ours_rate:.1f} files/s")
    print(f"reference, one run per source: {reference_files} runs, {reference_files} files in {reference_s:.1f}s = {reference_rate:.1f} files/s")
    print(f"per-tenant runs / per-source runs: {ours_rate / reference_rate:.1f}x files/s; "
          f"all {files} files at this rate: {files / ours_rate / 60:.1f} min (per-source runs: {files / reference_rate / 60:.1f} min, in process)")

    # The fixed cost of a run: the same tenant's run again, every file of it already in the ledger.
    if chosen:
        started = time.perf_counter()
        assert job.execute_in_process(instance=instance, partition_key=chosen[0].partition_key, tags=chosen[0].tags).success
        fixed_s = time.perf_counter() - started
        print(f"fixed cost of a run of {args.sources} partitions with nothing new: {fixed_s:.2f}s "
              f"({fixed_s / (ours_s / len(chosen)):.0%} of a run that imports them), in process")

    if args.import_tenants is None:
        after, seconds = tick(instance, None)
        print(f"tick from an empty cursor after the imports: {seconds:.2f}s, {len(after.run_requests)} run requests (expected 0)")
        if after.run_requests:
            return 1
    return 0 if worst < TICK_TARGET_S and max(t[1] for t in ticks) <= MAX_RUNS_PER_TICK else 1


if __name__ == "__main__":
    sys.exit(main())
