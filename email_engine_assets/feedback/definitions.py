"""The feedback domain: webhook inbox, accounting files, delivery events, suppressions, stats, alerts."""

import dagster as dg

from email_engine_assets.feedback.accounting_sensor import (
    accounting_events_job,
    accounting_sensor,
)
from email_engine_assets.feedback.assets import delivery_events, suppressions

defs = dg.Definitions(assets=[delivery_events, suppressions], jobs=[accounting_events_job], sensors=[accounting_sensor])
