"""Applying the tenant's suppression policy to its delivery events (filled in by the policy work)."""

from __future__ import annotations

import sqlalchemy as sa

from email_engine_assets.tenancy.config import TenantConfig


def apply_policy(engine: sa.Engine, tenant: TenantConfig) -> dict[str, int]:
    """Suppress the addresses the tenant's policy says to; counts for the run's metadata."""
    return {}
