"""`email-engine webhooks serve` SIGKILLed in the middle of a load and started again: every payload
it acknowledged is in the inbox, and the senders' retries of the others are stored exactly once.

64 senders at once (as many connections as the ingest benchmark), MailWizz hits and contacts
pushes mixed: the kill lands on group-commit batches of many bodies, some committed and not yet
answered (their retries must be duplicates, not second rows), some not committed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import sqlalchemy as sa

from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.test_webhook_app import signed
from email_engine_tests.test_webhook_core import mailwizz_body
from email_engine_tests.webhook_helpers import MAILWIZZ_TOKEN, TENANT_YAML, free_port, webhook_env

PAYLOADS = 1000
CLIENTS = 64
KILL_AFTER_ACKS = 300


def _start(env: dict, port: int, log) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "email_engine_assets.cli", "webhooks", "serve", "--port", str(port)],
        env=env, cwd=PROJECT_ROOT, stdout=log, stderr=log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"webhooks serve exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("webhooks serve did not answer /health")


def test_a_killed_server_loses_no_acknowledged_payload(engine, db_url, workspace, monkeypatch, tmp_path):
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
    webhook_env(monkeypatch)
    workspace.tenant("acme", TENANT_YAML.format(tenant="acme"), sources=("crm", "files"))
    env = {**os.environ, "EMAIL_ENGINE_DATABASE_URL": db_url, "EMAIL_ENGINE_WORKSPACE": str(workspace.root),
           "EMAIL_ENGINE_HOME": str(tmp_path / "home"), "EMAIL_ENGINE_SECRET_KEY": "s" * 40,
           "PYTHONPATH": str(PROJECT_ROOT)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Half MailWizz opens of distinct readers, half contacts pushes: (path, body, headers).
    requests = [
        ("/hooks/mailwizz/acme", mailwizz_body(email=f"reader{i}@example.com"), {"X-Webhook-Token": MAILWIZZ_TOKEN})
        if i % 2 else ("/hooks/contacts/acme/crm", body := json.dumps({"email": f"person{i}@example.com"}).encode(), signed(body))
        for i in range(PAYLOADS)
    ]
    bodies = [body for _, body, _ in requests]
    assert len(set(bodies)) == PAYLOADS
    acknowledged: set[bytes] = set()
    failures = 0

    with open(tmp_path / "server.log", "wb") as log:
        server = _start(env, port, log)
        try:
            async def sender(queue: asyncio.Queue) -> None:
                nonlocal failures
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    while True:
                        try:
                            path, body, headers = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            return
                        try:
                            response = await client.post(path, content=body, headers=headers)
                        except httpx.TransportError:
                            response = None
                        if response is not None and response.status_code == 200:
                            acknowledged.add(body)
                        else:  # no answer (or not a 200): the sender retries later, as MailWizz does
                            failures += 1
                            queue.put_nowait((path, body, headers))
                            await asyncio.sleep(0.05)

            async def killer() -> None:
                nonlocal server
                while len(acknowledged) < KILL_AFTER_ACKS:
                    await asyncio.sleep(0.005)
                server.send_signal(signal.SIGKILL)
                server.wait()
                with engine.connect() as conn:  # what the killed server had acknowledged is already there
                    kept = {bytes(b) for b in conn.execute(sa.text("SELECT body FROM webhook_inbox")).scalars()}
                assert acknowledged - kept == set()
                server = await asyncio.to_thread(_start, env, port, log)

            async def main() -> None:
                queue: asyncio.Queue = asyncio.Queue()
                for request in requests:
                    queue.put_nowait(request)
                await asyncio.gather(killer(), *(sender(queue) for _ in range(CLIENTS)))

            asyncio.run(main())
        finally:
            server.kill()
            server.wait()

    with engine.connect() as conn:
        rows = [bytes(b) for b in conn.execute(sa.text("SELECT body FROM webhook_inbox")).scalars()]
    assert failures > 0  # the kill did hit requests in flight
    assert acknowledged == set(bodies)
    assert len(rows) == len(set(rows)) == PAYLOADS  # none twice, retries of committed bodies included
    assert sorted(rows) == sorted(bodies)
