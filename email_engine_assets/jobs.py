"""Jobs across domains, as the UI shows them and ``email-engine run`` executes them."""

import dagster as dg

# A tenant's golden records, then its quality assets, tags and segments: what automation does after an import, in one run.
tenant_job = dg.define_asset_job(
    "tenant_job",
    selection=["contacts", "email_validations", "contact_enrichment", "tag_assignments", "segments"],
    description="Merge a tenant's imports into its contacts, then validate, enrich and tag them, and build its segments.",
)
