"""The summary verdict of an address check: one rule, after Reacher's model.

``invalid``  bad syntax, a domain that takes no mail (null MX, NXDOMAIN, no mail host),
             a mailbox that is undeliverable or disabled;
``risky``    disposable domain, role account, catch-all domain, full inbox, likely typo;
``unknown``  the domain could not be checked (timeout, SERVFAIL, or not checked yet), or the
             mailbox probe ran and could not tell, or refused to connect because every mail
             host of the domain has a private address (``refused_private_target``);
``valid``    none of the above (the mailbox probe off counts as no finding).

The first matching class wins; ``reasons`` lists every finding, not just the deciding one.
A likely typo (``gmail.co``) is risky: a typo domain that accepts mail is often a trap.
"""

from __future__ import annotations

from typing import Literal, get_args

import polars as pl

from email_engine_resources.dns_client import ACCEPTS_MAIL
from email_engine_resources.dns_client import STATUSES as DOMAIN_STATUSES
from email_engine_resources.smtp_probe_client import (
    CATCH_ALL,
    DELIVERABLE,
    DISABLED,
    FULL_INBOX,
    REFUSED_PRIVATE_TARGET,
    UNDELIVERABLE,
    UNKNOWN,
)
from email_engine_resources.smtp_probe_client import STATUSES as MAILBOX_STATUSES

Verdict = Literal["valid", "risky", "invalid", "unknown"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
# Domain and mailbox statuses are defined by the clients that return them; the verdict groups them.
MAIL_DOMAIN = tuple(s for s, accepts in ACCEPTS_MAIL.items() if accepts)
INVALID_DOMAIN = frozenset(s for s, accepts in ACCEPTS_MAIL.items() if accepts is False)
INVALID_MAILBOX = frozenset({UNDELIVERABLE, DISABLED})
RISKY_MAILBOX = frozenset({CATCH_ALL, FULL_INBOX})
UNKNOWN_MAILBOX = frozenset({UNKNOWN, REFUSED_PRIVATE_TARGET})
DOMAIN_NOT_CHECKED = "domain: not_checked"

_REASON_PREFIXES_BY_VERDICT = {
    "invalid": ("syntax:", *(f"domain: {s}" for s in INVALID_DOMAIN),
                *(f"mailbox: {s}" for s in INVALID_MAILBOX)),
    "risky": ("disposable", "role_account", "typo_suggestion:",
              *(f"mailbox: {s}" for s in RISKY_MAILBOX)),
    "unknown": ("domain: unknown", DOMAIN_NOT_CHECKED, *(f"mailbox: {s}" for s in UNKNOWN_MAILBOX)),
}


def _check_status(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {allowed} or None, got {value!r}")


def _with_detail(reason: str, detail: str | None) -> str:
    return f"{reason} ({detail})" if detail else reason


def verdict_from_reasons(reasons: list[str]) -> str:
    """The verdict that a list of reasons implies (invalid > risky > unknown > valid)."""
    for verdict in ("invalid", "risky", "unknown"):
        prefixes = _REASON_PREFIXES_BY_VERDICT[verdict]
        if any(reason.startswith(prefixes) for reason in reasons):
            return verdict
    return "valid"


def summarize(*, syntax_ok: bool, syntax_error: str | None, domain_status: str | None,
              mailbox_status: str | None, disposable: bool, role_account: bool,
              typo_suggestion: str | None = None, domain_detail: str | None = None,
              mailbox_detail: str | None = None) -> tuple[str, list[str]]:
    """Return ``(verdict, reasons)`` for one address.

    ``domain_status`` None means the domain was not checked (an ``unknown`` finding, except
    when the syntax is already bad); ``mailbox_status`` None means the probe was off (no
    finding). ``domain_detail`` / ``mailbox_detail`` are appended in brackets, e.g.
    ``"domain: unknown (SERVFAIL)"``.
    """
    _check_status("domain_status", domain_status, DOMAIN_STATUSES)
    _check_status("mailbox_status", mailbox_status, MAILBOX_STATUSES)
    reasons: list[str] = []
    if not syntax_ok:
        reasons.append(f"syntax: {syntax_error or 'invalid'}")
    if domain_status is None:
        if syntax_ok:
            reasons.append(DOMAIN_NOT_CHECKED)
    elif domain_status not in MAIL_DOMAIN:
        reasons.append(_with_detail(f"domain: {domain_status}", domain_detail))
    if disposable:
        reasons.append("disposable")
    if role_account:
        reasons.append("role_account")
    if typo_suggestion:
        reasons.append(f"typo_suggestion: {typo_suggestion}")
    if mailbox_status is not None and mailbox_status != DELIVERABLE:
        reasons.append(_with_detail(f"mailbox: {mailbox_status}", mailbox_detail))
    return verdict_from_reasons(reasons), reasons


_REQUIRED = ("syntax_ok", "syntax_error", "domain_status", "mailbox_status", "disposable",
             "role_account")
_OPTIONAL = ("typo_suggestion", "domain_detail", "mailbox_detail")


def _validate_frame(df: pl.DataFrame) -> None:
    missing = [name for name in _REQUIRED if name not in df.columns]
    if missing:
        raise ValueError(f"summarize_frame: missing columns {missing}")
    if df.get_column("syntax_ok").null_count():
        raise ValueError("summarize_frame: 'syntax_ok' has nulls; every address needs a syntax result")
    for name, allowed in (("domain_status", DOMAIN_STATUSES), ("mailbox_status", MAILBOX_STATUSES)):
        bad = set(df.get_column(name).drop_nulls().unique().to_list()) - set(allowed)
        if bad:
            raise ValueError(f"summarize_frame: {name} must be one of {allowed} or null, "
                             f"got {sorted(bad)}")


def _reason(condition: pl.Expr, text: pl.Expr | str) -> pl.Expr:
    value = pl.lit(text) if isinstance(text, str) else text
    return pl.when(condition).then(value).otherwise(pl.lit(None, dtype=pl.String))


def _detailed(prefix: str, status: str, detail: str) -> pl.Expr:
    base = pl.concat_str(pl.lit(prefix), pl.col(status))
    with_detail = pl.concat_str(base, pl.lit(" ("), pl.col(detail), pl.lit(")"))
    has_detail = pl.col(detail).is_not_null() & (pl.col(detail) != "")
    return pl.when(has_detail).then(with_detail).otherwise(base)


def summarize_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Vectorised :func:`summarize`: adds ``verdict`` (String) and ``reasons`` (List[String]).

    Reads the columns named like ``summarize``'s arguments; ``typo_suggestion``,
    ``domain_detail`` and ``mailbox_detail`` are optional. Null ``disposable`` /
    ``role_account`` count as False.
    """
    _validate_frame(df)
    work = df.with_columns(
        [pl.lit(None, dtype=pl.String).alias(name) for name in _OPTIONAL if name not in df.columns]
    )
    syntax_ok, domain, mailbox = pl.col("syntax_ok"), pl.col("domain_status"), pl.col("mailbox_status")
    typo = pl.col("typo_suggestion")
    parts = [
        _reason(~syntax_ok, pl.concat_str(pl.lit("syntax: "),
                                          pl.coalesce(pl.col("syntax_error").replace("", None),
                                                      pl.lit("invalid")))),
        _reason(domain.is_null() & syntax_ok, DOMAIN_NOT_CHECKED),
        _reason(domain.is_not_null() & ~domain.is_in(list(MAIL_DOMAIN)),
                _detailed("domain: ", "domain_status", "domain_detail")),
        _reason(pl.col("disposable").fill_null(False), "disposable"),
        _reason(pl.col("role_account").fill_null(False), "role_account"),
        _reason(typo.is_not_null() & (typo != ""), pl.concat_str(pl.lit("typo_suggestion: "), typo)),
        _reason(mailbox.is_not_null() & (mailbox != DELIVERABLE),
                _detailed("mailbox: ", "mailbox_status", "mailbox_detail")),
    ]
    reasons = pl.concat_list(parts).list.drop_nulls()
    verdict = (
        pl.when(~syntax_ok | domain.is_in(list(INVALID_DOMAIN)) | mailbox.is_in(list(INVALID_MAILBOX)))
        .then(pl.lit("invalid"))
        .when(pl.col("disposable").fill_null(False) | pl.col("role_account").fill_null(False)
              | (typo.is_not_null() & (typo != "")) | mailbox.is_in(list(RISKY_MAILBOX)))
        .then(pl.lit("risky"))
        .when(domain.is_null() | (domain == "unknown") | mailbox.is_in(list(UNKNOWN_MAILBOX)))
        .then(pl.lit("unknown"))
        .otherwise(pl.lit("valid"))
    )
    result = work.with_columns(verdict=verdict, reasons=reasons)
    return result.select([*df.columns, "verdict", "reasons"])
