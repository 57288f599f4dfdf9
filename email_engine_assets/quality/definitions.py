"""The quality domain: verdicts, enrichment and the nightly re-check."""

import dagster as dg

from email_engine_assets.quality.assets import contact_enrichment, email_validations
from email_engine_assets.quality.schedules import recheck_job, recheck_schedule

defs = dg.Definitions(assets=[email_validations, contact_enrichment], jobs=[recheck_job], schedules=[recheck_schedule])
