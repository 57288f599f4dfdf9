"""The sensor that starts due campaigns: one run per (campaign, send_at), tagged with its transport."""


from datetime import datetime, timezone

import dagster as dg

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.assets import (
    ACTION_TAG,
    TRANSPORT_TAG,
    campaign_partitions,
    campaign_send_job,
)
from email_engine_assets.campaigns.files import split_key
from email_engine_assets.campaigns.registry import register_campaigns
from email_engine_assets.campaigns.wiring import transport_tag
from email_engine_assets.tenancy.config import ConfigError, load_workspace
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource


def due_run_requests(engine, now: datetime) -> list[dg.RunRequest]:
    """A run for each due campaign. The run key holds ``send_at``: a campaign rescheduled later is
    started again at its new time, never twice for the same time."""
    requests = []
    with engine.connect() as conn:
        for key in store.due_campaigns(conn, now):
            tenant_id, name = split_key(key)
            row = store.campaign_row(conn, tenant_id, name)
            requests.append(
                dg.RunRequest(
                    run_key=f"due:{key}:{row['send_at'].isoformat()}",
                    partition_key=key,
                    tags={ACTION_TAG: "due", TRANSPORT_TAG: transport_tag(tenant_id, row["transport"])},
                )
            )
    return requests


@dg.sensor(job=campaign_send_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def due_campaigns_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource, db: PostgresResource) -> dg.SensorResult:
    """Reads the campaign files, records new ones, registers their partitions and starts those due."""
    try:
        ws = load_workspace(workspace.root())
    except ConfigError as exc:
        return dg.SensorResult(skip_reason=f"workspace is invalid:\n{exc}")
    engine = db.engine()
    registered = register_campaigns(engine, ws)
    for key, problem in sorted(registered.problems.items()):
        context.log.warning(f"campaign {key}: {problem}")
    known = set(context.instance.get_dynamic_partitions(campaign_partitions.name))
    missing = [k for k in sorted(registered.files.campaigns) if k not in known]
    requests = due_run_requests(engine, datetime.now(timezone.utc))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[campaign_partitions.build_add_request(missing)] if missing else [],
        skip_reason=None if requests else "no campaign is due",
    )
