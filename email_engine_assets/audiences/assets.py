"""Audience assets per tenant: tag_assignments, segments (and the observed segment definitions)."""

from collections import Counter

import dagster as dg

from email_engine_assets.audiences import store
from email_engine_assets.audiences.segment_build import (
    SegmentsBuilt,
    build_tenant_segments,
)
from email_engine_assets.audiences.segments import segments_digest
from email_engine_assets.quality.assets import (
    CONTACTS,
    EAGER,
    ChunkConfig,
    contact_enrichment,
    email_validations,
)
from email_engine_assets.quality.store import analyze_after_bulk_write, contact_ranges
from email_engine_assets.quality.write_behind import written_behind
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, TenantsConfig, each_tenant, tenant_configs
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

AUDIENCES = "audiences"

@dg.observable_source_asset(
    partitions_def=tenant_partitions,
    group_name=AUDIENCES,
    description="The segments declared in tenants/<tenant>.yaml; data version = their digest. Observed by "
    "segment_definitions_sensor when they change: an observation makes automation rebuild the tenant's segments.",
)
def segment_definitions(context: dg.AssetExecutionContext, workspace: WorkspaceResource) -> dg.DataVersionsByPartition:
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    ws = load_tenants(workspace.root(), tenants)
    return dg.DataVersionsByPartition(
        {tenant_id: dg.DataVersion(segments_digest(tenant.segments)) for tenant_id, tenant in ws.tenants.items()}
    )


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=AUDIENCES,
    kinds={"postgres", "polars"},
    deps=[CONTACTS, email_validations, contact_enrichment],
    automation_condition=EAGER,
    backfill_policy=SINGLE_RUN,
    description="Tags from import columns (import:<source>) and the tenant's rules (rule:<name>); manual tags kept.",
)
def tag_assignments(context: dg.AssetExecutionContext, config: ChunkConfig, db: PostgresResource, workspace: WorkspaceResource):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        with tenant_work_lock(engine, "tag_assignments", tenant.id):
            return _assign_tags(tenant, engine, config)

    yield from each_tenant(context, tenants, one, workers=config.tenant_workers)


def _assign_tags(tenant, engine, config: ChunkConfig) -> dg.MaterializeResult:
    totals: Counter[str] = Counter()
    per_rule: Counter[str] = Counter()
    changes: list[dict[str, int]] = []

    def write(chunk) -> None:
        ids, imported = chunk
        with engine.begin() as conn:
            changes.append(store.sync_ruled_tags(conn, tenant.id, imported, tenant.tag_rules, ids))

    with engine.connect() as conn:
        ranges = contact_ranges(conn, tenant.id, config.contacts_per_chunk)
        store.stage_import_tags(conn, tenant.id)
        conn.commit()

        def import_ranges():
            # Read on this connection (it holds the staged import tags); the rules run where the sync is written.
            for ids in ranges:
                yield ids, store.import_tag_assignments(conn, ids)
                conn.commit()

        try:
            for _, imported in written_behind(import_ranges(), write, config.chunk_writers):
                totals["import_assignments"] += imported.height
        finally:
            conn.rollback()
            store.drop_import_tags(conn)
            conn.commit()
        for change in changes:
            ruled = {k: n for k, n in change.items() if k.startswith("rule:")}
            per_rule.update(ruled)
            totals["rule_assignments"] += sum(ruled.values())
            totals.update({k: n for k, n in change.items() if k not in ruled})
        analyze_after_bulk_write(conn, "tag_assignments", totals["added"] + totals["removed"])
        analyze_after_bulk_write(conn, "contacts", totals["contacts_retagged"])
        conn.commit()
        top = store.top_tags(conn, tenant.id, 10)
    return dg.MaterializeResult(
        metadata={
            **{k: totals[k] for k in ("added", "removed", "contacts_retagged", "import_assignments", "rule_assignments")},
            "per_rule": dg.MetadataValue.json({k: n for k, n in per_rule.items() if n}),
            "top_tags": dg.MetadataValue.json(dict(top)),
        }
    )


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=AUDIENCES,
    kinds={"postgres"},
    deps=[CONTACTS, email_validations, contact_enrichment, tag_assignments, segment_definitions],
    automation_condition=EAGER,
    backfill_policy=SINGLE_RUN,
    description="Membership snapshot of each segment of the tenant file, evaluated in PostgreSQL; suppressed addresses left out.",
)
def segments(context: dg.AssetExecutionContext, config: TenantsConfig, db: PostgresResource, workspace: WorkspaceResource):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        build = build_tenant_segments(engine, tenant, context.log)
        if build.failed:
            raise dg.Failure(
                description="; ".join(build.failed.values()),
                metadata={"failed_segments": dg.MetadataValue.json(build.failed), "built_segments": dg.MetadataValue.json(sorted(build.built))},
            )
        return dg.MaterializeResult(metadata=segments_metadata(tenant, build))

    yield from each_tenant(context, tenants, one, workers=config.tenant_workers)


def segments_metadata(tenant, build: SegmentsBuilt) -> dict:
    """The metadata of a materialization of ``segments`` (by the asset, or by a send that rebuilt them first)."""
    built = build.built
    return {
        "segments": len(built),
        "members": sum(counts["members"] for counts in built.values()),
        "suppressed_excluded": sum(counts["suppressed_excluded"] for counts in built.values()),
        "profiles_written": build.profiles_written,
        "dropped_segments": dg.MetadataValue.json(build.dropped),
        "definitions_digest": segments_digest(tenant.segments),
        "per_segment": dg.MetadataValue.json({name: _segment_metadata(counts) for name, counts in built.items()}),
    }


def _segment_metadata(counts: dict) -> dict:
    keys = ("members", "matched", "suppressed_excluded", "capped", "added", "removed", "per_language", "per_verdict")
    return {**{key: counts[key] for key in keys}, "definition_hash": counts["definition_hash"][:12]}
