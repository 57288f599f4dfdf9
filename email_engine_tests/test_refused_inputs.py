"""Nothing refused in silence: for each kind of input, one the engine could not read is named in
``email-engine run``'s output with why, fails the ``inputs_read`` asset check (severity ERROR) of the
asset that reads it, and makes ``run`` exit 1; fixed or moved away, it clears by itself. A send does
not go out while the tenant's feedback is unread (``sender_reputation``), unless overridden."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import cli
from email_engine_assets.feedback.accounting_apply import apply_accounting
from email_engine_assets.feedback.inbox_store import store_body
from email_engine_assets.tenancy.config import parse_tenant
from email_engine_assets.tenancy.input_problems import INPUT_KINDS, INPUTS_READ
from email_engine_assets.tenancy.input_problems_store import unread_inputs
from email_engine_resources import postgres as database
from email_engine_resources.transports import PowerMtaResource
from email_engine_tests.smtp_server import free_port
from email_engine_tests.test_campaign_stats import camp  # noqa: F401 (a fixture)
from email_engine_tests.test_accounting_apply import pmta_tenant_text

HEADER = "type,timeLogged,orig,rcpt,dsnAction,dsnStatus,dsnDiag,jobId,envId\n"


@pytest.fixture
def cli_env(engine, scratch_database, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.setenv("EMAIL_ENGINE_DNS_NAMESERVERS", "127.0.0.1")
    monkeypatch.setenv("EMAIL_ENGINE_DNS_PORT", str(free_port("127.0.0.1")))  # nothing answers there
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def run(workspace, capsys) -> tuple[int, str]:
    code = cli.main(["--workspace", str(workspace.root), "run"])
    return code, capsys.readouterr().out


def last_check(asset: str, tenant_id: str) -> tuple[bool, dg.AssetCheckSeverity, str]:
    """(passed, severity, description) of the latest ``inputs_read`` evaluation of ``asset`` the runs recorded."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), INPUTS_READ)
    with dg.DagsterInstance.get() as instance:  # the instance `run` used (its DAGSTER_HOME)
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    evaluation = records[0].event.dagster_event.event_specific_data
    assert evaluation.metadata["tenant"].value == tenant_id
    return evaluation.passed, evaluation.severity, evaluation.description


def refused_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("REFUSED ")]


def pmta_tenant(workspace, acct_dir: Path) -> None:
    workspace.tenant("acme", pmta_tenant_text("acme", name="Acme", accounting_dir=acct_dir))


# --- one test per kind of input ---------------------------------------------------------------------

def test_a_broken_tenant_file_is_named_fails_its_check_and_the_run_until_fixed(cli_env, workspace, capsys):
    workspace.tenant("acme", "id: acme\nname: Acme\nsources:\n  - id: crm\n    priority: high\n")
    code, out = run(workspace, capsys)
    assert code == 1
    assert [line for line in refused_lines(out) if "tenant_file tenants/acme.yaml:" in line and "priority" in line], out
    passed, severity, description = last_check("tenant_files", "acme")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and "tenants/acme.yaml" in description
    workspace.tenant("acme")
    code, out = run(workspace, capsys)
    assert (code, refused_lines(out)) == (0, []), out
    assert last_check("tenant_files", "acme")[0]


@pytest.mark.parametrize("folder, text, named", [
    ("campaigns", "segment: all\nnot_a_key: 1\n", "campaign_file acme.bad:"),
    ("templates", "category: news\nlanguage: en\n", "template_file templates/acme/bad:"),
])
def test_a_broken_campaign_or_template_file_is_named_fails_its_check_and_clears_once_moved_away(
        cli_env, workspace, capsys, folder, text, named):
    workspace.tenant("acme")
    path = workspace.root / folder / "acme" / "bad.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    code, out = run(workspace, capsys)
    assert code == 1
    assert [line for line in refused_lines(out) if line.startswith(f"REFUSED acme: {named}") and "bad.yaml" in line], out
    passed, severity, description = last_check("tenant_files", "acme")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and named.split()[1] in description
    path.rename(workspace.root / "bad.yaml.moved")
    code, out = run(workspace, capsys)
    assert (code, refused_lines(out)) == (0, []), out
    assert last_check("tenant_files", "acme")[0]


def test_an_inbox_file_that_cannot_be_read_is_named_fails_the_contacts_check_and_clears_once_moved_away(
        cli_env, workspace, capsys, tmp_path):
    workspace.tenant("acme")
    outside = tmp_path / "outside.csv"
    outside.write_text("email\nann@example.com\n")
    link = workspace.root / "inbox" / "acme" / "crm" / "planted.csv"
    link.symlink_to(outside)
    workspace.file("acme", "crm", "good.csv", "email,first_name\nbob@example.com,Bob\nnot an address,X\n")
    code, out = run(workspace, capsys)
    assert code == 1
    (line,) = refused_lines(out)
    assert line.startswith("REFUSED acme: inbox_file ") and "planted.csv" in line and "link" in line, out
    passed, severity, description = last_check("contacts", "acme")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and "planted.csv" in description
    link.unlink()
    code, out = run(workspace, capsys)
    assert (code, refused_lines(out)) == (0, []), out  # the good file's rejected row is no refusal
    assert last_check("contacts", "acme")[0]


def test_a_refused_accounting_file_is_named_fails_the_feedback_check_and_the_run_until_fixed(cli_env, workspace, capsys, tmp_path):
    acct = tmp_path / "acct"
    acct.mkdir()
    pmta_tenant(workspace, acct)
    refused = acct / "acct-2026-11-29.csv"
    refused.write_text("timeLogged,rcpt\n2026-11-29 10:00:00+0000,ann@example.com\n")  # no type column
    code, out = run(workspace, capsys)
    assert code == 1
    (line,) = refused_lines(out)
    assert line.startswith(f"REFUSED acme: accounting_file {refused}: ") and "type" in line, out
    passed, severity, description = last_check("delivery_events", "acme")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and str(refused) in description
    refused.write_text(HEADER + "d,2026-11-29 10:00:00+0000,b@example.com,ann@example.com,relayed,2.0.0,,,\n")
    code, out = run(workspace, capsys)
    assert (code, refused_lines(out)) == (0, []), out
    assert last_check("delivery_events", "acme")[0]


def test_a_file_stopped_part_way_is_a_problem_unless_it_is_the_newest_still_growing(engine, tmp_path):
    acct = tmp_path / "acct"
    acct.mkdir()
    text = textwrap.dedent(f"""\
        id: acme
        name: Acme
        sources: [{{id: crm}}]
        transports: [{{name: pmta, kind: powermta, host: 127.0.0.1, bounce_address: b@example.com, accounting_dir: {acct}}}]
        """)
    tenant = parse_tenant(tmp_path / "acme.yaml", text)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x')"))
    line = "d,2026-11-29 10:00:00+0000,b@example.com,{},relayed,2.0.0,,,\n"
    older, newest = acct / "acct-1.csv", acct / "acct-2.csv"
    older.write_text(HEADER + line.format("ann@example.com") + line.format("bob@example.com")[:20])
    newest.write_text(HEADER + line.format("cat@example.com")[:20])
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    out = apply_accounting(engine, tenant, PowerMtaResource())
    with engine.connect() as conn:
        (problem,) = unread_inputs(conn, ["acme"])["acme"]
    assert problem.name == str(older) and "last line is incomplete" in problem.reason
    assert out["problems"] == [problem.line()]
    with older.open("a") as f:  # PowerMTA finished the line after all
        f.write(line.format("bob@example.com")[20:])
    os.utime(older, ns=(1_000_000_000, 1_000_000_000))
    assert "problems" not in apply_accounting(engine, tenant, PowerMtaResource())  # the newest file's partial line waits: no problem
    with engine.connect() as conn:
        assert unread_inputs(conn, ["acme"]) == {}


def test_two_transports_sharing_a_directory_record_a_refused_file_once(engine, tmp_path):
    acct = tmp_path / "acct"
    acct.mkdir()
    (acct / "acct-1.csv").write_text("rcpt\nann@example.com\n")
    transport = "{{name: {}, kind: powermta, host: 127.0.0.1, bounce_address: b@example.com, accounting_dir: " + str(acct) + "}}"
    text = f"id: acme\nname: Acme\nsources: [{{id: crm}}]\ntransports: [{transport.format('one')}, {transport.format('two')}]\n"
    apply_accounting(engine, parse_tenant(tmp_path / "acme.yaml", text), PowerMtaResource())
    with engine.connect() as conn:
        (problem,) = unread_inputs(conn, ["acme"])["acme"]
    assert problem.name == str(acct / "acct-1.csv") and "type" in problem.reason


def test_a_failed_webhook_row_is_named_fails_the_feedback_check_and_clears_once_retried_or_discarded(
        cli_env, workspace, capsys, engine):
    workspace.tenant("acme")
    with engine.begin() as conn:
        row_id, _ = store_body(conn, "acme", "contacts", "events", b'{"email": "ann@example.com"}', "application/json")
        junk_id, _ = store_body(conn, "acme", "mailwizz", None, b"<html>not a hit</html>", "text/html")
    code, out = run(workspace, capsys)
    assert code == 1
    lines = refused_lines(out)
    assert lines[0].startswith(f"REFUSED acme: webhook_row #{row_id} contacts/events: source events is not in the tenant file"), out
    assert lines[1].startswith(f"REFUSED acme: webhook_row #{junk_id} mailwizz: body not readable") and len(lines) == 2, out
    passed, severity, description = last_check("delivery_events", "acme")
    assert not passed and severity == dg.AssetCheckSeverity.ERROR and f"#{row_id}" in description
    code, out = run(workspace, capsys)
    assert code == 1 and len(refused_lines(out)) == 2  # each run says it again
    workspace.tenant("acme", sources=("crm", "events"))
    assert cli.main(["--workspace", str(workspace.root), "webhooks", "retry", "acme"]) == 1  # the junk row fails again
    assert cli.main(["--workspace", str(workspace.root), "webhooks", "discard", "acme", str(junk_id), str(row_id)]) == 1
    assert f"not a failed row of acme with a body: #{row_id}" in capsys.readouterr().err  # applied by the retry
    code, out = run(workspace, capsys)
    assert (code, refused_lines(out)) == (0, []), out
    assert last_check("delivery_events", "acme")[0]
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT outcome, octet_length(body), detail FROM webhook_inbox WHERE id = :i"), {"i": junk_id}).one()
    assert kept[:2] == ("failed", 0) and kept[2].startswith("discarded by the operator: body not readable")


def test_a_failed_mailwizz_poll_is_named_by_run_until_read_or_its_transport_is_removed(cli_env, workspace, capsys, engine, monkeypatch):
    from email_engine_assets.feedback.mailwizz_assets import mailwizz_feedback
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.transports import MailwizzResource
    from email_engine_resources.workspace import WorkspaceResource
    from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz
    from email_engine_tests.test_mailwizz_feedback import KEY_ENV, tenant_text

    def poll() -> dg.AssetCheckEvaluation:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("tenant", ["acme"])
            result = dg.materialize([mailwizz_feedback], partition_key="acme", instance=instance,
                                    resources={"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource()})
        return result.get_asset_check_evaluations()[0]

    with running_mailwizz(MailwizzState()) as (url, _state):
        workspace.tenant("acme", tenant_text(url))
        monkeypatch.delenv(KEY_ENV, raising=False)
        check = poll()
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        code, out = run(workspace, capsys)
        assert code == 1
        (line,) = refused_lines(out)
        assert line.startswith("REFUSED acme: mailwizz_poll mailwizz transport 'mw': poll stopped: ") and KEY_ENV in line, out
        code, out = run(workspace, capsys)
        assert code == 1 and len(refused_lines(out)) == 1  # no poll ran since: still unread
        workspace.tenant("acme")  # the transport is gone from the tenant file: nothing will poll it again
        code, out = run(workspace, capsys)
        assert (code, refused_lines(out)) == (0, []), out
    # (a poll that reads again clears it too: test_mailwizz_feedback)


# --- the send -----------------------------------------------------------------------------------------

def test_a_send_waits_while_the_tenants_feedback_is_unread_unless_overridden(camp, tmp_path):
    from email_engine_assets import campaign_runs

    acct = tmp_path / "acct"
    acct.mkdir()
    refused = acct / "acct-1.csv"
    refused.write_bytes(b"\xff\xfetype,rcpt\n")  # no readable type column: the whole file is refused
    camp.workspace.tenant("acme", transports=f"[{{name: pmta, kind: powermta, host: 127.0.0.1, "
                                             f"bounce_address: b@example.com, accounting_dir: {acct}}}]")
    blocked = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["sender_reputation"] and blocked.counts["sent"] == 0
    assert blocked.blocked[0]["reason"].startswith(f"1 feedback input(s) not read: accounting_file {refused}: header has no 'type' column")
    done = campaign_runs.send("acme.spring", overrides=["sender_reputation"], instance=camp.instance, definitions=camp.defs)
    assert done.blocked == [] and done.counts["sent"] == 6
    refused.write_text(HEADER)
    assert campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs).blocked == []


def test_the_table_checks_exactly_the_python_vocabulary(engine):
    import re

    with engine.connect() as conn:
        (check,) = conn.execute(sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                        "WHERE conrelid = 'input_problems'::regclass AND contype = 'c'")).scalars().all()
    assert sorted(re.findall(r"'([^']*)'::text", check)) == sorted(INPUT_KINDS)
