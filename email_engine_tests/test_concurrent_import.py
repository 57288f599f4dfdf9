"""Two runs importing the same file at once (sensor run and CLI): one imports, the other skips."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from email_engine_assets.contacts.importer import import_file
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.tenancy.config import load_workspace


def test_concurrent_imports_of_one_file_import_it_once(engine, workspace):
    workspace.tenant("acme")
    rows = "".join(f"user{i}@example.com,Name{i}\n" for i in range(20_000))
    path = workspace.file("acme", "crm", "big.csv", "email,first_name\n" + rows)
    ws = load_workspace(workspace.root)
    with engine.begin() as conn:
        register_workspace(conn, ws)
    tenant = ws.tenants["acme"]
    reports, errors = [], []

    def run():
        try:
            reports.append(import_file(engine, tenant, tenant.source("crm"), path))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(r.status for r in reports) == ["imported", "skipped"]
    with engine.connect() as conn:
        ledger = conn.execute(sa.text("SELECT status, rows_total, new FROM import_files")).all()
        staged = conn.execute(sa.text("SELECT count(*) FROM staged_rows")).scalar_one()
    assert [tuple(r) for r in ledger] == [("imported", 20_000, 20_000)]
    assert staged == 20_000
