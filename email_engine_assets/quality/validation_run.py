"""One batch of email validation against the network and the shared DNS cache.

Used by the ``email_validations`` asset and by ``email-engine check``, so both give the same
verdicts from the same cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from email_engine_assets.quality import store as store
from email_engine_assets.quality.validation import syntax_and_flags, validate
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.smtp_probe import SmtpProbeResource


@dataclass
class BatchResult:
    frame: pl.DataFrame  # VALIDATION_COLUMNS
    domains: int
    dns_lookups: int
    cached_domains: set[str]
    probed: int


def validate_batch(
    engine: sa.Engine,
    contacts: pl.DataFrame,
    dns: DnsResolverResource,
    smtp_probe: SmtpProbeResource | None = None,
) -> BatchResult:
    """``contacts`` (contact_id, email): syntax and flags, DNS (fresh cache rows first), optional SMTP probe, verdict."""
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
        mailboxes = smtp_probe.probe(targets) if targets else {}
        probed = len(targets)
    return BatchResult(validate(checked, results, mailboxes), len(domains), len(asked), set(known), probed)
