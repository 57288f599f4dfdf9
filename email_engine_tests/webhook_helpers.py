"""Shared by the webhook tests and the benchmark: a tenant with webhooks, and the app on real uvicorn."""

from __future__ import annotations

import socket

MAILWIZZ_TOKEN = "mw-token-0123456789abcdef0123456789abcdef"
CONTACTS_SECRET = "contacts-secret-0123456789abcdef"
SIGNING_KEY = b"k" * 32

TENANT_YAML = """\
id: {tenant}
name: Acme
sources:
  - id: crm
    priority: 10
    webhook_secret: {{env: TEST_CONTACTS_SECRET}}
  - id: files
webhooks:
  mailwizz_token: {{env: TEST_MAILWIZZ_TOKEN}}
"""


def webhook_env(monkeypatch) -> None:
    monkeypatch.setenv("TEST_MAILWIZZ_TOKEN", MAILWIZZ_TOKEN)
    monkeypatch.setenv("TEST_CONTACTS_SECRET", CONTACTS_SECRET)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




def start_app_process(script: str, mode: str, workspace: str, url: str, env: dict | None = None):
    """Start ``script --serve mode`` (a benchmark's own server entry) on a free port and wait for its
    ``/health``: ``(process, port)``. The process is killed if it does not answer within 60 s."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, script, "--serve", mode, "--port", str(port), "--workspace", workspace,
                                "--database-url", url], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the {mode} server did not start")
