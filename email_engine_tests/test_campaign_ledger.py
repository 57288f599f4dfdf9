"""The exactly-once ledger: blocking checks, suppression at claim time, unknown rows after a crash, SIGKILL mid-send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets as campaign_assets
from email_engine_assets.campaigns.ledger import SETTLED_STATES
from email_engine_assets.campaigns.parts import Problem
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.campaign_parts import (
    HookedTemplateComposers,
    SimpleComposers,
    StaticAudience,
    add_contacts,
    campaign_env,
    outbox_recipients,
    write_campaign,
    write_real_templates,
)


@pytest.fixture
def camp(engine, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    yield from campaign_env(engine, workspace, tmp_path / "home", [f"p{i:02d}@example.com" for i in range(6)], ("spring",))


def _suppress(engine, email: str, reason: str = "unsubscribed") -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', :e, :r)"), {"e": email, "r": reason})


def _ledger(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT email, state FROM campaign_sends WHERE campaign = 'spring'")).all())


def test_a_failed_preflight_blocks_before_anything_leaves_and_an_override_goes_on(camp):
    camp.composers = SimpleComposers(problems=[Problem("templates/acme/welcome.yaml", 3, "first_name", "undefined")])
    blocked = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["preflight_renders"]
    assert "welcome.yaml:3: first_name: undefined" in blocked.blocked[0]["reason"]
    assert blocked.counts["state"] == "draft" and blocked.counts["sent"] == 0 and not camp.outbox.exists()
    done = campaign_runs.send("acme.spring", overrides=["preflight_renders"], instance=camp.instance, definitions=camp.defs)
    assert done.blocked == [] and done.counts["sent"] == 6
    run = camp.instance.get_runs(limit=1)[0]
    # the override is recorded with the run: its config, and the check result
    assert run.run_config["ops"]["campaign_audiences"]["config"]["overrides"] == ["preflight_renders"]
    [check] = [e for e in camp.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
               if e.dagster_event.asset_check_evaluation_data.check_name == "preflight_renders"]
    assert check.dagster_event.asset_check_evaluation_data.metadata["overridden"].value is True


def test_an_unknown_override_is_refused_by_name(camp):
    with pytest.raises(campaign_runs.CampaignRefused, match="unknown check.*no_such_check"):
        campaign_runs.send("acme.spring", overrides=["no_such_check"], instance=camp.instance, definitions=camp.defs)


def test_suppressed_members_of_the_snapshot_block_and_are_never_mailed(camp):
    _suppress(camp.engine, "p01@example.com")
    blocked = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["no_suppressed_members"]
    assert "1 member(s) of segment 'vip'" in blocked.blocked[0]["reason"]
    done = campaign_runs.send("acme.spring", overrides=["no_suppressed_members"], instance=camp.instance, definitions=camp.defs)
    assert (done.counts["sent"], done.counts["skipped"]["suppressed"], done.counts["audience"]) == (5, 1, 6)
    assert "p01@example.com" not in outbox_recipients(camp.outbox)


def test_an_empty_segment_blocks(camp):
    camp.audience = StaticAudience({"vip": []})
    blocked = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["audience_not_empty"]


def test_the_last_campaigns_bounce_rate_blocks_the_next_and_no_data_passes(camp):
    campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)  # completed, no feedback data: the next one passes
    write_campaign(camp.root, "acme", "summer")
    with camp.engine.begin() as conn:
        conn.execute(sa.text("UPDATE campaigns SET hard_bounces = 1, complaints = 0 WHERE campaign = 'spring'"))
    blocked = campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["sender_reputation"]
    assert "hard bounces 1/6 = 16.67% > 2.0%" in blocked.blocked[0]["reason"]


def test_an_address_suppressed_while_the_campaign_runs_gets_nothing_from_later_batches(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    seen = []

    def suppress_during_first_batch(contact):
        if not seen:
            _suppress(camp.engine, "p05@example.com", "complained")
        seen.append(contact["email"])

    write_real_templates(camp.root)
    camp.composers = HookedTemplateComposers(on_compose=suppress_during_first_batch)
    done = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert "p05@example.com" not in seen and "p05@example.com" not in outbox_recipients(camp.outbox)
    assert (done.counts["sent"], done.counts["skipped"]["suppressed"], done.counts["state"]) == (5, 1, "completed")
    with camp.engine.connect() as conn:
        detail = conn.execute(sa.text("SELECT detail FROM campaign_sends WHERE email = 'p05@example.com'")).scalar_one()
    assert detail == "suppressed (complained) at send time"


def test_skipped_contacts_are_counted_by_reason(camp, engine):
    add = add_contacts(engine, "acme", ["nocat@example.com"], category="nocat")
    camp.audience = StaticAudience({"vip": camp.ids + add})
    done = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert (done.counts["audience"], done.counts["sent"], done.counts["skipped"]["no_template"]) == (7, 6, 1)


def test_rows_left_sending_become_unknown_are_reported_and_resent_only_on_request(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    camp.composers = SimpleComposers(on_compose=lambda c: c["email"] == "p00@example.com" and campaign_runs.change_state("acme.spring", "pause", camp.defs))
    campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    with camp.engine.begin() as conn:  # a run claimed p02 and died before recording anything
        conn.execute(sa.text("UPDATE campaign_sends SET state = 'sending', claimed_at = now() WHERE email = 'p02@example.com'"))
    camp.composers = SimpleComposers()
    resumed = campaign_runs.resume("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert (resumed.counts["state"], resumed.counts["sent"], resumed.counts["unknown"]) == ("completed", 5, 1)
    assert "p02@example.com" not in outbox_recipients(camp.outbox)
    again = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert again.counts["unknown"] == 1  # a plain send never resends it
    resent = campaign_runs.send("acme.spring", resend_unknown=True, instance=camp.instance, definitions=camp.defs)
    assert (resent.counts["state"], resent.counts["sent"], resent.counts["unknown"]) == ("completed", 6, 0)
    assert outbox_recipients(camp.outbox) == camp.emails


SENDER = """
import json, sys, time
import dagster as dg
from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets
from email_engine_tests.campaign_parts import HookedTemplateComposers, StaticAudience, campaign_defs
assets.SEND_BATCH_SIZE = 4
ids = json.loads(sys.argv[2])
defs = campaign_defs(StaticAudience({"vip": ids}), HookedTemplateComposers(on_compose=lambda c: time.sleep(0.02)))
with dg.instance_for_test() as instance:
    campaign_runs.send(sys.argv[1], instance=instance, definitions=defs)
"""


def test_sigkill_mid_send_then_resume_sends_nobody_twice(camp, engine, tmp_path):
    write_real_templates(camp.root)
    emails = [f"k{i:03d}@example.com" for i in range(60)]
    ids = add_contacts(engine, "acme", emails)
    camp.audience = StaticAudience({"vip": ids})
    camp.composers = HookedTemplateComposers()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SENDER, "acme.spring", json.dumps(ids)], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(camp.outbox.rglob("*.eml"))) < 10:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = _ledger(engine)
    assert 0 < sum(s == "sent" for s in before.values()) < 60
    assert "running" == campaign_runs.counts_of("acme.spring")["state"]
    done = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    after = _ledger(engine)
    assert done.counts["state"] == "completed" and set(after.values()) <= set(SETTLED_STATES)
    assert set(after) == set(emails)
    recipients = outbox_recipients(camp.outbox)
    assert len(recipients) == len(set(recipients))  # nobody received it twice
    sent = {e for e, s in after.items() if s == "sent"}
    assert sent <= set(recipients)
    unknown = {e for e, s in after.items() if s == "unknown"}
    assert done.counts["unknown"] == len(unknown)  # reported
    assert sent | unknown == set(emails)


def test_rate_per_minute_paces_the_batches(camp, engine):
    from email_engine_assets.campaigns import store
    from email_engine_assets.campaigns.registry import load_one
    from email_engine_assets.campaigns.sender import send_campaign
    from email_engine_resources.outbox import Outbox

    _, campaign = load_one(camp.root, "acme.spring")
    campaign_runs.list_campaigns()
    with engine.begin() as conn:
        store.freeze_members(conn, "acme", "spring", camp.ids)
        store.transition(conn, "acme", "spring", "send")
    now = [0.0]
    waits = []
    report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), Outbox(camp.outbox),
                           rate_per_minute=4, batch_size=100, sleep=lambda s: (waits.append(s), now.__setitem__(0, now[0] + s)),
                           clock=lambda: now[0])
    assert report.batches == 2 and report.outcomes["sent"] == 6 and report.completed
    assert waits == [60.0]  # 4 rows take a minute at 4 a minute; the last, short batch waits for nothing


class ListStandIn:
    """A list transport following the hand-off contract: takes every recipient but those at refused.example."""

    name = "lists"

    def __init__(self):
        self.handoffs = []

    def hand_off(self, handoff):
        from email_engine_resources.delivery import DeliveryResult

        self.handoffs.append(handoff)
        return [DeliveryResult(r.row_id, "failed" if r.email.endswith("@refused.example") else "handed_off", "")
                for r in handoff.recipients]


def test_a_list_transport_gets_one_hand_off_per_template_and_rows_end_handed_off(camp, engine):
    from email_engine_assets.campaigns import store
    from email_engine_assets.campaigns.registry import load_one
    from email_engine_assets.campaigns.sender import send_campaign

    extra = add_contacts(engine, "acme", ["zed@refused.example"])
    _, campaign = load_one(camp.root, "acme.spring")
    campaign_runs.list_campaigns()
    with engine.begin() as conn:
        store.freeze_members(conn, "acme", "spring", camp.ids + extra)
        store.transition(conn, "acme", "spring", "send")
    lists = ListStandIn()
    report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), lists, batch_size=100)
    assert (report.outcomes["handed_off"], report.outcomes["failed"], report.completed) == (6, 1, True)
    [handoff] = lists.handoffs
    assert (handoff.name, handoff.template, handoff.custom_fields) == ("acme.spring.welcome", "welcome", {"CITY": "city"})
    assert "[UNSUBSCRIBE_URL]" in handoff.html and handoff.reply_to == "news@acme.example"
    assert sorted(r.email for r in handoff.recipients) == sorted(camp.emails + ["zed@refused.example"])
    assert handoff.recipients[0].fields["first_name"] == "Ann"
    assert campaign_runs.counts_of("acme.spring")["handed_off"] == 6
