"""The path a deployment runs: inbox sensor -> import run -> automation -> contacts -> quality assets.

Each step is what the daemons do: a sensor tick, the run it requests executed with its partition and
tags, then declarative automation deciding the next runs, executed the same way, until it is quiet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

# What the automation daemon calls to turn the requested partitions into runs (their tags included).
from dagster._core.definitions.automation_tick_evaluation_context import (
    build_run_requests,
)

from email_engine_assets.contacts.sensors import inbox_sensor
from email_engine_assets.definitions import DOMAINS
from email_engine_assets.jobs import tenant_job
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import TENANTS_TAG, tenant_and_source
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.dns_server import LoopbackDnsServer, TestZone

ZONE = TestZone(mx={"good.example": [(10, "mx.good.example")], "nomail.example": [(0, ".")]})


@pytest.fixture(scope="module")
def dns_server():
    with LoopbackDnsServer(ZONE) as server:
        yield server


@pytest.fixture
def instance(engine):
    with dg.instance_for_test() as inst:
        yield inst


def production_defs(dns_port: int) -> dg.Definitions:
    """The code location's assets, jobs and sensors; resources pointing at the loopback DNS server."""
    resources = {
        "db": PostgresResource(),
        "workspace": WorkspaceResource(),
        "dns": DnsResolverResource(nameservers=["127.0.0.1"], port=dns_port, timeout_s=0.3, retries=0),
        "smtp_probe": SmtpProbeResource(),
    }
    return dg.Definitions.merge(*DOMAINS, dg.Definitions(jobs=[tenant_job], resources=resources))


def age(path, seconds=3600):
    t = time.time() - seconds
    os.utime(path, (t, t))


def sensor_tick(defs: dg.Definitions, instance) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(instance=instance, resources={"workspace": WorkspaceResource(), "db": PostgresResource()})
    result = inbox_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return list(result.run_requests)


def execute(defs: dg.Definitions, instance, request: dg.RunRequest, job_name: str | None = None) -> dg.DagsterRun:
    """Execute a run request as the run launcher would: its job, partition (or range), tags and selection."""
    if job_name:
        job = defs.resolve_job_def(job_name)
    else:
        job = defs.resolve_implicit_job_def_def_for_assets(request.asset_selection)
    result = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags,
        asset_selection=request.asset_selection if not job_name else None,
    )
    assert result.success
    return instance.get_run_by_id(result.run_id)


class Automation:
    """The automation sensor of a deployment: it has been evaluating since before the files arrived
    (a first evaluation only records the state; it requests nothing)."""

    def __init__(self, defs: dg.Definitions, instance):
        self.defs, self.instance = defs, instance
        self.cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    def until_quiet(self) -> list[tuple[list[str], dg.DagsterRun]]:
        """Evaluate, execute the runs requested, again until nothing is requested."""
        return automation_until_quiet(self.defs, self.instance, self)


def automation_until_quiet(defs: dg.Definitions, instance, state: Automation) -> list[tuple[list[str], dg.DagsterRun]]:
    runs = []
    for _ in range(6):
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=state.cursor)
        state.cursor = evaluation.cursor
        if evaluation.total_requested == 0:
            return runs
        requests = build_run_requests(evaluation._requested_subsets, defs.resolve_asset_graph(), run_tags=None, emit_backfills=False)
        for request in requests:
            runs.append((sorted(k.to_user_string() for k in request.asset_selection), execute(defs, instance, request)))
    raise AssertionError("automation still requests runs after 6 evaluations")


def queue_limit_keys() -> set[str]:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert all(limit["value"] == {"applyLimitPerUniqueValue": True} for limit in limits)
    return {limit["key"] for limit in limits}


def test_sensor_import_then_automation_builds_contacts_and_verdicts(engine, workspace, instance, dns_server):
    workspace.tenant("acme", sources=("crm", "salon"))
    workspace.tenant("globex", sources=("events",))
    age(workspace.file("acme", "crm", "crm.csv", "email,first_name\nann@good.example,Ann\nbob@nomail.example,Bob\n"))
    age(workspace.file("acme", "salon", "salon.csv", "email,tags\nann@good.example,vip\ncy@good.example,\n"))
    age(workspace.file("globex", "events", "ev.csv", "email\nzed@good.example\n"))
    defs = production_defs(dns_server.port)
    automation = Automation(defs, instance)

    requests = sensor_tick(defs, instance)
    # one run per tenant; acme's two sources in one run
    assert sorted(r.tags["tenant"] for r in requests) == ["acme", "globex"]
    import_runs = [execute(defs, instance, r, job_name="import_job") for r in requests]
    assert {run.job_name for run in import_runs} == {"import_job"}

    automated = automation.until_quiet()
    # one run per tenant: contacts, and the quality assets after it in the same run (eager requests
    # the downstream assets of what it requests)
    everything = ["contact_enrichment", "contacts", "email_validations", "mailwizz_subscribers", "tag_assignments"]
    assert sorted((run.tags["dagster/partition"], selection) for selection, run in automated) == [
        ("acme", everything), ("globex", everything),
    ]
    for _, run in automated:
        steps = [e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)]
        assert steps.index("contacts") < min(steps.index(k) for k in ("email_validations", "contact_enrichment", "tag_assignments"))

    with engine.connect() as conn:
        contacts = dict(conn.execute(sa.text("SELECT email, tenant_id FROM contacts")).all())
        verdicts = dict(conn.execute(sa.text("SELECT email, verdict FROM email_validations")).all())
        tags = conn.execute(sa.text("SELECT count(*) FROM tag_assignments WHERE tenant_id = 'acme'")).scalar_one()
        ledger = conn.execute(sa.text("SELECT status, count(*) FROM import_files GROUP BY 1")).all()
    assert contacts == {"ann@good.example": "acme", "bob@nomail.example": "acme", "cy@good.example": "acme", "zed@good.example": "globex"}
    assert verdicts == {"ann@good.example": "valid", "bob@nomail.example": "invalid", "cy@good.example": "valid", "zed@good.example": "valid"}
    assert tags >= 1 and dict(ledger) == {"imported": 3}
    # nothing new: the next tick requests nothing, and automation stays quiet
    assert sensor_tick(defs, instance) == []
    assert automation.until_quiet() == []


def test_every_run_of_a_tenant_carries_a_tag_the_queue_limit_keys_on(engine, workspace, instance, dns_server):
    workspace.tenant("acme", sources=("crm", "salon"))
    age(workspace.file("acme", "crm", "a.csv", "email\nann@good.example\n"))
    age(workspace.file("acme", "salon", "b.csv", "email\nbob@good.example\n"))
    defs = production_defs(dns_server.port)
    automation = Automation(defs, instance)
    limited = queue_limit_keys()
    runs = [execute(defs, instance, r, job_name="import_job") for r in sensor_tick(defs, instance)]
    runs += [run for _, run in automation.until_quiet()]
    assert [run.job_name for run in runs][0] == "import_job" and len(runs) == 2  # one import run, one automation run
    for run in runs:
        assert any(run.tags.get(key) == "acme" for key in limited), (run.job_name, run.tags)
    # automation runs carry no tag of ours: the limit must key on the partition tag Dagster gives them
    automated = [run for run in runs if "tenant" not in run.tags]
    assert automated and all(run.tags["dagster/partition"] == "acme" for run in automated)


# A run in a process of its own, as the run launcher starts it (Dagster runs do not share a process).
RUN_VALIDATIONS = """
import sys
import dagster as dg
from email_engine_tests.test_orchestration import production_defs

key = dg.AssetKey("email_validations")
job = production_defs(int(sys.argv[1])).resolve_implicit_job_def_def_for_assets([key])
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("tenant", ["acme"])
sys.exit(0 if job.execute_in_process(instance=instance, partition_key="acme", asset_selection=[key]).success else 1)
"""


def advisory_lock_waiters(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar_one()


def test_two_runs_of_one_tenants_validations_serialise(engine, workspace, instance, dns_server):
    workspace.tenant("acme")
    age(workspace.file("acme", "crm", "a.csv", "email\n" + "".join(f"u{i}@good.example\n" for i in range(50))))
    defs = production_defs(dns_server.port)
    for request in sensor_tick(defs, instance):
        execute(defs, instance, request, job_name="import_job")
    execute(defs, instance, dg.RunRequest(partition_key="acme", asset_selection=[dg.AssetKey("contacts")]))

    with tenant_work_lock(engine, "email_validations", "acme"):
        runs = [
            subprocess.Popen([sys.executable, "-c", RUN_VALIDATIONS, str(dns_server.port)], cwd=PROJECT_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 120
        while advisory_lock_waiters(engine) < 2 and time.monotonic() < deadline and all(r.poll() is None for r in runs):
            time.sleep(0.2)
        assert advisory_lock_waiters(engine) == 2  # both runs wait for the lock held here
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM validation_runs")).scalar_one() == 0
        # another tenant, or another kind of work of the same tenant, does not wait
        with tenant_work_lock(engine, "email_validations", "globex"), tenant_work_lock(engine, "contact_enrichment", "acme"):
            pass
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
    with engine.connect() as conn:
        checked = sorted(conn.execute(sa.text("SELECT checked FROM validation_runs WHERE tenant_id = 'acme'")).scalars())
    # one after the other: the second run found every verdict fresh and checked nothing
    assert checked == [0, 50]


def test_one_run_imports_many_tenants_and_a_broken_one_fails_only_its_part(engine, workspace, instance, dns_server):
    for t in ("t1", "t2", "t3"):
        workspace.tenant(t, sources=("crm", "web"))
        age(workspace.file(t, "crm", "crm.csv", f"email\ncrm@{t}.example\n"))
        age(workspace.file(t, "web", "web.csv", f"email\nweb@{t}.example\n"))
    age(workspace.file("t2", "crm", "zz-binary.csv", bytes(range(256)) * 64))
    defs = production_defs(dns_server.port)
    requests = sensor_tick(defs, instance)
    assert len(requests) == 1 and requests[0].tags[TENANTS_TAG] == "t1..t3"
    # t3's tenant file breaks between the tick and the run
    workspace.tenant("t3", yaml_text="id: t3\nname: T3\nsources: []\n")
    result = defs.resolve_job_def("import_job").execute_in_process(
        instance=instance, tags=requests[0].tags, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "zz-binary.csv" in failure and "'t3'" in failure
    materialized = {
        tenant_and_source(e.event_specific_data.materialization.partition)
        for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    # the partitions that imported cleanly are recorded, so their tenants' merges go on
    assert materialized == {("t1", "crm"), ("t1", "web"), ("t2", "web")}
    with engine.connect() as conn:
        ledger = conn.execute(sa.text("SELECT tenant_id, status, count(*) FROM import_files GROUP BY 1, 2 ORDER BY 1, 2")).all()
    assert [tuple(r) for r in ledger] == [("t1", "imported", 2), ("t2", "failed", 1), ("t2", "imported", 2)]
    # what automation reads: t1's and t2's imports are newer than their contacts, t3 has none
    stored = {tenant_and_source(k) for k in instance.get_materialized_partitions(dg.AssetKey("contact_imports"))}
    assert stored == materialized
