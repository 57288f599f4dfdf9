"""The due-campaign sensor and the run tags that limit sends per transport instance."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml
from dagster._core.test_utils import create_run_for_test

from email_engine_assets.campaigns.assets import TRANSPORT_TAG
from email_engine_assets.campaigns.sensors import (
    MAX_RESUMES,
    RESUME_AFTER,
    RESUMED_AFTER_TAG,
    due_campaigns_sensor,
    resume_run_requests,
    resume_wanted,
)
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.campaign_parts import add_contacts, write_campaign


def _tick(instance, root: Path, db_url: str) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, resources={"workspace": WorkspaceResource(path=str(root)), "db": PostgresResource(url=db_url)}
    )
    return due_campaigns_sensor(context)


def test_the_sensor_registers_campaigns_and_starts_only_the_due_ones(engine, db_url, workspace):
    workspace.tenant("acme", yaml_text="""
        id: acme
        name: Acme
        sources: [{id: crm}]
        transports:
          - {name: mta1, kind: powermta, host: 127.0.0.1, bounce_address: b@acme.example, allow_private: true}
    """)
    add_contacts(engine, "acme", ["a@example.com"])
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    write_campaign(workspace.root, "acme", "draft")
    write_campaign(workspace.root, "acme", "later", send_at=soon.isoformat())
    write_campaign(workspace.root, "acme", "now", send_at=soon.isoformat(), transport="mta1")
    write_campaign(workspace.root, "acme", "broken", text="segment: vip\nbogus: 1\n")
    with dg.instance_for_test() as instance:
        first = _tick(instance, workspace.root, db_url)
        assert first.run_requests == []
        [added] = first.dynamic_partitions_requests
        assert sorted(added.partition_keys) == ["acme.draft", "acme.later", "acme.now"]
        instance.add_dynamic_partitions("campaign", list(added.partition_keys))
        with engine.begin() as conn:  # the hour passes for acme.now
            conn.execute(sa.text("UPDATE campaigns SET send_at = now() - interval '1 second' WHERE campaign = 'now'"))
        second = _tick(instance, workspace.root, db_url)
    [request] = second.run_requests
    assert request.partition_key == "acme.now"
    assert request.tags[TRANSPORT_TAG] == "acme.mta1" and request.run_config == {}  # the defaults: only a due campaign starts
    assert request.run_key.startswith("due:acme.now:")
    assert second.dynamic_partitions_requests == []


def test_dagster_yaml_limits_sends_to_one_run_per_transport_instance():
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": TRANSPORT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def _running_campaign(engine, workspace) -> None:
    workspace.tenant("acme", yaml_text="""
        id: acme
        name: Acme
        sources: [{id: crm}]
        transports:
          - {name: mta1, kind: powermta, host: 127.0.0.1, bounce_address: b@acme.example, allow_private: true}
    """)
    add_contacts(engine, "acme", ["a@example.com"])
    write_campaign(workspace.root, "acme", "spring", transport="mta1")



def test_a_campaign_a_dead_run_left_running_is_resumed_once_that_run_has_ended(engine, db_url, workspace):
    _running_campaign(engine, workspace)
    with dg.instance_for_test() as instance:
        first = _tick(instance, workspace.root, db_url)  # registers the campaign: a draft, nothing to do
        instance.add_dynamic_partitions("campaign", list(first.dynamic_partitions_requests[0].partition_keys))
        with engine.begin() as conn:  # a send started, and its run died
            conn.execute(sa.text("UPDATE campaigns SET state = 'running' WHERE campaign = 'spring'"))
        dead = create_run_for_test(instance, job_name="campaign_send_job", tags={"dagster/partition": "acme.spring"},
                                   status=dg.DagsterRunStatus.STARTED)
        assert _tick(instance, workspace.root, db_url).run_requests == []  # still in progress: not touched
        instance.report_run_failed(dead)
        assert _tick(instance, workspace.root, db_url).run_requests == []  # ended just now: waits RESUME_AFTER
        later = datetime.now(timezone.utc) + RESUME_AFTER + timedelta(seconds=5)
        [request] = resume_run_requests(instance, engine, later)
    assert request.partition_key == "acme.spring" and request.run_key == f"resume:acme.spring:{dead.run_id}"
    assert request.run_config == {} and request.tags[TRANSPORT_TAG] == "acme.mta1"
    assert request.tags[RESUMED_AFTER_TAG] == dead.run_id


def test_resumes_stop_after_a_few_in_a_row_and_never_overlap_a_run():
    now = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    long_ago = (now - RESUME_AFTER - timedelta(minutes=1)).timestamp()
    failed, started = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED
    assert resume_wanted([], now)
    assert resume_wanted([(failed, long_ago, False)], now)
    assert not resume_wanted([(failed, now.timestamp(), False)], now)
    assert not resume_wanted([(started, None, True), (failed, long_ago, False)], now)
    assert resume_wanted([(failed, long_ago, True)] * (MAX_RESUMES - 1) + [(failed, long_ago, False)], now)
    assert not resume_wanted([(failed, long_ago, True)] * MAX_RESUMES + [(failed, long_ago, False)], now)
