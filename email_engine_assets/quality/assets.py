"""Quality assets per tenant: email_validations, contact_enrichment, tag_assignments."""


from collections import Counter

import dagster as dg
from pydantic import Field

from email_engine_assets.quality import store as store
from email_engine_assets.quality.enrichment import enrich_contacts
from email_engine_assets.quality.validation_run import validate_batch
from email_engine_assets.quality.verdict import VERDICTS
from email_engine_assets.quality.write_behind import written_behind
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, TenantsConfig, each_tenant, tenant_configs
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource

QUALITY = "quality"
EAGER = dg.AutomationCondition.eager()


class ChunkConfig(TenantsConfig):
    """How many contacts a tenant-level asset reads, computes and writes at a time (memory follows it)."""

    contacts_per_chunk: int = Field(default=store.CONTACTS_PER_CHUNK, ge=1)
    chunk_writers: int = Field(
        default=2, ge=1, le=8,
        description="Chunks written at once, each on its own connection, while the next one is read and computed.",
    )

# The golden records of the contacts domain, named by key: quality reads the table, not the module.
CONTACTS = dg.AssetKey("contacts")


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=QUALITY,
    kinds={"postgres", "dns"},
    deps=[CONTACTS],
    automation_condition=EAGER,
    check_specs=[
        dg.AssetCheckSpec("every_contact_has_verdict", asset="email_validations"),
        dg.AssetCheckSpec("invalid_share_stable", asset="email_validations", description="warn when the invalid share jumps"),
    ],
    backfill_policy=SINGLE_RUN,
    description="Verdict per contact: syntax, DNS (MX, null MX, A fallback), flags, optional SMTP probe. Re-checks stale verdicts.",
)
def email_validations(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    db: PostgresResource,
    workspace: WorkspaceResource,
    dns: DnsResolverResource,
    smtp_probe: SmtpProbeResource,
):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        with tenant_work_lock(engine, "email_validations", tenant.id):
            return _validate_tenant(tenant, engine, dns, smtp_probe, config)

    yield from each_tenant(context, tenants, one, workers=config.tenant_workers)


def _validate_tenant(
    tenant, engine, dns: DnsResolverResource, smtp_probe: SmtpProbeResource, config: ChunkConfig
) -> dg.MaterializeResult:
    with engine.connect() as conn:
        ranges = store.contact_ranges(conn, tenant.id, config.contacts_per_chunk)

    def batches():
        for ids in ranges:
            with engine.connect() as conn:
                due = store.contacts_due_for_validation(
                    conn, tenant.id, tenant.validation.recheck_age_days, tenant.validation.unknown_recheck_age_hours, ids
                )
            if due.height:
                yield validate_batch(
                    engine, due, dns, smtp_probe if tenant.validation.smtp_probe else None,
                    allow_private_targets=tenant.validation.allow_private_targets,
                )

    def write(batch) -> None:
        with engine.begin() as conn:
            store.write_validations(conn, tenant.id, batch.frame)

    checked_total = lookups = distinct_domains = probed = 0
    for batch in written_behind(batches(), write, config.chunk_writers):
        checked_total += batch.frame.height
        lookups += batch.dns_lookups
        distinct_domains += batch.domains
        probed += batch.probed
    with engine.begin() as conn:
        store.analyze_after_bulk_write(conn, "email_validations", checked_total)
        stats = store.record_validation_run(conn, tenant.id, checked=checked_total, domains=distinct_domains, dns_lookups=lookups)
        missing = store.contacts_without_verdict(conn, tenant.id)
    previous = stats["previous_invalid_share"]
    jump = stats["invalid_share"] - previous if previous is not None else 0.0
    return dg.MaterializeResult(
        metadata={
            "checked": checked_total,
            "distinct_domains": distinct_domains,
            "dns_lookups": lookups,
            "dns_cache_hits": distinct_domains - lookups,
            "smtp_probed": probed,
            **{v: stats[v] for v in VERDICTS},
            "invalid_share": round(stats["invalid_share"], 4),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_contact_has_verdict", passed=missing == 0,
                metadata={"tenant": tenant.id, "contacts_without_verdict": missing},
            ),
            dg.AssetCheckResult(
                check_name="invalid_share_stable",
                passed=jump <= tenant.validation.invalid_share_jump,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"tenant": tenant.id, "invalid_share": round(stats["invalid_share"], 4),
                          "previous_invalid_share": round(previous, 4) if previous is not None else "none",
                          "allowed_jump": tenant.validation.invalid_share_jump},
            ),
        ],
    )


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=QUALITY,
    kinds={"postgres", "polars"},
    deps=[CONTACTS],
    automation_condition=EAGER,
    backfill_policy=SINGLE_RUN,
    description="Language (9 + fallback en), ISO country and E.164 phone per contact, each with the rule that decided it.",
)
def contact_enrichment(context: dg.AssetExecutionContext, config: ChunkConfig, db: PostgresResource, workspace: WorkspaceResource):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        with tenant_work_lock(engine, "contact_enrichment", tenant.id):
            return _enrich_tenant(tenant, engine, config)

    yield from each_tenant(context, tenants, one, workers=config.tenant_workers)


def _enrich_tenant(tenant, engine, config: ChunkConfig) -> dg.MaterializeResult:
    with engine.connect() as conn:
        ranges = store.contact_ranges(conn, tenant.id, config.contacts_per_chunk)

    def enriched_chunks():
        for ids in ranges:
            with engine.connect() as conn:
                due = store.contacts_due_for_enrichment(conn, tenant.id, tenant.default_language, ids)
            if due.height:
                yield enrich_contacts(due.drop("inputs_sha256"), tenant.default_language).with_columns(
                    inputs_sha256=due["inputs_sha256"]
                )

    def write(enriched) -> None:
        with engine.begin() as conn:
            store.write_enrichment(conn, tenant.id, enriched)

    enriched_total = countries_found = invalid_phones = 0
    languages: Counter[str] = Counter()
    language_rules: Counter[str] = Counter()
    for enriched in written_behind(enriched_chunks(), write, config.chunk_writers):
        enriched_total += enriched.height
        languages.update(dict(enriched["language"].value_counts().rows()))
        language_rules.update(dict(enriched["language_rule"].value_counts().rows()))
        countries_found += int(enriched["country"].is_not_null().sum())
        invalid_phones += int((enriched["phone_valid"] == False).sum())  # noqa: E712
    with engine.begin() as conn:
        store.analyze_after_bulk_write(conn, "contact_enrichment", enriched_total)
    return dg.MaterializeResult(
        metadata={
            "enriched": enriched_total,
            "languages": dg.MetadataValue.json(dict(languages.most_common())),
            "language_rules": dg.MetadataValue.json(dict(language_rules)),
            "countries_found": countries_found,
            "invalid_phones": invalid_phones,
        }
    )
