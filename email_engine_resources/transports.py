"""The transports as Dagster resources: ``mailwizz``, ``powermta`` and ``outbox`` in the code location.

A code location has one resource per key, while each tenant names its own MailWizz instances and
PowerMTAs in its tenant file: so each resource holds only what is the deployment's (tuning, the
outbox folder) and hands out a client for one tenant's transport entry, given as a method argument.
The entry's secrets stay ``{env: NAME}`` in the tenant file and are read when a client is built
(``EnvSecret.read()``); no secret is ever a resource field, so none shows on the UI's resources page.

This module never imports the tenant model: a transport entry is anything with the fields of
``email_engine_assets.tenancy.sending``'s ``MailwizzTransport`` / ``PowerMtaTransport``.
"""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import dagster as dg
from pydantic import Field

from email_engine_resources.delivery import DEFAULT_PIPELINE_DEPTH
from email_engine_resources.mailwizz import BULK_SIZE, MailwizzInstance
from email_engine_resources.network_policy import target_refusal
from email_engine_resources.outbox import Outbox
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_resources.powermta_config import PowerMtaConfig, read_powermta_config
from email_engine_resources.powermta_management import PowerMtaManagement

PROBE_TIMEOUT_S = 10.0


class OutboxResource(dg.ConfigurableResource):
    """The outbox transport: one ``.eml`` file per message under ``root``."""

    root: str = Field(default="", description="the outbox folder; empty: $EMAIL_ENGINE_HOME/outbox")

    def outbox(self) -> Outbox:
        return Outbox(Path(self.root) if self.root else None)


class MailwizzResource(dg.ConfigurableResource):
    """MailWizz instances, one per tenant-file entry (``kind: mailwizz``); the API keys are read from
    the environment variables the entry names when :meth:`instance` is called."""

    bulk_size: int = Field(default=BULK_SIZE, description="subscribers per bulk call")
    backoff_initial: float = Field(default=0.5, description="seconds before the first retry of a throttled or failed call")

    def instance(self, config, *, bulk_size: int | None = None) -> MailwizzInstance:
        """The API of the entry's instance (``bulk_size``: this use's own, e.g. the sync's setting);
        ``LookupError`` names an unset variable (never a value)."""
        return MailwizzInstance(
            config.base_url,
            config.api_key.read(),
            api_version=config.api_version,
            private_key=config.private_key.read() if config.private_key else None,
            timezone=config.timezone,
            timeout=config.timeout_seconds,
            retries=config.retries,
            allow_private=config.allow_private,
            bulk_size=bulk_size or self.bulk_size,
            backoff_initial=self.backoff_initial,
        )

    def check(self, config) -> None:
        """One authenticated call (the first page of lists); raises ``MailwizzError`` (the key redacted)
        or ``LookupError`` (an unset variable)."""
        with self.instance(config) as instance:
            instance.client.get("lists", {"page": 1, "per_page": 10})


class PowerMtaResource(dg.ConfigurableResource):
    """PowerMTAs, one per tenant-file entry (``kind: powermta``): SMTP injection, PowerMTA's config
    file and its management API (its key read from the variable the entry names)."""

    helo_name: str = Field(default="", description="the EHLO name (default: this machine's FQDN)")
    retry_backoff_seconds: float = Field(default=1.0, description="seconds before retrying a 4xx reply, doubled each time")
    pipeline_depth: int = Field(default=DEFAULT_PIPELINE_DEPTH, description="messages one connection holds in flight")

    def injection(self, config, *, x_envid_header: bool = True) -> PowerMtaSmtpTransport:
        """The entry's SMTP injection; ``ValueError`` names a bad field."""
        return PowerMtaSmtpTransport(
            name=config.name, host=config.host, port=config.port, bounce_address=config.bounce_address,
            virtual_mta=config.virtual_mta, connections=config.connections, timeout_seconds=config.timeout_seconds,
            retries=config.retries, allow_private=config.allow_private, x_envid_header=x_envid_header,
            helo_name=self.helo_name, retry_backoff_seconds=self.retry_backoff_seconds,
            pipeline_depth=config.pipeline_depth or self.pipeline_depth,
        )

    def config_file(self, config) -> PowerMtaConfig:
        """PowerMTA's own config (``config_file``); ``PowerMtaConfigError`` names the file and line."""
        return read_powermta_config(config.config_file)

    def management(self, config) -> PowerMtaManagement | None:
        """The entry's management API client (``None`` without ``management_url``); close it after use."""
        if not config.management_url:
            return None
        key = config.management_api_key.read() if config.management_api_key is not None else None
        return PowerMtaManagement(config.management_url, key, allow_private=config.allow_private)

    def ehlo(self, config) -> str:
        """Connect to the entry's host and port, say EHLO and QUIT: PowerMTA's greeting name.
        ``OSError`` / ``smtplib.SMTPException`` say what failed; a refused address is a ``ConnectionRefusedError``."""
        infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        refusals = [r for r in (target_refusal(a, allow_private=config.allow_private) for a in addresses) if r]
        usable = [a for a in addresses if not target_refusal(a, allow_private=config.allow_private)]
        if not usable:
            raise ConnectionRefusedError(f"refused target {config.host}: {refusals[0] if refusals else 'no address'}")
        timeout = min(float(config.timeout_seconds), PROBE_TIMEOUT_S)
        with smtplib.SMTP(timeout=timeout, local_hostname=self.helo_name or None) as smtp:
            code, banner = smtp.connect(usable[0], config.port)
            if code != 220:
                raise smtplib.SMTPResponseException(code, banner)
            code, reply = smtp.ehlo()
            if code != 250:
                raise smtplib.SMTPResponseException(code, reply)
            return reply.decode("utf-8", "replace").splitlines()[0] if reply else ""


def transport_resources() -> dict[str, dg.ConfigurableResource]:
    """The code location's transports under their keys, with the deployment's defaults."""
    return {"outbox": OutboxResource(), "powermta": PowerMtaResource(), "mailwizz": MailwizzResource()}
