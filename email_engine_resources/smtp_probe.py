"""SMTP mailbox probe as a Dagster resource.

The probe is optional and off by default: an asset calls :meth:`SmtpProbeResource.probe` only
for tenants whose configuration turns the mailbox check on. The fields mirror
:class:`email_engine_resources.smtp_probe_client.ProbeConfig` and are checked by it, except the
shared per-IP limit (``per_ip_sessions`` per ``per_ip_window_s``), which the caller enforces
through the ``take_slot`` callable it passes in (the count lives in the database).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
from pydantic import Field

from email_engine_resources.smtp_probe_client import (
    MailboxResult,
    ProbeConfig,
    TakeSlot,
    probe_mailboxes,
)


class SmtpProbeResource(dg.ConfigurableResource):
    """``RCPT TO`` probe against MX hosts, with per-IP, per-session and total limits."""

    helo_name: str = Field(default="", description="EHLO name; empty = this machine's FQDN")
    mail_from: str = ""
    port: int = 25
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 10.0
    session_deadline_s: float = Field(default=60.0, description="Longest time one SMTP session may take")
    max_recipients_per_session: int = Field(default=50, description="Addresses per session (the catch-all probe on top)")
    per_mx_concurrency: int = 2
    per_mx_rate_per_s: float = 5.0
    total_concurrency: int = 50
    detect_catch_all: bool = True
    per_ip_sessions: int = Field(default=20, ge=1, description="Sessions per destination IP and window, all processes together")
    per_ip_window_s: int = Field(default=60, ge=1, description="Length of the per-IP window in seconds")

    def config(self, *, allow_private_targets: bool = False) -> ProbeConfig:
        """The probe settings; raises ``ValueError`` naming the field that is out of range."""
        return ProbeConfig(
            helo_name=self.helo_name,
            mail_from=self.mail_from,
            port=self.port,
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
            session_deadline_s=self.session_deadline_s,
            max_recipients_per_session=self.max_recipients_per_session,
            per_mx_concurrency=self.per_mx_concurrency,
            per_mx_rate_per_s=self.per_mx_rate_per_s,
            total_concurrency=self.total_concurrency,
            detect_catch_all=self.detect_catch_all,
            allow_private_targets=allow_private_targets,
        )

    def probe(
        self,
        targets: Mapping[str, Sequence[str]],
        *,
        addresses: Mapping[str, Sequence[str]] | None = None,
        take_slot: TakeSlot | None = None,
        allow_private_targets: bool = False,
    ) -> dict[str, MailboxResult]:
        """``{address: [MX hosts in preference order]}`` -> a result for every address.

        ``addresses``: ``{MX host: [IP addresses]}`` from the configured resolver; private
        targets only with ``allow_private_targets`` (a tenant setting).
        """
        config = self.config(allow_private_targets=allow_private_targets)
        return probe_mailboxes(targets, config, addresses=addresses, take_slot=take_slot)
