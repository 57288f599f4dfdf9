"""``email-engine run`` measured from outside: one small tenant alone, then many such tenants.

    python benchmarks/main_run.py [--tenants 200] [--sources 5] [--database-url URL]

For each size (1 tenant, then ``--tenants``) it builds, in a temporary folder, a workspace of that
many tenant files with ``--sources`` sources each and one small file per (tenant, source), a scratch
database (``email_engine_bench_run``, dropped at the end) brought to the current schema by
``email-engine db upgrade``, and a DNS cache holding the tenants' domains (the resolver points at a
closed port: a cache miss would show as ``unknown``, never as waiting on the network). Then it
times ``email-engine run`` as a subprocess (feedback, imports, contacts, quality, tags, segments,
due sends; Dagster's storage in the same PostgreSQL server, as a deployment has it) and prints both
times (the one-tenant time as the median of three runs) and their ratio. Target (issue 14, §4): the many-tenant run within 20× the one-tenant run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV, HOME_ENV, WORKSPACE_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_run"
TARGET_RATIO = 20.0
ROOT = Path(__file__).resolve().parents[1]


def build_workspace(root: Path, tenants: int, sources: int) -> list[str]:
    """Tenant files and inbox files; the domains of every address."""
    (root / "tenants").mkdir(parents=True)
    domains = ["example.org"]
    for t in range(tenants):
        tenant = f"tenant{t:04}"
        lines = [f"id: {tenant}", f"name: Tenant {t}", "sources:"]
        lines += [f"  - id: source{s:02}\n    priority: {100 - s}" for s in range(sources)]
        lines += ["segments:", "  - name: everyone", "    all: [{field: email, regex: '@'}]"]
        (root / "tenants" / f"{tenant}.yaml").write_text("\n".join(lines) + "\n")
        domains.append(f"{tenant}.example")
        for s in range(sources):
            folder = root / "inbox" / tenant / f"source{s:02}"
            folder.mkdir(parents=True)
            (folder / "contacts.csv").write_text(
                f"email,first_name\nu{s}a@{tenant}.example,A\nu{s}b@{tenant}.example,B\nshared@example.org,S\n"
            )
    return domains


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def email_engine(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "email_engine_assets.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)


def measure(server: str, tenants: int, sources: int) -> float:
    """Seconds of ``email-engine run`` over a fresh workspace and database of ``tenants`` tenants."""
    url = database.with_database(server, BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workspace = Path(tmp) / "workspace"
            domains = build_workspace(workspace, tenants, sources)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                DATABASE_URL_ENV: url,
                HOME_ENV: str(Path(tmp) / "home"),
                WORKSPACE_ENV: str(workspace),
                "EMAIL_ENGINE_DNS_NAMESERVERS": "127.0.0.1",
                "EMAIL_ENGINE_DNS_PORT": str(closed_port()),
            }
            env.pop("DAGSTER_HOME", None)
            env.pop("EMAIL_ENGINE_DAGSTER_DATABASE_URL", None)
            upgraded = email_engine(["db", "upgrade"], env)
            if upgraded.returncode != 0:
                raise SystemExit(f"db upgrade failed:\n{upgraded.stdout[-3000:]}{upgraded.stderr[-3000:]}")
            engine = database.get_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO dns_cache (domain, status, mx_hosts, ttl_s, expires_at) "
                    "SELECT d, 'mx', ARRAY['mx.' || d], 86400, now() + interval '1 day' FROM unnest(%(d)s::text[]) AS d",
                    {"d": domains},
                )
            engine.dispose()
            started = time.perf_counter()
            completed = email_engine(["run"], env)
            seconds = time.perf_counter() - started
            if completed.returncode != 0:
                raise SystemExit(f"run of {tenants} tenant(s) failed ({completed.returncode}):\n"
                                 f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
            return seconds
    finally:
        database.drop_database(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--sources", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    server = args.database_url or os.environ.get(DATABASE_URL_ENV) or database.embedded_server_url()
    # the one-tenant time is a few seconds, most of it fixed costs: the median of three on a shared machine
    ones = sorted(measure(server, 1, args.sources) for _ in range(3))
    one = ones[1]
    print(f"email-engine run, 1 tenant x {args.sources} sources: {one:.1f}s (median of {', '.join(f'{x:.1f}' for x in ones)})",
          flush=True)
    many = measure(server, args.tenants, args.sources)
    ratio = many / one
    print(f"email-engine run, {args.tenants} tenants x {args.sources} sources: {many:.1f}s")
    print(f"ratio {ratio:.1f}x (target <= {TARGET_RATIO:.0f}x; {args.tenants}x the tenants)")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
