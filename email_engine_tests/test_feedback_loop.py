"""The feedback loop end to end: a campaign through the PowerMTA stand-in, its accounting file, the
sensor, delivery events, the suppression policy, and the next campaign of the tenant.

Everything is real: SMTP injection into the stand-in, the accounting lines it writes (PowerMTA's
column names, the ENVID it received), the sensor's tick, Dagster runs of ``delivery_events`` and
``suppressions``, PostgreSQL, and the next campaign's send through the same stand-in.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_assets.feedback.accounting_sensor import accounting_sensor
from email_engine_assets.feedback.assets import delivery_events, suppressions
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.campaign_parts import write_campaign
from email_engine_tests.powermta_server import PowerMtaStandIn
from email_engine_tests.test_campaign_transports import PEOPLE, pmta_yaml, setup


def sends(engine, campaign: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT email, state FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = :c"), {"c": campaign}).all())


def test_bounced_and_complainer_are_left_out_of_the_next_campaign_and_the_reputation_bounced_kept(
    engine, db_url, workspace, monkeypatch, tmp_path
):
    acct = tmp_path / "pmta-acct"
    acct.mkdir()
    with PowerMtaStandIn(accounting_dir=acct) as mta:
        transport = pmta_yaml(mta) + f"  accounting_dir: {acct}\n"
        env = setup(workspace, engine, monkeypatch, transport, PEOPLE,
              {"powermta": PowerMtaResource(retry_backoff_seconds=0.01, helo_name="sender.acme.example")}, transport="pmta")
        mta.bounce("bad@example.com", "bad-mailbox")        # hard: the address is gone
        mta.bounce("drop@example.com", "spam-related")      # reputation: the sender's problem, not the contact's
        resources = {"workspace": WorkspaceResource(path=str(workspace.root)), "db": PostgresResource(url=db_url),
                     "powermta": PowerMtaResource(), "mailwizz": MailwizzResource()}
        with dg.instance_for_test() as instance:
            first = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
            assert first.failures == [] and first.counts["sent"] == 5
            assert mta.complain("cy@example.com") == 1       # a feedback-loop report arrives later

            # the sensor sees the new accounting file and asks for the tenant's delivery_events
            instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                ticked = accounting_sensor(context)
            assert [r.partition_key for r in ticked.run_requests] == ["acme"]
            applied = dg.materialize([delivery_events, suppressions], partition_key="acme", instance=instance, resources=resources)
            assert applied.success

            with engine.connect() as conn:
                events = conn.execute(sa.text(
                    """SELECT email, event_type, coalesce(bounce_class, ''), send_row_id IS NOT NULL
                       FROM delivery_events WHERE tenant_id = 'acme' ORDER BY email, event_type""")).all()
                suppressed = dict(conn.execute(sa.text("SELECT email, reason FROM suppressions WHERE tenant_id = 'acme'")).all())
            assert [tuple(e) for e in events] == [
                ("ann@example.com", "delivered", "", True),
                ("bad@example.com", "bounced", "hard", True),
                ("cy@example.com", "complained", "", True),
                ("cy@example.com", "delivered", "", True),
                ("drop@example.com", "bounced", "reputation", True),
                ("eve@example.com", "delivered", "", True),
            ]
            assert suppressed == {"bad@example.com": "bounced", "cy@example.com": "complained"}

            # the next campaign: blocked first -- 1 hard bounce and 1 complaint out of 5 are over the
            # tenant's limits, and this fixed audience (unlike a segment) still names the suppressed --
            # then sent on the operator's override, the suppressed two skipped at freeze and claim
            write_campaign(workspace.root, "acme", "summer", transport="pmta")
            blocked = campaign_runs.send("acme.summer", instance=instance, definitions=env.defs)
            assert {b["check"] for b in blocked.blocked} == {"sender_reputation", "no_suppressed_members"}
            assert blocked.counts["sent"] == 0
            before = len(mta.received)
            second = campaign_runs.send("acme.summer", overrides=["sender_reputation", "no_suppressed_members"], instance=instance, definitions=env.defs)
            assert second.failures == [] and second.blocked == []
    assert sends(engine, "summer") == {
        "ann@example.com": "sent", "bad@example.com": "skipped_suppressed", "cy@example.com": "skipped_suppressed",
        "drop@example.com": "sent", "eve@example.com": "sent",
    }
    assert sorted(m.recipients[0] for m in mta.received[before:]) == ["ann@example.com", "drop@example.com", "eve@example.com"]
