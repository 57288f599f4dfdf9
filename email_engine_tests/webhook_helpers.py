"""Shared by the webhook tests and the benchmark: a tenant with webhooks, and the app on real uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

MAILWIZZ_TOKEN = "mw-token-0123456789abcdef"
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


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the webhook app did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
