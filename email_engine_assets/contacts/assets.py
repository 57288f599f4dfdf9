"""Ingestion assets: contact_imports[tenant × source] -> contacts[tenant]."""


import dagster as dg
from pydantic import Field

from email_engine_assets.contacts import merge_store as contacts_store
from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import import_source
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.partitions import (
    fail_if_broken,
    import_partitions,
    tenant_of_import,
    tenant_partitions,
)
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

INGEST = "ingest"


@dg.asset(
    partitions_def=import_partitions,
    group_name=INGEST,
    kinds={"postgres", "polars"},
    description="Every file of inbox/<tenant>/<source>/ not yet in the ledger: read, normalised, staged with its rejects.",
)
def contact_imports(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    tenant_id, source_id = keys["tenant"], keys["source"]
    ws = load_workspace(workspace.root())
    fail_if_broken(ws, tenant_id)
    tenant = ws.tenants.get(tenant_id)
    source = tenant.source(source_id) if tenant else None
    if source is None:
        context.log.info(f"{source_id!r} is not a source of tenant {tenant_id!r}: nothing to import")
        return dg.MaterializeResult(metadata={"files_imported": 0, "note": "not a source of this tenant"})
    engine = db.engine()
    with engine.begin() as conn:
        ledger.register_workspace(conn, ws)
    reports = import_source(engine, tenant, source, ws.source_dir(tenant_id, source_id), run_id=context.run.run_id)
    totals = {k: sum(r.counts.get(k, 0) for r in reports) for k in ledger.COUNT_COLUMNS}
    imported = [r for r in reports if r.status == "imported"]
    failed = [r for r in reports if r.status == "failed"]
    for r in imported:
        context.log.info(f"{r.path}: {r.counts} ({r.format}, {r.encoding}, {r.seconds:.2f}s)")
    metadata = {
        "files_imported": len(imported),
        "files_skipped": sum(r.status == "skipped" for r in reports),
        "files_failed": len(failed),
        **totals,
        "files": dg.MetadataValue.md(_files_table(reports)) if reports else "no files",
    }
    if failed:
        raise dg.Failure(
            description="; ".join(r.error or r.path for r in failed),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _files_table(reports) -> str:
    lines = ["| file | status | format | encoding | rows | new | merged | duplicates | rejected |", "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        c = r.counts
        lines.append(
            f"| {r.path.rsplit('/', 1)[-1]} | {r.status} | {r.format or ''} | {r.encoding or ''} | {c.get('rows_total', '')} |"
            f" {c.get('new', '')} | {c.get('merged', '')} | {c.get('duplicates', '')} | {c.get('rejected', '')} |"
        )
    return "\n".join(lines)


class ContactsConfig(dg.Config):
    rebuild: bool = Field(default=False, description="recompute every golden record from all staged rows")


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=INGEST,
    kinds={"postgres"},
    deps=[dg.AssetDep(contact_imports, partition_mapping=tenant_of_import)],
    # A source with no file yet leaves its import partition unmaterialized; that must not block the merge.
    automation_condition=dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()),
    check_specs=[
        dg.AssetCheckSpec("imports_balanced", asset="contacts", description="rows_total = new + merged + duplicates + rejected, and the stored rows agree"),
        dg.AssetCheckSpec("contacts_have_provenance", asset="contacts", description="every contact has at least one staged row"),
    ],
    description="Golden records per tenant: staged rows merged with per-field survivorship, sources unioned.",
)
def contacts(context: dg.AssetExecutionContext, config: ContactsConfig, db: PostgresResource) -> dg.MaterializeResult:
    tenant_id = context.partition_key
    engine = db.engine()
    with engine.begin() as conn:
        merged = contacts_store.merge_staged(conn, tenant_id, rebuild=config.rebuild)
    with engine.connect() as conn:
        total = contacts_store.contact_counts(conn, tenant_id)
        unbalanced = contacts_store.unbalanced_imports(conn, tenant_id)
        orphans = contacts_store.contacts_without_provenance(conn, tenant_id)
    return dg.MaterializeResult(
        metadata={"contacts_total": total, "files_merged": merged["files"], "inserted": merged["inserted"], "updated": merged["updated"], "removed": merged["removed"]},
        check_results=[
            dg.AssetCheckResult(
                check_name="imports_balanced",
                passed=not unbalanced,
                metadata={"tenant": tenant_id, "unbalanced_files": len(unbalanced), "examples": str(unbalanced[:5])},
            ),
            dg.AssetCheckResult(
                check_name="contacts_have_provenance",
                passed=orphans == 0,
                metadata={"tenant": tenant_id, "contacts_without_provenance": orphans},
            ),
        ],
    )
