"""Shared fixtures: a real PostgreSQL database per test session, workspaces built on disk.

Embedded PostgreSQL by default; the server in ``EMAIL_ENGINE_TEST_DATABASE_URL`` when set (CI
runs the suite both ways). Each session gets a fresh database that is dropped at the end.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_engine_resources import postgres as database
from email_engine_resources.migrations import upgrade

TEST_URL_ENV = "EMAIL_ENGINE_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def _no_instance_left_current():
    """Each test starts with no current Dagster instance storage.

    ``DagsterInstance.__enter__`` makes the instance's definitions-state storage the current one and
    its ``__exit__`` does not undo that (dagster 1.13): a later test that loads definitions would then
    reach a disposed instance, depending on test order.
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield
APP_TABLES = (
    "tenants", "data_sources", "import_files", "rejected_rows", "staged_rows", "contacts",
    "dns_cache", "email_validations", "validation_runs", "contact_enrichment", "tag_assignments",
    "probe_slots", "webhook_inbox", "input_problems", "tenant_schedule_ticks", "alert_incidents",
)


def _server_url() -> str:
    given = os.environ.get(TEST_URL_ENV, "").strip()
    if given:
        return given
    os.environ.pop(database.DATABASE_URL_ENV, None)
    return database.embedded_server_url()


@pytest.fixture(scope="session")
def db_url() -> str:
    """URL of a fresh, migrated database; also exported as EMAIL_ENGINE_DATABASE_URL for the code under test."""
    name = f"email_engine_test_{uuid.uuid4().hex[:10]}"
    url = database.with_database(_server_url(), name)
    database.ensure_database(url)
    previous = os.environ.get(database.DATABASE_URL_ENV)
    os.environ[database.DATABASE_URL_ENV] = url
    upgrade(database.get_engine(url))
    yield url
    database.drop_database(url)
    if previous is None:
        os.environ.pop(database.DATABASE_URL_ENV, None)
    else:
        os.environ[database.DATABASE_URL_ENV] = previous


@pytest.fixture
def scratch_database(db_url):
    """Another empty database on the same server, dropped after the test."""
    url = database.with_database(db_url, f"{database.database_name(db_url)}_{uuid.uuid4().hex[:6]}")
    database.ensure_database(url)
    yield url
    database.drop_database(url)


@pytest.fixture
def engine(db_url) -> sa.Engine:
    """The test database, emptied of application rows before each test (the shared DNS cache too)."""
    eng = database.get_engine(db_url)
    with eng.begin() as conn:
        conn.exec_driver_sql("TRUNCATE " + ", ".join(APP_TABLES) + " RESTART IDENTITY CASCADE")
    return eng


class WorkspaceBuilder:
    """Writes ``tenants/*.yaml`` and inbox files under a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        (root / "tenants").mkdir(parents=True, exist_ok=True)
        (root / "inbox").mkdir(exist_ok=True)

    def tenant(self, tenant_id: str, yaml_text: str | None = None, sources: tuple[str, ...] = ("crm",), **extra) -> Path:
        if yaml_text is None:
            lines = [f"id: {tenant_id}", f"name: {tenant_id.title()}", "sources:"]
            for i, s in enumerate(sources):
                lines.append(f"  - id: {s}\n    priority: {10 * (len(sources) - i)}")
            yaml_text = "\n".join(lines) + "\n" + "".join(f"{k}: {v}\n" for k, v in extra.items())
        path = self.root / "tenants" / f"{tenant_id}.yaml"
        path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        for s in sources:
            (self.root / "inbox" / tenant_id / s).mkdir(parents=True, exist_ok=True)
        return path

    def file(self, tenant_id: str, source_id: str, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
        folder = self.root / "inbox" / tenant_id / source_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        return path


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> WorkspaceBuilder:
    builder = WorkspaceBuilder(tmp_path / "workspace")
    monkeypatch.setenv("EMAIL_ENGINE_WORKSPACE", str(builder.root))
    return builder


def pytest_collection_modifyitems(config, items):
    """Tests touching PostgreSQL carry the ``db`` mark (CI runs them again against a server)."""
    for item in items:
        if {"db_url", "engine"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
