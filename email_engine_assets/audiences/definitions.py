"""The audiences domain: tag assignments (segments join here)."""

import dagster as dg

from email_engine_assets.audiences.assets import tag_assignments

defs = dg.Definitions(assets=[tag_assignments])
