"""Jobs of the contacts domain."""

import dagster as dg

import_job = dg.define_asset_job("import_job", selection=["contact_imports"])
