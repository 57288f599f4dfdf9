"""A MailWizz instance built from a tenant's transport settings, its secrets read from the environment now."""

from __future__ import annotations

from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz import MailwizzInstance
from email_engine_resources.transports import MailwizzResource


def mailwizz_instance(config: MailwizzTransport, **tuning) -> MailwizzInstance:
    """The API of ``config``'s instance, built as the ``mailwizz`` resource builds it; the keys come from
    ``EnvSecret.read()`` at this call (``LookupError`` if unset). For code outside a run (the CLI's
    stats, erasure, suppressions); assets take the ``mailwizz`` resource.

    ``tuning``: ``bulk_size``, ``backoff_initial`` (tests and benchmarks).
    """
    return MailwizzResource(**tuning).instance(config)


def synced_instances(tenant: TenantConfig) -> list[MailwizzTransport]:
    """The tenant's mailwizz transports that carry ``sync:`` settings, in file order."""
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport) and t.sync is not None]
