"""The feedback domain: webhook inbox, accounting files, delivery events, suppressions, stats, alerts."""

import dagster as dg

from email_engine_assets.feedback.accounting_sensor import accounting_sensor
from email_engine_assets.feedback.alert_sensors import (
    alert_on_run_failure,
    alert_on_unread_inputs,
)
from email_engine_assets.feedback.assets import delivery_events, suppressions
from email_engine_assets.feedback.mailwizz_assets import mailwizz_feedback
from email_engine_assets.feedback.schedules import (
    mailwizz_feedback_job,
    mailwizz_feedback_schedule,
)
from email_engine_assets.feedback.stats_assets import (
    campaign_stats,
    campaign_stats_schedule,
)
from email_engine_assets.feedback.webhook_sensor import webhook_inbox_sensor

defs = dg.Definitions(
    assets=[delivery_events, suppressions, mailwizz_feedback, campaign_stats],
    jobs=[mailwizz_feedback_job],
    schedules=[mailwizz_feedback_schedule, campaign_stats_schedule],
    sensors=[webhook_inbox_sensor, accounting_sensor, alert_on_run_failure, alert_on_unread_inputs],
)
