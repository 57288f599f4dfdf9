"""Accounting files into PostgreSQL: growth, rotation, lines applied twice, kept lines, the sensor, the
virtual-MTA check, and the PowerMTA stand-in's accounting file from a real injection."""

from __future__ import annotations

import os
import textwrap

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.campaigns.wiring import Transports, TransportUnavailable
from email_engine_assets.feedback import accounting_apply
from email_engine_assets.feedback.accounting_apply import apply_accounting
from email_engine_assets.feedback.accounting_sensor import accounting_sensor
from email_engine_assets.tenancy.config import parse_tenant
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.delivery import OutgoingMessage
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_resources.transports import MailwizzResource, OutboxResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.powermta_server import (
    AccountingFile,
    PowerMtaStandIn,
    accounting_time,
)

T = accounting_time()
POWERMTA = PowerMtaResource()  # the deployment's powermta resource, as a run injects it


def pmta_tenant_text(tenant_id: str, *, name: str | None = None, accounting_dir=None, config_file=None) -> str:
    """A tenant file with one source and one PowerMTA transport reading ``accounting_dir`` or ``config_file``."""
    where = f"accounting_dir: {accounting_dir}" if accounting_dir is not None else f"config_file: {config_file}"
    return textwrap.dedent(f"""\
        id: {tenant_id}
        name: {name or tenant_id}
        sources:
          - id: crm
            priority: 10
        transports:
          - name: pmta
            kind: powermta
            host: 127.0.0.1
            bounce_address: bounces@example.com
        """) + f"    {where}\n"


def tenant_config(tmp_path, tenant_id: str, acct_dir, extra: str = ""):
    text = pmta_tenant_text(tenant_id, accounting_dir=acct_dir) + extra
    path = tmp_path / f"{tenant_id}.yaml"
    path.write_text(text)
    return parse_tenant(path, text)


def ledger(conn, tenant_id: str, *emails: str) -> dict[str, str]:
    """Ledger rows of campaign ``spring`` for these addresses; returns email -> token."""
    conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"),
                 {"t": tenant_id})
    conn.execute(sa.text("""INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                            VALUES (:t, 'spring', 'completed', 'all', 'news', 'pmta', 'x') ON CONFLICT DO NOTHING"""),
                 {"t": tenant_id})
    tokens = {}
    for email in emails:
        token = f"{tenant_id}Tok{email.split('@')[0]}"
        conn.execute(sa.text("""INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
                                VALUES (:t, 'spring', :e, 'sent', :k)"""), {"t": tenant_id, "e": email, "k": token})
        tokens[email] = token
    return tokens


def events(engine, tenant_id: str) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            """SELECT event_type, bounce_class, email, send_row_id IS NOT NULL AS linked FROM delivery_events
               WHERE tenant_id = :t ORDER BY event_id"""), {"t": tenant_id}).all()


def kept(engine, tenant_id: str) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT file_name, byte_offset, reason FROM accounting_kept_lines WHERE tenant_id = :t ORDER BY line_id"),
            {"t": tenant_id}).all()


def offset(engine, tenant_id: str, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT byte_offset FROM accounting_files WHERE tenant_id = :t AND file_name = :f"),
                            {"t": tenant_id, "f": name}).scalar()


def d(rcpt: str, token: str | None = None, job: str = "acme.spring") -> dict:
    return {"type": "d", "timeLogged": T, "rcpt": rcpt, "jobId": job, "envId": token}


def test_a_growing_file_is_read_line_by_line_and_a_partial_line_waits(engine, tmp_path):
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "a@example.com", "b@example.com", "c@example.com")
    tenant = tenant_config(tmp_path, "acme", tmp_path / "acct")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(d("a@example.com", tokens["a@example.com"]))
    partial = acct.line(type="b", timeLogged=T, rcpt="B@Example.com", jobId="acme.spring", bounceCat="bad-mailbox")
    acct.append(partial[:20])

    first = apply_accounting(engine, tenant, POWERMTA)
    assert first["lines"] == 1 and first["delivered"] == 1 and first["linked"] == 1 and first["files"] == 1
    assert offset(engine, "acme", acct.path.name) == acct.path.stat().st_size - 20

    acct.append(partial[20:], d("c@example.com", tokens["c@example.com"]))
    second = apply_accounting(engine, tenant, POWERMTA)
    assert second["lines"] == 2 and second["bounced"] == 1 and second["linked"] == 2
    assert offset(engine, "acme", acct.path.name) == acct.path.stat().st_size
    assert events(engine, "acme") == [("delivered", None, "a@example.com", True), ("bounced", "hard", "b@example.com", True),
                                      ("delivered", None, "c@example.com", True)]
    assert apply_accounting(engine, tenant, POWERMTA)["lines"] == 0  # nothing new: the file is not even read


def test_a_rotated_copy_and_a_replaced_file_count_each_line_once(engine, tmp_path):
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "a@example.com", "b@example.com")
    tenant = tenant_config(tmp_path, "acme", tmp_path / "acct")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(d("a@example.com", tokens["a@example.com"]))
    apply_accounting(engine, tenant, POWERMTA)

    # PowerMTA rotates: the same lines appear again under another name, plus a new one.
    rotated = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0002.csv")
    rotated.path.write_bytes(acct.path.read_bytes())
    rotated.append(d("b@example.com", tokens["b@example.com"]))
    result = apply_accounting(engine, tenant, POWERMTA)
    assert result["lines"] == 2 and result["duplicates"] == 1 and result["delivered"] == 2

    # The first file is replaced under its name by a shorter one (truncated, then rewritten).
    os.unlink(acct.path)
    replaced = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    replaced.append({**d("b@example.com"), "type": "t", "dsnStatus": "4.2.2"})
    result = apply_accounting(engine, tenant, POWERMTA)
    assert result["restarted_files"] == 1 and result["deferred"] == 1 and result["duplicates"] == 0
    assert [e[0] for e in events(engine, "acme")] == ["delivered", "delivered", "deferred"]


def test_unmatched_lines_are_recorded_unlinked_and_unusable_ones_kept(engine, tmp_path):
    with engine.begin() as conn:
        ledger(conn, "acme", "a@example.com")
        ledger(conn, "other", "z@example.com")
    tenant = tenant_config(tmp_path, "acme", tmp_path / "acct")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(
        d("nobody@example.com"),                        # our job, no such ledger row: an unlinked event
        d("a@example.com", job="acme.autumn"),          # a campaign we have no row in: unlinked
        {"type": "zz", "timeLogged": T, "rcpt": "a@example.com", "jobId": "acme.spring"},
        {"type": "d", "timeLogged": "not a time", "rcpt": "a@example.com", "jobId": "acme.spring"},
        d("z@example.com", job="other.spring"),         # another tenant's line: left to it
        d("q@example.com", token="UnknownTok", job=""),  # no job, token not ours: kept
        d("a@example.com", token="acmeToka", job=""),   # no job, but our token: linked
    )
    result = apply_accounting(engine, tenant, POWERMTA)
    assert result["unmatched"] == 2 and result["linked"] == 1 and result["other_tenants"] == 1
    assert result["kept_with_reason"] == 3
    assert [r for _f, _o, r in kept(engine, "acme")] == ["unknown_type", "bad_time", "no_job_not_in_ledger"]
    assert all(f == acct.path.name for f, _o, _r in kept(engine, "acme"))
    assert [(e[2], e[3]) for e in events(engine, "acme")] == [("nobody@example.com", False), ("a@example.com", False),
                                                              ("a@example.com", True)]
    # The other tenant reads the same directory for its own lines.
    other = apply_accounting(engine, tenant_config(tmp_path, "other", tmp_path / "acct"), POWERMTA)
    assert other["linked"] == 1 and other["other_tenants"] == 3


def test_a_chunk_is_all_or_nothing(engine, tmp_path, monkeypatch):
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "a@example.com", "b@example.com")
    tenant = tenant_config(tmp_path, "acme", tmp_path / "acct")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(d("a@example.com", tokens["a@example.com"]), {"type": "zz", "timeLogged": T, "rcpt": "x@example.com"})

    def crash(*args, **kwargs):
        raise RuntimeError("killed while keeping lines")

    monkeypatch.setattr(accounting_apply.store, "keep_lines", crash)
    with pytest.raises(RuntimeError):
        apply_accounting(engine, tenant, POWERMTA)
    header_end = len(acct.path.read_bytes().split(b"\n")[0]) + 1
    assert events(engine, "acme") == [] and offset(engine, "acme", acct.path.name) == header_end
    monkeypatch.undo()
    assert apply_accounting(engine, tenant, POWERMTA)["delivered"] == 1 and len(kept(engine, "acme")) == 1


def test_small_chunks_and_symlinks_and_other_names(engine, tmp_path, monkeypatch):
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", *(f"u{i}@example.com" for i in range(30)))
    tenant = tenant_config(tmp_path, "acme", tmp_path / "acct")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(*({**d(f"u{i}@example.com", tokens[f"u{i}@example.com"]), "dsnDiag": "two\nlines, \"quoted\""}
                  for i in range(30)))
    monkeypatch.setattr(accounting_apply, "MAX_LINE_BYTES", 400)  # so that small chunks are read
    chunks = []
    advance = accounting_apply.store.advance
    monkeypatch.setattr(accounting_apply.store, "advance", lambda *a, **k: chunks.append(k["to_offset"]) or advance(*a, **k))
    outside = tmp_path / "secret.csv"
    outside.write_bytes(acct.path.read_bytes())
    os.symlink(outside, tmp_path / "acct" / "acct-2026-11-29-0009.csv")
    (tmp_path / "acct" / "notes.csv").write_bytes(acct.path.read_bytes())
    result = apply_accounting(engine, tenant, POWERMTA, chunk_bytes=300)
    assert result["files"] == 1 and result["lines"] == 30 and result["linked"] == 30 and result["duplicates"] == 0
    assert len(chunks) > 5 and chunks[-1] == acct.path.stat().st_size


def test_accounting_dir_defaults_to_the_acct_file_of_the_config(engine, tmp_path):
    conf = tmp_path / "pmta.conf"
    conf.write_text(f"<acct-file {tmp_path}/logs/acct.csv>\nrecords d,b\n</acct-file>\n")
    tenant = _tenant_with_config(tmp_path, conf)
    assert accounting_apply.accounting_sources(tenant, POWERMTA)[0].directory == f"{tmp_path}/logs"
    conf.write_text("<acct-file /x>\n")
    assert "never closed" in apply_accounting(engine, tenant, POWERMTA)["problems"][0]


def _tenant_with_config(tmp_path, conf) -> object:
    return parse_tenant(tmp_path / "acme.yaml", pmta_tenant_text("acme", config_file=conf))


def test_files_are_found_under_the_base_name_its_rotation_names_and_the_move_to_directory(engine, db_url, tmp_path, workspace):
    """PowerMTA writes ``<base>-YYYY-MM-DD-HHMM.csv`` for ``<acct-file .../pmta.csv>`` and moves rotated files to
    ``move-to``; the acct-file sits in an included file. Another stream's files and other names are left alone."""
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", *(f"u{i}@example.com" for i in range(6)))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "acct.conf").write_text(
        f"<acct-file {tmp_path}/logs/pmta.csv>\n  records d b f\n  move-to {tmp_path}/archive\n  move-interval 1h\n</acct-file>\n")
    conf = tmp_path / "config"
    conf.write_text("include conf.d/*.conf\n")
    files = {
        "logs/pmta.csv": 0, "logs/pmta-2026-11-29-1200.csv": 1, "archive/pmta-2026-11-29-1100.csv": 2,
        "archive/pmta-2026-11-29-1000-1.csv": 3, "logs/pmta-diag.csv": 4, "archive/acct-2026-11-29-1000.csv": 5,
    }
    for name, i in files.items():
        AccountingFile(tmp_path / os.path.dirname(name), os.path.basename(name)).append(
            d(f"u{i}@example.com", tokens[f"u{i}@example.com"]))
    tenant = _tenant_with_config(tmp_path, conf)
    result = apply_accounting(engine, tenant, POWERMTA)
    assert result["files"] == 4 and result["linked"] == 4 and "problems" not in result
    assert sorted(e[2] for e in events(engine, "acme")) == [f"u{i}@example.com" for i in range(4)]
    # PowerMTA moves the newest rotated file: it keeps its name and its offset, nothing is read twice
    AccountingFile(tmp_path / "logs", "pmta-2026-11-29-1200.csv").append(d("u5@example.com", tokens["u5@example.com"]))
    os.rename(tmp_path / "logs" / "pmta-2026-11-29-1200.csv", tmp_path / "archive" / "pmta-2026-11-29-1200.csv")
    result = apply_accounting(engine, tenant, POWERMTA)
    assert result["files"] == 1 and result["lines"] == 1 and result["restarted_files"] == 0 and result["linked"] == 1
    # a move-to directory that is not there (yet) is no problem; PowerMTA's own directory must be
    for moved in (tmp_path / "archive").iterdir():
        os.unlink(moved)
    os.rmdir(tmp_path / "archive")
    assert "problems" not in apply_accounting(engine, tenant, POWERMTA)


def test_a_file_with_the_published_multi_type_header_is_read_not_refused(engine, tmp_path):
    from email_engine_tests.test_accounting import PUBLISHED_HEADER

    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "a@example.com")
    columns = PUBLISHED_HEADER.decode().split(",")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv", columns=tuple(columns))
    acct.append(d("a@example.com", tokens["a@example.com"]))
    result = apply_accounting(engine, tenant_config(tmp_path, "acme", tmp_path / "acct"), POWERMTA)
    assert "problems" not in result and result["linked"] == 1


def test_the_sensor_requests_one_run_per_tenant_with_new_bytes(engine, db_url, tmp_path, workspace):
    workspace.tenant("acme", textwrap.dedent(f"""\
        id: acme
        name: acme
        sources:
          - id: crm
            priority: 10
        transports:
          - name: pmta
            kind: powermta
            host: 127.0.0.1
            bounce_address: bounces@example.com
            accounting_dir: {tmp_path / 'acct'}
        """))
    workspace.tenant("quiet")
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "a@example.com")
    acct = AccountingFile(tmp_path / "acct", "acct-2026-11-29-0001.csv")
    acct.append(d("a@example.com", tokens["a@example.com"]))
    resources = {"workspace": WorkspaceResource(path=str(workspace.root)), "db": PostgresResource(url=db_url), "powermta": POWERMTA}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["acme", "quiet"])

        def tick():
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                return accounting_sensor(context)

        first = tick()
        assert [(r.partition_key, r.run_key.startswith("accounting:acme:")) for r in first.run_requests] == [("acme", True)]
        assert tick().run_requests[0].run_key == first.run_requests[0].run_key  # same state, same key
        apply_accounting(engine, parse_tenant(workspace.root / "tenants" / "acme.yaml"), POWERMTA)
        assert tick().run_requests == []
        acct.append(b"d,partial")
        grown = tick()
        assert grown.run_requests and grown.run_requests[0].run_key != first.run_requests[0].run_key
        apply_accounting(engine, parse_tenant(workspace.root / "tenants" / "acme.yaml"), POWERMTA)
        assert tick().run_requests == []  # the partial line waits without asking again


PMTA_CONF = """\
<virtual-mta vmta1> smtp-source-host 192.0.2.1 a.example.com </virtual-mta>
<virtual-mta-pool pool1> virtual-mta vmta1 </virtual-mta-pool>
<source 127.0.0.1> process-x-job yes process-x-virtual-mta yes process-x-envid yes </source>
"""


@pytest.mark.parametrize(("vmta", "ok"), [("vmta1", True), ("pool1", True), ("vmta9", False), (None, True)])
def test_the_virtual_mta_must_be_in_powermtas_config(tmp_path, vmta, ok):
    conf = tmp_path / "pmta.conf"
    conf.write_text(PMTA_CONF)
    extra = f"    virtual_mta: {vmta}\n" if vmta else ""
    text = textwrap.dedent(f"""\
        id: acme
        name: acme
        sources:
          - id: crm
            priority: 10
        transports:
          - name: pmta
            kind: powermta
            host: 127.0.0.1
            bounce_address: bounces@example.com
            config_file: {conf}
        """) + extra
    tenant = parse_tenant(tmp_path / "acme.yaml", text)
    transports = Transports(OutboxResource(), POWERMTA, MailwizzResource())
    config = tenant.transport("pmta")
    if ok:
        assert isinstance(transports._powermta(config, "tenant acme"), PowerMtaSmtpTransport)
    else:
        with pytest.raises(TransportUnavailable, match="'vmta9' is neither a <virtual-mta> nor a <virtual-mta-pool>"):
            transports._powermta(config, "tenant acme")


def test_the_stand_in_accounts_what_it_received_and_the_lines_link(engine, tmp_path):
    with engine.begin() as conn:
        tokens = ledger(conn, "acme", "ok@example.com", "gone@example.com", "angry@example.com")
    with PowerMtaStandIn(accounting_dir=tmp_path / "acct") as mta:
        mta.bounce("gone@example.com", "bad-mailbox")
        pmta = PowerMtaSmtpTransport(name="pmta", host=mta.host, port=mta.port, bounce_address="b@bounce.example",
                                     allow_private=True, connections=1)
        messages = [
            OutgoingMessage(row_id=i, tenant_id="acme", campaign="spring", job="acme.spring", envelope_id=tokens[e],
                            mail_from="news@example.com", recipient=e, message=b"Subject: hi\r\n\r\nhello\r\n")
            for i, e in enumerate(tokens)
        ]
        results = pmta.deliver(messages)
        assert {r.status for r in results} == {"sent"}
        assert mta.complain("angry@example.com", format="jmrp") == 1
    result = apply_accounting(engine, tenant_config(tmp_path, "acme", tmp_path / "acct"), POWERMTA)
    assert result["linked"] == 4 and result["unmatched"] == 0
    assert sorted((e[0], e[1], e[2]) for e in events(engine, "acme")) == [
        ("bounced", "hard", "gone@example.com"), ("complained", None, "angry@example.com"),
        ("delivered", None, "angry@example.com"), ("delivered", None, "ok@example.com"),
    ]


def _pmta_with_management(mta, url: str, conf, vmta: str = "vmta1") -> str:
    return f"""\
        - name: pmta
          kind: powermta
          host: {mta.host}
          port: {mta.port}
          virtual_mta: {vmta}
          bounce_address: bounces@bounce.acme.example
          allow_private: true
          config_file: {conf}
          management_url: {url}
          management_api_key: {{env: ACME_PMTA_MGMT_KEY}}
        """


def _send_metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("campaign_sends"))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@pytest.mark.parametrize(("key", "answer_as", "warning"), [
    ("mgmt-key", "envelope", None),
    ("wrong-key", "envelope", "HTTP 401: unauthorized"),
    # the JSON envelope is unconfirmed: public tools read ?format=xml
    ("mgmt-key", "xml", "HTTP 200, an XML answer, not the expected JSON envelope (this PowerMTA may answer only ?format=xml)"),
    ("mgmt-key", "bare", "HTTP 200, JSON without the expected envelope"),
])
def test_the_send_records_management_figures_and_a_failure_is_only_a_warning(
        engine, workspace, monkeypatch, tmp_path, scratch_database, capsys, key, answer_as, warning):
    import json

    from email_engine_assets import cli
    from email_engine_resources import postgres as database
    from email_engine_tests.powermta_server import ManagementState, running_management
    from email_engine_tests.test_campaign_transports import PEOPLE, setup

    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    conf = tmp_path / "pmta.conf"
    conf.write_text(PMTA_CONF)
    monkeypatch.setenv("ACME_PMTA_MGMT_KEY", key)
    state = ManagementState(api_key="mgmt-key", answer_as=answer_as)
    try:
        with PowerMtaStandIn(accounting_dir=tmp_path / "acct") as mta, running_management(state) as (url, _s):
            env = setup(workspace, engine, monkeypatch, _pmta_with_management(mta, url, conf), PEOPLE[:2], {}, transport="pmta")
            assert cli.main(["campaign", "send", "acme.spring", "--json"], definitions=env.defs) == 0  # the send goes, whatever the answer
            with dg.DagsterInstance.get() as instance:
                metadata = _send_metadata(instance)
    finally:
        os.environ.pop("DAGSTER_HOME", None)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["sent"] == 2 and report["failures"] == []
    if warning is None:
        assert metadata["powermta"]["queued_recipients"] == 42 and metadata["powermta"]["connections_out"] == 7
        assert "powermta_warning" not in metadata and report["warnings"] == [] and "warning:" not in captured.err
    else:
        assert "powermta" not in metadata
        assert warning in metadata["powermta_warning"]
        assert [w for w in report["warnings"] if warning in w] == report["warnings"] and len(report["warnings"]) == 1
        assert f"warning: PowerMTA management figures not read: {url}/status: {warning}" in captured.err
        assert "wrong-key" not in captured.err + captured.out + metadata["powermta_warning"]
    assert len(AccountingFile(tmp_path / "acct").path.read_bytes().splitlines()) == 3  # header + one line per message


def test_a_virtual_mta_missing_from_the_config_stops_the_send_before_any_claim(engine, workspace, monkeypatch, tmp_path):
    from email_engine_assets import campaign_runs
    from email_engine_tests.test_campaign_transports import PEOPLE, setup
    from email_engine_tests.test_campaign_transports import ledger as send_ledger

    conf = tmp_path / "pmta.conf"
    conf.write_text(PMTA_CONF)
    with PowerMtaStandIn() as mta:
        env = setup(workspace, engine, monkeypatch, _pmta_with_management(mta, "http://127.0.0.1:9", conf, vmta="vmta-gone"),
              PEOPLE[:2], {}, transport="pmta")
        with dg.instance_for_test() as instance:
            outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert mta.received == []
    assert any("'vmta-gone' is neither a <virtual-mta> nor a <virtual-mta-pool>" in f for f in outcome.failures)
    assert {state for state, _detail, _token in send_ledger(engine).values()} == {"queued"}
