"""The MailWizz feedback poll: for each tenant with a mailwizz transport, on the tenant's own cron.

``schedules.mailwizz_poll`` of the tenant file (default ``0 * * * *`` UTC); one schedule evaluates
every tenant's cron (:mod:`email_engine_assets.tenancy.tenant_schedules`).
"""

import dagster as dg

from email_engine_assets.feedback.mailwizz_assets import (
    mailwizz_feedback,
    mailwizz_transports,
)
from email_engine_assets.tenancy.cron import MAILWIZZ_POLL
from email_engine_assets.tenancy.tenant_schedules import TICK_CRON, evaluate_kind
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

mailwizz_feedback_job = dg.define_asset_job("mailwizz_feedback_job", selection=[mailwizz_feedback])


@dg.schedule(job=mailwizz_feedback_job, cron_schedule=TICK_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def mailwizz_feedback_schedule(context: dg.ScheduleEvaluationContext, db: PostgresResource, workspace: WorkspaceResource):
    """On each tenant's poll cron, a poll of MailWizz's unsubscribes and bounces for the tenants with a
    mailwizz transport (``suppressions`` follows it by declarative automation)."""
    tick = evaluate_kind(context, db.engine(), workspace.root(), MAILWIZZ_POLL, "mailwizz_feedback_schedule",
                         include=lambda tenant: bool(mailwizz_transports(tenant)))
    if not tick.due:
        return tick.skip_reason()
    return [dg.RunRequest(run_key=tick.run_key(t), partition_key=t, tags=tick.tags(t)) for t in tick.due]
