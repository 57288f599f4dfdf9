"""Quality assets per tenant: email_validations, contact_enrichment, tag_assignments."""


import dagster as dg
import polars as pl

from email_engine_resources.database import PostgresResource
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource

from .core.enrichment import enrich_contacts
from .core.tag_rules import evaluate_tag_rules
from .ingest_assets import contacts
from .partitions import tenant_partitions
from .store import quality as store
from .validation_run import validate_batch

QUALITY = "quality"
VALIDATION_BATCH = 100_000
EAGER = dg.AutomationCondition.eager()


def _tenant(context: dg.AssetExecutionContext, workspace: WorkspaceResource):
    ws = workspace.load()
    tenant = ws.tenants.get(context.partition_key)
    if tenant is None:
        raise dg.Failure(f"tenant {context.partition_key!r} has no tenants/{context.partition_key}.yaml in {ws.root}")
    return tenant


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=QUALITY,
    kinds={"postgres", "dns"},
    deps=[contacts],
    automation_condition=EAGER,
    check_specs=[
        dg.AssetCheckSpec("every_contact_has_verdict", asset="email_validations"),
        dg.AssetCheckSpec("invalid_share_stable", asset="email_validations", description="warn when the invalid share jumps"),
    ],
    description="Verdict per contact: syntax, DNS (MX, null MX, A fallback), flags, optional SMTP probe. Re-checks stale verdicts.",
)
def email_validations(
    context: dg.AssetExecutionContext,
    db: PostgresResource,
    workspace: WorkspaceResource,
    dns: DnsResolverResource,
    smtp_probe: SmtpProbeResource,
) -> dg.MaterializeResult:
    tenant = _tenant(context, workspace)
    engine = db.engine()
    with engine.connect() as conn:
        due = store.contacts_due_for_validation(conn, tenant.id, tenant.validation.recheck_age_days)
    checked_total = lookups = distinct_domains = probed = 0
    for start in range(0, due.height, VALIDATION_BATCH):
        batch = validate_batch(
            engine, due.slice(start, VALIDATION_BATCH), dns, smtp_probe if tenant.validation.smtp_probe else None
        )
        with engine.begin() as conn:
            store.write_validations(conn, tenant.id, batch.frame)
        checked_total += batch.frame.height
        lookups += batch.dns_lookups
        distinct_domains += batch.domains
        probed += batch.probed
    with engine.begin() as conn:
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
            **{v: stats[v] for v in ("valid", "risky", "invalid", "unknown")},
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
    deps=[contacts],
    automation_condition=EAGER,
    description="Language (9 + fallback en), ISO country and E.164 phone per contact, each with the rule that decided it.",
)
def contact_enrichment(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource) -> dg.MaterializeResult:
    tenant = _tenant(context, workspace)
    engine = db.engine()
    with engine.connect() as conn:
        due = store.contacts_due_for_enrichment(conn, tenant.id, tenant.default_language)
    enriched = enrich_contacts(due.drop("inputs_sha256"), tenant.default_language).with_columns(
        inputs_sha256=due["inputs_sha256"]
    )
    with engine.begin() as conn:
        store.write_enrichment(conn, tenant.id, enriched)
    languages = enriched["language"].value_counts(sort=True).rows() if enriched.height else []
    return dg.MaterializeResult(
        metadata={
            "enriched": enriched.height,
            "languages": dg.MetadataValue.json(dict(languages)),
            "language_rules": dg.MetadataValue.json(dict(enriched["language_rule"].value_counts().rows())) if enriched.height else {},
            "countries_found": int(enriched["country"].is_not_null().sum()) if enriched.height else 0,
            "invalid_phones": int((enriched["phone_valid"] == False).sum()) if enriched.height else 0,  # noqa: E712
        }
    )


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=QUALITY,
    kinds={"postgres", "polars"},
    deps=[contacts, email_validations, contact_enrichment],
    automation_condition=EAGER,
    description="Tags from import columns (import:<source>) and the tenant's rules (rule:<name>); manual tags kept.",
)
def tag_assignments(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource) -> dg.MaterializeResult:
    tenant = _tenant(context, workspace)
    engine = db.engine()
    with engine.connect() as conn:
        imported = store.import_tag_assignments(conn, tenant.id)
        manual = store.manual_tag_assignments(conn, tenant.id)
        fields = store.contacts_for_rules(conn, tenant.id)
    # Rules see import and manual tags, never other rules' tags: no rule depends on rule order.
    base_tags = pl.concat([imported, manual]).group_by("contact_id").agg(tags=pl.col("tag").unique().sort())
    fields = fields.join(base_tags, on="contact_id", how="left").with_columns(pl.col("tags").fill_null(pl.lit([], pl.List(pl.String))))
    ruled = evaluate_tag_rules(fields, tenant.tag_rules).select(
        "contact_id", "tag", provenance=pl.lit("rule:") + pl.col("rule")
    )
    desired = pl.concat([imported, ruled.cast(store.ASSIGNMENT_SCHEMA)]).unique()
    with engine.begin() as conn:
        changes = store.sync_tag_assignments(conn, tenant.id, desired)
        top = store.top_tags(conn, tenant.id, 10)
    per_rule = dict(ruled.group_by("provenance").len().rows()) if ruled.height else {}
    return dg.MaterializeResult(
        metadata={
            **changes,
            "import_assignments": imported.height,
            "rule_assignments": ruled.height,
            "per_rule": dg.MetadataValue.json(per_rule),
            "top_tags": dg.MetadataValue.json(dict(top)),
        }
    )
