"""One batch of email validation against the network and the shared DNS cache.

Used by the ``email_validations`` asset and by ``email-engine check``, so both give the same
verdicts from the same cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from email_engine_assets.quality import store as store
from email_engine_assets.quality.validation import syntax_and_flags, validate
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.smtp_probe_client import MailboxResult


@dataclass
class BatchResult:
    frame: pl.DataFrame  # VALIDATION_COLUMNS
    domains: int
    dns_lookups: int
    cached_domains: set[str]
    probed: int


def probe_slot_taker(engine: sa.Engine, smtp_probe: SmtpProbeResource) -> Callable[[str], bool]:
    """The probe's ``take_slot``: one session per call, counted per destination IP in PostgreSQL."""

    def take_slot(ip: str) -> bool:
        with engine.begin() as conn:
            return store.take_probe_slot(
                conn, ip, max_sessions=smtp_probe.per_ip_sessions, window_s=smtp_probe.per_ip_window_s
            )

    return take_slot


def _probe(
    engine: sa.Engine,
    dns: DnsResolverResource,
    smtp_probe: SmtpProbeResource,
    targets: dict[str, list[str]],
    allow_private_targets: bool,
) -> dict[str, MailboxResult]:
    """Resolve the MX hosts through the configured nameservers, then probe the checked addresses."""
    hosts = {host for mx_hosts in targets.values() for host in mx_hosts}
    addresses = {host: found.addresses for host, found in dns.resolve_hosts(hosts).items()}
    return smtp_probe.probe(
        targets,
        addresses=addresses,
        take_slot=probe_slot_taker(engine, smtp_probe),
        allow_private_targets=allow_private_targets,
    )


def validate_batch(
    engine: sa.Engine,
    contacts: pl.DataFrame,
    dns: DnsResolverResource,
    smtp_probe: SmtpProbeResource | None = None,
    *,
    allow_private_targets: bool = False,
) -> BatchResult:
    """``contacts`` (contact_id, email): syntax and flags, DNS (fresh cache rows first), optional SMTP probe, verdict.

    The probe connects only to public addresses unless ``allow_private_targets`` (a tenant setting).
    """
    checked = syntax_and_flags(contacts)
    domains = checked.filter(pl.col("syntax_ok"))["domain"].drop_nulls().unique().to_list()
    with engine.connect() as conn:
        known = store.fresh_domains(conn, domains)
    asked = dns.check_domains([d for d in domains if d not in known])
    with engine.begin() as conn:
        store.store_domains(conn, asked)
    results = {**known, **asked}
    mailboxes, probed = None, 0
    if smtp_probe is not None:
        targets = {
            row["email"]: list(results[row["domain"]].mx_hosts)
            for row in checked.filter(pl.col("syntax_ok")).select("email", "domain").iter_rows(named=True)
            if results.get(row["domain"]) is not None and results[row["domain"]].accepts_mail
        }
        mailboxes = _probe(engine, dns, smtp_probe, targets, allow_private_targets) if targets else {}
        probed = len(targets)
    return BatchResult(validate(checked, results, mailboxes), len(domains), len(asked), set(known), probed)
