"""mailwizz_feedback[tenant]: the unsubscribes and bounces MailWizz saw for the tenant's campaigns, as delivery events."""

from datetime import UTC, datetime

import dagster as dg

from email_engine_assets.feedback.mailwizz_poll import poll_instance
from email_engine_assets.sync.instances import mailwizz_instance
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import tenant_config, tenant_partitions
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

# suppressions[tenant] follows delivery_events and mailwizz_feedback eagerly; a tenant without a
# mailwizz transport never materializes mailwizz_feedback, so that dep being missing must not hold it back.
EAGER_UNLESS_ONLY_MAILWIZZ_MISSING = dg.AutomationCondition.eager().replace(
    "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets("mailwizz_feedback"))
)


def mailwizz_transports(tenant: TenantConfig) -> list[MailwizzTransport]:
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport)]


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="feedback",
    kinds={"postgres", "mailwizz"},
    description="Unsubscribes and bounces MailWizz recorded for the tenant's campaigns (<tenant>.<campaign>.<template>), "
                "polled page by page from each mailwizz transport and recorded once each as delivery events "
                "(bounce type hard -> hard, soft -> soft, internal -> reputation).",
)
def mailwizz_feedback(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource) -> dg.MaterializeResult:
    tenant = tenant_config(context, workspace)
    engine = db.engine()
    per_instance: dict[str, dict[str, int]] = {}
    failures = []
    with tenant_work_lock(engine, "mailwizz_feedback", tenant.id):
        for transport in mailwizz_transports(tenant):  # one instance down does not hold the others back
            try:
                with mailwizz_instance(transport) as mw:
                    per_instance[transport.name] = poll_instance(engine, tenant.id, transport, mw, datetime.now(UTC))
            except (LookupError, MailwizzError) as exc:
                failures.append(f"mailwizz transport {transport.name!r}: {exc}")
    if failures:
        # Pages read before the error are recorded; the next poll reads that campaign again.
        raise dg.Failure("\n".join(failures), metadata={"polled": dg.MetadataValue.json(per_instance)})
    totals = {k: sum(v.get(k, 0) for v in per_instance.values()) for k in ("campaigns", "records", "inserted", "linked", "unusable")}
    return dg.MaterializeResult(metadata={"instances": len(per_instance), **totals,
                                          "per_instance": dg.MetadataValue.json(per_instance)})
