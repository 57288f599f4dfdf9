"""delivery_events[tenant] and suppressions[tenant]: feedback applied, then the policy.

``delivery_events`` applies what the webhook inbox and the PowerMTA accounting files hold for the
tenant; ``suppressions`` follows it (eager) and turns events into suppressions by the tenant's
policy. Both are idempotent: an event is recorded once by its dedupe key, a suppression once by
its address.
"""

import dagster as dg

from email_engine_assets.campaigns.guard_rail_apply import check_feedback, guard_metadata
from email_engine_assets.campaigns.guard_rail_checks import paused_in_mailwizz_result, paused_in_mailwizz_spec
from email_engine_assets.feedback.accounting_apply import apply_accounting
from email_engine_assets.feedback.mailwizz_assets import (
    EAGER_UNLESS_ONLY_MAILWIZZ_MISSING,
    mailwizz_feedback,
)
from email_engine_assets.feedback.suppression_apply import apply_policy
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.tenancy.input_checks import inputs_read_result, inputs_read_spec
from email_engine_assets.tenancy.input_problems import ACCOUNTING_FILE, WEBHOOK_ROW
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import (
    across_tenants_and_campaigns,
    tenant_partitions,
)
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, each_tenant, tenant_configs
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource

FEEDBACK = "feedback"
FEEDBACK_INPUTS = (ACCOUNTING_FILE, WEBHOOK_ROW)


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=FEEDBACK,
    kinds={"postgres"},
    # what the sends' messages did: the events are linked to their ledger rows
    deps=[dg.AssetDep("campaign_sends", partition_mapping=across_tenants_and_campaigns)],
    check_specs=[inputs_read_spec("delivery_events", FEEDBACK_INPUTS), paused_in_mailwizz_spec("delivery_events")],
    description="Delivered, deferred, bounced, complained, opened, clicked and unsubscribed events of the tenant, "
                "from the webhook inbox and the PowerMTA accounting files, linked to the send ledger.",
    backfill_policy=SINGLE_RUN,
)
def delivery_events(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource,
                    powermta: PowerMtaResource, mailwizz: MailwizzResource):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        with tenant_work_lock(engine, "delivery_events", tenant.id):
            webhooks = apply_webhook_rows(engine, workspace.root(), tenant)
            accounting = apply_accounting(engine, tenant, powermta)
        # the guard rail: running campaigns (and MailWizz ones still sending) whose feedback is over a limit
        guard = check_feedback(engine, tenant, mailwizz=mailwizz)
        return dg.MaterializeResult(
            metadata={
                "webhooks": dg.MetadataValue.json(webhooks),
                "accounting": dg.MetadataValue.json(accounting),
                **guard_metadata(context.log, guard),
            },
            check_results=[inputs_read_result(engine, tenant.id, FEEDBACK_INPUTS, "feedback inputs"),
                           paused_in_mailwizz_result(guard)],
        )

    yield from each_tenant(context, tenants, one)


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=FEEDBACK,
    kinds={"postgres"},
    deps=[delivery_events, mailwizz_feedback],
    automation_condition=EAGER_UNLESS_ONLY_MAILWIZZ_MISSING,
    description="Addresses the tenant must not mail again: hard bounces, soft bounces past the policy, complaints, "
                "unsubscribes (reputation bounces never count against the contact).",
    backfill_policy=SINGLE_RUN,
)
def suppressions(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource,
                 mailwizz: MailwizzResource):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        tenant = tenant_config(tenant_id)
        with tenant_work_lock(engine, "suppressions", tenant.id):
            counts = apply_policy(engine, tenant, mailwizz=mailwizz)
        return dg.MaterializeResult(metadata={k: v for k, v in counts.items() if isinstance(v, (int, float, str))})

    yield from each_tenant(context, tenants, one)
