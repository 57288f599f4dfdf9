"""The feedback domain: webhook inbox, accounting files, delivery events, suppressions, stats, alerts."""

import dagster as dg

from email_engine_assets.feedback.assets import delivery_events, suppressions
from email_engine_assets.feedback.webhook_sensor import webhook_inbox_sensor

defs = dg.Definitions(assets=[delivery_events, suppressions], sensors=[webhook_inbox_sensor])
