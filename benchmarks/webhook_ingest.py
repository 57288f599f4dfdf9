"""Durable webhook ingest vs the same app storing nothing, under wrk: requests/s, stored events/s, p99.

    python benchmarks/webhook_ingest.py [--duration 12] [--connections 64] [--threads 2] [--rounds 3]
                                        [--database-url URL]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Python clients (httpx) top out near 250
requests a second on this machine and would measure themselves, not the server.

The same app (``feedback.webhook_app.build_app``: routing, token check, body cap, MailWizz payload
validation, metrics middleware) runs on uvicorn as ``email-engine webhooks serve`` runs it, in a
process of its own, twice:

* **ours**: ``POST /hooks/mailwizz/bench``, every accepted body committed to ``webhook_inbox``
  before the 200 (``GroupCommit``);
* **no-op**: the same app and route with a store that keeps nothing (``build_app(store=...)``), so
  the difference is the cost of durability alone.

wrk keeps ``--connections`` connections busy for ``--duration`` seconds against each, every
request a distinct MailWizz open event (a Lua ``request()`` numbers the subscriber per thread and
round); the rounds alternate no-op / ours so that machine noise hits both. After each round of ours
the rows stored are counted: every 200 must be stored (rows >= 200s), the surplus at most one
request in flight per connection when wrk stopped, and no body twice. Prints, per side, the median
requests/s and p99 latency (wrk ``--latency``), ours' stored events/s (rows / duration) and the
ratio ours / no-op. Target: >= 3,000 stored events/s, p99 < 100 ms, ratio >= 0.2. Server:
``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server; a scratch
database is dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402
from email_engine_tests.webhook_helpers import MAILWIZZ_TOKEN, TENANT_YAML, start_app_process  # noqa: E402

BENCH_DATABASE = "email_engine_bench_webhooks"
ROUTE = "/hooks/mailwizz/bench"

# wrk runs one Lua state per thread: ``setup`` numbers the threads, ``init`` takes the round's prefix
# and the token, ``request`` builds a distinct open event each time, ``done`` reports the counts.
LUA = r"""
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local counter, prefix = 0, "r"
function init(args)
  prefix = args[1]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Webhook-Token"] = args[2]
end

local template = '{"event": {"type": "open", "date_added": "2026-11-29 10:11:12", "ip_address": "203.0.113.9", '
  .. '"user_agent": "Mozilla/5.0 (bench)"}, "timestamp": 1800000000, "subscriber": {"attributes": '
  .. '{"subscriber_uid": "%s", "email": "reader-%s@example.com"}}, "campaign": {"attributes": '
  .. '{"campaign_uid": "c1", "name": "bench.spring.welcome"}}}'

function request()
  counter = counter + 1
  local uid = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format(nil, nil, nil, string.format(template, uid, uid))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p99_us": %d}\n', summary.requests, summary.duration, e.connect, e.read,
    e.write, e.status, e.timeout, latency:percentile(99)))
end
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``): the server's cost, steadier than
    wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    requests_per_s: float
    p99_ms: float
    answered: int  # responses received (wrk's count)
    not_ok: int  # non-2xx answers, and socket errors
    duration_s: float
    cpu_ms: float = 0.0  # the server's CPU per answered request


def serve(mode: str, port: int, workspace: str, url: str) -> None:
    """The child process: the app on uvicorn, durable or no-op, as ``webhooks serve`` runs it."""
    import uvicorn

    from email_engine_assets.feedback.webhook_app import app_engine, build_app
    from email_engine_assets.feedback.webhook_server import WebhookLimits, freeze_startup_heap, uvicorn_settings

    async def keep_nothing(tenant_id, kind, source_id, body, content_type) -> bool:
        return True

    engine = app_engine(url)  # what `email-engine webhooks serve` uses
    app = build_app(Path(workspace), engine, store=None if mode == "durable" else keep_nothing)
    freeze_startup_heap()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_settings(WebhookLimits()))


def _latency_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(output: str) -> Run:
    """wrk's figures: ``Requests/sec``, the 99% line of ``--latency``, and the counts ``done`` wrote."""
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M).group(1))
    p99 = _latency_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    counts = json.loads(re.search(r"^RESULT (\{.*\})$", output, re.M).group(1))
    errors = sum(counts[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Run(rate, p99, counts["requests"], errors, counts["duration_us"] / 1e6)


def wrk(port: int, script: str, prefix: str, args: argparse.Namespace, duration: float,
        pid: int | None = None) -> tuple[Run, list[str]]:
    cpu = cpu_seconds(pid) if pid else 0.0
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--timeout", "10s",
               "--latency", "-s", script, f"http://127.0.0.1:{port}{ROUTE}", "--", prefix, MAILWIZZ_TOKEN]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    run = parse_wrk(done.stdout)
    if pid:
        run = dataclasses.replace(run, cpu_ms=(cpu_seconds(pid) - cpu) * 1000 / max(run.answered, 1))
    return run, command


def commit_floor(url: str, commits: int = 150) -> list[float]:
    """Milliseconds of ``commits`` one-row INSERTs in autocommit, one after another: what the
    PostgreSQL server gives a single commit right now (WAL flush included), the floor under any
    durable request's latency on this machine."""
    import psycopg

    engine = database.get_engine(url)
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)
    took = []
    with psycopg.connect(autocommit=True, **params) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        for _ in range(commits):
            began = time.perf_counter()
            conn.execute("INSERT INTO bench_commit_probe VALUES (1)")
            took.append((time.perf_counter() - began) * 1000)
    return took


def stored_rows(url: str) -> tuple[int, int]:
    """Rows in the inbox, and distinct bodies among them."""
    with database.get_engine(url).connect() as conn:
        return tuple(conn.exec_driver_sql("SELECT count(*), count(DISTINCT body) FROM webhook_inbox").one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    parser.add_argument("--serve", choices=["durable", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workspace, args.database_url)
        return
    if shutil.which("wrk") is None:
        sys.exit("webhook_ingest: wrk is not installed; install it with `apt-get install -y wrk` (Debian/Ubuntu) "
                 "or `brew install wrk` (macOS), then run this again")

    server = args.database_url or database.embedded_server_url()
    url = database.with_database(server, BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    env = {**os.environ, "TEST_MAILWIZZ_TOKEN": MAILWIZZ_TOKEN, "TEST_CONTACTS_SECRET": "unused-in-this-benchmark"}
    processes = []
    ours: list[Run] = []
    noop: list[Run] = []
    stored_per_s: list[float] = []
    floor: list[float] = []
    try:
        upgrade(database.get_engine(url))
        with tempfile.TemporaryDirectory() as workspace:
            (Path(workspace) / "tenants").mkdir()
            (Path(workspace) / "tenants" / "bench.yaml").write_text(TENANT_YAML.format(tenant="bench"))
            script = Path(workspace) / "mailwizz_open.lua"
            script.write_text(LUA)
            durable, durable_port = start_app_process(__file__, "durable", workspace, url, env)
            processes.append(durable)
            bare, bare_port = start_app_process(__file__, "bare", workspace, url, env)
            processes.append(bare)
            wrk(durable_port, str(script), "warm", args, 2)  # connections, pools, prepared statements
            wrk(bare_port, str(script), "warm", args, 2)
            time.sleep(0.5)
            before, _ = stored_rows(url)
            for r in range(args.rounds):
                run, _ = wrk(bare_port, str(script), f"noop{r}", args, args.duration, bare.pid)
                noop.append(run)
                floor.extend(commit_floor(url))
                run, command = wrk(durable_port, str(script), f"r{r}", args, args.duration, durable.pid)
                time.sleep(0.5)  # the requests in flight when wrk stopped are committed by now
                rows, distinct = stored_rows(url)
                new, before = rows - before, rows
                acknowledged = run.answered - run.not_ok
                assert distinct == rows, f"{rows - distinct} bodies stored twice"
                assert new >= acknowledged, f"{acknowledged} answered 200 but only {new} rows stored"
                assert new <= run.answered + args.connections, f"{new} rows for {run.answered} answers"
                ours.append(run)
                stored_per_s.append(new / run.duration_s)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        database.get_engine(url).dispose()
        database.drop_database(url)

    def line(runs: list[Run]) -> str:
        rate = statistics.median(r.requests_per_s for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        rounds = ", ".join(f"{r.requests_per_s:.0f}" for r in runs)
        p99s = ", ".join(f"{r.p99_ms:.1f}" for r in runs)
        errors = sum(r.not_ok for r in runs)
        cpu = statistics.median(r.cpu_ms for r in runs)
        return (f"{rate:8.0f} requests/s median (rounds: {rounds}); p99 {p99:.1f} ms (rounds: {p99s}); "
                f"server CPU {cpu:.2f} ms/request; not 200: {errors}")

    shown = " ".join(command[:-1] + ["<token>"])
    print(f"wrk: {args.threads} threads, {args.connections} connections, {args.duration:g} s x {args.rounds} rounds "
          "per side, distinct MailWizz open events")
    print(f"  command (ours): {shown}")
    print(f"  no-op (same app, stores nothing):   {line(noop)}")
    print(f"  ours (committed before the 200):    {line(ours)}")
    print(f"  ours stored: {statistics.median(stored_per_s):8.0f} events/s median "
          f"(rounds: {', '.join(f'{x:.0f}' for x in stored_per_s)}); every 200 stored, none twice")
    floor.sort()
    print(f"  PostgreSQL alone, one-row commits one after another (before each round of ours): median "
          f"{statistics.median(floor):.1f} ms, p99 {floor[int(len(floor) * 0.99)]:.1f} ms")
    ratio = statistics.median(r.requests_per_s for r in ours) / statistics.median(r.requests_per_s for r in noop)
    print(f"  ratio: ours runs at {ratio:.2f}x the no-op route (target >= 0.2x; >= 3,000 events/s, p99 < 100 ms)")


if __name__ == "__main__":
    main()
