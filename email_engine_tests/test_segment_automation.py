"""Segments in the deployment's path: built by automation after the quality assets, rebuilt when
their definition in the tenant file changes (observed by the segment definitions sensor), quiet otherwise."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences import store
from email_engine_assets.audiences.segments import Segment, segments_digest
from email_engine_assets.audiences.sensors import segment_definitions_sensor
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.test_cli import cli_env, dagster_db, example_workspace  # noqa: F401 (fixtures)
from email_engine_tests.dns_server import LoopbackDnsServer
from email_engine_tests.test_orchestration import (
    ZONE,
    Automation,
    age,
    execute,
    production_defs,
    sensor_tick,
)


@pytest.fixture(scope="module")
def dns_server():
    with LoopbackDnsServer(ZONE) as server:
        yield server


@pytest.fixture
def instance(engine):
    with dg.instance_for_test() as inst:
        yield inst

ACME = """\
id: acme
name: Acme
sources: [{{id: crm}}]
segments:
  - name: french
    all: [{{field: country, equals: {country}}}]
  - name: everyone
"""


class DefinitionsSensor:
    """The segment definitions sensor ticking for a deployment, its observations recorded as the daemon records them."""

    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def tick(self) -> int:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources={"workspace": WorkspaceResource()})
        result = segment_definitions_sensor(context)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        self.cursor = result.cursor
        return len(result.asset_events)


def members(engine, segment: str) -> list[str]:
    with engine.connect() as conn:
        ids = store.segment_members(conn, "acme", segment)
        emails = dict(conn.execute(sa.text("SELECT contact_id, email FROM contacts")).all())
    return sorted(emails[i] for i in ids)


def test_automation_builds_segments_and_rebuilds_them_when_the_definition_changes(engine, workspace, instance, dns_server):
    path = workspace.tenant("acme", ACME.format(country="FR"))
    age(workspace.file("acme", "crm", "crm.csv", "email,country\nann@good.example,FR\nbob@good.example,DE\n"))
    defs = production_defs(dns_server.port)
    automation = Automation(defs, instance)
    definitions = DefinitionsSensor(instance)
    for request in sensor_tick(defs, instance):
        execute(defs, instance, request, job_name="import_job")
    assert definitions.tick() == 1  # the tenant is registered: its definitions are observed

    first = automation.until_quiet()
    assert [selection for selection, _ in first] == [
        ["contact_enrichment", "contacts", "email_validations", "mailwizz_subscribers", "segments", "tag_assignments"]
    ]
    assert members(engine, "french") == ["ann@good.example"]
    assert members(engine, "everyone") == ["ann@good.example", "bob@good.example"]
    materialization = instance.get_latest_materialization_event(dg.AssetKey("segments"))
    metadata = materialization.asset_materialization.metadata
    assert metadata["segments"].value == 2 and metadata["members"].value == 3
    assert metadata["per_segment"].value["french"]["members"] == 1

    # nothing changed: no observation, no run
    assert definitions.tick() == 0
    assert automation.until_quiet() == []

    # a changed definition: observed, and only segments runs again
    path.write_text(ACME.format(country="DE"), encoding="utf-8")
    assert definitions.tick() == 1
    rebuilt = automation.until_quiet()
    assert [selection for selection, _ in rebuilt] == [["segments"]]
    assert members(engine, "french") == ["bob@good.example"]
    assert definitions.tick() == 0 and automation.until_quiet() == []

    # a segment removed from the file: its snapshot goes with the next build
    path.write_text(ACME.format(country="DE").split("  - name: everyone")[0], encoding="utf-8")
    assert definitions.tick() == 1
    assert [selection for selection, _ in automation.until_quiet()] == [["segments"]]
    with engine.connect() as conn:
        assert store.current_snapshot(conn, "acme", "everyone") is None


def test_suppressed_addresses_are_left_out_and_counted_in_the_metadata(engine, workspace, instance, dns_server):
    workspace.tenant("acme", ACME.format(country="FR"))
    age(workspace.file("acme", "crm", "crm.csv", "email,country\nann@good.example,FR\ncy@good.example,FR\n"))
    defs = production_defs(dns_server.port)
    for request in sensor_tick(defs, instance):
        execute(defs, instance, request, job_name="import_job")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'cy@good.example', 'complained')"))
    keys = [dg.AssetKey(k) for k in ("contacts", "email_validations", "contact_enrichment", "tag_assignments", "segments")]
    run = execute(defs, instance, dg.RunRequest(partition_key="acme", asset_selection=keys))
    assert members(engine, "french") == ["ann@good.example"]
    event = instance.get_latest_materialization_event(dg.AssetKey("segments"))
    assert event.run_id == run.run_id
    per_segment = event.asset_materialization.metadata["per_segment"].value
    assert per_segment["french"]["suppressed_excluded"] == 1 and per_segment["french"]["per_language"] == {"fr": 1}  # enriched from the country


def test_the_sensor_observes_registered_tenants_once_per_definition_and_skips_broken_files(workspace):
    workspace.tenant("acme", ACME.format(country="FR"))
    globex = workspace.tenant("globex")
    with dg.instance_for_test() as instance:
        sensor = DefinitionsSensor(instance)
        assert sensor.tick() == 0  # no tenant registered yet
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        assert sensor.tick() == 2 and sensor.tick() == 0
        globex.write_text("id: globex\nname: G\nsources: [{id: crm}]\nsegments: [{name: Bad Name}]\n", encoding="utf-8")
        assert sensor.tick() == 0  # a broken file keeps its last definitions (its error is reported elsewhere)
        globex.write_text("id: globex\nname: G\nsources: [{id: crm}]\nsegments: [{name: all_valid}]\n", encoding="utf-8")
        assert sensor.tick() == 1
        (records,) = [instance.fetch_observations(dg.AssetKey("segment_definitions"), limit=1).records]
        observation = records[0].asset_observation
        assert observation.partition == "globex" and observation.metadata["names"].value == ["all_valid"]
        assert observation.tags["dagster/data_version"] == segments_digest(
            [Segment.model_validate({"name": "all_valid"})]
        )


def test_a_segment_past_its_time_limit_fails_the_run_naming_it_and_the_others_are_built(
    cli_env, example_workspace, engine, capsys
):
    from email_engine_assets import cli
    from email_engine_tests.test_segments import SLOW_PATTERN

    tenant = example_workspace / "tenants" / "acme.yaml"
    text = tenant.read_text(encoding="utf-8").replace(
        "segments:\n",
        "segment_build: {timeout_seconds: 1}\n"
        f"segments:\n  - name: slow_pattern\n    all: [{{field: email, regex: '{SLOW_PATTERN}'}}]\n"
        "    verdicts: [valid, risky, unknown]\n",
    )
    tenant.write_text(text, encoding="utf-8")
    assert cli.main(["--workspace", str(example_workspace), "run"]) == 1
    out = capsys.readouterr().out
    failed = next(line for line in out.splitlines() if line.startswith("FAILED acme: segments:"))
    assert failed.startswith("FAILED acme: segments: segment 'slow_pattern': its evaluation was stopped after 1 s"), out
    with engine.connect() as conn:
        assert store.current_snapshot(conn, "acme", "slow_pattern") is None
        assert store.current_snapshot(conn, "acme", "b2b_newsletter") is not None  # the other segments are built
