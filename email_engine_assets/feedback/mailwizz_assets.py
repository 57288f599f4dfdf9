"""mailwizz_feedback[tenant]: the unsubscribes and bounces MailWizz saw for the tenant's campaigns, as delivery events."""

from datetime import UTC, datetime

import dagster as dg

from email_engine_assets.campaigns.guard_rail_apply import check_feedback, guard_metadata
from email_engine_assets.campaigns.guard_rail_checks import paused_in_mailwizz_result, paused_in_mailwizz_spec
from email_engine_assets.feedback.mailwizz_poll import poll_instance
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.input_checks import inputs_read_result, inputs_read_spec
from email_engine_assets.tenancy.input_problems import MAILWIZZ_POLL, InputProblem
from email_engine_assets.tenancy.input_problems_store import replace_problems
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import (
    across_tenants_and_campaigns,
    tenant_config,
    tenant_partitions,
)
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource
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
    deps=[dg.AssetDep("campaign_sends", partition_mapping=across_tenants_and_campaigns)],  # the MailWizz campaigns sends made
    check_specs=[inputs_read_spec("mailwizz_feedback", [MAILWIZZ_POLL]), paused_in_mailwizz_spec("mailwizz_feedback")],
    description="Unsubscribes and bounces MailWizz recorded for the tenant's campaigns (<tenant>.<campaign>.<template>), "
                "polled page by page from each mailwizz transport and recorded once each as delivery events "
                "(bounce type hard -> hard, soft -> soft, internal -> reputation). A poll that fails part-way keeps "
                "the pages it read and fails the inputs_read check, naming the transport, until a poll reads it.",
)
def mailwizz_feedback(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource,
                      mailwizz: MailwizzResource) -> dg.MaterializeResult:
    tenant = tenant_config(context, workspace)
    engine = db.engine()
    per_instance: dict[str, dict[str, int]] = {}
    failures: list[InputProblem] = []
    with tenant_work_lock(engine, "mailwizz_feedback", tenant.id):
        for transport in mailwizz_transports(tenant):  # one instance down does not hold the others back
            try:
                with mailwizz.instance(transport) as mw:
                    per_instance[transport.name] = poll_instance(engine, tenant.id, transport, mw, datetime.now(UTC))
            except (LookupError, MailwizzError) as exc:
                # Pages read before the error are recorded; the next poll reads that campaign again.
                failures.append(InputProblem(MAILWIZZ_POLL, f"mailwizz transport {transport.name!r}", f"poll stopped: {exc}",
                                             transport.name))
        with engine.begin() as conn:
            replace_problems(conn, tenant.id, [MAILWIZZ_POLL], failures)
    for problem in failures:
        context.log.error(problem.line())
    # the guard rail on what MailWizz now reports (its bounces polled above, its complaints and deliveries in its stats)
    guard = check_feedback(engine, tenant, mailwizz=mailwizz)
    totals = {k: sum(v.get(k, 0) for v in per_instance.values()) for k in ("campaigns", "records", "inserted", "linked", "unusable")}
    return dg.MaterializeResult(
        metadata={"instances": len(per_instance), **totals, "per_instance": dg.MetadataValue.json(per_instance),
                  **({"failed_polls": dg.MetadataValue.json([p.line() for p in failures])} if failures else {}),
                  **guard_metadata(context.log, guard)},
        check_results=[inputs_read_result(engine, tenant.id, [MAILWIZZ_POLL], "MailWizz polls"), paused_in_mailwizz_result(guard)],
    )
