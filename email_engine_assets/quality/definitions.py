"""The quality domain: verdicts, enrichment and the nightly re-check."""

import dagster as dg

from email_engine_assets.quality.assets import contact_enrichment, email_validations
from email_engine_assets.quality.schedules import daily_recheck_schedule, recheck_job

defs = dg.Definitions(assets=[email_validations, contact_enrichment], jobs=[recheck_job], schedules=[daily_recheck_schedule])
