"""The tenant's MailWizz instances the sync pushes to (reached through the ``mailwizz`` resource)."""

from __future__ import annotations

from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.sending import MailwizzTransport


def synced_instances(tenant: TenantConfig) -> list[MailwizzTransport]:
    """The tenant's mailwizz transports that carry ``sync:`` settings, in file order."""
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport) and t.sync is not None]
