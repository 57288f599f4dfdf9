"""Durable webhook ingest vs a bare endpoint that stores nothing: requests per second.

    python benchmarks/webhook_ingest.py [--requests 3000] [--clients 20] [--rounds 3] [--database-url URL]

The same app (``feedback.webhook_app.build_app``: routing, token check, body cap, MailWizz payload
validation) runs on uvicorn in a process of its own, twice:

* **ours**: every accepted body committed to ``webhook_inbox`` before the 200 (concurrent bodies
  share a transaction: ``GroupCommit``, on the app's small pool, in the thread pool);
* **reference**: the same app with a store that keeps nothing (the bare endpoint).

``--clients`` concurrent httpx clients post ``--requests`` distinct MailWizz open hits to each;
the rounds alternate so that machine noise hits both. Prints the median requests/s of each, the
servers' CPU time per request (steadier than wall time on a shared machine) and the ratio
(target: ours >= 0.5x the bare endpoint). Server: ``--database-url``, else
``EMAIL_ENGINE_DATABASE_URL``, else the embedded server; a scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402
from email_engine_tests.webhook_helpers import MAILWIZZ_TOKEN, TENANT_YAML, start_app_process  # noqa: E402

BENCH_DATABASE = "email_engine_bench_webhooks"


def serve(mode: str, port: int, workspace: str, url: str) -> None:
    """The child process: the app on uvicorn, durable or bare."""
    import uvicorn

    from email_engine_assets.feedback.webhook_app import app_engine, build_app
    from email_engine_assets.feedback.webhook_server import WebhookLimits, uvicorn_settings

    async def keep_nothing(tenant_id, kind, source_id, body, content_type) -> bool:
        return True

    engine = app_engine(url)  # what `email-engine webhooks serve` uses
    app = build_app(Path(workspace), engine, store=None if mode == "durable" else keep_nothing)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_settings(WebhookLimits()))  # as served


def body(i: int) -> bytes:
    return json.dumps({
        "event": {"type": "open", "date_added": "2026-11-29 10:11:12", "ip_address": "203.0.113.9", "user_agent": "bench"},
        "timestamp": 1_800_000_000,
        "subscriber": {"attributes": {"subscriber_uid": f"s{i}", "email": f"reader{i}@example.com"}},
        "campaign": {"attributes": {"campaign_uid": "c1", "name": "bench.spring.welcome"}},
    }).encode()


async def load(port: int, start: int, requests: int, clients: int) -> float:
    """Requests per second of ``clients`` concurrent clients posting ``requests`` distinct bodies."""
    target = f"http://127.0.0.1:{port}/hooks/mailwizz/bench"
    counter = iter(range(start, start + requests))

    async def client_task() -> None:
        async with httpx.AsyncClient(timeout=30, headers={"X-Webhook-Token": MAILWIZZ_TOKEN}) as client:
            for i in counter:
                response = await client.post(target, content=body(i))
                if response.status_code != 200:
                    raise RuntimeError(f"unexpected answer {response.status_code}: {response.text[:200]}")

    began = time.perf_counter()
    await asyncio.gather(*(client_task() for _ in range(clients)))
    return requests / (time.perf_counter() - began)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``): the server's cost, less noisy than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(mode: str, workspace: str, url: str, env: dict) -> tuple[subprocess.Popen, int]:
    return start_app_process(__file__, mode, workspace, url, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    parser.add_argument("--serve", choices=["durable", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workspace, args.database_url)
        return

    server = args.database_url or database.embedded_server_url()
    url = database.with_database(server, BENCH_DATABASE)
    database.drop_database(url)
    database.ensure_database(url)
    env = {**os.environ, "TEST_MAILWIZZ_TOKEN": MAILWIZZ_TOKEN, "TEST_CONTACTS_SECRET": "unused-in-this-benchmark"}
    processes = []
    try:
        upgrade(database.get_engine(url))
        with tempfile.TemporaryDirectory() as workspace:
            (Path(workspace) / "tenants").mkdir()
            (Path(workspace) / "tenants" / "bench.yaml").write_text(TENANT_YAML.format(tenant="bench"))
            durable, durable_port = start("durable", workspace, url, env)
            bare, bare_port = start("bare", workspace, url, env)
            processes = [durable, bare]
            asyncio.run(load(durable_port, -200, 200, args.clients))  # warm both up (connections, pools)
            asyncio.run(load(bare_port, -200, 200, args.clients))
            ours, reference = [], []
            cpu = {durable.pid: cpu_seconds(durable.pid), bare.pid: cpu_seconds(bare.pid)}
            for r in range(args.rounds):
                reference.append(asyncio.run(load(bare_port, 0, args.requests, args.clients)))
                ours.append(asyncio.run(load(durable_port, r * args.requests, args.requests, args.clients)))
            cpu_ms = {pid: (cpu_seconds(pid) - before) * 1000 / (args.rounds * args.requests) for pid, before in cpu.items()}
            with database.get_engine(url).connect() as conn:
                stored = conn.exec_driver_sql("SELECT count(*) FROM webhook_inbox").scalar()
            assert stored == 200 + args.rounds * args.requests, stored
    finally:
        for process in processes:
            process.kill()
            process.wait()
        database.get_engine(url).dispose()
        database.drop_database(url)

    best_ours, best_ref = statistics.median(ours), statistics.median(reference)
    print(f"{args.requests} requests x {args.rounds} rounds, {args.clients} concurrent clients, MailWizz open hits")
    print(f"  ours (committed to webhook_inbox before the 200): {best_ours:8.0f} requests/s median"
          f"  (rounds: {', '.join(f'{x:.0f}' for x in ours)}; server CPU {cpu_ms[durable.pid]:.2f} ms/request)")
    print(f"  reference (same app, stores nothing):             {best_ref:8.0f} requests/s median"
          f"  (rounds: {', '.join(f'{x:.0f}' for x in reference)}; server CPU {cpu_ms[bare.pid]:.2f} ms/request)")
    print(f"  ratio: durable ingest runs at {best_ours / best_ref:.2f}x the bare endpoint (target >= 0.5x)")


if __name__ == "__main__":
    main()
