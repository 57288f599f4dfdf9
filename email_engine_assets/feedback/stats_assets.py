"""campaign_stats[campaign]: what each campaign's messages did, kept current while feedback arrives.

Materialized after each send of the campaign (eager on ``campaign_sends``), and on the tenant's
stats-refresh cron (``schedules.stats_refresh`` of its tenant file, default hourly) by
``campaign_stats_schedule`` while feedback still arrives: for campaigns started and not completed,
or completed within :data:`FEEDBACK_WINDOW` (bounces, complaints, opens and clicks keep coming for
days; an old campaign is not counted again every hour forever). Each run first applies the
tenant's pending feedback, then counts (:mod:`.stats_refresh`).
"""

from datetime import timedelta

import dagster as dg

from email_engine_assets.campaigns.assets import campaign_partitions, campaign_sends
from email_engine_assets.campaigns.files import split_key
from email_engine_assets.campaigns.guard_rail_apply import check_feedback, guard_metadata
from email_engine_assets.campaigns.guard_rail_checks import paused_in_mailwizz_result, paused_in_mailwizz_spec
from email_engine_assets.feedback.assets import delivery_events
from email_engine_assets.feedback.stats import COUNT_KEYS, RATE_KEYS
from email_engine_assets.feedback.stats_refresh import (
    apply_pending_feedback,
    refresh_stats,
)
from email_engine_assets.feedback.stats_store import campaigns_receiving_feedback
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.cron import STATS_REFRESH
from email_engine_assets.tenancy.partitions import (
    across_tenants_and_campaigns,
    fail_if_broken,
)
from email_engine_assets.tenancy.tenant_schedules import TICK_CRON, evaluate_kind
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource

# Eager on the campaign's own send only: delivery_events is a tenant partition upstream of every
# campaign (all-partitions mapping), so following it would recount every campaign of every tenant
# after any tenant's feedback, and one tenant without events would hold all of them back. Feedback
# reaches the stats through this asset's own apply and the hourly schedule.
AFTER_EACH_SEND = dg.AutomationCondition.eager().ignore(dg.AssetSelection.assets("delivery_events"))
FEEDBACK_WINDOW = timedelta(days=14)


@dg.asset(
    partitions_def=campaign_partitions,
    group_name="feedback",
    kinds={"postgres"},
    deps=[campaign_sends, dg.AssetDep(delivery_events, partition_mapping=across_tenants_and_campaigns)],
    automation_condition=AFTER_EACH_SEND,
    check_specs=[paused_in_mailwizz_spec("campaign_stats")],
    description="Sent, delivered, deferred, bounced (hard / soft / reputation), complained, opened, clicked (all, and by "
                "people only), unsubscribed, with rates, per language and template, clicks per link; MailWizz's own "
                "figures merged for campaigns sent there.",
)
def campaign_stats(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource,
                   powermta: PowerMtaResource, mailwizz: MailwizzResource) -> dg.MaterializeResult:
    try:
        tenant_id, name = split_key(context.partition_key)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    root = workspace.root()
    ws = load_tenants(root, [tenant_id])
    fail_if_broken(ws, tenant_id)
    tenant = ws.tenants.get(tenant_id)
    if tenant is None:
        raise dg.Failure(description=f"tenant {tenant_id!r} has no tenants/{tenant_id}.yaml in {root}")
    engine = db.engine()
    applied = apply_pending_feedback(engine, root, tenant, powermta=powermta, mailwizz=mailwizz)
    guard = check_feedback(engine, tenant, mailwizz=mailwizz)  # the guard rail, on the feedback just applied
    try:
        stats, notes = refresh_stats(engine, root, tenant, name, mailwizz=mailwizz)
    except LookupError as exc:
        raise dg.Failure(description=str(exc)) from None
    for note in notes:
        context.log.warning(note)
    metadata: dict = {k: stats[k] for k in COUNT_KEYS}
    metadata.update({k: float(stats[k]) for k in RATE_KEYS if stats[k] is not None})
    metadata.update({
        "rates_over": stats["rates_over"],
        "by_language": dg.MetadataValue.json(stats["by_language"]),
        "by_template": dg.MetadataValue.json(stats["by_template"]),
        "by_link": dg.MetadataValue.json(stats["by_link"]),
        "feedback_applied": dg.MetadataValue.json(applied),
        **guard_metadata(context.log, guard),
    })
    return dg.MaterializeResult(metadata=metadata, check_results=[paused_in_mailwizz_result(guard)])


@dg.schedule(target=[campaign_stats], cron_schedule=TICK_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def campaign_stats_schedule(context: dg.ScheduleEvaluationContext, db: PostgresResource, workspace: WorkspaceResource):
    """On each tenant's stats-refresh cron, the stats of its campaigns still receiving feedback (see the module's docstring)."""
    engine = db.engine()
    tick = evaluate_kind(context, engine, workspace.root(), STATS_REFRESH, "campaign_stats_schedule")
    if not tick.due:
        return tick.skip_reason()
    with engine.connect() as conn:
        keys = campaigns_receiving_feedback(conn, tick.tick - FEEDBACK_WINDOW)
    known = set(campaign_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    requests = []
    for key in keys:
        tenant_id, name = split_key(key)
        if key in known and tenant_id in tick.due:
            requests.append(dg.RunRequest(run_key=tick.run_key(tenant_id, name), partition_key=key, tags=tick.tags(tenant_id)))
    return requests or tick.skip_reason("no campaign of the due tenants is receiving feedback")
