"""The sensor that starts due campaigns: one run per (campaign, send_at), tagged with its transport;
and that resumes a campaign a dead run left ``running``. Its runs take the send job's default config
(``send_now: false``: only a due campaign starts).

A run that died mid-send (its process killed, the machine lost: run monitoring marks it failed)
leaves its campaign ``running`` with rows still queued. The sensor resumes it once that run has
ended for :data:`RESUME_AFTER` and no run of the campaign is queued or in progress, at most
:data:`MAX_RESUMES` times in a row: a campaign that keeps failing waits for the operator
(``campaign send`` / ``resume``) rather than failing every minute. A resumed run turns rows left
``sending`` into ``unknown`` and never sends them again (the ledger's rule), so resuming is safe.
"""


from datetime import datetime, timedelta, timezone

import dagster as dg

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.assets import (
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

RESUME_AFTER = timedelta(minutes=10)
MAX_RESUMES = 3
RESUMED_AFTER_TAG = "email_engine/resumed_after"  # the run id whose death the run resumes from
_IN_PROGRESS = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def resume_wanted(runs: list[tuple[dg.DagsterRunStatus, float | None, bool]], now: datetime) -> bool:
    """Whether a ``running`` campaign should get a run now, from its last runs (newest first) as
    (status, end time, resumed by this sensor): none in progress, the last ended ``RESUME_AFTER``
    ago, fewer than ``MAX_RESUMES`` resumes in a row. No run at all (one from another instance
    died): resume."""
    if any(status in _IN_PROGRESS for status, _, _ in runs):
        return False
    if not runs:
        return True
    _, ended, _ = runs[0]
    if ended is None or now - datetime.fromtimestamp(ended, timezone.utc) < RESUME_AFTER:
        return False
    streak = 0
    for _, _, resumed in runs:
        if not resumed:
            break
        streak += 1
    return streak < MAX_RESUMES


def resume_run_requests(instance: dg.DagsterInstance, engine, now: datetime) -> list[dg.RunRequest]:
    """A run for each campaign a dead run left ``running`` (see the module's docstring)."""
    requests = []
    with engine.connect() as conn:
        keys = store.interrupted_campaigns(conn)
        rows = {key: store.campaign_row(conn, *split_key(key)) for key in keys}
    for key in keys:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=campaign_send_job.name, tags={"dagster/partition": key}), limit=MAX_RESUMES + 2
        )
        runs = [(r.dagster_run.status, r.end_time, RESUMED_AFTER_TAG in r.dagster_run.tags) for r in records]
        if not resume_wanted(runs, now):
            continue
        last = records[0].dagster_run.run_id if records else "none"
        tenant_id, _ = split_key(key)
        requests.append(dg.RunRequest(
            run_key=f"resume:{key}:{last}",
            partition_key=key,
            tags={RESUMED_AFTER_TAG: last, TRANSPORT_TAG: transport_tag(tenant_id, rows[key]["transport"])},
        ))
    return requests


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
                    tags={TRANSPORT_TAG: transport_tag(tenant_id, row["transport"])},
                )
            )
    return requests


@dg.sensor(job=campaign_send_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def due_campaigns_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource, db: PostgresResource) -> dg.SensorResult:
    """Reads the campaign files, records new ones, registers their partitions, starts those due and
    resumes those a dead run left running."""
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
    now = datetime.now(timezone.utc)
    requests = due_run_requests(engine, now)
    due = {r.partition_key for r in requests}
    requests += [r for r in resume_run_requests(context.instance, engine, now) if r.partition_key not in due]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[campaign_partitions.build_add_request(missing)] if missing else [],
        skip_reason=None if requests else "no campaign is due or left running by a dead run",
    )
