"""A MailWizz instance built from a tenant's transport settings, its secrets read from the environment now."""

from __future__ import annotations

from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz import MailwizzInstance


def mailwizz_instance(config: MailwizzTransport, **tuning) -> MailwizzInstance:
    """The API of ``config``'s instance; the keys come from ``EnvSecret.read()`` at this call (``LookupError`` if unset).

    ``tuning``: ``bulk_size``, ``backoff_initial`` (tests and benchmarks).
    """
    return MailwizzInstance(
        config.base_url,
        config.api_key.read(),
        api_version=config.api_version,
        private_key=config.private_key.read() if config.private_key else None,
        timezone=config.timezone,
        timeout=config.timeout_seconds,
        retries=config.retries,
        allow_private=config.allow_private,
        **tuning,
    )


def synced_instances(tenant: TenantConfig) -> list[MailwizzTransport]:
    """The tenant's mailwizz transports that carry ``sync:`` settings, in file order."""
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport) and t.sync is not None]
