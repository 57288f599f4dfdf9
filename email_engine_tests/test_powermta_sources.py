"""PowerMTA's ``<source>`` blocks: the send is blocked while the block that matches the engine's connecting
address does not process the injection headers; without ``process-x-envid`` the ENVID goes on ``MAIL FROM``
only. Real Dagster runs (``campaign_runs.send``), PostgreSQL and the PowerMTA stand-in on loopback."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from email_engine_assets import campaign_runs
from email_engine_tests.powermta_server import PowerMtaStandIn
from email_engine_tests.test_campaign_transports import PEOPLE, ledger, setup

VMTAS = "<virtual-mta vmta-acme> smtp-source-host 192.0.2.1 a.example.com </virtual-mta>\n"
ALL_SET = "process-x-job yes\n    process-x-virtual-mta yes\n    process-x-envid yes"


def _yaml(mta, conf, extra: str = "") -> str:
    return f"""\
        - name: pmta
          kind: powermta
          host: {mta.host}
          port: {mta.port}
          virtual_mta: vmta-acme
          bounce_address: bounces@bounce.acme.example
          allow_private: true
          retries: 0
          config_file: {conf}
        """ + extra


def _send(workspace, engine, monkeypatch, mta, conf, extra: str = "", overrides=()):
    env = setup(workspace, engine, monkeypatch, _yaml(mta, conf, extra), PEOPLE[:2], {}, transport="pmta")
    with dg.instance_for_test() as instance:
        return campaign_runs.send("acme.spring", overrides=list(overrides), instance=instance, definitions=env.defs)


@pytest.mark.parametrize(("config", "reason"), [
    # a shipped default: only 0/0, nothing processed
    ("<source 0/0>\n    smtp-service yes\n</source>\n",
     r"its <source 0/0> \(.*/pmta\.conf, line 1\) lacks process-x-job yes, process-x-virtual-mta yes"),
    # the specific block wins over 0/0, and it forgot x-virtual-mta
    (f"<source 0/0>\n    {ALL_SET}\n</source>\n<source 127.0.0.0/8>\n    process-x-job yes\n</source>\n",
     r"its <source 127\.0\.0\.0/8> \(.*/pmta\.conf, line 6\) lacks process-x-virtual-mta yes"),
    # no block for the engine's address at all
    ("<source 10.0.0.0/8>\n    process-x-job yes\n</source>\n",
     "no <source> block matches it; add one that sets process-x-job yes, process-x-virtual-mta yes"),
])
def test_a_source_block_that_does_not_process_the_headers_blocks_the_send_naming_the_setting(
        engine, workspace, monkeypatch, tmp_path, config, reason):
    conf = tmp_path / "pmta.conf"
    conf.write_text(config + VMTAS)  # the block first: the line numbers in the reasons
    with PowerMtaStandIn() as mta:
        outcome = _send(workspace, engine, monkeypatch, mta, conf)
        assert mta.received == [] and mta.sessions == []
    assert [b["check"] for b in outcome.blocked] == ["powermta_headers"]
    assert "PowerMTA sees the engine connect from 127.0.0.1" in outcome.blocked[0]["reason"]
    assert re.search(reason, outcome.blocked[0]["reason"])
    assert {state for state, _detail, _token in ledger(engine).values()} == {"queued"}


def test_the_block_of_a_configured_source_address_is_the_one_checked(engine, workspace, monkeypatch, tmp_path):
    conf = tmp_path / "pmta.conf"
    conf.write_text(VMTAS + f"<source 127.0.0.1>\n    {ALL_SET}\n</source>\n<source 198.51.100.0/24>\n</source>\n")
    with PowerMtaStandIn() as mta:
        # PowerMTA sees the engine behind a NAT as 198.51.100.7: that block processes nothing
        outcome = _send(workspace, engine, monkeypatch, mta, conf, "  source_address: 198.51.100.7\n")
        assert mta.received == []
    assert "connect from 198.51.100.7: its <source 198.51.100.0/24>" in outcome.blocked[0]["reason"]


def test_the_check_can_be_overridden_and_then_powermta_keeps_jobid_empty(engine, workspace, monkeypatch, tmp_path):
    """What the check prevents: a <source> without process-x-job passes x-job on and accounts no jobId."""
    conf = tmp_path / "pmta.conf"
    conf.write_text(VMTAS + "<source 0/0>\n</source>\n")
    with PowerMtaStandIn(accounting_dir=tmp_path / "acct", process_x=()) as mta:
        outcome = _send(workspace, engine, monkeypatch, mta, conf, overrides=["powermta_headers"])
        assert outcome.blocked == [] and outcome.counts["sent"] == 2
        assert all(m.header("x-job") == ["acme.spring"] for m in mta.received)
    header, *rows = mta.accounting.path.read_text().splitlines()
    job = header.split(",").index("jobId")
    assert [r.split(",")[job] for r in rows] == ["", ""]


def test_without_process_x_envid_the_envid_goes_on_mail_from_and_never_as_a_header(engine, workspace, monkeypatch, tmp_path):
    conf = tmp_path / "pmta.conf"
    conf.write_text(VMTAS + "<source 127.0.0.1> process-x-job yes process-x-virtual-mta yes </source>\n")
    with PowerMtaStandIn() as mta:
        outcome = _send(workspace, engine, monkeypatch, mta, conf)
        assert outcome.blocked == [] and outcome.failures == [] and outcome.counts["sent"] == 2
        rows = ledger(engine)
        for message in mta.received:
            assert message.mail_parameters["ENVID"] == rows[message.recipients[0]][2]
            assert message.header("x-envid") == []


def test_without_process_x_envid_and_without_dsn_no_message_carries_the_envid_header(engine, workspace, monkeypatch, tmp_path):
    conf = tmp_path / "pmta.conf"
    conf.write_text(VMTAS + "<source 127.0.0.1> process-x-job yes process-x-virtual-mta yes </source>\n")
    with PowerMtaStandIn(dsn=False) as mta:
        outcome = _send(workspace, engine, monkeypatch, mta, conf)
        assert mta.received == []
    rows = ledger(engine)
    assert {state for state, _detail, _token in rows.values()} == {"failed"} and outcome.counts["failed"] == 2
    assert all("does not set process-x-envid" in detail for _state, detail, _token in rows.values())


def test_a_config_file_that_cannot_be_read_blocks_the_send_naming_it(engine, workspace, monkeypatch, tmp_path):
    conf = tmp_path / "pmta.conf"
    conf.write_text(VMTAS + "include customs/*.conf\n")
    (tmp_path / "customs").mkdir()
    (tmp_path / "customs" / "a.conf").write_text("<source 0/0>\n")  # never closed
    with PowerMtaStandIn() as mta:
        outcome = _send(workspace, engine, monkeypatch, mta, conf)
        assert mta.received == []
    # the headers cannot be checked, and the accounting files it names cannot be found: both block
    reasons = {b["check"]: b["reason"] for b in outcome.blocked}
    assert set(reasons) == {"powermta_headers", "sender_reputation"}
    for reason in reasons.values():
        assert re.search(r"customs/a\.conf, line 1: <source> is never closed", reason)
