"""Jobs across domains, as the UI shows them and ``email-engine run`` executes them."""

import dagster as dg

# A tenant's own files read, its golden records, then its quality assets, tags and segments: what
# automation does after an import, in one run.
tenant_job = dg.define_asset_job(
    "tenant_job",
    selection=["tenant_files", "contacts", "email_validations", "contact_enrichment", "tag_assignments", "segments"],
    description="Read a tenant's tenant, campaign and template files; merge its imports into its contacts, then "
                "validate, enrich and tag them, and build its segments.",
)

# What happened to sent messages, applied: webhook rows and accounting lines into events, then the
# tenant's suppression policy. Runs before a tenant's import, so pushed contacts join it, and before
# any send, so a new suppression holds for it.
feedback_job = dg.define_asset_job(
    "feedback_job",
    selection=["delivery_events", "suppressions"],
    description="Apply a tenant's pending feedback (webhook inbox, PowerMTA accounting) and its suppression policy.",
)
