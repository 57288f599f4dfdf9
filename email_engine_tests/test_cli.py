"""End to end: the ``email-engine`` commands on the bundled example workspace, Dagster storage on PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_engine_assets import cli
from email_engine_assets.main_job import IMPORT_KEYS
from email_engine_resources import postgres as database
from email_engine_resources.settings import DEFAULT_WORKSPACE, PROJECT_ROOT
from email_engine_tests.dns_server import LoopbackDnsServer, TestZone
from email_engine_tests.smtp_server import free_port


@pytest.fixture
def dagster_db(scratch_database):
    return scratch_database


@pytest.fixture
def example_workspace(tmp_path) -> Path:
    target = tmp_path / "workspace"
    shutil.copytree(DEFAULT_WORKSPACE, target)
    return target


@pytest.fixture
def cli_env(engine, dagster_db, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(dagster_db))
    monkeypatch.setenv("EMAIL_ENGINE_DNS_NAMESERVERS", "127.0.0.1")
    monkeypatch.setenv("EMAIL_ENGINE_DNS_PORT", str(free_port("127.0.0.1")))  # nothing answers there
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return dict(os.environ)


def test_main_command_ingests_the_examples_and_records_dagster_runs(cli_env, example_workspace, dagster_db, engine):
    started = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "email-engine"), "--workspace", str(example_workspace), "run"],
        env=cli_env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("tenant  source"))
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[header + 2 : header + 6]}
    assert set(rows) == {("acme", "crm"), ("acme", "salon"), ("globex", "events"), ("globex", "scraper")}
    with engine.connect() as conn:
        for (tenant, source), cells in rows.items():
            files, failed, total, new, merged, dupes, rejected, contacts = map(int, cells)
            assert total == new + merged + dupes + rejected and files == 1 and failed == 0
            stored = conn.execute(
                sa.text("SELECT sum(rows_total) FROM import_files WHERE tenant_id = :t AND source_id = :s"), {"t": tenant, "s": source}
            ).scalar_one()
            assert stored == total
        verdicts = dict(conn.execute(sa.text("SELECT verdict, count(*) FROM email_validations GROUP BY 1")).all())
        domain_facets = set(conn.execute(sa.text("SELECT DISTINCT domain_status, domain_detail FROM email_validations")).all())
    # no DNS server answers: nothing is called invalid (or valid) for it, and the run stays fast
    assert set(verdicts) <= {"unknown", "risky"} and verdicts["unknown"] >= 10
    assert domain_facets == {("unknown", "resolver unreachable")}
    assert elapsed < 120
    assert "valid  risky  invalid  unknown  languages" in proc.stdout
    dagster = sa.create_engine(database.sqlalchemy_url(dagster_db))
    with dagster.connect() as conn:
        runs = conn.execute(sa.text("SELECT pipeline_name, status, count(*) FROM runs GROUP BY 1, 2")).all()
    dagster.dispose()
    # the named jobs of the code location: one feedback run over both tenants, one import run per tenant (their
    # sources differ: no block holds both), one tenant_job run over both tenants, and the example campaign of
    # each tenant (send_at: now) sent through the outbox
    assert sorted(map(tuple, runs)) == [("campaign_send_job", "SUCCESS", 2), ("feedback_job", "SUCCESS", 1),
                                        ("import_job", "SUCCESS", 2), ("tenant_job", "SUCCESS", 1)]
    assert "campaign acme.autumn_news: completed audience=9 sent=9 " in proc.stdout
    assert "campaign globex.weekly_picks: completed audience=7 sent=6 " in proc.stdout and "(bad_address:1)" in proc.stdout
    outbox = Path(cli_env["EMAIL_ENGINE_HOME"]) / "outbox"
    assert len(list(outbox.rglob("*.eml"))) == 15
    with engine.connect() as conn:
        row_id, message_id = conn.execute(sa.text(
            "SELECT row_id, message_id FROM campaign_sends WHERE email = 'jean.dupont@example.fr' AND template = 'b2b_fr_salon'"
        )).one()
    message = email.message_from_bytes((outbox / "acme" / "autumn_news" / f"{row_id}.eml").read_bytes(), policy=email.policy.default)
    assert (message["Message-ID"], message["To"], message["Content-Language"]) == (message_id, "Jean Dupont <jean.dupont@example.fr>", "fr")
    assert message["List-Unsubscribe"].startswith("<https://unsubscribe.acme.example/u/")
    assert "Bonjour Jean" in message.get_body(("plain",)).get_content()


def _run_main_job(cli_env, workspace: Path) -> str:
    """``email-engine run`` in its own process (the code location reads the DNS settings when it is imported)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "email-engine"), "--workspace", str(workspace), "run"],
                          env=cli_env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_main_job_reports_a_blocked_campaign_succeeds_and_never_sends_twice(cli_env, example_workspace, engine):
    # Without working DNS every verdict is unknown: a segment of valid addresses only is empty.
    tenant = example_workspace / "tenants" / "globex.yaml"
    tenant.write_text(tenant.read_text().replace("    verdicts: [valid, risky, unknown]\n", "    verdicts: [valid]\n"))
    outbox = Path(cli_env["EMAIL_ENGINE_HOME"]) / "outbox"
    out = _run_main_job(cli_env, example_workspace)
    assert "campaign acme.autumn_news: completed audience=9 sent=9 " in out, out
    assert ("campaign globex.weekly_picks: scheduled audience=0 sent=0 handed_off=0 failed=0 unknown=0 skipped=0 "
            "(blocked by audience_not_empty: segment 'consumers' has no member to send to)") in out
    assert "FAILED" not in out
    files = {p: p.read_bytes() for p in outbox.rglob("*.eml")}
    with engine.connect() as conn:
        ledger = conn.execute(sa.text("SELECT row_id, state, message_id, attempts FROM campaign_sends ORDER BY row_id")).all()
    assert len(files) == 9
    out = _run_main_job(cli_env, example_workspace)
    assert "acme.autumn_news" not in out and "blocked by audience_not_empty" in out  # completed: not due again
    assert {p: p.read_bytes() for p in outbox.rglob("*.eml")} == files
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT row_id, state, message_id, attempts FROM campaign_sends ORDER BY row_id")).all() == ledger


def test_import_json_rejects_and_rerun(cli_env, example_workspace, tmp_path, capsys):
    drop = tmp_path / "new-leads.csv"
    drop.write_text("email,first_name\nnew@example.org,New\njean.dupont@example.fr,Jean\nnew@example.org,Again\nbroken,\n", encoding="utf-8")
    args = ["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm", "--json"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: out[k] for k in ("rows_total", "new", "merged", "duplicates", "rejected")} == {
        "rows_total": 4, "new": 1, "merged": 1, "duplicates": 1, "rejected": 1,
    }
    # the partition run imported the example crm file first (name order), so jean.dupont merges
    assert out["contacts_total"] >= 7
    assert (example_workspace / "inbox/acme/crm/new-leads.csv").exists()
    # the same content under another name is not imported twice, nor copied into the inbox
    again = tmp_path / "renamed.csv"
    again.write_bytes(drop.read_bytes())
    assert cli.main(["--workspace", str(example_workspace), "import", str(again), "--tenant", "acme", "--source", "crm", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second == {"file": out["file"], "status": "already_imported", "rows_total": 0, "new": 0, "merged": 0, "duplicates": 0,
                      "rejected": 0, "contacts_total": out["contacts_total"], "error": None}
    assert list(out) == list(second) == list(IMPORT_KEYS)  # the same keys whatever the status
    assert not (example_workspace / "inbox/acme/crm/renamed.csv").exists()
    assert cli.main(["--workspace", str(example_workspace), "rejects", "--tenant", "acme", "--source", "crm"]) == 0
    shown = capsys.readouterr().out
    assert "new-leads.csv:5: invalid email address: no @" in shown
    assert "crm-2026-11-01.csv:7:" in shown


def test_check_prints_json_lines_with_verdicts(cli_env, example_workspace, capsys, monkeypatch):
    zone = TestZone(mx={"good.example": [(10, "mx.good.example")], "nomail.example": [(0, ".")]})
    with LoopbackDnsServer(zone) as server:
        monkeypatch.setenv("EMAIL_ENGINE_DNS_PORT", str(server.port))
        assert cli.main(["--workspace", str(example_workspace), "check", "Ann@Good.example", "bob@nomail.example", "not an address"]) == 0
        first = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        queries = server.stats.total
        assert cli.main(["--workspace", str(example_workspace), "check", "ann@good.example"]) == 0
        again = json.loads(capsys.readouterr().out.strip())
        assert server.stats.total == queries  # answered from the shared cache
    assert [r["verdict"] for r in first] == ["valid", "invalid", "invalid"]
    assert cli.main(["--workspace", str(example_workspace), "check", "--no-dns", "ann@good.example", "not an address"]) == 0
    offline = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [list(r) for r in offline] == [list(first[0])] * 2 and offline[0]["dns_cached"] is None  # one shape, online or not
    assert first[0]["email"] == "ann@good.example" and first[0]["input"] == "Ann@Good.example"
    assert again["dns_cached"] is True and again["verdict"] == "valid"


def test_an_invalid_tenant_file_fails_the_run_but_not_the_other_tenants(cli_env, example_workspace, capsys, engine):
    (example_workspace / "tenants" / "acme.yaml").write_text("id: acme\nname: Acme\nsources:\n  - id: crm\n    priority: high\n")
    assert cli.main(["--workspace", str(example_workspace), "run"]) == 1
    out = capsys.readouterr().out
    assert "FAILED tenant acme not run: its tenant file is refused" in out
    refused = [line for line in out.splitlines() if line.startswith("REFUSED acme: tenant_file tenants/acme.yaml: ")]
    assert refused and "acme.yaml: sources[0].priority = 'high'" in out
    with engine.connect() as conn:
        imported = conn.execute(sa.text("SELECT DISTINCT tenant_id FROM import_files WHERE status = 'imported'")).scalars().all()
    assert imported == ["globex"]


def test_db_upgrade_is_idempotent(cli_env, engine, capsys):
    from email_engine_resources import migrations

    migrations._UP_TO_DATE.clear()  # as a new process would
    assert cli.main(["db", "upgrade"]) == 0
    assert "applied now: none" in capsys.readouterr().out
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
    assert versions == [p.name.split("_", 1)[0] for p in migrations.migration_files()]


def test_migrations_apply_to_an_empty_database(scratch_database):
    from email_engine_resources import migrations

    engine = sa.create_engine(database.sqlalchemy_url(scratch_database))
    try:
        applied = migrations.upgrade(engine)
        assert applied == [p.name for p in migrations.migration_files()]
        migrations._UP_TO_DATE.clear()
        assert migrations.upgrade(engine) == []
        with engine.connect() as conn:
            tables = set(conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        assert {"contacts", "import_files", "rejected_rows", "staged_rows", "dns_cache", "tag_assignments"} <= tables
    finally:
        engine.dispose()


def email_engine(args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "email-engine"), *args], env=env, capture_output=True, text=True, timeout=300,
        cwd=PROJECT_ROOT, **kwargs,
    )


def test_rejects_neutralise_terminal_escape_sequences(cli_env, example_workspace, tmp_path, capsys):
    hostile = "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \x9b31m nai\u202egpj.exe \x00\x7f"
    drop = tmp_path / "hostile.csv"
    drop.write_text(f"email,first_name\n{hostile},x\nok@example.org,Ok\n", encoding="utf-8")
    assert cli.main(["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm", "--no-quality"]) == 0
    capsys.readouterr()
    assert cli.main(["--workspace", str(example_workspace), "rejects", "--tenant", "acme", "--source", "crm"]) == 0
    shown = capsys.readouterr().out
    assert "hostile.csv:2:" in shown
    assert not any(ch in shown for ch in "\x1b\x07\x9b\u202e\x00\x7f")
    assert "\\x1b[2J\\x1b]0;owned\\x07" in shown and "\\x9b31m" in shown and "nai\\u202egpj.exe" in shown


def test_terminal_safe_keeps_text_and_escapes_controls():
    assert cli.terminal_safe("Zoë <zoe@exämple.fr>;\tok") == "Zoë <zoe@exämple.fr>;\\tok"
    assert cli.terminal_safe("a\u2028b\u2066c\u200fd\U000e0001") == "a\\u2028b\\u2066c\\u200fd\\U000e0001"


@pytest.mark.parametrize("planted", ["leads.csv.part", "leads.csv"])
def test_import_copy_never_follows_a_planted_link(cli_env, example_workspace, tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite\n")
    (example_workspace / "inbox/acme/crm" / planted).symlink_to(victim)
    drop = tmp_path / "leads.csv"
    drop.write_text("email\nnew@example.org\n")
    status = cli.main(["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm"])
    assert status == 0
    assert victim.read_text() == "do not overwrite\n"  # the planted link was replaced, never written through
    placed = example_workspace / "inbox/acme/crm/leads.csv"
    assert not placed.is_symlink() and placed.read_text() == "email\nnew@example.org\n"


def test_import_json_prints_one_object_and_no_quality_stops_after_the_merge(cli_env, example_workspace, tmp_path, engine):
    drop = tmp_path / "leads.csv"
    drop.write_text("email,first_name\nann@example.org,Ann\nbob@example.org,Bob\n")
    proc = email_engine(["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm", "--json", "--no-quality"], cli_env)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)  # exactly one JSON object, nothing else on stdout
    assert counts["status"] == "imported" and counts["new"] == 2 and counts["rows_total"] == 2
    assert "importing" in proc.stderr and "merging" in proc.stderr
    with engine.connect() as conn:
        contacts = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme'")).scalar_one()
        verdicts = conn.execute(sa.text("SELECT count(*) FROM email_validations")).scalar_one()
    assert contacts == counts["contacts_total"] >= 2 and verdicts == 0


def test_import_shows_counts_before_the_quality_assets_run(cli_env, example_workspace, tmp_path, engine, monkeypatch):
    drop = tmp_path / "leads.csv"
    drop.write_text("email\nann@example.org\n")
    seen = []

    class Watch:
        """stdout that records, at the moment the counts are written, whether any verdict exists yet."""

        def write(self, text):
            if text.strip():
                with engine.connect() as conn:
                    verdicts = conn.execute(sa.text("SELECT count(*) FROM email_validations")).scalar_one()
                seen.append((json.loads(text)["status"], verdicts))
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Watch())
    assert cli.main(["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm", "--json"]) == 0
    monkeypatch.undo()
    assert seen == [("imported", 0)]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM email_validations")).scalar_one() >= 1


def test_import_exits_non_zero_when_an_asset_fails(cli_env, example_workspace, tmp_path, engine, capsys):
    drop = tmp_path / "leads.csv"
    drop.write_text("email\nann@example.org\n")
    with engine.begin() as conn:  # the database refuses every tag assignment
        conn.execute(sa.text("ALTER TABLE tag_assignments ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"))
    try:
        code = cli.main(["--workspace", str(example_workspace), "import", str(drop), "--tenant", "acme", "--source", "crm", "--json"])
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE tag_assignments DROP CONSTRAINT refuse_all"))
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["status"] == "imported"  # the counts, then the failure
    assert "FAILED acme: tag_assignments" in captured.err and "refuse_all" in captured.err


def test_check_reads_stdin_takes_dash_addresses_and_answers_offline(cli_env, example_workspace, capsys, monkeypatch):
    zone = TestZone(mx={"good.example": [(10, "mx.good.example")]})
    with LoopbackDnsServer(zone) as server:
        monkeypatch.setenv("EMAIL_ENGINE_DNS_PORT", str(server.port))
        monkeypatch.setattr(sys, "stdin", io.StringIO("info@good.example\n\nnot an address\n"))
        args = ["--workspace", str(example_workspace), "check", "--no-dns", "ann@good.example", "-", "--", "-lead@good.example"]
        assert cli.main(args) == 0
        assert server.stats.total == 0  # offline: not one DNS query
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["input"] for r in rows] == ["ann@good.example", "info@good.example", "not an address", "-lead@good.example"]
    verdicts = {r["input"]: r["verdict"] for r in rows}
    assert verdicts["ann@good.example"] == "unknown" and "domain: not_checked" in rows[0]["reasons"]
    assert verdicts["info@good.example"] == "risky" and "role_account" in rows[1]["reasons"]
    assert verdicts["not an address"] == "invalid"
    assert rows[3]["syntax_ok"] in (True, False) and rows[3]["domain_status"] is None
