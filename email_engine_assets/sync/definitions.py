"""The sync domain: mailwizz_subscribers (the tenant's contacts in its MailWizz instances)."""

import dagster as dg

from email_engine_assets.sync.assets import mailwizz_subscribers

defs = dg.Definitions(assets=[mailwizz_subscribers])
