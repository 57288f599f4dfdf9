"""The feedback domain: webhook inbox, accounting files, delivery events, suppressions, stats, alerts."""

import dagster as dg

from email_engine_assets.feedback.alert_sensors import alert_on_run_failure
from email_engine_assets.feedback.assets import delivery_events, suppressions
from email_engine_assets.feedback.stats_assets import campaign_stats

defs = dg.Definitions(assets=[delivery_events, suppressions, campaign_stats], sensors=[alert_on_run_failure])
