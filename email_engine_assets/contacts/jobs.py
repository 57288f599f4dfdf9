"""Jobs of the contacts domain."""

import dagster as dg

# One run imports one (tenant, source) partition, or a range of them: the inbox sensor asks for runs
# over blocks of tenants × sources (``tenancy.partitions.import_blocks``); ``contact_imports`` runs a
# range in a single run.
import_job = dg.define_asset_job("import_job", selection=["contact_imports"])
