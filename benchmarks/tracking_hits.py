"""Tracked clicks per second: the click route committing every hit vs the same app storing nothing.

    python benchmarks/tracking_hits.py [--requests 5000] [--clients 32] [--rounds 3] [--database-url URL]

The webhook app (``feedback.webhook_app.build_app``) runs on uvicorn, as ``webhooks serve`` runs
it, in a process of its own, twice:

* **ours**: ``GET /c/<token>``: the signed token verified, the hit classed (``tracking_rules``,
  Crawler-Detect included), its body committed to ``webhook_inbox`` (``GroupCommit`` on PostgreSQL)
  before the 302;
* **reference**: the same app and route with a store that keeps nothing (``build_app(store=...)``),
  so the difference is the cost of durability alone.

``--clients`` keep-alive connections send ``--requests`` clicks to each (distinct ledger rows and
links, a few ordinary browser user agents); the rounds alternate so that machine noise hits both.
The client is a small asyncio HTTP/1.1 client on raw sockets (httpx tops out near 250 requests a
second here and would measure itself). Prints the median hits/s of each, the servers' CPU time per
hit, p99 latency, and the ratio. Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``,
else the embedded server; a scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
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
from email_engine_tests.webhook_helpers import SIGNING_KEY, start_app_process  # noqa: E402

BENCH_DATABASE = "email_engine_bench_tracking"
TENANT_YAML = """\
id: bench
name: Bench
sources:
  - id: crm
tracking:
  opens: true
  clicks: true
  base_url: http://127.0.0.1
"""
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
)


def serve(mode: str, port: int, workspace: str, url: str) -> None:
    """The child process: the app on uvicorn, durable or bare."""
    import uvicorn

    from email_engine_assets.feedback.webhook_app import app_engine, build_app
    from email_engine_assets.feedback.webhook_server import WebhookLimits, freeze_startup_heap, uvicorn_settings

    async def keep_nothing(tenant_id, kind, source_id, body, content_type) -> bool:
        return True

    app = build_app(Path(workspace), app_engine(url), signing_key=lambda: SIGNING_KEY,
                    store=None if mode == "durable" else keep_nothing)
    freeze_startup_heap()  # as `webhooks serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False,
                **uvicorn_settings(WebhookLimits()))


def requests(count: int) -> list[bytes]:
    """``count`` distinct click requests (a row and a link each), ready to write."""
    from email_engine_assets.content.tracking_tokens import click_token

    out = []
    for i in range(count):
        token = click_token(SIGNING_KEY, "bench", f"row-{i % 2000}", i % 7, f"https://shop.example/p/{i % 7}?c=spring")
        out.append(f"GET /c/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {AGENTS[i % len(AGENTS)]}\r\n"
                   f"Accept: text/html\r\n\r\n".encode())
    return out


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def load(port: int, batch: list[bytes], clients: int) -> tuple[float, float]:
    """Hits per second and p99 latency (ms) of ``clients`` keep-alive connections sending ``batch``."""
    queue = iter(batch)
    latencies: list[float] = []

    async def client_task() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                began = time.perf_counter()
                writer.write(request)
                status = await _answer(reader)
                latencies.append(time.perf_counter() - began)
                if status != 302:
                    raise RuntimeError(f"unexpected answer {status}")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client_task() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    return len(batch) / elapsed, statistics.quantiles(latencies, n=100)[98] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(mode: str, workspace: str, url: str) -> tuple[subprocess.Popen, int]:
    return start_app_process(__file__, mode, workspace, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
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
    processes = []
    batch = requests(args.requests)
    try:
        upgrade(database.get_engine(url))
        with tempfile.TemporaryDirectory() as workspace:
            (Path(workspace) / "tenants").mkdir()
            (Path(workspace) / "tenants" / "bench.yaml").write_text(TENANT_YAML)
            durable, durable_port = start("durable", workspace, url)
            bare, bare_port = start("bare", workspace, url)
            processes = [durable, bare]
            asyncio.run(load(durable_port, batch[:300], args.clients))  # warm both up (connections, pools, caches)
            asyncio.run(load(bare_port, batch[:300], args.clients))
            ours, reference, p99 = [], [], {"ours": [], "reference": []}
            cpu = {durable.pid: cpu_seconds(durable.pid), bare.pid: cpu_seconds(bare.pid)}
            for _ in range(args.rounds):
                rate, tail = asyncio.run(load(bare_port, batch, args.clients))
                reference.append(rate)
                p99["reference"].append(tail)
                rate, tail = asyncio.run(load(durable_port, batch, args.clients))
                ours.append(rate)
                p99["ours"].append(tail)
            cpu_ms = {pid: (cpu_seconds(pid) - before) * 1000 / (args.rounds * args.requests) for pid, before in cpu.items()}
            with database.get_engine(url).connect() as conn:
                stored = conn.exec_driver_sql("SELECT count(*) FROM webhook_inbox WHERE kind = 'tracking'").scalar()
            assert stored == 300 + args.rounds * args.requests, stored  # every hit its own row: none deduplicated away
    finally:
        for process in processes:
            process.kill()
            process.wait()
        database.get_engine(url).dispose()
        database.drop_database(url)

    best_ours, best_ref = statistics.median(ours), statistics.median(reference)
    print(f"{args.requests} clicks x {args.rounds} rounds, {args.clients} keep-alive connections, GET /c/<token> -> 302")
    print(f"  ours (classed, committed to webhook_inbox before the 302): {best_ours:8.0f} hits/s median"
          f"  (rounds: {', '.join(f'{x:.0f}' for x in ours)}; p99 {statistics.median(p99['ours']):.1f} ms;"
          f" server CPU {cpu_ms[durable.pid]:.2f} ms/hit)")
    print(f"  reference (same app and route, stores nothing):          {best_ref:8.0f} hits/s median"
          f"  (rounds: {', '.join(f'{x:.0f}' for x in reference)}; p99 {statistics.median(p99['reference']):.1f} ms;"
          f" server CPU {cpu_ms[bare.pid]:.2f} ms/hit)")
    print(f"  ratio: tracked clicks run at {best_ours / best_ref:.2f}x the route that stores nothing")


if __name__ == "__main__":
    main()
