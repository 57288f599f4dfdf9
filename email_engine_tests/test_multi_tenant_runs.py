"""One run over many tenants gives each tenant what a run of its own gives it.

The downstream assets of an import (contacts, validations, enrichment, tags, segments) run over a
range of tenants in one run (the backfill automation emits, ``email-engine run``). Here the same
workspaces go through per-tenant runs (``pa*`` tenants) and through one run over a range
(``pb*`` tenants, same files): every table the assets write must hold the same rows per tenant.
"""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.assets import segment_definitions, segments, tag_assignments
from email_engine_assets.campaigns.tenant_files import tenant_files
from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.quality.assets import contact_enrichment, email_validations
from email_engine_assets.tenancy.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    import_key,
    tenant_range_tags,
    tenant_ranges,
)
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.smtp_server import free_port

DOWNSTREAM = [tenant_files, contacts, email_validations, contact_enrichment, tag_assignments, segments]

# Three tenants that differ in contacts, tag rules and segments.
TENANTS = {
    1: ("""email,first_name,country,company,tags
ann@good.example,Ann,FR,Acme,vip
bob@other.example,Bob,DE,,
info@good.example,,FR,,
""", """tag_rules:
  - name: french
    tag: fr
    all: [{field: country, equals: FR}]
segments:
  - name: vip
    all: [{field: tags, contains: vip}]
  - name: french
    all: [{field: tags, contains: fr}]
"""),
    2: ("""email,first_name,country,company,tags
cy@good.example,Cy,BE,Cy SA,
dee@other.example,Dee,FR,,lead
eve@mailinator.com,Eve,,,
""", """tag_rules:
  - name: companies
    tag: b2b
    all: [{field: company, exists: true}]
segments:
  - name: b2b
    all: [{field: tags, contains: b2b}]
"""),
    3: ("""email,first_name,country,language
fay@good.example,Fay,ES,es
gus@other.example,Gus,,
""", """segments:
  - name: everyone
    all: [{field: email, regex: "@"}]
"""),
}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def resources() -> dict:
    # the resolver answers from the cache seeded below; a closed port for anything else
    return {
        "db": PostgresResource(),
        "workspace": WorkspaceResource(),
        "dns": DnsResolverResource(nameservers=["127.0.0.1"], port=free_port("127.0.0.1"), timeout_s=0.2, retries=0),
        "smtp_probe": SmtpProbeResource(),
    }


def seed_dns(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            """INSERT INTO dns_cache (domain, status, mx_hosts, ttl_s, expires_at)
               VALUES ('good.example', 'mx', ARRAY['mx.good.example'], 86400, now() + interval '1 day'),
                      ('other.example', 'mx', ARRAY['mx.other.example'], 86400, now() + interval '1 day'),
                      ('mailinator.com', 'mx', ARRAY['mx.mailinator.com'], 86400, now() + interval '1 day')
               ON CONFLICT (domain) DO NOTHING"""
        )


def write_tenant(workspace, tenant_id: str, n: int) -> None:
    csv, extra = TENANTS[n]
    workspace.tenant(tenant_id, f"id: {tenant_id}\nname: T{n}\nsources:\n  - id: crm\n    priority: 10\n{extra}")
    workspace.file(tenant_id, "crm", "c.csv", csv)


def import_all(instance, tenant_ids: list[str]) -> None:
    instance.add_dynamic_partitions("tenant", tenant_ids)
    instance.add_dynamic_partitions("source", ["crm"])
    for tenant_id in tenant_ids:
        assert dg.materialize([contact_imports], partition_key=import_key(tenant_id, "crm"), instance=instance,
                              resources=resources()).success


TABLES = ("contacts", "email_validations", "contact_enrichment", "tag_assignments", "segment_snapshots", "segment_members",
          "segment_profiles")


def volatile(key: str) -> bool:
    """Columns that differ between two runs of the same content: ids from sequences, times, run ids."""
    return key == "id" or key.endswith(("_id", "_at", "_ids")) or key in ("run_id", "sources_seen")


def tables_of(engine, tenant_id: str) -> dict[str, list]:
    """Every row the downstream assets wrote for the tenant, without ids or times, its contact named by email."""
    out: dict[str, list] = {}
    with engine.connect() as conn:
        for table in TABLES:
            rows = conn.execute(sa.text(
                f"SELECT to_jsonb(t) AS row, c.email AS contact FROM {table} t "
                "LEFT JOIN contacts c ON c.tenant_id = t.tenant_id AND c.contact_id = (to_jsonb(t)->>'contact_id')::bigint "
                "WHERE t.tenant_id = :t"), {"t": tenant_id})
            out[table] = sorted(
                repr(sorted([(k, v) for k, v in r.row.items() if not volatile(k)] + [("contact", r.contact)]))
                for r in rows
            )
    return out


def test_a_run_over_many_tenants_gives_each_the_results_of_its_own_run(engine, workspace, instance):
    seed_dns(engine)
    for n in TENANTS:
        write_tenant(workspace, f"pa{n}", n)
        write_tenant(workspace, f"pb{n}", n)
    alone, together = [f"pa{n}" for n in TENANTS], [f"pb{n}" for n in TENANTS]
    import_all(instance, alone + together)

    for tenant_id in alone:
        assert dg.materialize([*DOWNSTREAM, segment_definitions], selection=DOWNSTREAM, partition_key=tenant_id,
                              instance=instance, resources=resources()).success
    result = dg.materialize([*DOWNSTREAM, segment_definitions], selection=DOWNSTREAM, instance=instance, resources=resources(),
                            tags={RANGE_START_TAG: together[0], RANGE_END_TAG: together[-1]})
    assert result.success

    for a, b in zip(alone, together):
        mine, shared = tables_of(engine, a), tables_of(engine, b)
        assert all(mine[t] for t in ("contacts", "email_validations", "contact_enrichment", "segment_snapshots")), mine
        assert mine == shared, (a, b)

    # one materialization per tenant and asset, each with its own tenant's metadata
    for asset in DOWNSTREAM:
        events = result.asset_materializations_for_node(asset.op.name)
        assert sorted(e.partition for e in events) == together
        assert {e.partition: e.metadata["tenant"].value for e in events} == {t: t for t in together}
    members = {e.partition: e.metadata["members"].value for e in result.asset_materializations_for_node("segments")}
    assert members["pb3"] == 2
    # each check gives one result for the run, over every tenant of it
    checks = {c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key == dg.AssetKey("email_validations")}
    assert checks["every_contact_has_verdict"].passed
    assert checks["every_contact_has_verdict"].metadata["tenants_checked"].value == 3


def test_a_tenant_that_fails_stops_only_itself_and_is_named(engine, workspace, instance):
    seed_dns(engine)
    for n in TENANTS:
        write_tenant(workspace, f"pc{n}", n)
    tenant_ids = [f"pc{n}" for n in TENANTS]
    import_all(instance, tenant_ids)
    (workspace.root / "tenants" / "pc2.yaml").write_text("id: pc2\nname: [unclosed\n")  # broken after its import

    result = dg.materialize([contacts, email_validations], instance=instance, resources=resources(), raise_on_error=False,
                            tags={RANGE_START_TAG: tenant_ids[0], RANGE_END_TAG: tenant_ids[-1]})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "email_validations"
    assert "1 of 3 tenants failed" in failure.step_failure_data.error.message and "tenant pc2" in failure.step_failure_data.error.message
    validated = sorted(e.partition for e in result.asset_materializations_for_node("email_validations"))
    assert validated == ["pc1", "pc3"]
    with engine.connect() as conn:
        by_tenant = dict(conn.execute(sa.text("SELECT tenant_id, count(*) FROM email_validations GROUP BY tenant_id")).all())
    assert by_tenant == {"pc1": 3, "pc3": 2}


def test_tenant_ranges_stop_before_a_tenant_not_wanted():
    order = ["a", "b", "c", "d", "e"]
    assert tenant_ranges(order, {"a", "b", "d", "e"}, max_tenants=10) == [["a", "b"], ["d", "e"]]
    assert tenant_ranges(order, set(order), max_tenants=2) == [["a", "b"], ["c", "d"], ["e"]]
    assert tenant_ranges(order, {"c", "z"}, max_tenants=10) == [["c"], ["z"]]
    assert tenant_range_tags(["a"]) == {"tenant": "a"}
    assert tenant_range_tags(["a", "b", "c"]) == {"tenants": "a..c", RANGE_START_TAG: "a", RANGE_END_TAG: "c"}


def test_after_imports_automation_asks_for_one_run_over_the_tenants_not_one_each():
    """The automation sensor emits a backfill when more than one partition is due (``emit_backfills``);
    the single-run backfill policy of the downstream assets makes that backfill one run over the range."""
    from dagster._core.definitions.automation_tick_evaluation_context import (
        build_run_requests,
        build_run_requests_with_backfill_policies,
    )
    from dagster._core.definitions.partitions.context import partition_loading_context

    from email_engine_assets.definitions import defs

    tenant_ids = ["t1", "t2", "t3", "t4"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", tenant_ids)
        instance.add_dynamic_partitions("source", ["crm"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        for tenant_id in tenant_ids:
            instance.report_runless_asset_event(dg.AssetMaterialization("contact_imports", partition=import_key(tenant_id, "crm")))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        for key in ("contacts", "email_validations", "contact_enrichment", "tag_assignments"):
            assert result.get_requested_partitions(dg.AssetKey(key)) == set(tenant_ids)
        graph = defs.resolve_asset_graph()
        (request,) = build_run_requests(result._requested_subsets, graph, None, emit_backfills=True)
        assert request.asset_graph_subset is not None  # a backfill, not a run per tenant
        with partition_loading_context(dynamic_partitions_store=instance):
            runs = build_run_requests_with_backfill_policies(
                list(request.asset_graph_subset.iterate_asset_partitions()), graph, instance
            )
    (run,) = runs
    assert {k.to_user_string() for k in run.asset_selection} >= {"contacts", "email_validations", "contact_enrichment", "tag_assignments"}
    assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == ("t1", "t4")


def test_email_engine_run_gives_the_tenants_a_range_run_failed_for_a_run_of_their_own(engine, workspace):
    """``over_tenants`` (what ``email-engine run`` does per stage): a tenant that fails a range run is run
    alone, its failure reported under its own name; the others are run together again and succeed."""
    from email_engine_assets.main_job import over_tenants

    for n in TENANTS:
        write_tenant(workspace, f"pd{n}", n)
    tenant_ids = [f"pd{n}" for n in TENANTS]
    (workspace.root / "tenants" / "pd2.yaml").unlink()  # delivery_events needs the tenant file: pd2 fails
    failures: list[str] = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", tenant_ids)
        over_tenants("feedback_job", instance, tenant_ids, tenant_ids, failures, " feedback")
        runs = instance.get_runs()
        materialized = {
            key: {p for p in tenant_ids
                  if instance.get_latest_materialization_event(dg.AssetKey(key)) and
                  instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[p]),
                                                  limit=1).records}
            for key in ("delivery_events", "suppressions")
        }
    assert len(failures) == 1 and failures[0].startswith("pd2 feedback: delivery_events: "), failures
    assert "no tenants/pd2.yaml" in failures[0]
    assert materialized == {"delivery_events": {"pd1", "pd3"}, "suppressions": {"pd1", "pd3"}}
    # the range run, then pd1 and pd3 together (they are not side by side: one run each), then pd2 alone
    assert len(runs) == 4
