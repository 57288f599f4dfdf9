"""A campaign that stops itself: complaints turn up while it sends through the PowerMTA stand-in, the
send applies its tenant's feedback between batches, the guard rail pauses it, and a resume after
review (``--override guard_rail``) goes on exactly where it stopped.

Real parts: SMTP injection into the stand-in, the accounting file it writes (``d`` lines, and ``f``
lines for the complaints), Dagster runs of the send, PostgreSQL.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.guard_rail import FeedbackSample, trip
from email_engine_assets.execution import run_job
from email_engine_resources.transports import PowerMtaResource
from email_engine_tests.campaign_parts import (
    Late,
    SimpleComposers,
    StaticAudience,
    add_contacts,
    campaign_defs,
    outbox_recipients,
    write_campaign,
)
from email_engine_tests.powermta_server import PowerMtaStandIn, accounting_time
from email_engine_tests.test_campaign_transports import TENANT, pmta_yaml, setup

AUDIENCE = 600  # three batches of 200
COMPLAINERS = 10
GUARD = "guard_rails:\n  min_sample: 100\n  check_every_s: 0\n"


def ledger_states(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT email, state FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = 'spring'")).all())


def incidents(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT incident_key, cleared_at IS NOT NULL, detail FROM alert_incidents WHERE kind = 'guard_rail_paused' ORDER BY id"))]


def test_complaints_mid_campaign_pause_it_and_resume_with_override_goes_on_where_it_stopped(
    engine, workspace, monkeypatch, tmp_path
):
    acct = tmp_path / "pmta-acct"
    acct.mkdir()
    people = [(f"p{i:04d}@example.com", "P", "en") for i in range(AUDIENCE)]
    with PowerMtaStandIn(accounting_dir=acct) as mta:
        transport = pmta_yaml(mta) + f"  accounting_dir: {acct}\n"
        env = setup(workspace, engine, monkeypatch, transport, people,
                    {"powermta": PowerMtaResource(retry_backoff_seconds=0.01, helo_name="sender.acme.example")}, transport="pmta")
        workspace.tenant("acme", TENANT.format(transport=textwrap.indent(textwrap.dedent(transport), "  ")) + GUARD)
        composed = Counter()

        def complaints_turn_up(contact):
            # as the second batch is composed, feedback-loop reports arrive for messages of the first
            composed["n"] += 1
            if composed["n"] == 201:
                for message in mta.received[:COMPLAINERS]:
                    assert mta.complain(message.recipients[0]) == 1

        env.composers.on_compose = complaints_turn_up
        with dg.instance_for_test() as instance:
            first = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
            assert first.failures == []
            states = ledger_states(engine)
            counts = Counter(states.values())
            assert first.counts["state"] == "paused"
            # paused within one feedback cycle: the third batch never went out
            assert 200 < counts["sent"] <= 400 and counts["sent"] + counts["queued"] == AUDIENCE
            received = [m.recipients[0] for m in mta.received]
            assert len(received) == len(set(received))  # nobody twice
            assert set(received) == {e for e, s in states.items() if s == "sent"}  # nobody after the pause

            shown = campaign_runs.show("acme.spring")
            assert shown["state"] == "paused"
            assert "complaints 10/" in shown["paused_reason"] and "min_sample 100" in shown["paused_reason"]
            [(key, cleared, detail)] = incidents(engine)
            assert key == "guard_rail_paused:acme.spring" and not cleared and "complaints 10/" in detail

            # resume without the review's override is refused, naming why
            with pytest.raises(campaign_runs.CampaignRefused, match="guard rail: complaints"):
                campaign_runs.resume("acme.spring", instance=instance, definitions=env.defs)
            assert len(mta.received) == len(received)

            resumed = campaign_runs.resume("acme.spring", overrides=["guard_rail"], instance=instance, definitions=env.defs)
            assert resumed.failures == [] and resumed.counts["state"] == "completed"
    after = [m.recipients[0] for m in mta.received]
    assert after[: len(received)] == received
    assert len(after) == AUDIENCE and sorted(after) == sorted(p[0] for p in people)  # no double send, no one skipped
    assert Counter(ledger_states(engine).values()) == {"sent": AUDIENCE}
    assert campaign_runs.show("acme.spring")["paused_reason"] is None
    [(_, cleared, _)] = incidents(engine)
    assert cleared


def test_the_guard_rail_waits_for_its_sample_and_names_the_rate():
    limits = {"min_sample": 200, "max_hard_bounce_rate": 0.02, "max_complaint_rate": 0.001}
    assert trip(FeedbackSample(199, 50, 50), **limits) is None  # too few messages with feedback yet
    assert trip(FeedbackSample(1000, 20, 1), **limits) is None  # at the limits, not over
    reason = trip(FeedbackSample(1000, 21, 2), **limits)
    assert "hard bounces 21/1000 = 2.10% > 2.0%" in reason and "complaints 2/1000 = 0.20% > 0.1%" in reason
    assert "over 1000 message(s) with feedback (min_sample 200)" in reason and "--override guard_rail" in reason


def test_a_destination_that_keeps_deferring_is_not_fed_its_rows_wait_counted_and_named(engine, workspace, monkeypatch, tmp_path):
    acct = tmp_path / "pmta-acct"
    acct.mkdir()
    people = ([(f"a{i}@example.com", "A", "en") for i in range(4)] + [(f"s{i}@slow.example", "S", "en") for i in range(3)]
              + [(f"o{i}@other.example", "O", "en") for i in range(2)])
    with PowerMtaStandIn(accounting_dir=acct) as mta:
        transport = pmta_yaml(mta) + f"  accounting_dir: {acct}\n"
        env = setup(workspace, engine, monkeypatch, transport, people,
                    {"powermta": PowerMtaResource(retry_backoff_seconds=0.01, helo_name="sender.acme.example")}, transport="pmta")
        workspace.tenant("acme", TENANT.format(transport=textwrap.indent(textwrap.dedent(transport), "  "))
                         + "guard_rails:\n  destination_deferrals: 3\n")
        # PowerMTA's own retries of an earlier campaign: slow.example throttles (4.7.0 / 421), other.example only timed out
        mta.accounting.append(*[
            {"type": "t", "timeLogged": accounting_time(), "orig": "bounces@bounce.acme.example", "rcpt": rcpt,
             "dsnAction": "delayed", "dsnStatus": status, "dsnDiag": diag, "jobId": "acme.earlier"}
            for rcpt, status, diag in [
                ("x1@slow.example", "4.7.0 (other or undefined security status)", "smtp;421 4.7.0 try again later"),
                ("x2@slow.example", "4.7.0 (other or undefined security status)", "smtp;421 4.7.0 try again later"),
                ("x3@slow.example", "4.7.28 (delivery not authorized)", "smtp;421 4.7.28 rate limited"),
                ("x1@other.example", "4.4.1 (no answer from host)", "smtp;timeout"),
                ("x2@other.example", "4.4.1 (no answer from host)", "smtp;timeout"),
                ("x3@other.example", "4.4.1 (no answer from host)", "smtp;timeout"),
            ]])
        with dg.instance_for_test() as instance:
            sent = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert sent.failures == []
    states = ledger_states(engine)
    assert {e for e, s in states.items() if s == "queued"} == {"s0@slow.example", "s1@slow.example", "s2@slow.example"}
    assert sorted(m.recipients[0] for m in mta.received) == sorted(e for e, s in states.items() if s == "sent")
    assert len(mta.received) == 6 and sent.counts["state"] == "running"  # the waiting rows keep it running
    assert [w for w in sent.warnings if "slow.example" in w] == [
        "destination slow.example throttles the sender (3 recent deferral(s) or refusal(s)): 3 row(s) wait, queued; "
        "`campaign send` goes on later"]
    assert not [w for w in sent.warnings if "other.example" in w]


def test_the_resume_job_needs_the_guard_rail_override_after_a_guard_rail_pause(engine, workspace, tmp_path, monkeypatch):
    workspace.tenant("acme")
    home = tmp_path / "home"
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(home))
    emails = [f"p{i}@example.com" for i in range(4)]
    env = SimpleNamespace(audience=StaticAudience({"vip": add_contacts(engine, "acme", emails)}), composers=SimpleComposers())
    defs = campaign_defs(Late(env, "audience"), Late(env, "composers"))
    write_campaign(workspace.root, "acme", "spring")
    sent = []

    def paused_by_its_guard_rail(contact):  # as the guard rail would, before anything is sent
        if not sent:
            with engine.begin() as conn:
                assert store.pause_by_guard_rail(conn, "acme", "spring", "guard rail: complaints 9/300 = 3.00% > 0.1% ...")
        sent.append(contact["email"])

    env.composers = SimpleComposers(on_compose=paused_by_its_guard_rail)
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=defs)
        assert outcome.counts["state"] == "paused" and outcome.counts["sent"] == 0

        def resume(overrides=None):
            config = {"campaign": "acme.spring", **({"overrides": overrides} if overrides is not None else {})}
            return run_job("campaign_resume_job", instance, run_config={"ops": {"campaign_resume": {"config": config}}},
                           definitions=defs)

        env.composers = SimpleComposers()
        for refused, why in ((resume(), "paused by its guard rail: complaints 9/300"),
                             (resume(["sender_reputation"]), "unknown override(s) sender_reputation")):
            assert not refused.success
            [(_, error)] = refused.step_failures
            assert why in error.message
        assert resume(["guard_rail"]).success
    with engine.connect() as conn:
        row = store.campaign_row(conn, "acme", "spring")
    assert (row["state"], row["paused_reason"], row["guard_rail_overridden"]) == ("completed", None, True)
    assert outbox_recipients(home / "outbox") == emails
