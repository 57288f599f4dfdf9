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
from email_engine_tests.smtp_server import free_port

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
    workspace.tenant("acme", textwrap.dedent(f"""\
        id: acme
        name: Acme
        sources:
          - id: crm
            priority: 10
        transports:
          - name: pmta
            kind: powermta
            host: 127.0.0.1
            bounce_address: bounces@example.com
            accounting_dir: {acct_dir}
        """))


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
