"""Jobs the sensors and schedules target."""

import dagster as dg

import_job = dg.define_asset_job("import_job", selection=["contact_imports"])

# Re-checks stale verdicts; enrichment and tags follow by declarative automation.
recheck_job = dg.define_asset_job("recheck_job", selection=["email_validations"])
