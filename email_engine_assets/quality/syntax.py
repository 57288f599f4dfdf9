"""Email address syntax: whether an address may be sent to, and the key that identifies it.

The policy (REFERENCE.md "Email address checks") is exactly what
``email_validator.validate_email(addr, check_deliverability=False, strict=True)`` accepts.
That library is the reference for every verdict; this module only makes the common case fast:

* **fast path** (polars / Rust regex): plain-ASCII addresses are fully decided here. An ASCII
  address is valid exactly when it is a dot-atom local part of at most 64 octets, one ``@``,
  a domain of LDH labels (1-63 octets, no edge ``-``, no ``ab--`` R-LDH label) with at least
  one dot and a top-level label ending in a letter, not under a special-use name, and at most
  254 octets in all. Every rejection gets a short reason.
* **slow path** (email-validator itself): addresses with non-ASCII characters (SMTPUTF8 local
  parts, IDN domains, look-alike characters) and ASCII domains carrying Punycode (``xn--``),
  which need IDNA 2008 decoding. When one part of such an address has the plain ASCII shape,
  only the other part goes to the library, once per distinct part (cached).

Rejection reasons come from one short vocabulary on both paths: the library's messages are
translated into it (``_MESSAGE_REASONS``).

The email key is the local part lower-cased, ``@``, and the domain as lower-case IDNA A-labels:
case variants of one address are one contact.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import email_validator
import polars as pl
from email_validator.rfc_constants import (
    DNS_LABEL_LENGTH_LIMIT,
    DOMAIN_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)

from email_engine_resources.email_domain import email_domain, split_address

# RFC 5322 atext as a (Rust and Python) regex class body.
_ATEXT = r"A-Za-z0-9!#$%\&'*+\-/=?\^_`{|}\~"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = r"(?:[A-Za-z0-9][A-Za-z0-9\-]{0,61})?[A-Za-z]"
_DOT_ATOM = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_HOSTNAME = rf"(?:{_LABEL}\.)+{_TOP_LABEL}"
PLAIN_ADDRESS = rf"^{_DOT_ATOM}@{_HOSTNAME}$"
"""Shape of a valid ASCII address, label lengths included (whole-address length is separate)."""
_PLAIN_LOCAL = rf"^{_DOT_ATOM}$"
_PLAIN_DOMAIN = rf"^{_HOSTNAME}$"

_SPECIAL_USE = "|".join(re.escape(name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
_SPECIAL_USE_SUFFIX = rf"(?i)(?:^|\.)({_SPECIAL_USE})$"
# RFC 5890 R-LDH: a label whose 3rd and 4th characters are "--" must start with "xn".
_RESERVED_LDH_LABEL = r"(?:^|\.)(?:[^xX.][^.]|[xX][^nN.])--"
_PUNYCODE = "(?i)xn--"
# The same tests on a whole address whose local part and domain have the plain shape.
_SPECIAL_USE_AT_END = rf"(?i)[@.](?:{_SPECIAL_USE})$"
_RESERVED_LDH_AFTER_AT = r"@(?:[^@]*\.)?(?:[^xX.@][^.@]|[xX][^nN.@])--"
_PUNYCODE_AFTER_AT = "(?i)@.*xn--"
_BAD_LOCAL_CHAR = rf"[^{_ATEXT}.]"
_BAD_DOMAIN_CHAR = r"[^A-Za-z0-9.\-]"

_FAST_OK, _FAST_BAD, _SLOW = 0, 1, 2
_LOCAL_CHARS, _DOMAIN_CHARS = "\x00local-chars", "\x00domain-chars"
_FALLBACK_REASON = "invalid address"
# Shortest domain email-validator accepts: a local part is checked in front of it.
_SHORTEST_DOMAIN = "a.b"


@dataclass(frozen=True)
class SyntaxVerdict:
    """Verdict for one address: ``email_key`` when ``ok``, ``reason`` when not."""

    ok: bool
    email_key: str | None
    reason: str | None


# The fast path's "valid" test for one address in Python's re (the patterns are written for both
# engines; ``fullmatch`` and ``\Z`` where Rust's ``$`` would not match before a final newline).
_PLAIN_ADDRESS_RE = re.compile(PLAIN_ADDRESS.removesuffix("$") + r"\Z")  # used with fullmatch; \Z all the same
_SPECIAL_USE_AT_END_RE = re.compile(_SPECIAL_USE_AT_END.removesuffix("$") + r"\Z")


def _plainly_valid(address: str) -> bool:
    """Whether :func:`check_addresses` routes ``address`` as valid ASCII without a second look
    (no ``--``: those rows get the R-LDH and Punycode tests there)."""
    return (
        address.isascii() and len(address) <= EMAIL_MAX_LENGTH and "--" not in address
        and _PLAIN_ADDRESS_RE.fullmatch(address) is not None
        and address.find("@") <= LOCAL_PART_MAX_LENGTH
        and _SPECIAL_USE_AT_END_RE.search(address) is None
    )


def check_address(address: str | None, *, allow_smtputf8: bool = True) -> SyntaxVerdict:
    """Check one address with the same rule as :func:`check_addresses`. A plain valid ASCII address
    (the common case) is decided by the fast path's own test in Python, without building a frame
    (the webhook app checks one address per request); any other goes through :func:`check_addresses`."""
    if address is not None and not isinstance(address, str):
        raise TypeError(f"check_address expects a str, got {type(address).__name__}")
    if address is not None and _plainly_valid(address):
        return SyntaxVerdict(ok=True, email_key=address.lower(), reason=None)
    frame = check_addresses(pl.Series([address], dtype=pl.String), allow_smtputf8=allow_smtputf8)
    email_key, reason = frame.row(0)
    return SyntaxVerdict(ok=reason is None, email_key=email_key, reason=reason)


def check_addresses(addresses: pl.Series, *, allow_smtputf8: bool = True) -> pl.DataFrame:
    """Vectorised: returns a frame with the same length and order as the input, columns
    `email_key` (String, null when invalid) and `syntax_error` (String, null when valid).

    Input is expected trimmed and NFC-normalised; nulls give "empty address". Raises
    ``TypeError`` when the series is not a String series.
    """
    text = _as_text(addresses)
    route = _routes(text)
    email_key = text.str.to_lowercase().zip_with(route == _FAST_OK, pl.Series([None], dtype=pl.String))
    syntax_error = pl.Series("syntax_error", [None] * len(text), dtype=pl.String)

    bad_rows = (route == _FAST_BAD).arg_true()
    if len(bad_rows):
        syntax_error = syntax_error.scatter(bad_rows, _fast_reasons(text.gather(bad_rows)))

    slow_rows = (route == _SLOW).arg_true()
    if len(slow_rows):
        keys, reasons = _reference_verdicts(text.gather(slow_rows), allow_smtputf8)
        email_key = email_key.scatter(slow_rows, keys)
        syntax_error = syntax_error.scatter(slow_rows, reasons)

    return pl.DataFrame({"email_key": email_key.alias("email_key"), "syntax_error": syntax_error})


def _as_text(addresses: pl.Series) -> pl.Series:
    if not isinstance(addresses, pl.Series):
        raise TypeError(f"check_addresses expects a polars Series, got {type(addresses).__name__}")
    if addresses.dtype == pl.Null:
        return addresses.cast(pl.String)
    if addresses.dtype != pl.String:
        raise TypeError(f"check_addresses expects a String series, got dtype {addresses.dtype}")
    return addresses


def _routes(text: pl.Series) -> pl.Series:
    """Per row: valid ASCII (decided), invalid (decided here), or needs the reference library.

    The costlier R-LDH and Punycode tests only run on the rows that contain ``--``.
    """
    address = pl.col("address")
    flags = pl.DataFrame({"address": text}).select(
        n_bytes=address.str.len_bytes(),
        ascii=address.str.len_bytes() == address.str.len_chars(),
        shape=address.str.contains(PLAIN_ADDRESS),
        local_octets=address.str.find("@", literal=True),
        special=address.str.contains(_SPECIAL_USE_AT_END),
        dashes=address.str.contains("--", literal=True),
    )
    short = flags["n_bytes"] <= EMAIL_MAX_LENGTH
    plain = (
        flags["ascii"] & short & flags["shape"]
        & (flags["local_octets"] <= LOCAL_PART_MAX_LENGTH) & ~flags["special"]
    ).fill_null(False)
    route = (
        pl.select(
            pl.when(plain).then(_FAST_OK)
            .when(~flags["ascii"] & short).then(_SLOW)
            .otherwise(_FAST_BAD)
            .cast(pl.Int8)
        )
        .to_series()
        .fill_null(_FAST_BAD)
    )
    dashed_rows = (plain & flags["dashes"]).arg_true()
    if len(dashed_rows):
        dashed = text.gather(dashed_rows)
        reserved = dashed.str.contains(_RESERVED_LDH_AFTER_AT)
        punycode = dashed.str.contains(_PUNYCODE_AFTER_AT)
        verdicts = pl.select(
            pl.when(reserved).then(_FAST_BAD).when(punycode).then(_SLOW).otherwise(_FAST_OK).cast(pl.Int8)
        ).to_series()
        route = route.scatter(dashed_rows, verdicts)
    return route


def _fast_reasons(addresses: pl.Series) -> pl.Series:
    """Reason for each address the fast path rejects (ASCII, or longer than 254 octets)."""
    frame = pl.DataFrame({"address": addresses})
    parts = frame["address"].str.splitn("@", 2).struct.rename_fields(["local", "domain"])
    frame = frame.with_columns(parts.struct.unnest())
    reasons = frame.select(_reason_expr()).to_series()
    return _describe_bad_chars(frame, reasons)


def _reason_expr() -> pl.Expr:
    address, local, domain = pl.col("address"), pl.col("local"), pl.col("domain")
    n_bytes = address.str.len_bytes()
    special = domain.str.extract(_SPECIAL_USE_SUFFIX, 1).str.to_lowercase()
    rules: list[tuple[pl.Expr, pl.Expr | str]] = [
        (address.is_null() | (address == ""), "empty address"),
        ((n_bytes > EMAIL_MAX_LENGTH) & (n_bytes != address.str.len_chars()),
         f"address longer than {EMAIL_MAX_LENGTH} octets"),
        (domain.is_null(), "no @"),
        (local.str.starts_with('"'), "quoted local part not allowed"),
        (local.str.contains("<", literal=True), "display name or angle brackets not allowed"),
        (local == "", "empty local part"),
        (local.str.len_bytes() > LOCAL_PART_MAX_LENGTH,
         f"local part longer than {LOCAL_PART_MAX_LENGTH} octets"),
        (local.str.contains(_BAD_LOCAL_CHAR), _LOCAL_CHARS),
        (local.str.starts_with("."), "local part starts with '.'"),
        (local.str.ends_with("."), "local part ends with '.'"),
        (local.str.contains("..", literal=True), "consecutive dots in local part"),
        (domain == "", "empty domain"),
        (domain.str.starts_with("[") & domain.str.ends_with("]"),
         "IP-address literal domain not allowed"),
        (domain.str.len_bytes() > DOMAIN_MAX_LENGTH, f"domain longer than {DOMAIN_MAX_LENGTH} octets"),
        (domain.str.contains(_BAD_DOMAIN_CHAR), _DOMAIN_CHARS),
        (domain.str.starts_with("."), "domain starts with '.'"),
        (domain.str.ends_with("."), "domain ends with '.'"),
        (domain.str.contains("..", literal=True), "consecutive dots in domain"),
        (domain.str.starts_with("-") | domain.str.contains(".-", literal=True),
         "domain label starts with '-'"),
        (domain.str.ends_with("-") | domain.str.contains("-.", literal=True),
         "domain label ends with '-'"),
        (domain.str.contains(rf"[^.]{{{DNS_LABEL_LENGTH_LIMIT + 1}}}"),
         f"domain label longer than {DNS_LABEL_LENGTH_LIMIT} octets"),
        (domain.str.contains(_RESERVED_LDH_LABEL), "domain label has '--' in 3rd and 4th position"),
        (~domain.str.contains(".", literal=True), "domain has no '.'"),
        (~domain.str.contains("[A-Za-z]$"), "top-level domain does not end with a letter"),
        (special.is_not_null(), pl.format("special-use domain '{}'", special)),
        (n_bytes > EMAIL_MAX_LENGTH, f"address longer than {EMAIL_MAX_LENGTH} octets"),
    ]
    condition, reason = rules[0]
    chain = pl.when(condition).then(pl.lit(reason))
    for condition, reason in rules[1:]:
        chain = chain.when(condition).then(reason if isinstance(reason, pl.Expr) else pl.lit(reason))
    return chain.otherwise(pl.lit(_FALLBACK_REASON)).alias("reason")


def _describe_bad_chars(frame: pl.DataFrame, reasons: pl.Series) -> pl.Series:
    """Replace the invalid-character markers with a reason naming the characters."""
    described = reasons.to_list()
    locals_, domains = frame["local"].to_list(), frame["domain"].to_list()
    for i, reason in enumerate(described):
        if reason == _LOCAL_CHARS:
            described[i] = "invalid character in local part: " + _bad_chars(locals_[i], _BAD_LOCAL_CHAR)
        elif reason == _DOMAIN_CHARS:
            described[i] = "invalid character in domain: " + _bad_chars(domains[i], _BAD_DOMAIN_CHAR)
    return pl.Series("syntax_error", described, dtype=pl.String)


def _bad_chars(text: str, pattern: str) -> str:
    return ", ".join(_display_char(c) for c in sorted(set(re.findall(pattern, text))))


def _display_char(char: str) -> str:
    """A printable name for a character: quoted when visible, else its Unicode name or U+XXXX."""
    if unicodedata.category(char)[0] in "LNPS":
        return repr(char)
    return unicodedata.name(char, f"U+{ord(char):04X}")


def _reference_verdicts(addresses: pl.Series, allow_smtputf8: bool) -> tuple[pl.Series, pl.Series]:
    """Key and reason from email-validator for the rows the fast path cannot decide.

    email-validator checks the local part and the domain independently, then the lengths of
    the whole address. So when one part has the plain ASCII shape, only the other part goes to
    the library, once per distinct part (cached), and the verdicts are spread over the addresses
    and their lengths checked here, on whole columns; other addresses go to the library whole.

    A plain local part is split off at the first ``@`` exactly as email-validator splits it
    (it has no quote or ``<``), so the domain can be checked behind ``a@`` instead; likewise a
    local part without quote or ``<`` in front of ``a.b``. Those stand-ins are the shortest
    valid parts, so they can only pass a length limit the real address fails, never the
    reverse; the three lengths email-validator measures (as given, normalised, ASCII domain)
    are then checked on the real parts.
    """
    address, local, domain = pl.col("address"), pl.col("local"), pl.col("domain")
    parts = pl.DataFrame({"address": addresses.unique()})
    split = parts["address"].str.splitn("@", 2).struct.rename_fields(["local", "domain"]).struct.unnest()
    plain_local = local.str.contains(_PLAIN_LOCAL) & (local.str.len_bytes() <= LOCAL_PART_MAX_LENGTH)
    plain_domain = (
        domain.str.contains(_PLAIN_DOMAIN)
        & ~domain.str.contains(_RESERVED_LDH_LABEL)
        & ~domain.str.contains(_SPECIAL_USE_SUFFIX)
        & ~domain.str.contains(_PUNYCODE)
    )
    partwise = domain.is_not_null() & (address.str.len_bytes() <= EMAIL_MAX_LENGTH)
    parts = pl.concat([parts, split], how="horizontal").with_columns(
        route=pl.when(partwise & plain_local & ~plain_domain).then(pl.lit("domain"))
        .when(partwise & plain_domain & ~local.str.contains('["<]')).then(pl.lit("local"))
        .otherwise(pl.lit("whole"))
    )
    by_domain = _domain_verdicts(parts.filter(pl.col("route") == "domain"))
    by_local = _local_verdicts(parts.filter(pl.col("route") == "local"), allow_smtputf8)
    whole = parts.filter(pl.col("route") == "whole")["address"]
    by_address = pl.DataFrame(
        [_reference_verdict(text, allow_smtputf8=allow_smtputf8) for text in whole.to_list()],
        schema={"email_key": pl.String, "syntax_error": pl.String}, orient="row",
    ).with_columns(whole)
    verdicts = pl.concat([by_domain, by_local, by_address.select(by_domain.columns)])
    spread = pl.DataFrame({"address": addresses}).join(verdicts, on="address", how="left", maintain_order="left")
    return spread["email_key"], spread["syntax_error"]


def _domain_verdicts(parts: pl.DataFrame) -> pl.DataFrame:
    """Addresses with a plain local part: the domain checked once per distinct domain."""
    domains = parts["domain"].unique().to_list()
    checked = pl.DataFrame(
        [(name, *_domain_verdict(name)) for name in domains],
        schema={"domain": pl.String, "ascii_domain": pl.String, "unicode_domain": pl.String, "reason": pl.String},
        orient="row",
    )
    local = pl.col("local")
    longest = local.str.len_bytes() + 1 + pl.max_horizontal(
        pl.col("unicode_domain").str.len_bytes(), pl.col("ascii_domain").str.len_bytes()
    )
    return _verdicts(parts.join(checked, on="domain", how="left"), longest, local.str.to_lowercase() + "@" + pl.col("ascii_domain"))


def _local_verdicts(parts: pl.DataFrame, allow_smtputf8: bool) -> pl.DataFrame:
    """Addresses with a plain domain: the local part checked once per distinct local part."""
    rows = []
    for name in parts["local"].unique().to_list():
        normalized, reason = _local_verdict(name, allow_smtputf8)
        rows.append((name, normalized, normalized.lower(), reason))
    checked = pl.DataFrame(
        rows, schema={"local": pl.String, "normalized_local": pl.String, "lowered_local": pl.String, "reason": pl.String},
        orient="row",
    )
    domain = pl.col("domain").str.to_lowercase()
    longest = pl.col("normalized_local").str.len_bytes() + 1 + domain.str.len_bytes()
    return _verdicts(parts.join(checked, on="local", how="left"), longest, pl.col("lowered_local") + "@" + domain)


def _verdicts(parts: pl.DataFrame, longest: pl.Expr, key: pl.Expr) -> pl.DataFrame:
    """``address``, ``email_key``, ``syntax_error`` from a part's reason, the address's longest
    measured length and its key."""
    too_long = f"address longer than {EMAIL_MAX_LENGTH} octets"
    reason = pl.col("reason")
    return parts.select(
        "address",
        pl.when(reason.is_null() & (longest <= EMAIL_MAX_LENGTH)).then(key).alias("email_key"),
        pl.when(reason.is_not_null()).then(reason).when(longest > EMAIL_MAX_LENGTH).then(pl.lit(too_long)).alias("syntax_error"),
    )


@functools.lru_cache(maxsize=65_536)
def _domain_verdict(domain: str) -> tuple[str, str, str | None]:
    """``(ascii_domain, unicode_domain, reason)`` for a domain, checked behind a one-letter local part."""
    address = f"a@{domain}"
    try:
        validated = email_validator.validate_email(address, check_deliverability=False, strict=True)
    except email_validator.EmailNotValidError as error:
        return "", "", _short_reason(str(error), address)
    return validated.ascii_domain.lower(), validated.domain, None


@functools.lru_cache(maxsize=65_536)
def _local_verdict(local: str, allow_smtputf8: bool) -> tuple[str, str | None]:
    """``(normalized_local_part, reason)`` for a local part, checked before the shortest domain."""
    address = f"{local}@{_SHORTEST_DOMAIN}"
    try:
        validated = email_validator.validate_email(
            address, check_deliverability=False, strict=True, allow_smtputf8=allow_smtputf8
        )
    except email_validator.EmailNotValidError as error:
        return "", _short_reason(str(error), address)
    return validated.local_part, None


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


def _reference_verdict(address: str, *, allow_smtputf8: bool = True) -> tuple[str | None, str | None]:
    """``(email_key, None)`` or ``(None, reason)`` straight from email-validator (the reference)."""
    try:
        validated = email_validator.validate_email(
            address, check_deliverability=False, strict=True, allow_smtputf8=allow_smtputf8
        )
    except email_validator.EmailNotValidError as error:
        return None, _short_reason(str(error), address)
    return f"{validated.local_part.lower()}@{validated.ascii_domain.lower()}", None


# email-validator message (regex, searched) -> short reason; the first match wins.
_MESSAGE_REASONS: list[tuple[str, str]] = [
    (r"must have an @-sign", "no @"),
    (r"\"full-width\" at-sign", "full-width at-sign instead of @"),
    (r"small commercial at", "small commercial at (﹫) instead of @"),
    (r"something before the @-sign", "empty local part"),
    (r"something after the @-sign", "empty domain"),
    (r"too long before the @-sign", f"local part longer than {LOCAL_PART_MAX_LENGTH} octets"),
    (r"too long after the @-sign", f"domain longer than {DOMAIN_MAX_LENGTH} octets"),
    (r"is too long", f"address longer than {EMAIL_MAX_LENGTH} octets"),
    (r"Internationalized characters before the @-sign are not supported(?:: (.*))?\.$",
     "internationalised local part needs SMTPUTF8: {0}"),
    (r"invalid characters before the @-sign: (.*)\.$", "invalid character in local part: {0}"),
    (r"unsafe characters: (.*)\.$", "unsafe character: {0}"),
    (r"after the @-sign contains invalid characters(?: after Unicode normalization)?: (.*)\.$",
     "invalid character in domain: {0}"),
    (r"after the @-sign contains invalid characters \((.*)\)\.$", "invalid character in domain ({0})"),
    (r"cannot start with a period", "local part starts with '.'"),
    (r"period immediately before the @-sign", "local part ends with '.'"),
    (r"period immediately after the @-sign", "domain starts with '.'"),
    (r"cannot end with a period", "domain ends with '.'"),
    (r"hyphen immediately after the @-sign", "domain label starts with '-'"),
    (r"cannot end with a hyphen", "domain label ends with '-'"),
    (r"period and a hyphen next to each other", "domain label starts or ends with '-'"),
    (r"two letters followed by two dashes", "domain label has '--' in 3rd and 4th position"),
    (r"periods cannot be separated by so many|\(Label too long\)",
     f"domain label longer than {DNS_LABEL_LENGTH_LIMIT} octets"),
    (r"\(Domain too long\)", f"domain longer than {DOMAIN_MAX_LENGTH} octets"),
    (r"\(Label has disallowed hyphens in 3rd and 4th position\)",
     "domain label has '--' in 3rd and 4th position"),
    (r"\(Label must not start or end with a hyphen\)", "domain label starts or ends with '-'"),
    (r"should have a period", "domain has no '.'"),
    (r"valid top-level domain", "top-level domain does not end with a letter"),
    (r"(?:in )?brackets", "IP-address literal domain not allowed"),
    (r"[Qq]uot", "quoted local part not allowed"),
    (r"display name|angle bracket|after the email address", "display name or angle brackets not allowed"),
    (r"not valid IDNA \((.*)\)\.$", "domain is not valid IDNA ({0})"),
    (r"normalizing to international characters \((.*)\)\.$", "domain is not valid IDNA ({0})"),
    (r"after the @-sign is invalid \((.*)\)\.$", "invalid domain ({0})"),
    (r"after IDNA encoding", "invalid domain after IDNA encoding"),
    (r"invalid character", "invalid character in local part"),
]


def _short_reason(message: str, address: str) -> str:
    """Translate an email-validator message into this module's short reason vocabulary."""
    message = message.removeprefix("After Unicode normalization: ")
    if "two periods in a row" in message:
        local = split_address(address)[0]
        return "consecutive dots in " + ("local part" if ".." in local else "domain")
    if "special-use or reserved name" in message:
        return _special_use_reason(address)
    for pattern, reason in _MESSAGE_REASONS:
        found = re.search(pattern, message)
        if found:
            return reason.format(*(group or "" for group in found.groups())).removesuffix(": ")
    return message


def _special_use_reason(address: str) -> str:
    domain = (email_domain(address) or "").lower()
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if re.search(rf"(?:^|[.．。｡]){re.escape(name)}$", domain):
            return f"special-use domain '{name}'"
    return "special-use domain"
