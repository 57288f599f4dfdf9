"""The campaign lifecycle through real Dagster runs: draft, scheduled, due, paused, cancelled, completed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets as campaign_assets
from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.lifecycle import LifecycleError, next_state
from email_engine_tests.campaign_parts import (
    SimpleComposers,
    StaticAudience,
    campaign_env,
    outbox_recipients,
    write_campaign,
)

EMAILS = [f"p{i}@example.com" for i in range(5)]


@pytest.fixture
def camp(engine, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    yield from campaign_env(engine, workspace, tmp_path / "home", EMAILS)


def _state(engine, name: str) -> str:
    with engine.connect() as conn:
        return store.campaign_row(conn, "acme", name)["state"]


def test_a_draft_starts_only_by_send_and_a_later_send_changes_nothing(camp):
    write_campaign(camp.root, "acme", "spring")
    rows, problems = campaign_runs.list_campaigns("acme")
    assert problems == {} and [(r["campaign"], r["state"]) for r in rows] == [("acme.spring", "draft")]
    assert campaign_runs.send_due_campaigns(camp.instance, camp.defs) == []  # the main job never starts a draft
    outcome = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert outcome.blocked == [] and outcome.failures == []
    assert outcome.as_json() == {
        "campaign": "acme.spring", "state": "completed", "audience": 5, "queued": 0, "sent": 5, "handed_off": 0,
        "failed": 0, "unknown": 0, "skipped": {"suppressed": 0, "no_template": 0, "render_error": 0, "bad_address": 0, "cancelled": 0},
        "blocked": [], "failures": [], "warnings": [],
    }
    assert outbox_recipients(camp.outbox) == EMAILS
    again = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert again.counts == outcome.counts and "completed" in again.notes[-1]
    assert outbox_recipients(camp.outbox) == EMAILS


def test_a_scheduled_campaign_waits_for_its_time_then_runs_when_due(camp):
    send_at = datetime.now(timezone.utc) + timedelta(hours=1)
    write_campaign(camp.root, "acme", "later", send_at=send_at.isoformat())
    assert campaign_runs.send_due_campaigns(camp.instance, camp.defs) == []
    assert _state(camp.engine, "later") == "scheduled"
    with camp.engine.begin() as conn:  # the hour passes
        conn.execute(sa.text("UPDATE campaigns SET send_at = now() - interval '1 second' WHERE campaign = 'later'"))
    [outcome] = campaign_runs.send_due_campaigns(camp.instance, camp.defs)
    assert (outcome.counts["campaign"], outcome.counts["state"], outcome.counts["sent"]) == ("acme.later", "completed", 5)


def test_the_main_job_goes_on_with_a_campaign_a_dead_run_left_running(camp):
    write_campaign(camp.root, "acme", "spring")
    first = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert first.counts["sent"] == 5
    # As a run killed mid-send leaves it: two rows still queued, one claimed, the campaign running.
    with camp.engine.begin() as conn:
        ids = conn.execute(sa.text("SELECT row_id FROM campaign_sends WHERE campaign = 'spring' ORDER BY row_id")).scalars().all()
        conn.execute(sa.text("UPDATE campaign_sends SET state = 'queued', settled_at = NULL WHERE row_id = ANY(:ids)"), {"ids": ids[:2]})
        conn.execute(sa.text("UPDATE campaign_sends SET state = 'sending', settled_at = NULL WHERE row_id = :id"), {"id": ids[2]})
        conn.execute(sa.text("UPDATE campaigns SET state = 'running', completed_at = NULL WHERE campaign = 'spring'"))
    for row_id in ids[:2]:
        (camp.outbox / "acme" / "spring" / f"{row_id}.eml").unlink()
    [outcome] = campaign_runs.send_due_campaigns(camp.instance, camp.defs)
    counts = outcome.counts
    assert (counts["state"], counts["sent"], counts["unknown"], counts["queued"]) == ("completed", 4, 1, 0)
    assert sorted(outbox_recipients(camp.outbox)) == sorted(EMAILS)  # the two queued went out once more, nobody twice
    assert campaign_runs.send_due_campaigns(camp.instance, camp.defs) == []


def test_scheduling_in_the_past_is_refused_when_scheduled_and_the_campaign_stays_a_draft(camp):
    write_campaign(camp.root, "acme", "late", send_at="2020-01-01T09:00:00+01:00")
    rows, problems = campaign_runs.list_campaigns()
    assert "must lie in the future" in problems["acme.late"] and "late.yaml" in problems["acme.late"]
    assert _state(camp.engine, "late") == "draft"
    assert campaign_runs.send_due_campaigns(camp.instance, camp.defs) == []


def test_pause_takes_effect_between_batches_and_resume_goes_on(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    write_campaign(camp.root, "acme", "spring")
    calls = []

    def pause_in_the_second_batch(contact):
        if len(calls) == 2:  # committed before the batch's rows are in flight: none of them leaves
            campaign_runs.change_state("acme.spring", "pause", camp.defs)
        calls.append(contact["email"])

    camp.composers = SimpleComposers(on_compose=pause_in_the_second_batch)
    outcome = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert (outcome.counts["state"], outcome.counts["sent"], outcome.counts["queued"]) == ("paused", 2, 3)
    with pytest.raises(campaign_runs.CampaignRefused, match="paused"):
        campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    resumed = campaign_runs.resume("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert (resumed.counts["state"], resumed.counts["sent"], resumed.counts["queued"]) == ("completed", 5, 0)
    assert outbox_recipients(camp.outbox) == EMAILS


def test_cancel_skips_the_queued_rows_and_send_refuses(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    write_campaign(camp.root, "acme", "spring")
    camp.composers = SimpleComposers(on_compose=lambda c: c["email"] == "p2@example.com" and campaign_runs.change_state("acme.spring", "pause", camp.defs))
    campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    counts = campaign_runs.change_state("acme.spring", "cancel", camp.defs)
    assert (counts["state"], counts["sent"], counts["skipped"]["cancelled"], counts["audience"]) == ("cancelled", 2, 3, 5)
    with pytest.raises(campaign_runs.CampaignRefused, match="cancelled"):
        campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    with pytest.raises(campaign_runs.CampaignRefused, match="cannot resume a cancelled"):
        campaign_runs.resume("acme.spring", instance=camp.instance, definitions=camp.defs)


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        ("draft", "send", "running"), ("scheduled", "due", "running"), ("scheduled", "pause", None),
        ("running", "pause", "paused"), ("paused", "resume", "running"), ("running", "complete", "completed"),
        ("paused", "cancel", "cancelled"), ("draft", "due", None), ("paused", "send", None),
        ("completed", "cancel", None), ("cancelled", "resume", None), ("completed", "send", None),
    ],
)
def test_lifecycle_table(state, action, expected):
    if expected is None:
        with pytest.raises(LifecycleError):
            next_state(state, action)
    else:
        assert next_state(state, action) == expected


def test_the_main_job_sends_due_campaigns_and_reports_a_blocked_one_without_failing(camp, capsys):
    from email_engine_assets.main_job import MainJobOutcome, print_summary, send_due

    for name in ("ok", "blocked"):
        write_campaign(camp.root, "acme", name, send_at=(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(),
                       segment="vip" if name == "ok" else "empty")
    write_campaign(camp.root, "acme", "draft")
    camp.audience = StaticAudience({"vip": camp.ids, "empty": []})
    campaign_runs.list_campaigns()  # the files are read and recorded as scheduled
    with camp.engine.begin() as conn:  # their time passes
        conn.execute(sa.text("UPDATE campaigns SET send_at = now() - interval '1 second' WHERE send_at IS NOT NULL"))
    outcome = MainJobOutcome()
    send_due(camp.instance, outcome, camp.defs)
    assert outcome.ok, outcome.failures
    by_key = {row["campaign"]: row for row in outcome.campaigns}
    assert set(by_key) == {"acme.ok", "acme.blocked"}
    assert (by_key["acme.ok"]["state"], by_key["acme.ok"]["sent"]) == ("completed", 5)
    assert by_key["acme.blocked"]["blocked"][0]["check"] == "audience_not_empty"
    assert by_key["acme.blocked"]["state"] == "scheduled"
    print_summary(outcome)
    out = capsys.readouterr().out
    assert "campaign acme.ok: completed audience=5 sent=5" in out
    assert "campaign acme.blocked: scheduled audience=0" in out and "blocked by audience_not_empty" in out
    assert _state(camp.engine, "draft") == "draft"
