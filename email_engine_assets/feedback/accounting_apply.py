"""Applying new PowerMTA accounting lines of a tenant (filled in by the accounting work)."""

from __future__ import annotations

import sqlalchemy as sa

from email_engine_assets.tenancy.config import TenantConfig


def apply_accounting(engine: sa.Engine, tenant: TenantConfig) -> dict[str, int]:
    """Read new lines of the tenant's powermta transports' accounting files into delivery events."""
    return {}
