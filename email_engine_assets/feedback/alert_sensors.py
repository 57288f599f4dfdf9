"""Alerts to the operator's chat: every failed run, and campaign sends blocked by their checks.

One sensor watches failed runs. A run of ``campaign_send_job`` that failed because a blocking check
failed (``campaign_audiences``' checks: suppressed members, preflight, empty audience, sender
reputation) gets a "send blocked" notice naming the checks, their reasons and the override; any
other failure a "run failed" notice. Nothing is posted when no alert is configured
(:mod:`email_engine_resources.alerts`), and a post that fails never fails the sensor.
"""

import dagster as dg

from email_engine_assets.feedback.alerts import blocked_send_text, run_failure_text
from email_engine_resources.alerts import AlertPoster

PARTITION_TAG = "dagster/partition"


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(check, reason) of each check evaluation of the run that did not pass."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if evaluation is None or evaluation.passed:
            continue
        reason = evaluation.metadata.get("reason")
        text = getattr(reason, "value", None) or getattr(reason, "text", None) or evaluation.description or "failed"
        out.append((evaluation.check_name, str(text)))
    return out


def failure_reason(instance: dg.DagsterInstance, run_id: str, fallback: str | None) -> str | None:
    """The first failed step and its error (the run's own failure message names only the steps)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        error = data.error if data is not None else None
        cause = error.cause if error is not None and error.cause is not None else error
        if cause is not None:
            return f"{record.dagster_event.step_key}: {cause.message.strip()}"
    return fallback


def alert_text(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    partition = run.tags.get(PARTITION_TAG) or next(
        (f"{k.rsplit('/', 1)[1]}={v}" for k, v in sorted(run.tags.items()) if k.startswith(f"{PARTITION_TAG}/")), None
    )
    blocked = failed_checks(context.instance, run.run_id)
    if blocked and partition:
        return blocked_send_text(partition, blocked)
    return run_failure_text(run.job_name, run.run_id, partition,
                            failure_reason(context.instance, run.run_id, context.failure_event.message))


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    minimum_interval_seconds=30,
    # Runs started by the CLI (``campaign send``, ``run``) execute in process and carry no code
    # location origin: only this setting lets the sensor see them. The instance is this project's.
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts failed runs, and campaign sends blocked by their checks, to the configured chat (Telegram or Slack).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    poster = AlertPoster.from_environment()
    if poster.settings is None:
        return
    if not poster.post(alert_text(context)):
        context.log.warning("the alert was not posted (see the email_engine.alerts log)")
