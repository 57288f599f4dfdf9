"""Per-tenant schedules (``build_schedule_from_partitioned_job`` refuses dynamic partitions)."""


import dagster as dg

from email_engine_assets.tenancy.partitions import tenant_partitions

# Re-checks stale verdicts; enrichment and tags follow by declarative automation.
recheck_job = dg.define_asset_job("recheck_job", selection=["email_validations"])


@dg.schedule(job=recheck_job, cron_schedule="0 3 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
def daily_recheck_schedule(context: dg.ScheduleEvaluationContext):
    """Every night, one run per tenant re-validates the verdicts older than the tenant's re-check age."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for tenant_id in tenant_partitions.get_partition_keys(dynamic_partitions_store=context.instance):
        yield dg.RunRequest(run_key=f"recheck:{tenant_id}:{day}", partition_key=tenant_id, tags={"tenant": tenant_id})
