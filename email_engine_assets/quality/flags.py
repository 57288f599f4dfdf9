"""Flags on an address that do not need the network: disposable, role account, free mail, typo.

Disposable domains come from the ``disposable-email-domains`` blocklist, matched on the
domain and every parent down to the registrable domain (Public Suffix List, from the
``publicsuffixlist`` package's bundled copy; nothing is fetched), so ``x.mailinator.com`` is
disposable too. Typo distances are Damerau-Levenshtein (``rapidfuzz``).
"""

from __future__ import annotations

import re

import polars as pl
from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from publicsuffixlist import PublicSuffixList
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from email_engine_assets.quality.enrichment import map_distinct
from email_engine_resources.email_domain import email_domain_expr

# Mailboxes of a function, not a person. Matched on the whole local part, case-insensitive,
# with "+tag" sub-addresses removed and "-", "_", "." ignored ("no_reply" = "noreply").
# Deliberately no digit suffixes or prefixes ("info1", "sales-fr" are not matched): a list
# member named "hr2" or "team-lead" is more often a person than a shared box.
ROLE_LOCAL_PARTS: frozenset[str] = frozenset({
    "abuse", "accounting", "accounts", "accueil", "admin", "administrator", "alerts", "all",
    "billing", "bounce", "bounces", "buchhaltung", "careers", "commercial", "compliance",
    "compta", "comptabilite", "contact", "contacto", "contacts", "customerservice",
    "direction", "donotreply", "do-not-reply", "enquiries", "enquiry", "everyone",
    "facturation", "feedback", "finance", "hello", "help", "helpdesk", "hostmaster", "hr",
    "info", "informacion", "information", "inquiries", "inquiry", "jobs", "kontakt", "legal",
    "mailer-daemon", "marketing", "media", "news", "newsletter", "noc", "noreply", "no-reply",
    "notifications", "office", "orders", "postmaster", "press", "privacy", "reception",
    "recrutement", "recruitment", "rh", "root", "sales", "secretariat", "security", "service",
    "staff", "subscribe", "support", "team", "unsubscribe", "ventas", "vertrieb", "webmaster",
})

# Free mailbox providers. Brands in FREE_MAIL_BRANDS are free mail under any real public
# suffix (yahoo.fr, hotmail.co.uk, gmx.at), except the .com look-alikes in COM_LOOKALIKE_TLDS,
# which are read as typos of .com (gmail.co, hotmail.cm).
FREE_MAIL_DOMAINS: frozenset[str] = frozenset({
    "gmail.com", "googlemail.com", "ymail.com", "rocketmail.com", "msn.com", "aol.com",
    "icloud.com", "me.com", "mac.com", "web.de", "t-online.de", "freenet.de", "orange.fr",
    "free.fr", "laposte.net", "wanadoo.fr", "sfr.fr", "neuf.fr", "bbox.fr", "numericable.fr",
    "club-internet.fr", "yandex.ru", "ya.ru", "mail.ru", "bk.ru", "inbox.ru", "list.ru",
    "rambler.ru", "qq.com", "163.com", "126.com", "sina.com", "sohu.com", "yeah.net",
    "protonmail.com", "protonmail.ch", "proton.me", "pm.me", "tutanota.com", "tuta.io",
    "zoho.com", "mail.com", "email.com", "gmx.com", "gmx.net", "libero.it", "virgilio.it",
    "tiscali.it", "btinternet.com", "sky.com", "comcast.net", "verizon.net", "att.net",
    "sbcglobal.net", "bellsouth.net", "cox.net", "charter.net", "earthlink.net", "uol.com.br",
    "bol.com.br", "terra.com.br", "rediffmail.com", "fastmail.com", "hushmail.com",
    "seznam.cz", "wp.pl", "o2.pl", "interia.pl", "onet.pl",
})
FREE_MAIL_BRANDS: frozenset[str] = frozenset({"yahoo", "hotmail", "outlook", "live", "gmx",
                                              "aol", "yandex"})
COM_LOOKALIKE_TLDS: frozenset[str] = frozenset({"co", "cm", "om"})

# Targets for typo suggestions, most used first (ties go to the first).
POPULAR_MAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com",
    "live.com", "msn.com", "googlemail.com", "protonmail.com", "orange.fr", "free.fr",
    "laposte.net", "wanadoo.fr", "sfr.fr", "hotmail.fr", "yahoo.fr", "live.fr", "outlook.fr",
    "yandex.ru", "mail.ru", "gmx.de", "gmx.net", "web.de", "t-online.de", "hotmail.co.uk",
    "yahoo.co.uk", "btinternet.com", "comcast.net", "verizon.net", "sbcglobal.net",
    "hotmail.es", "yahoo.es", "hotmail.it", "libero.it", "yahoo.com.br", "hotmail.com.br",
    "rediffmail.com", "qq.com", "163.com",
)
# Real TLDs are never "corrected"; these are not TLDs (checked against the PSL at run time).
TLD_TYPOS: dict[str, str] = {
    **dict.fromkeys(("con", "cmo", "ocm", "vom", "xom", "comm", "coom", "cpm", "c0m", "cim",
                     "copm", "comn", "coim", "ccom", "vcom", "cpom", "clm"), "com"),
    **dict.fromkeys(("nte", "ent", "nett", "ner", "bet"), "net"),
    **dict.fromkeys(("ogr", "rog", "orgg", "prg", "irg"), "org"),
}
# A target's second-level name must be this long to be a fuzzy target at all ("aol", "gmx",
# "free" are too close to unrelated real domains), and this long to allow 2 edits.
MIN_FUZZY_NAME = 5
MIN_TWO_EDIT_NAME = 8

_PSL = PublicSuffixList()
_SEPARATORS = re.compile(r"[-_.]")
_ROLE_KEYS = frozenset(_SEPARATORS.sub("", role) for role in ROLE_LOCAL_PARTS)
_FUZZY_TARGETS = tuple(d for d in POPULAR_MAIL_DOMAINS if len(d.split(".")[0]) >= MIN_FUZZY_NAME)
_KNOWN_DOMAINS = FREE_MAIL_DOMAINS | frozenset(POPULAR_MAIL_DOMAINS)


def _clean_domain(domain: str | None) -> str:
    return (domain or "").strip().rstrip(".").lower()


def registrable_domain(domain: str) -> str | None:
    """The domain a registrant owns (``a.b.co.uk`` -> ``b.co.uk``), None for a bare suffix."""
    return _PSL.privatesuffix(_clean_domain(domain)) if domain else None


def is_disposable(domain: str | None) -> bool:
    """True when the domain or a parent down to its registrable domain is on the blocklist."""
    host = _clean_domain(domain)
    if not host:
        return False
    labels = host.split(".")
    floor = registrable_domain(host) or host
    for start in range(len(labels) - floor.count(".")):
        if ".".join(labels[start:]) in DISPOSABLE_DOMAINS:
            return True
    return False


def is_role_account(local_part: str | None) -> bool:
    """True for a function mailbox (``info``, ``No-Reply``, ``support+eu``); see ROLE_LOCAL_PARTS."""
    if not local_part:
        return False
    base = local_part.strip().lower().split("+", 1)[0]
    return _SEPARATORS.sub("", base) in _ROLE_KEYS


def is_free_mail(domain: str | None) -> bool:
    """True for a free mailbox provider's domain (``gmail.com``, ``yahoo.co.uk``)."""
    host = _clean_domain(domain)
    if host in FREE_MAIL_DOMAINS:
        return True
    brand, _, suffix = host.partition(".")
    return (brand in FREE_MAIL_BRANDS and suffix not in COM_LOOKALIKE_TLDS
            and _PSL.publicsuffix(host, accept_unknown=False) == suffix)


def _fix_tld(host: str) -> str:
    name, _, tld = host.rpartition(".")
    if name and tld in TLD_TYPOS and _PSL.publicsuffix(host, accept_unknown=False) is None:
        return f"{name}.{TLD_TYPOS[tld]}"
    return host


def _max_edits(target: str) -> int:
    return 2 if len(target.split(".")[0]) >= MIN_TWO_EDIT_NAME else 1


def _closest_popular(host: str) -> str | None:
    found = process.extractOne(host, _FUZZY_TARGETS, scorer=DamerauLevenshtein.distance,
                               score_cutoff=2)
    if found is None:
        return None
    target, distance, _ = found
    return target if distance <= _max_edits(target) else None


def typo_suggestion(domain: str | None) -> str | None:
    """Suggested domain for a likely typo (``gmial.com`` -> ``gmail.com``), else None.

    Known mail domains are never corrected. A non-existent TLD close to com/net/org is fixed
    first (``hotmai.con`` -> ``hotmai.com``), then the result is compared with popular mail
    domains (1 edit, 2 for names of 8+ letters). A real TLD is only corrected as part of a
    popular domain (``gmail.co`` -> ``gmail.com``, but ``startup.co`` stays).
    """
    host = _clean_domain(domain)
    if "." not in host or host in _KNOWN_DOMAINS or is_free_mail(host):
        return None
    fixed = _fix_tld(host)
    if fixed in _KNOWN_DOMAINS:
        return fixed
    closest = _closest_popular(fixed)
    if closest is not None:
        return closest
    return fixed if fixed != host else None


def address_flags(contacts: pl.DataFrame) -> pl.DataFrame:
    """Add ``disposable``, ``role_account``, ``free_mail`` and ``typo_suggestion`` columns.

    Reads ``email_key`` (``local@domain``; the domain is what follows the last ``@``). A
    null ``email_key`` gives null flags; a key without ``@`` is all local part. The
    ``typo_suggestion`` column holds the full suggested address (``ann@gmail.com``), the
    scalar :func:`typo_suggestion` a domain.
    """
    if "email_key" not in contacts.columns:
        raise ValueError("address_flags: input frame has no 'email_key' column")
    dtype = contacts.schema["email_key"]
    if dtype not in (pl.String, pl.Null):
        raise ValueError(f"address_flags: 'email_key' must be String, got {dtype}")
    contacts = contacts.with_columns(pl.col("email_key").cast(pl.String))
    email = pl.col("email_key")
    has_at = email.str.contains("@", literal=True)
    split = contacts.select(
        local=pl.when(has_at).then(email.str.extract(r"^(.*)@", 1)).otherwise(email),
        domain=pl.when(email.is_not_null()).then(email_domain_expr(email).fill_null("")),
    )
    local, domain = split.get_column("local"), split.get_column("domain")
    suggested = map_distinct(domain, typo_suggestion, pl.String)
    return contacts.with_columns(
        disposable=map_distinct(domain, is_disposable, pl.Boolean),
        role_account=_role_account_series(local),
        free_mail=map_distinct(domain, is_free_mail, pl.Boolean),
        typo_suggestion=pl.concat_str(local, pl.lit("@"), suggested),
    )


def _role_account_series(local: pl.Series) -> pl.Series:
    """Vectorised :func:`is_role_account` (local parts are mostly distinct: no per-value map)."""
    base = (local.str.strip_chars().str.to_lowercase().str.replace(r"\+.*$", "")
            .str.replace_all(r"[-_.]", ""))
    return base.is_in(list(_ROLE_KEYS)).alias("role_account")
