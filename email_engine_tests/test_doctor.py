"""``email-engine doctor`` and ``doctor_sensor``: the same probes against real loopback servers.

PostgreSQL, the DNS test server, the PowerMTA stand-in (EHLO) and its management API, the MailWizz
stand-in (an authenticated call) and the webhook app are all real servers on loopback; the code
location's resources are swapped for test settings through ``definitions.with_resources``.
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import dagster as dg
import pytest

from email_engine_assets import cli
from email_engine_assets.definitions import with_resources
from email_engine_assets.doctor.sensors import doctor_sensor
from email_engine_assets.feedback.webhook_app import build_app
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.transports import MailwizzResource, OutboxResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.dns_server import TestZone, running_dns_server
from email_engine_tests.http_servers import serving
from email_engine_tests.mailwizz_server import running_mailwizz
from email_engine_tests.powermta_server import ManagementState, PowerMtaStandIn, running_management
from email_engine_tests.smtp_server import free_port
from email_engine_tests.test_accounting_apply import PMTA_CONF
from email_engine_tests.test_alerts import SLACK_PATH, running_chat, slack_env

MW_KEY_ENV = "ACME_DOCTOR_MAILWIZZ_KEY"
MGMT_KEY_ENV = "ACME_DOCTOR_PMTA_KEY"
MGMT_KEY = "mgmt-secret-key"
WRONG_KEY = "wrong-secret-key-42"


def tenant_text(mta_host: str, mta_port: int, conf, mgmt_url: str, mw_url: str) -> str:
    return textwrap.dedent(f"""\
        id: acme
        name: Acme
        sources:
          - id: crm
            priority: 10
        transports:
          - name: pmta
            kind: powermta
            host: {mta_host}
            port: {mta_port}
            virtual_mta: vmta1
            bounce_address: bounces@bounce.acme.example
            allow_private: true
            timeout_seconds: 5
            config_file: {conf}
            management_url: {mgmt_url}
            management_api_key: {{env: {MGMT_KEY_ENV}}}
          - name: mw
            kind: mailwizz
            base_url: {mw_url}
            api_key: {{env: {MW_KEY_ENV}}}
            retries: 0
            allow_private: true
        """)


@pytest.fixture
def site(engine, workspace, tmp_path, monkeypatch):
    """Every part up and the tenant file pointing at them; ``site.defs`` is the code location on them."""
    conf = tmp_path / "pmta.conf"
    conf.write_text(PMTA_CONF)
    zone = TestZone(mx={"example.com": [(10, "mx.example.com")]})
    with PowerMtaStandIn() as mta, running_management(ManagementState(api_key=MGMT_KEY)) as (mgmt_url, _), \
            running_mailwizz() as (mw_url, mw_state), running_dns_server(zone) as dns, \
            serving(build_app(workspace.root, engine, signing_key=lambda: b"k" * 32), "the webhook app") as hook_url:
        workspace.tenant("acme", tenant_text(mta.host, mta.port, conf, mgmt_url, mw_url))
        monkeypatch.setenv(MW_KEY_ENV, mw_state.api_key)
        monkeypatch.setenv(MGMT_KEY_ENV, MGMT_KEY)
        monkeypatch.setenv("EMAIL_ENGINE_WEBHOOK_URL", hook_url)
        resources = {
            "workspace": WorkspaceResource(path=str(workspace.root)),
            "dns": DnsResolverResource(nameservers=[dns.host], port=dns.port, timeout_s=0.3, retries=0),
            "outbox": OutboxResource(root=str(tmp_path / "outbox")),
            "powermta": PowerMtaResource(helo_name="sender.acme.example"),
            "mailwizz": MailwizzResource(backoff_initial=0.01),
        }
        yield SimpleNamespace(defs=with_resources(resources), resources=resources, zone=zone, workspace=workspace,
                              conf=conf, mta=mta, mgmt_url=mgmt_url, mw_url=mw_url, mw_state=mw_state, tmp=tmp_path)


def doctor(site, capsys, *args) -> tuple[int, dict[str, tuple[str, str]], str]:
    code = cli.main(["doctor", *args, "--json"], definitions=site.defs)
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] == (code == 0)
    return code, {p["name"]: (p["status"], p["reason"]) for p in report["probes"]}, out.out + out.err


PROBES = {"database", "resolver", "outbox", "webhook", "powermta acme.pmta smtp", "powermta acme.pmta config",
          "powermta acme.pmta management", "mailwizz acme.mw api"}


def test_every_probe_passes_against_the_running_parts(site, capsys):
    code, probes, _ = doctor(site, capsys)
    assert code == 0
    assert set(probes) == PROBES
    assert {name: status for name, (status, _) in probes.items()} == dict.fromkeys(PROBES, "ok")
    assert "answered EHLO" in probes["powermta acme.pmta smtp"][1]
    assert cli.main(["doctor", "acme"], definitions=site.defs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(PROBES) and all(line.startswith("OK ") for line in lines)
    assert "OK mailwizz acme.mw api: " in "\n".join(lines)


def test_a_wrong_mailwizz_key_fails_naming_the_transport_and_never_shows_the_key(site, capsys, monkeypatch):
    monkeypatch.setenv(MW_KEY_ENV, WRONG_KEY)
    monkeypatch.setenv(MGMT_KEY_ENV, WRONG_KEY)
    code, probes, shown = doctor(site, capsys)
    assert code == 1
    failed = {name for name, (status, _) in probes.items() if status == "fail"}
    assert failed == {"mailwizz acme.mw api", "powermta acme.pmta management"}
    assert site.mw_url in probes["mailwizz acme.mw api"][1]
    assert WRONG_KEY not in shown and site.mw_state.api_key not in shown and MGMT_KEY not in shown
    assert cli.main(["doctor"], definitions=site.defs) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("FAIL mailwizz acme.mw api: ") for line in out.splitlines())
    assert WRONG_KEY not in out


def test_each_part_down_is_its_own_named_failure(site, capsys, monkeypatch):
    closed = free_port("127.0.0.1")
    site.workspace.tenant("acme", tenant_text("127.0.0.1", closed, site.tmp / "missing.conf", f"http://127.0.0.1:{closed}",
                                              site.mw_url))
    monkeypatch.setenv("EMAIL_ENGINE_WEBHOOK_URL", f"http://127.0.0.1:{closed}")
    site.zone.drop.add("example.com")  # the nameserver never answers
    (site.tmp / "outbox").write_text("a file where the outbox folder should be")
    monkeypatch.delenv(MW_KEY_ENV)
    code, probes, shown = doctor(site, capsys)
    assert code == 1
    assert {name for name, (status, _) in probes.items() if status == "fail"} == PROBES - {"database"}
    assert f"127.0.0.1:{closed}" in probes["powermta acme.pmta smtp"][1]
    assert "missing.conf" in probes["powermta acme.pmta config"][1]
    assert "no answer for example.com" in probes["resolver"][1]
    assert MW_KEY_ENV in probes["mailwizz acme.mw api"][1]  # the unset variable is named
    assert probes["webhook"][1].startswith(f"http://127.0.0.1:{closed}/health")


def test_a_database_that_does_not_answer_fails_the_database_probe(site, capsys, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_DATABASE_URL", f"postgresql://doctor:s3cret-pw@127.0.0.1:{free_port('127.0.0.1')}/nowhere")
    code, probes, shown = doctor(site, capsys, "acme")
    assert code == 1 and probes["database"][0] == "fail"
    assert "s3cret-pw" not in shown
    assert all(status == "ok" for name, (status, _) in probes.items() if name not in ("database", "webhook"))


def test_an_unknown_tenant_is_refused(site, capsys):
    assert cli.main(["doctor", "nobody"], definitions=site.defs) == 2
    assert "no tenant 'nobody'" in capsys.readouterr().err


def test_the_sensor_alerts_when_a_probe_starts_failing_and_when_it_recovers_not_every_tick(site, monkeypatch):
    with running_chat() as (chat_url, chat):
        for k, v in slack_env(chat_url).items():
            monkeypatch.setenv(k, v)
        with dg.instance_for_test() as instance:
            def tick(cursor):
                context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=site.resources)
                result = doctor_sensor(context)
                return context.cursor, result

            cursor, _ = tick(None)
            assert chat.received == [] and json.loads(cursor) == {}  # all well: nothing posted
            monkeypatch.setenv(MW_KEY_ENV, WRONG_KEY)
            cursor, result = tick(cursor)
            [(path, body)] = chat.received
            assert path == SLACK_PATH
            lines = body["text"].splitlines()
            assert lines[0] == "Email Engine: doctor found 1 failing probe(s)"
            assert lines[1].startswith("- FAIL mailwizz acme.mw api: ") and WRONG_KEY not in body["text"]
            assert list(json.loads(cursor)) == ["mailwizz acme.mw api"] and "mailwizz acme.mw api" in result.skip_message
            cursor, _ = tick(cursor)  # still failing: no second alert
            assert len(chat.received) == 1
            monkeypatch.setenv(MW_KEY_ENV, site.mw_state.api_key)
            cursor, _ = tick(cursor)
            assert len(chat.received) == 2 and "- OK again: mailwizz acme.mw api" in chat.received[1][1]["text"]
            assert json.loads(cursor) == {}


def test_the_transport_resources_are_on_the_code_location():
    from email_engine_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert {"mailwizz", "powermta", "outbox"} <= set(defs.resources)
    assert defs.resolve_sensor_def("doctor_sensor").default_status == dg.DefaultSensorStatus.STOPPED
