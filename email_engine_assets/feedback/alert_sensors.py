"""Alerts to the operator's chat: every failed run, campaign sends blocked by their checks, refused inputs.

One sensor watches failed runs. A run of ``campaign_send_job`` that failed because a blocking check
failed (``campaign_audiences``' checks: suppressed members, preflight, empty audience, sender
reputation) gets a "send blocked" notice naming the checks, their reasons and the override; any
other failure a "run failed" notice. A second sensor watches runs that succeeded: one whose
``inputs_read`` check failed (severity ERROR, not blocking: an inbox file, a webhook row, an
accounting file or a MailWizz poll it could not read) gets an "inputs not read" notice naming each
asset and the inputs its check names -- once per incident (partition, asset; ``alert_incidents``):
later runs refusing the same asset's inputs post nothing, and the first run whose check passes again
posts one "resolved" notice. A failed run names them in its "run failed" notice (every failed run is
posted, as before). Nothing is
posted when no alert is configured (:mod:`email_engine_resources.alerts`), and a post that fails
never fails the sensor.
"""

import logging

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.feedback.alerts import (
    blocked_send_text,
    resolved_text,
    run_failure_text,
    unread_inputs_text,
)
from email_engine_assets.feedback.incident_apply import record
from email_engine_assets.feedback.incidents import INPUTS_NOT_READ, unread_inputs_conditions
from email_engine_assets.tenancy.input_problems import INPUTS_READ
from email_engine_resources.alerts import AlertPoster
from email_engine_resources.postgres import get_engine

log = logging.getLogger("email_engine.alerts")

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


def inputs_read_checks(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, bool, str]]:
    """(asset, passed, description) of each ``inputs_read`` check evaluation of the run."""
    out = []
    for record_ in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record_.dagster_event.event_specific_data
        if evaluation is not None and evaluation.check_name == INPUTS_READ:
            out.append((evaluation.asset_key.to_user_string(), bool(evaluation.passed),
                        str(evaluation.description or ("inputs read" if evaluation.passed else "inputs not read"))))
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
                "accounting files, MailWizz polls) to the configured chat, naming each input: once per "
                "(partition, asset) until its check passes again, then once 'resolved'.",
)
def alert_on_unread_inputs(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    checked = inputs_read_checks(context.instance, run.run_id)
    if not checked:
        return
    poster = AlertPoster.from_environment()
    if poster.settings is None:
        return
    partition = _partition(run)
    conditions, covered = unread_inputs_conditions(partition, checked)
    try:
        decision = record(get_engine(), conditions, [INPUTS_NOT_READ], sorted(covered))
        opened = {c.key for c in decision.opened}
        cleared = decision.cleared
    except sa.exc.SQLAlchemyError as exc:  # incidents unreadable: post what the run refused, as without them
        log.warning("alert incidents not recorded: %s", type(exc).__name__)
        opened, cleared = {c.key for c in conditions}, []
    unread = [(asset, description) for asset, passed, description in checked
              if not passed and f"{INPUTS_NOT_READ}:{partition or ''}:{asset}" in opened]
    texts = [unread_inputs_text(run.job_name, run.run_id, partition, unread)] if unread else []
    texts += [resolved_text(i.kind, i.tenant, i.detail, i.opened_at) + f"\nrun: {run.run_id}" for i in cleared]
    if not all([poster.post(text) for text in texts]):
        context.log.warning("an alert was not posted (see the email_engine.alerts log)")
