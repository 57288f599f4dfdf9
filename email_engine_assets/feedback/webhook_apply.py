"""Applying stored webhook rows of a tenant (filled in by the webhook work)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.tenancy.config import TenantConfig


def apply_webhook_rows(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig) -> dict[str, int]:
    """Apply the tenant's pending ``webhook_inbox`` rows; counts for the run's metadata."""
    return {}
