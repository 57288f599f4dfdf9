"""Alerts to the operator's chat: every failed run, campaign sends blocked by their checks, refused inputs.

One sensor watches failed runs. A run of ``campaign_send_job`` that failed because a blocking check
failed (``campaign_audiences``' checks: suppressed members, preflight, empty audience, sender
reputation) gets a "send blocked" notice naming the checks, their reasons and the override; any
other failure a "run failed" notice. A second sensor watches runs that succeeded: one whose
``inputs_read`` check failed (severity ERROR, not blocking: an inbox file, a webhook row, an
accounting file or a MailWizz poll it could not read) gets an "inputs not read" notice naming each
asset and the inputs its check names; a failed run names them in its "run failed" notice. Nothing is
posted when no alert is configured (:mod:`email_engine_resources.alerts`), and a post that fails
never fails the sensor.
"""

import dagster as dg

from email_engine_assets.feedback.alerts import (
    blocked_send_text,
    run_failure_text,
    unread_inputs_text,
)
from email_engine_assets.tenancy.input_problems import INPUTS_READ
from email_engine_resources.alerts import AlertPoster

PARTITION_TAG = "dagster/partition"


def _failed_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if evaluation is not None and not evaluation.passed:
            out.append(evaluation)
    return out


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(check, reason) of each check evaluation of the run that did not pass, ``inputs_read`` aside."""
    out = []
    for evaluation in _failed_evaluations(instance, run_id):
        if evaluation.check_name == INPUTS_READ:
            continue
        reason = evaluation.metadata.get("reason")
        text = getattr(reason, "value", None) or getattr(reason, "text", None) or evaluation.description or "failed"
        out.append((evaluation.check_name, str(text)))
    return out


def unread_inputs(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(asset, description) of each failed ``inputs_read`` check of the run: the description names the refused inputs."""
    return [(evaluation.asset_key.to_user_string(), str(evaluation.description or "inputs not read"))
            for evaluation in _failed_evaluations(instance, run_id) if evaluation.check_name == INPUTS_READ]


def failure_reason(instance: dg.DagsterInstance, run_id: str, fallback: str | None) -> str | None:
    """The first failed step and its error (the run's own failure message names only the steps)."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        error = data.error if data is not None else None
        cause = error.cause if error is not None and error.cause is not None else error
        if cause is not None:
            return f"{record.dagster_event.step_key}: {cause.message.strip()}"
    return fallback


def _partition(run: dg.DagsterRun) -> str | None:
    return run.tags.get(PARTITION_TAG) or next(
        (f"{k.rsplit('/', 1)[1]}={v}" for k, v in sorted(run.tags.items()) if k.startswith(f"{PARTITION_TAG}/")), None
    )


def alert_text(context: dg.RunFailureSensorContext) -> str:
    run = context.dagster_run
    partition = _partition(run)
    blocked = failed_checks(context.instance, run.run_id)
    if blocked and partition:
        return blocked_send_text(partition, blocked)
    return run_failure_text(run.job_name, run.run_id, partition,
                            failure_reason(context.instance, run.run_id, context.failure_event.message),
                            unread_inputs(context.instance, run.run_id))


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


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="alert_on_unread_inputs",
    minimum_interval_seconds=30,
    monitor_all_code_locations=True,  # as alert_on_run_failure: runs the CLI executes are seen too
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts runs that succeeded but failed an inputs_read check (refused inbox files, webhook rows, "
                "accounting files, MailWizz polls) to the configured chat, naming each input.",
)
def alert_on_unread_inputs(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    unread = unread_inputs(context.instance, run.run_id)
    if not unread:
        return
    poster = AlertPoster.from_environment()
    if poster.settings is None:
        return
    if not poster.post(unread_inputs_text(run.job_name, run.run_id, _partition(run), unread)):
        context.log.warning("the alert was not posted (see the email_engine.alerts log)")
