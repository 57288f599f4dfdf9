"""`email-engine webhooks serve` SIGKILLed in the middle of a load and started again: every payload
it acknowledged is in the inbox, and the senders' retries of the others are stored exactly once."""

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
from email_engine_tests.webhook_helpers import TENANT_YAML, free_port, webhook_env

PAYLOADS = 600
CLIENTS = 10
KILL_AFTER_ACKS = 150


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
    url = f"http://127.0.0.1:{port}/hooks/contacts/acme/crm"
    bodies = [json.dumps({"email": f"person{i}@example.com", "i": i}).encode() for i in range(PAYLOADS)]
    acknowledged: set[bytes] = set()
    failures = 0

    with open(tmp_path / "server.log", "wb") as log:
        server = _start(env, port, log)
        try:
            async def sender(queue: asyncio.Queue) -> None:
                nonlocal failures
                async with httpx.AsyncClient(timeout=10) as client:
                    while True:
                        try:
                            body = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            return
                        try:
                            response = await client.post(url, content=body, headers=signed(body))
                        except httpx.TransportError:
                            response = None
                        if response is not None and response.status_code == 200:
                            acknowledged.add(body)
                        else:  # no answer (or not a 200): the sender retries later, as MailWizz does
                            failures += 1
                            queue.put_nowait(body)
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
                for body in bodies:
                    queue.put_nowait(body)
                await asyncio.gather(killer(), *(sender(queue) for _ in range(CLIENTS)))

            asyncio.run(main())
        finally:
            server.kill()
            server.wait()

    with engine.connect() as conn:
        rows = [bytes(b) for b in conn.execute(sa.text("SELECT body FROM webhook_inbox")).scalars()]
    assert failures > 0  # the kill did hit requests in flight
    assert acknowledged == set(bodies)
    assert sorted(rows) == sorted(bodies)  # each exactly once, retries included
