"""The hourly MailWizz feedback poll: one run per tenant that has a mailwizz transport."""

import dagster as dg

from email_engine_assets.feedback.mailwizz_assets import (
    mailwizz_feedback,
    mailwizz_transports,
)
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.workspace import WorkspaceResource

mailwizz_feedback_job = dg.define_asset_job("mailwizz_feedback_job", selection=[mailwizz_feedback])


@dg.schedule(job=mailwizz_feedback_job, cron_schedule="0 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def mailwizz_feedback_schedule(context: dg.ScheduleEvaluationContext, workspace: WorkspaceResource):
    """Every hour, a poll of MailWizz's unsubscribes and bounces for each tenant with a mailwizz transport
    (``suppressions`` follows it by declarative automation)."""
    hour = context.scheduled_execution_time.strftime("%Y-%m-%dT%H")
    keys = tenant_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    ws = load_tenants(workspace.root(), keys)
    for tenant_id in keys:
        tenant = ws.tenants.get(tenant_id)
        if tenant is not None and mailwizz_transports(tenant):
            yield dg.RunRequest(run_key=f"mailwizz_feedback:{tenant_id}:{hour}", partition_key=tenant_id,
                                tags={"tenant": tenant_id})
