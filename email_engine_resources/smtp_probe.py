"""SMTP mailbox probe as a Dagster resource.

The probe is optional and off by default: an asset calls :meth:`SmtpProbeResource.probe` only
for tenants whose configuration turns the mailbox check on. The fields mirror
:class:`email_engine_resources.smtp_probe_client.ProbeConfig` and are checked by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from email_engine_resources.smtp_probe_client import (
    MailboxResult,
    ProbeConfig,
    probe_mailboxes,
)


class SmtpProbeResource(dg.ConfigurableResource):
    """``RCPT TO`` probe against MX hosts, with per-MX and total connection limits."""

    helo_name: str = "probe.email-engine.local"
    mail_from: str = ""
    port: int = 25
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 10.0
    per_mx_concurrency: int = 2
    per_mx_rate_per_s: float = 5.0
    total_concurrency: int = 50
    detect_catch_all: bool = True

    def config(self) -> ProbeConfig:
        """The probe settings; raises ``ValueError`` naming the field that is out of range."""
        return ProbeConfig(
            helo_name=self.helo_name,
            mail_from=self.mail_from,
            port=self.port,
            connect_timeout_s=self.connect_timeout_s,
            command_timeout_s=self.command_timeout_s,
            per_mx_concurrency=self.per_mx_concurrency,
            per_mx_rate_per_s=self.per_mx_rate_per_s,
            total_concurrency=self.total_concurrency,
            detect_catch_all=self.detect_catch_all,
        )

    def probe(self, targets: Mapping[str, Sequence[str]]) -> dict[str, MailboxResult]:
        """``{address: [MX hosts in preference order]}`` -> a result for every address."""
        return probe_mailboxes(targets, self.config())
