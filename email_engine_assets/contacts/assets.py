"""Ingestion assets: contact_imports[tenant × source] -> contacts[tenant]."""

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
from pydantic import Field

from email_engine_assets.contacts import merge_store as contacts_store
from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import (
    FileReport,
    import_sources,
    unexpected_failure,
)
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.input_checks import inputs_read_result, inputs_read_spec
from email_engine_assets.tenancy.input_problems import INBOX_FILE, InputProblem
from email_engine_assets.tenancy.input_problems_store import replace_problems
from email_engine_assets.tenancy.partitions import (
    broken_tenant_message,
    import_key,
    import_partitions,
    tenant_and_source,
    tenant_of_import,
    tenant_partitions,
)
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, TenantsConfig, each_tenant, run_tenants
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

INGEST = "ingest"
# backfill_policy is beta in Dagster 1.13; the single-run policy is what the inbox sensor relies on.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)


class ImportsConfig(dg.Config):
    tenant_workers: int = Field(
        default=2, ge=1, le=8, description="tenants of a run imported at once, each on its own database session"
    )


@dg.asset(
    partitions_def=import_partitions,
    group_name=INGEST,
    kinds={"postgres", "polars"},
    # A backfill (or the inbox sensor) imports many (tenant, source) partitions in one run.
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Every file of inbox/<tenant>/<source>/ not yet in the ledger: read, normalised, staged with its rejects.",
)
def contact_imports(context: dg.AssetExecutionContext, config: ImportsConfig, db: PostgresResource, workspace: WorkspaceResource):
    # A generator: on failure, the events of the partitions that imported cleanly are yielded before
    # the failure is raised (events logged with ``context.log_event`` are dropped when the step raises).
    keys = [tenant_and_source(key) for key in context.partition_keys]
    # Only the tenants of this run: a run of one tenant neither parses nor registers a thousand tenants.
    ws = load_tenants(workspace.root(), {t for t, _ in keys})
    engine = db.engine()
    with engine.begin() as conn:
        ledger.register_workspace(conn, ws)
    not_sources: list[str] = []
    by_tenant: dict[str, list] = {}
    for tenant_id, source_id in keys:
        if tenant_id in ws.errors:
            continue  # reported below: a broken tenant file stops only its tenant
        tenant = ws.tenants.get(tenant_id)
        source = tenant.source(source_id) if tenant else None
        if source is None:
            not_sources.append(f"{tenant_id}/{source_id}")
            continue
        by_tenant.setdefault(tenant_id, []).append((source, ws.source_dir(tenant_id, source_id)))
    reports = _import_tenants(engine, ws, by_tenant, run_id=context.run.run_id, workers=config.tenant_workers)
    _record_unread_files(engine, by_tenant, reports)
    if not_sources:
        context.log.info(f"not a source of the tenant, nothing to import: {', '.join(not_sources[:MAX_LISTED])}")
    totals = {k: sum(r.counts.get(k, 0) for r in reports) for k in ledger.COUNT_COLUMNS}
    imported = [r for r in reports if r.status == "imported"]
    failed = [r for r in reports if r.status == "failed"]
    if imported:  # one event for the run's files: each log line is a write to the event log
        context.log.info(_listed([f"{r.path}: {r.counts} ({r.format}, {r.encoding}, {r.seconds:.2f}s)" for r in imported], "files"))
    broken = sorted({t for t, _ in keys} & set(ws.errors))
    failed_tenants = sorted({t for t, _ in keys if t in broken} | {r.tenant_id for r in failed if r.tenant_id})
    metadata = {
        "partitions": len(keys),
        "tenants": len({t for t, _ in keys}),
        "files_imported": len(imported),
        "files_skipped": sum(r.status == "skipped" for r in reports),
        "files_failed": len(failed),
        **totals,
        "files": dg.MetadataValue.md(_files_table(reports)) if reports else "no files",
    }
    if failed_tenants:
        metadata["failed_tenants"] = ", ".join(failed_tenants[:MAX_LISTED])
    if not_sources:
        metadata["note"] = f"not a source of the tenant: {', '.join(not_sources[:20])}"
    if len(keys) > 1:
        # Dagster copies the step's metadata into the event of every partition of the run (and
        # per-partition metadata costs a lookup of the run's whole range each): the events carry the
        # run's summary, the totals and the file table go once to the run's log.
        files_table = metadata.pop("files")
        context.log.info(
            "\n".join(f"{k}: {v}" for k, v in metadata.items()) + "\n\n" + (files_table.value if reports else "no files")
        )
        metadata = {"run_partitions": len(keys), "run_tenants": metadata["tenants"], "run_files_imported": len(imported),
                    "run_files_failed": len(failed), **({"run_failed_tenants": metadata["failed_tenants"]} if failed_tenants else {})}
    if failed or broken:
        # The partitions that imported cleanly are recorded as such, so the merge of their tenants
        # goes on; the run fails and names the failed files and tenants.
        bad = {(t, s) for t, s in keys if t in broken} | {(r.tenant_id, r.source_id) for r in failed}
        stopped = set(broken) | {r.tenant_id for r in failed if r.source_id is None}
        for tenant_id, source_id in keys:
            if (tenant_id, source_id) not in bad and tenant_id not in stopped:
                yield dg.AssetMaterialization(asset_key=context.asset_key, partition=import_key(tenant_id, source_id))
        for tenant_id in broken:
            context.log.error(f"tenant {tenant_id!r} has an invalid tenant file; nothing of it imported")
        raise dg.Failure(
            description="; ".join([r.error or r.path for r in failed[:MAX_LISTED]] + [broken_tenant_message(ws, t) for t in broken[:MAX_LISTED]]),
            metadata=metadata,
        )
    yield dg.MaterializeResult(metadata=metadata)


def _record_unread_files(engine, by_tenant: dict[str, list], reports: list) -> None:
    """The files of this run's sources that could not be imported, as the tenants' ``inbox_file``
    problems: they replace those of the same sources (a file fixed, replaced or moved away clears)."""
    with engine.begin() as conn:
        for tenant_id, sources in by_tenant.items():
            problems = [InputProblem(INBOX_FILE, r.path, r.error or "not imported", r.source_id or "")
                        for r in reports if r.tenant_id == tenant_id and r.status == "failed"]
            replace_problems(conn, tenant_id, [INBOX_FILE], problems, scopes=[source.id for source, _ in sources] + [""])


def _import_tenants(engine, ws, by_tenant: dict[str, list], *, run_id: str, workers: int) -> list:
    """Each tenant's sources imported on a session of its own, ``workers`` tenants at a time; reports in tenant order.

    Tenants share nothing (each file takes its tenant's lock), so a run over many tenants overlaps one
    tenant's parsing with another's database work. An error that stops a tenant's whole import (its
    session lost, say) fails that tenant alone: a failed report without a source.
    """

    def one(tenant_id: str) -> list:
        try:
            return import_sources(engine, ws.tenants[tenant_id], by_tenant[tenant_id], run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the other tenants of the run go on
            error = unexpected_failure(Path(f"inbox/{tenant_id}"), exc)
            return [FileReport(path=f"inbox/{tenant_id}", sha256="", status="failed", error=error, tenant_id=tenant_id)]

    if workers == 1 or len(by_tenant) < 2:
        return [r for t in by_tenant for r in one(t)]
    with ThreadPoolExecutor(max_workers=min(workers, len(by_tenant)), thread_name_prefix="import-tenant") as pool:
        return [r for batch in pool.map(one, list(by_tenant)) for r in batch]


# A run's lists (log lines, table rows, failures) show this many entries and count the rest.
MAX_LISTED = 200


def _listed(lines: list[str], what: str) -> str:
    more = len(lines) - MAX_LISTED
    return "\n".join(lines[:MAX_LISTED] + ([f"... and {more} more {what}"] if more > 0 else []))


def _files_table(reports) -> str:
    lines = ["| file | status | format | encoding | rows | new | merged | duplicates | rejected |", "|---|---|---|---|---|---|---|---|---|"]
    for r in reports[:MAX_LISTED]:
        c = r.counts
        lines.append(
            f"| {r.path.rsplit('/', 1)[-1]} | {r.status} | {r.format or ''} | {r.encoding or ''} | {c.get('rows_total', '')} |"
            f" {c.get('new', '')} | {c.get('merged', '')} | {c.get('duplicates', '')} | {c.get('rejected', '')} |"
        )
    if len(reports) > MAX_LISTED:
        lines.append(f"\n... and {len(reports) - MAX_LISTED} more files")
    return "\n".join(lines)


class ContactsConfig(TenantsConfig):
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
        inputs_read_spec("contacts", [INBOX_FILE]),
    ],
    # One run merges a range of tenants (the backfill automation emits after a large import, ``email-engine run``).
    backfill_policy=SINGLE_RUN,
    description="Golden records per tenant: staged rows merged with per-field survivorship, sources unioned.",
)
def contacts(context: dg.AssetExecutionContext, config: ContactsConfig, db: PostgresResource):
    engine = db.engine()
    yield from each_tenant(context, run_tenants(context), lambda tenant_id: _merge_tenant(engine, tenant_id, config),
                          workers=config.tenant_workers)


def _merge_tenant(engine, tenant_id: str, config: ContactsConfig) -> dg.MaterializeResult:
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
            inputs_read_result(engine, tenant_id, [INBOX_FILE], "inbox files"),
        ],
    )
