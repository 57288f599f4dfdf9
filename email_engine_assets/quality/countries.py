"""Country: ISO 3166-1 alpha-2 codes from what people type, and from an address's ccTLD.

Codes, English names and names in a dozen languages come from ``pycountry`` (ISO 3166-1 and
its translations); a short alias table adds what people type that ISO does not list
("UK", "USA", "Holland", "Ivory Coast", ...).
"""

from __future__ import annotations

import gettext
import re
import unicodedata
from functools import cache

import idna
import pycountry
from publicsuffixlist import PublicSuffixList

from email_engine_assets.tenancy.languages import name_key

# Languages whose country names are read, besides English.
NAME_LOCALES: tuple[str, ...] = ("fr", "de", "es", "it", "pt", "pt_BR", "nl", "ru", "zh_CN",
                                 "zh_TW", "ar", "hi")

ALIASES: dict[str, str] = {
    "uk": "GB", "u.k.": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "grande bretagne": "GB",
    "angleterre": "GB", "ecosse": "GB", "royaume uni": "GB", "großbritannien": "GB",
    "england uk": "GB", "inglaterra": "GB", "gran bretaña": "GB",
    "usa": "US", "us": "US", "u.s.": "US", "u.s.a.": "US", "america": "US",
    "united states of america": "US", "etats unis": "US", "etats unis d'amerique": "US",
    "eeuu": "US", "ee.uu.": "US", "amerique": "US",
    "uae": "AE", "emirates": "AE", "emirats arabes unis": "AE",
    "holland": "NL", "the netherlands": "NL", "pays bas": "NL",
    "russia": "RU", "russie": "RU", "russland": "RU", "rusia": "RU", "россия": "RU",
    "south korea": "KR", "korea": "KR", "coree du sud": "KR", "north korea": "KP",
    "vietnam": "VN", "czech republic": "CZ", "turkey": "TR", "turquie": "TR", "türkei": "TR",
    "ivory coast": "CI", "cote d'ivoire": "CI", "cote divoire": "CI",
    "macedonia": "MK", "swaziland": "SZ", "burma": "MM", "cape verde": "CV",
    "vatican": "VA", "vatican city": "VA", "palestine": "PS", "taiwan": "TW", "macau": "MO",
    "hong kong": "HK", "laos": "LA", "syria": "SY", "iran": "IR", "bolivia": "BO",
    "venezuela": "VE", "tanzania": "TZ", "moldova": "MD", "brunei": "BN",
    "congo kinshasa": "CD", "drc": "CD", "rdc": "CD", "congo brazzaville": "CG",
    "kosovo": "XK", "suisse": "CH", "schweiz": "CH", "svizzera": "CH",
    "deutschland": "DE", "españa": "ES", "espana": "ES", "brasil": "BR", "méxico": "MX",
    "chine": "CN", "中国": "CN", "中國": "CN", "maroc": "MA", "algerie": "DZ", "tunisie": "TN",
}

# ccTLDs used as generic names (startups, media, personal sites): a domain under one of them
# says nothing about where its owner lives. Under a country's own second level
# (``uniandes.edu.co``, ``gov.ai``) they still count.
GENERIC_CCTLDS: frozenset[str] = frozenset({
    "ac", "ai", "cc", "co", "fm", "gg", "io", "la", "ly", "me", "ms", "nu", "sh", "so", "tk",
    "to", "tv", "vc", "ws", "ml", "ga", "cf", "gq",
})

# ccTLDs that are not the country's ISO code, and internationalised ccTLDs (punycode).
TLD_COUNTRY: dict[str, str] = {
    "uk": "GB",
    "xn--p1ai": "RU",  # .рф
    "xn--fiqs8s": "CN",  # .中国
    "xn--fiqz9s": "CN",  # .中國
    "xn--j6w193g": "HK",  # .香港
    "xn--kprw13d": "TW",  # .台湾
    "xn--kpry57d": "TW",  # .台灣
    "xn--mgbaam7a8h": "AE",  # .امارات
    "xn--mgberp4a5d4ar": "SA",  # .السعودية
    "xn--wgbh1c": "EG",  # .مصر
    "xn--h2brj9c": "IN",  # .भारत
    "xn--90ais": "BY",  # .бел
    "xn--80ao21a": "KZ",  # .қаз
}

_PSL = PublicSuffixList()
_ALPHA = re.compile(r"^[a-z]+\Z")
_LEADING_THE = re.compile(r"^the\s+", re.IGNORECASE)


def country_key(value: str) -> str:
    """Fold a country name or code for lookup (see :func:`languages.name_key`)."""
    return name_key(unicodedata.normalize("NFKC", value))


def _name_variants(country: object) -> list[str]:
    names = [getattr(country, field, None) for field in ("name", "official_name", "common_name")]
    variants = [name for name in names if name]
    for name in list(variants):
        if ", " in name:  # "Korea, Republic of" -> "Republic of Korea"
            head, _, tail = name.partition(", ")
            variants.append(f"{tail} {head}")
    return variants


@cache
def _name_index() -> dict[str, str]:
    """Folded name -> alpha-2; names that two countries share in some language are dropped."""
    index: dict[str, str] = {}
    ambiguous: set[str] = set()
    translators = [gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[locale],
                                       fallback=True) for locale in NAME_LOCALES]
    for country in pycountry.countries:
        for name in _name_variants(country):
            for text in [name, *(t.gettext(name) for t in translators)]:
                for key in {country_key(text), country_key(re.sub(r"^the ", "", text.lower()))}:
                    if index.setdefault(key, country.alpha_2) != country.alpha_2:
                        ambiguous.add(key)
    for key in ambiguous:
        del index[key]
    return index


_ALIAS_INDEX: dict[str, str] = {country_key(alias): code for alias, code in ALIASES.items()}


def parse_country(raw: str | None) -> str | None:
    """ISO 3166-1 alpha-2 code from a code (``fr``, ``FRA``) or a name, None when unknown."""
    if raw is None:
        return None
    text = _LEADING_THE.sub("", unicodedata.normalize("NFKC", raw).strip())
    if not text:
        return None
    key = country_key(text)
    if key in _ALIAS_INDEX:
        return _ALIAS_INDEX[key]
    if _ALPHA.match(key) and len(key) in (2, 3):
        found = pycountry.countries.get(**{f"alpha_{len(key)}": key.upper()})
        if found is not None:
            return found.alpha_2
    return _name_index().get(key)


def country_from_tld(domain: str | None) -> str | None:
    """Country of a domain's ccTLD (``.fr`` -> FR, ``.co.uk`` -> GB), None for generic TLDs."""
    if not domain:
        return None
    host = domain.strip().rstrip(".").lower()
    tld = host.rpartition(".")[2]
    if not tld or tld == host:
        return None
    if not tld.isascii():
        try:
            tld = idna.encode(tld).decode("ascii")
        except idna.IDNAError:
            return None
    if tld in GENERIC_CCTLDS and "." not in (_PSL.publicsuffix(host) or tld):
        return None
    if tld in TLD_COUNTRY:
        return TLD_COUNTRY[tld]
    if len(tld) == 2 and _ALPHA.match(tld):
        found = pycountry.countries.get(alpha_2=tld.upper())
        return found.alpha_2 if found is not None else None
    return None
