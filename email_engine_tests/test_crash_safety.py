"""No file left 'processing': a killed importer's file is taken up again; any exception fails only its file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa

from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.assets import contact_imports
from email_engine_assets.contacts.importer import (
    file_digest,
    import_file,
    import_source,
)
from email_engine_assets.tenancy.config import SourceConfig, load_workspace
from email_engine_assets.tenancy.partitions import import_key
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

REPO = Path(__file__).resolve().parents[1]
BIG_ROWS = 300_000
# Every 1000th row is not an address, every 500th repeats the row before it.
BIG_COUNTS = {"rows_total": BIG_ROWS, "new": BIG_ROWS - 300 - 600, "merged": 0, "duplicates": 600, "rejected": 300}
GOOD = "email\nnext@example.com\n"

IMPORTER = """
import sys
from pathlib import Path
from email_engine_assets.contacts.importer import import_source
from email_engine_assets.tenancy.config import load_workspace
from email_engine_resources.postgres import get_engine
ws = load_workspace(Path(sys.argv[1]))
tenant = ws.tenants["acme"]
import_source(get_engine(), tenant, tenant.source("crm"), ws.source_dir("acme", "crm"))
"""


def _big_row(i: int) -> str:
    if i % 1000 == 999:
        return f"not-an-address-{i},N{i}\n"
    if i % 500 == 250:
        return f"user{i - 1}@example.com,N{i}\n"
    return f"user{i}@example.com,N{i}\n"


@pytest.fixture(scope="module")
def big_csv() -> str:
    return "email,first_name\n" + "".join(_big_row(i) for i in range(BIG_ROWS))


@pytest.fixture
def acme(engine, workspace):
    workspace.tenant("acme")
    ws = load_workspace(workspace.root)
    with engine.begin() as conn:
        ledger.register_workspace(conn, ws)
    return ws.tenants["acme"]


def _ledger(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM import_files ORDER BY path"))
        return [dict(r._mapping) for r in rows]


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _copy_in_progress(engine) -> int | None:
    """The backend pid of a COPY into staged_rows that has sent rows already, if any."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                """SELECT pid FROM pg_stat_progress_copy
                   WHERE datname = current_database() AND relid = 'staged_rows'::regclass AND tuples_processed > 0"""
            )
        ).scalar()


def _wait_for(probe, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _backend_gone(engine, pid: int) -> bool:
    with engine.connect() as conn:
        return not conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first()


def test_a_file_whose_importer_was_killed_mid_copy_is_imported_again_exactly(engine, workspace, acme, big_csv):
    path = workspace.file("acme", "crm", "big.csv", big_csv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", IMPORTER, str(workspace.root)], env=env)
    try:
        backend = _wait_for(lambda: _copy_in_progress(engine), "the importer's COPY into staged_rows")
        assert [r["status"] for r in _ledger(engine)] == ["processing"]
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    # The server ends the dead client's session: its staging transaction and its file lock go with it.
    _wait_for(lambda: _backend_gone(engine, backend), "the killed importer's session to end")
    assert [r["status"] for r in _ledger(engine)] == ["processing"]
    assert _count(engine, "staged_rows") == 0 and _count(engine, "rejected_rows") == 0

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        instance.add_dynamic_partitions("source", ["crm"])
        result = dg.materialize(
            [contact_imports], partition_key=import_key("acme", "crm"), instance=instance,
            resources={"db": PostgresResource(), "workspace": WorkspaceResource()},
        )
    assert result.asset_materializations_for_node("contact_imports")[0].metadata["files_imported"].value == 1
    (row,) = _ledger(engine)  # one ledger row for the content
    assert row["status"] == "imported" and row["path"] == str(path) and row["error"] is None
    assert {k: row[k] for k in BIG_COUNTS} == BIG_COUNTS
    assert row["new"] + row["merged"] + row["duplicates"] + row["rejected"] == BIG_ROWS
    assert _count(engine, "staged_rows") == row["new"] + row["merged"] + row["duplicates"]
    assert _count(engine, "rejected_rows") == row["rejected"]


def test_a_claim_left_by_a_dead_session_is_taken_again_and_a_live_one_is_not(engine, workspace, acme):
    workspace.file("acme", "crm", "a.csv", "email\na@example.com\nb@example.com\n")
    with ledger.file_session(engine) as holder:
        with holder.begin():
            file_id = ledger.claim_file(holder, tenant_id="acme", source_id="crm", path="a.csv", sha256=_digest(workspace), size=1, priority=0, run_id=None)
        # A live session works on the file: the next run leaves it alone.
        assert [r.status for r in import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")] == ["skipped"]
        assert [r["status"] for r in _ledger(engine)] == ["processing"]
        # The process dies between its claim and its staging transaction.
        holder.invalidate()
    _wait_for(lambda: not _file_lock_held(engine), "the dead session's lock to go")
    (report,) = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    assert report.status == "imported" and report.counts["new"] == 2
    assert [(r["file_id"], r["status"]) for r in _ledger(engine)] == [(file_id, "imported")]


def _waiting_claimer(engine) -> int | None:
    """The backend pid of a session waiting for a ledger row another transaction locks, if any."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                """SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%FROM import_files%FOR UPDATE%'"""
            )
        ).scalar()


def _advisory_locks_of(engine, pid: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE pid = :p AND locktype = 'advisory' AND granted"), {"p": pid}
        ).scalar_one()


def test_the_session_a_run_shares_gives_back_each_files_lock_once_the_file_is_done(engine, workspace, acme):
    """One connection imports the run's files; a file done is nobody's, so nothing finished looks live or dead."""
    workspace.file("acme", "crm", "a.csv", "email\na@example.com\n")
    second = workspace.file("acme", "crm", "b.csv", "email\nb@example.com\n")
    reports: list = []
    with engine.connect() as other:
        # b.csv failed in an earlier run; this transaction holds its ledger row, so the run waits at b's claim.
        other.execute(
            sa.text(
                """INSERT INTO import_files (tenant_id, source_id, path, content_sha256, size_bytes, status)
                   VALUES ('acme', 'crm', 'b.csv', :h, 1, 'failed')"""
            ),
            {"h": file_digest(second)},
        )
        other.commit()
        other.execute(sa.text("SELECT 1 FROM import_files WHERE path = 'b.csv' FOR UPDATE"))
        run = threading.Thread(target=lambda: reports.extend(import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")))
        run.start()
        try:
            importer = _wait_for(lambda: _waiting_claimer(engine), "the run to reach b.csv")
            assert [(Path(r["path"]).name, r["status"]) for r in _ledger(engine)] == [("a.csv", "imported"), ("b.csv", "failed")]
            assert _advisory_locks_of(engine, importer) == 0  # a.csv's lock went back with its row closed
            with engine.connect() as conn:
                assert ledger.abandoned_files(conn) == []
        finally:
            other.rollback()
            run.join(60)
    assert [r.status for r in reports] == ["imported", "imported"]
    assert [r["status"] for r in _ledger(engine)] == ["imported", "imported"]
    assert not _file_lock_held(engine)


def test_reclaiming_deletes_rows_left_staged_under_the_file(engine, workspace, acme):
    """Defence in depth: staging commits with the status, but a row must never count twice."""
    workspace.file("acme", "crm", "a.csv", "email\na@example.com\nb@example.com\n")
    with engine.begin() as conn:
        file_id = conn.execute(
            sa.text(
                """INSERT INTO import_files (tenant_id, source_id, path, content_sha256, size_bytes, status)
                   VALUES ('acme', 'crm', 'a.csv', :h, 1, 'processing') RETURNING file_id"""
            ),
            {"h": _digest(workspace)},
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO staged_rows (tenant_id, file_id, line_no, email, email_raw) VALUES ('acme', :f, 2, 'a@example.com', 'a@example.com')"),
            {"f": file_id},
        )
        conn.execute(sa.text("INSERT INTO rejected_rows VALUES ('acme', :f, 9, 'x', 'stale')"), {"f": file_id})
    (report,) = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    assert report.status == "imported" and report.counts == {"rows_total": 2, "new": 2, "merged": 0, "duplicates": 0, "rejected": 0}
    assert _count(engine, "staged_rows") == 2 and _count(engine, "rejected_rows") == 0


def _digest(workspace) -> str:
    from email_engine_assets.contacts.importer import file_digest

    return file_digest(workspace.root / "inbox/acme/crm/a.csv")


def _file_lock_held(engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    """SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                       WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted"""
                )
            ).first()
        )


def _outcome(engine) -> list[tuple[str, str, str | None]]:
    return [(Path(r["path"]).name, r["status"], r["error"]) for r in _ledger(engine)]


def test_too_deeply_nested_json_fails_its_file_and_the_next_file_imports(engine, workspace, acme):
    workspace.file("acme", "crm", "a_deep.json", '[{"email": "a@example.com", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]")
    workspace.file("acme", "crm", "b_next.csv", GOOD)
    reports = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    assert [r.status for r in reports] == ["failed", "imported"]
    assert _outcome(engine) == [
        ("a_deep.json", "failed", "a_deep.json: values nested too deeply to read (RecursionError)"),
        ("b_next.csv", "imported", None),
    ]
    assert _count(engine, "staged_rows") == 1


def test_an_encoding_that_is_no_text_codec_fails_each_file_of_the_source(engine, workspace, acme):
    # The configuration now refuses such a name; a source stored before that check still must not wedge the ledger.
    source = SourceConfig.model_construct(**{**acme.source("crm").model_dump(), "encoding": "rot13"})
    workspace.file("acme", "crm", "a.csv", GOOD)
    workspace.file("acme", "crm", "b.csv", "email\nother@example.com\n")
    reports = import_source(engine, acme, source, workspace.root / "inbox/acme/crm")
    assert [r.status for r in reports] == ["failed", "failed"]
    for name, status, error in _outcome(engine):
        assert status == "failed" and error.startswith(f"{name}: ") and "'rot-13' is not a text encoding" in error
        assert error.endswith("(LookupError)")


def test_running_out_of_memory_mid_copy_fails_the_file_and_the_next_file_imports(engine, workspace, acme, monkeypatch):
    """MemoryError raised by the driver while it sends rows (injected in psycopg, not in our code)."""
    write = psycopg.Copy.write
    calls = []

    def write_until_memory_runs_out(self, buffer):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError()
        return write(self, buffer)

    monkeypatch.setattr(psycopg.Copy, "write", write_until_memory_runs_out)
    workspace.file("acme", "crm", "a_big.csv", "email\n" + "".join(f"u{i}@example.com\n" for i in range(100)))
    workspace.file("acme", "crm", "b_next.csv", GOOD)
    reports = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    assert [r.status for r in reports] == ["failed", "imported"]
    assert _outcome(engine)[0] == ("a_big.csv", "failed", "a_big.csv: out of memory while reading (MemoryError)")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT DISTINCT email FROM staged_rows")).scalars().all() == ["next@example.com"]
    assert not _file_lock_held(engine)  # the pooled session gave its file locks back


def test_a_database_session_killed_mid_copy_fails_the_file_and_the_next_file_imports(engine, workspace, acme, big_csv):
    workspace.file("acme", "crm", "a_big.csv", big_csv)
    workspace.file("acme", "crm", "b_next.csv", GOOD)
    killed = []

    def terminate_the_copy():
        pid = _wait_for(lambda: _copy_in_progress(engine), "the COPY into staged_rows")
        with engine.connect() as conn:
            killed.append(conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one())

    watcher = threading.Thread(target=terminate_the_copy)
    watcher.start()
    try:
        reports = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    finally:
        watcher.join(90)
    assert killed == [True]
    assert [r.status for r in reports] == ["failed", "imported"]
    (name, status, error), after = _outcome(engine)
    assert (name, status) == ("a_big.csv", "failed")
    assert error.startswith("a_big.csv: database error") and "example.com" not in error
    assert after == ("b_next.csv", "imported", None)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT DISTINCT email FROM staged_rows")).scalars().all() == ["next@example.com"]
    # The failed content is imported by the next run.
    reports = import_source(engine, acme, acme.source("crm"), workspace.root / "inbox/acme/crm")
    assert [r.status for r in reports] == ["imported", "skipped"]
    assert {k: reports[0].counts[k] for k in BIG_COUNTS} == BIG_COUNTS


def test_a_second_import_of_imported_content_claims_nothing(engine, workspace, acme):
    path = workspace.file("acme", "crm", "a.csv", GOOD)
    assert import_file(engine, acme, acme.source("crm"), path).status == "imported"
    assert import_file(engine, acme, acme.source("crm"), path).status == "skipped"
    assert [(r["status"], r["rows_total"]) for r in _ledger(engine)] == [("imported", 1)]
    assert not _file_lock_held(engine)


def test_the_sensor_requests_a_run_for_a_file_whose_importer_died(engine, workspace, acme):
    """The cursor marks a requested file handled; the ledger, not the cursor, tells that its run died."""
    path = workspace.file("acme", "crm", "a.csv", "email\na@example.com\n")
    old = time.time() - 3600
    os.utime(path, (old, old))
    with dg.instance_for_test() as instance:
        first = inbox_sensor_with_cursor(instance, None)
        assert len(first.run_requests) == 1
        cursor = first.cursor
        with ledger.file_session(engine) as holder:
            with holder.begin():
                ledger.claim_file(holder, tenant_id="acme", source_id="crm", path=str(path), sha256=_digest(workspace), size=1, priority=0, run_id=None)
            # While its importer lives, the file is nobody's to take.
            live = inbox_sensor_with_cursor(instance, cursor)
            assert live.run_requests == []
            holder.invalidate()  # the importer dies between claim and staging
        _wait_for(lambda: not _file_lock_held(engine), "the dead session's lock to go")
        dead = inbox_sensor_with_cursor(instance, cursor)
        (request,) = dead.run_requests
        assert request.partition_key == import_key("acme", "crm") and request.run_key.startswith("reclaim:")
        for dimension, key in (("tenant", "acme"), ("source", "crm")):  # what the daemon does with the tick's requests
            instance.add_dynamic_partitions(dimension, [key])
        result = dg.materialize(
            [contact_imports], partition_key=request.partition_key, instance=instance,
            resources={"db": PostgresResource(), "workspace": WorkspaceResource()},
        )
        assert result.success
        assert [r["status"] for r in _ledger(engine)] == ["imported"]
        assert inbox_sensor_with_cursor(instance, dead.cursor).run_requests == []


def inbox_sensor_with_cursor(instance, cursor: str | None) -> dg.SensorResult:
    from email_engine_assets.contacts.sensors import inbox_sensor

    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"workspace": WorkspaceResource(), "db": PostgresResource()}
    )
    return inbox_sensor(context)
