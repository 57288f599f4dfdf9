"""Email validation of a batch of contacts: syntax, flags, domain and mailbox facets, verdict.

Composes the rules that live in their own modules (:mod:`.email_syntax`, :mod:`.address_flags`,
:mod:`.domain_check` results, :mod:`.mailbox_probe` results, :mod:`.verdict`); the network work
happens before, in the asset, so this stays a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from email_engine_assets.quality.flags import address_flags
from email_engine_assets.quality.syntax import check_addresses
from email_engine_assets.quality.verdict import summarize_frame
from email_engine_resources.dns_client import DomainResult
from email_engine_resources.email_domain import email_domain_expr
from email_engine_resources.smtp_probe_client import MailboxResult

VALIDATION_COLUMNS = (
    "contact_id", "email", "verdict", "reasons", "syntax_ok", "syntax_error", "domain_status", "domain_detail",
    "mx_hosts", "mailbox_status", "smtp_code", "smtp_message", "disposable", "role_account", "free_mail", "typo_suggestion",
)


def domain_frame(results: Mapping[str, DomainResult]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "domain": list(results),
            "domain_status": [r.status for r in results.values()],
            "domain_detail": [r.detail for r in results.values()],
            "mx_hosts": [list(r.mx_hosts) for r in results.values()],
        },
        schema={"domain": pl.String, "domain_status": pl.String, "domain_detail": pl.String, "mx_hosts": pl.List(pl.String)},
    )


def mailbox_frame(results: Mapping[str, MailboxResult]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "email": list(results),
            "mailbox_status": [r.status for r in results.values()],
            "smtp_code": [r.smtp_code for r in results.values()],
            "smtp_message": [r.smtp_message for r in results.values()],
        },
        schema={"email": pl.String, "mailbox_status": pl.String, "smtp_code": pl.Int64, "smtp_message": pl.String},
    )


def syntax_and_flags(contacts: pl.DataFrame) -> pl.DataFrame:
    """``contacts`` (contact_id, email) -> adds syntax_ok, syntax_error, domain and the address flags."""
    syntax = check_addresses(contacts["email"])
    frame = contacts.with_columns(
        syntax_ok=syntax["syntax_error"].is_null(),
        syntax_error=syntax["syntax_error"],
        domain=email_domain_expr(pl.col("email")),
    )
    flags = address_flags(frame.select(email_key=pl.col("email")))
    return frame.with_columns(flags.select("disposable", "role_account", "free_mail", "typo_suggestion"))


def validate(
    checked: pl.DataFrame,
    domains: Mapping[str, DomainResult],
    mailboxes: Mapping[str, MailboxResult] | None = None,
) -> pl.DataFrame:
    """``checked`` from :func:`syntax_and_flags`; returns VALIDATION_COLUMNS with the verdict and reasons.

    Domains are only consulted for addresses whose syntax passed; a domain missing from
    ``domains`` stays "not checked" (verdict unknown).
    """
    frame = checked.join(domain_frame(domains), on="domain", how="left").with_columns(
        domain_status=pl.when(pl.col("syntax_ok")).then(pl.col("domain_status")),
        mx_hosts=pl.col("mx_hosts").fill_null(pl.lit([], pl.List(pl.String))),
    )
    frame = frame.join(mailbox_frame(mailboxes or {}), on="email", how="left")
    frame = summarize_frame(frame.with_columns(mailbox_detail=pl.col("smtp_message")))
    return frame.select(VALIDATION_COLUMNS)
