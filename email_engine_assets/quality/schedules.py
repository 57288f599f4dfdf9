"""The re-check schedule: each tenant's stale verdicts re-validated on the tenant's own cron.

One schedule for every tenant (``build_schedule_from_partitioned_job`` refuses dynamic partitions,
and a schedule per tenant would be thousands of definitions): it ticks every few minutes and
requests a run for each tenant whose ``schedules.recheck`` cron (default ``0 3 * * *`` UTC) came
due since the previous tick (:mod:`email_engine_assets.tenancy.tenant_schedules`).
"""

import dagster as dg

from email_engine_assets.tenancy.cron import RECHECK
from email_engine_assets.tenancy.tenant_schedules import TICK_CRON, evaluate_kind
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

# Re-checks stale verdicts; enrichment and tags follow by declarative automation.
recheck_job = dg.define_asset_job("recheck_job", selection=["email_validations"])


@dg.schedule(job=recheck_job, cron_schedule=TICK_CRON, execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
def recheck_schedule(context: dg.ScheduleEvaluationContext, db: PostgresResource, workspace: WorkspaceResource):
    """On each tenant's re-check cron, one run that re-validates the verdicts older than the tenant's re-check age."""
    tick = evaluate_kind(context, db.engine(), workspace.root(), RECHECK, "recheck_schedule")
    if not tick.due:
        return tick.skip_reason()
    return [dg.RunRequest(run_key=tick.run_key(t), partition_key=t, tags=tick.tags(t)) for t in tick.due]
