"""The campaign lifecycle from the UI: the send job's typed config, and pause / resume / cancel as jobs
whose Launchpad config names the campaign; materializing the campaign assets never starts a draft."""

from __future__ import annotations

import dagster as dg
import pytest

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets as campaign_assets
from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.assets import campaign_partitions
from email_engine_assets.definitions import defs
from email_engine_assets.execution import run_job
from email_engine_tests.campaign_parts import (
    SimpleComposers,
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


def _control(camp, action: str, key: str):
    """A run of ``campaign_<action>_job`` with the config the Launchpad takes."""
    config = {"ops": {f"campaign_{action}": {"config": {"campaign": key}}}}
    return run_job(f"campaign_{action}_job", camp.instance, run_config=config, definitions=camp.defs)


def _failure(result) -> str:
    [(_, error)] = result.step_failures
    return error.message


def test_the_launchpad_validates_the_config_of_every_campaign_job():
    pause = defs.resolve_job_def("campaign_pause_job")
    assert [node.name for node in pause.nodes] == ["campaign_pause"]
    dg.validate_run_config(pause, {"ops": {"campaign_pause": {"config": {"campaign": "acme.autumn_news"}}}})
    for name in ("campaign_pause_job", "campaign_resume_job", "campaign_cancel_job"):
        with pytest.raises(dg.DagsterInvalidConfigError, match="campaign"):  # the campaign is required
            dg.validate_run_config(defs.resolve_job_def(name), {})
    send = defs.resolve_job_def("campaign_send_job")
    dg.validate_run_config(send, {})  # the sensor's and automation's runs: no config
    dg.validate_run_config(send, {"ops": {"campaign_audiences": {"config": {"send_now": True, "overrides": ["preflight_renders"]}},
                                          "campaign_sends": {"config": {"resend_unknown": True}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type CheckName got no_such_check"):
        dg.validate_run_config(send, {"ops": {"campaign_audiences": {"config": {"overrides": ["no_such_check"]}}}})


def test_pause_resume_and_cancel_jobs_change_the_state_and_resume_sends_the_rest(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    write_campaign(camp.root, "acme", "spring")
    calls = []

    def pause_in_the_second_batch(contact):
        if len(calls) == 2:
            campaign_runs.change_state("acme.spring", "pause", camp.defs)
        calls.append(contact["email"])

    camp.composers = SimpleComposers(on_compose=pause_in_the_second_batch)
    outcome = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert (outcome.counts["state"], outcome.counts["sent"]) == ("paused", 2)

    again = _control(camp, "pause", "acme.spring")  # already paused: refused with the reason
    assert not again.success and "pause refused: campaign acme.spring: cannot pause a paused campaign" in _failure(again)

    camp.composers = SimpleComposers()
    resumed = _control(camp, "resume", "acme.spring")
    assert resumed.success
    assert _state(camp.engine, "spring") == "completed" and outbox_recipients(camp.outbox) == EMAILS
    [sends] = camp.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("campaign_sends"), asset_partitions=["acme.spring"]), limit=1).records
    assert sends.run_id == resumed.run_id and sends.asset_materialization.metadata["sent"].value == 5

    write_campaign(camp.root, "acme", "autumn")
    campaign_runs.list_campaigns("acme")
    cancelled = _control(camp, "cancel", "acme.autumn")
    assert cancelled.success and _state(camp.engine, "autumn") == "cancelled"
    [output] = [e for e in cancelled.events if e.is_successful_output]
    assert output.step_output_data.metadata["state"].value == "cancelled"

    unknown = _control(camp, "pause", "acme.nope")
    assert not unknown.success and "no campaign file campaigns/acme/nope.yaml" in _failure(unknown)


def test_materializing_the_assets_without_send_now_never_starts_a_draft_or_a_campaign_not_due(camp):
    write_campaign(camp.root, "acme", "spring")
    write_campaign(camp.root, "acme", "later", send_at="2099-01-01T09:00:00+00:00")
    campaign_runs.list_campaigns("acme")
    camp.instance.add_dynamic_partitions(campaign_partitions.name, ["acme.spring", "acme.later"])

    # "Materialize all" on the asset page: both assets, the default config
    both = run_job("campaign_send_job", camp.instance, partition_key="acme.spring", definitions=camp.defs)
    assert not both.success and "campaign acme.spring is a draft: nothing sent" in _failure(both)
    later = run_job("campaign_send_job", camp.instance, partition_key="acme.later", definitions=camp.defs)
    assert not later.success and "campaign acme.later is not due before 2099-01-01T09:00:00+00:00: nothing sent" in _failure(later)

    # campaign_sends alone (its own "Materialize" button)
    for key, state in (("acme.spring", "draft"), ("acme.later", "scheduled")):
        alone = run_job("campaign_send_job", camp.instance, partition_key=key, definitions=camp.defs,
                        asset_selection=[dg.AssetKey("campaign_sends")])
        assert not alone.success and f"campaign {key} is {state} (not started): nothing sent" in _failure(alone)
    assert (_state(camp.engine, "spring"), _state(camp.engine, "later")) == ("draft", "scheduled")
    assert not camp.outbox.exists()

    # the Launchpad's send_now is the operator's `campaign send`
    started = run_job("campaign_send_job", camp.instance, partition_key="acme.spring", definitions=camp.defs,
                      run_config={"ops": {"campaign_audiences": {"config": {"send_now": True}}}})
    assert started.success and _state(camp.engine, "spring") == "completed"
    assert outbox_recipients(camp.outbox) == EMAILS
