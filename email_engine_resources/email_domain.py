"""The domain of an email address: the part after the last ``@``, for one value or a polars column.

The one rule every module uses (syntax reasons, flags, enrichment, validation, the tag matcher's
``email_domain`` field, the SMTP probe, the CLI). It lives beside the network clients because
they need it too and must not import the Dagster definitions. No ``@``, or nothing after the
last one, means no domain (``None`` / null).
"""

from __future__ import annotations

import polars as pl

_AFTER_LAST_AT = r"@([^@]+)$"


def split_address(address: str) -> tuple[str, str | None]:
    """``(local part, domain)`` split at the last ``@``; no ``@`` makes it all local part."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, None
    return local, domain or None


def email_domain(address: str | None) -> str | None:
    """``"ann@mail.example.fr"`` -> ``"mail.example.fr"``; ``None`` without a domain."""
    return None if address is None else split_address(address)[1]


def email_domain_expr(address: pl.Expr) -> pl.Expr:
    """Column twin of :func:`email_domain` (String in, String out, null without a domain)."""
    return address.str.extract(_AFTER_LAST_AT, 1)
