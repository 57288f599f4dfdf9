"""The code location loads, its graph has the brief's shape, and the per-tenant schedule fans out."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.definitions import defs
from email_engine_assets.quality.assets import email_validations
from email_engine_assets.quality.schedules import recheck_schedule
from email_engine_resources.postgres import PostgresResource, get_engine
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_resources.workspace import WorkspaceResource


def test_definitions_load_with_both_partition_dimensions():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"contact_imports", "contacts", "email_validations", "contact_enrichment", "tag_assignments",
                    "segment_definitions", "segments", "mailwizz_subscribers",
                    "campaign_audiences", "campaign_sends", "campaign_stats", "delivery_events", "suppressions", "mailwizz_feedback",
                    "tenant_files"}
    imports = graph.get(dg.AssetKey("contact_imports")).partitions_def
    assert isinstance(imports, dg.MultiPartitionsDefinition)
    assert {d.name for d in imports.partitions_defs} == {"tenant", "source"}
    for key in ("contacts", "email_validations", "contact_enrichment", "tag_assignments", "segments", "mailwizz_subscribers"):
        node = graph.get(dg.AssetKey(key))
        assert node.partitions_def.name == "tenant"
        assert node.automation_condition is not None  # follows upstream by declarative automation
    assert dg.AssetKey("contacts") in graph.get(dg.AssetKey("tag_assignments")).parent_keys
    assert {dg.AssetKey("tag_assignments"), dg.AssetKey("segment_definitions")} <= graph.get(dg.AssetKey("segments")).parent_keys
    assert dg.AssetKey("delivery_events") in graph.get(dg.AssetKey("suppressions")).parent_keys
    assert dg.AssetKey("mailwizz_feedback") in graph.get(dg.AssetKey("suppressions")).parent_keys
    stats = graph.get(dg.AssetKey("campaign_stats"))
    assert stats.partitions_def.name == "campaign" and dg.AssetKey("campaign_sends") in stats.parent_keys
    assert stats.automation_condition is not None  # after each send, and hourly while feedback arrives


def test_schedule_yields_one_run_per_tenant(engine, workspace):
    workspace.tenant("acme")
    workspace.tenant("globex")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 11, 28, 3),
                                            resources={"db": PostgresResource(), "workspace": WorkspaceResource()})
        requests = list(recheck_schedule(context))
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("acme", "recheck:acme:2026-11-28T03:00Z"),
        ("globex", "recheck:globex:2026-11-28T03:00Z"),
    ]


def test_database_url_is_read_from_the_environment_never_from_config(monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_DATABASE_URL", "postgresql://user:s3cret@db.example/app")
    from email_engine_assets.definitions import default_resources, fixed_at_launch

    db = default_resources()["db"]
    assert db.url == ""  # the engine reads EMAIL_ENGINE_DATABASE_URL when a run opens it
    definition = fixed_at_launch({"db": db})["db"]
    assert definition.config_schema.as_field().config_type.fields == {}  # nothing for the UI to show


OVERRIDES = [
    ("db", {"url": "postgresql://attacker@db.example/elsewhere"}),
    ("dns", {"nameservers": ["203.0.113.53"]}),
    ("dns", {"port": 5353}),
    ("smtp_probe", {"port": 2525}),
    ("smtp_probe", {"helo_name": "mx.someone-else.example"}),
]


@pytest.mark.parametrize(("resource", "config"), OVERRIDES, ids=[f"{r}.{next(iter(c))}" for r, c in OVERRIDES])
def test_launchpad_run_config_cannot_change_where_data_goes(resource, config):
    job = defs.resolve_job_def("recheck_job")
    field = next(iter(config))
    with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}" at path root:resources:{resource}:config'):
        dg.validate_run_config(job, {"resources": {resource: {"config": config}}})


def test_an_asset_run_pointed_at_another_database_is_refused_and_writes_nothing(db_url, scratch_database, workspace):
    workspace.tenant("acme")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        with pytest.raises(dg.DagsterInvalidConfigError, match="root:resources:db:config"):
            dg.materialize(
                [email_validations], partition_key="acme", instance=instance, resources=defs.resources,
                run_config={"resources": {"db": {"config": {"url": scratch_database}}}},
            )
        assert instance.get_runs() == []  # refused before any run was created
    engine = get_engine(scratch_database)
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one()
    engine.dispose()
    assert tables == 0


def test_dagster_cli_validates_the_workspace(db_url):
    env = dict(os.environ, EMAIL_ENGINE_DAGSTER_DATABASE_URL=db_url)
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "All code locations passed validation" in proc.stderr + proc.stdout


def test_probe_settings_come_from_the_deployments_environment(monkeypatch):
    from email_engine_assets.definitions import smtp_probe_resource

    monkeypatch.setenv("EMAIL_ENGINE_SMTP_HELO", "probe.example.net")
    monkeypatch.setenv("EMAIL_ENGINE_SMTP_PORT", "2525")
    probe = smtp_probe_resource().config()
    assert (probe.helo_name, probe.port) == ("probe.example.net", 2525)
    monkeypatch.delenv("EMAIL_ENGINE_SMTP_HELO")
    assert smtp_probe_resource().config().helo_name == socket.getfqdn()
