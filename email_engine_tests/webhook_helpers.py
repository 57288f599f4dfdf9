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


