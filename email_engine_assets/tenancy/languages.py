"""Language: the nine languages campaigns are written in, and how raw values map to them.

The seed's Language value object, as plain functions: a contact's language is one of
``SUPPORTED_LANGUAGES`` (ISO 639-1 codes) and anything else falls back to
``FALLBACK_LANGUAGE``. :func:`parse_language` reads what people type in a language column
(codes, locale tags, ISO 639-2/3 codes, names in English, French, German, Spanish and in the
language itself); :func:`language_for_country` gives a country's main language among the nine.
"""

from __future__ import annotations

import re
import unicodedata

SUPPORTED_LANGUAGES: tuple[str, ...] = ("fr", "en", "es", "de", "pt", "ru", "zh", "hi", "ar")
FALLBACK_LANGUAGE = "en"

# ISO 639-1, 639-2/T, 639-2/B and the ISO 639-3 individual languages usually meant by the
# macrolanguage (Mandarin, Cantonese, Standard/Egyptian/Moroccan Arabic).
_CODES: dict[str, str] = {
    "fr": "fr", "fra": "fr", "fre": "fr",
    "en": "en", "eng": "en",
    "es": "es", "spa": "es",
    "de": "de", "deu": "de", "ger": "de",
    "pt": "pt", "por": "pt",
    "ru": "ru", "rus": "ru",
    "zh": "zh", "zho": "zh", "chi": "zh", "cmn": "zh", "yue": "zh",
    "hi": "hi", "hin": "hi",
    "ar": "ar", "ara": "ar", "arb": "ar", "arz": "ar", "ary": "ar",
}

# Names as typed in a form: English, French, German, Spanish, and the language's own name.
_NAMES: dict[str, tuple[str, ...]] = {
    "fr": ("french", "français", "francais", "französisch", "francés"),
    "en": ("english", "anglais", "englisch", "inglés"),
    "es": ("spanish", "espagnol", "spanisch", "español", "castellano", "castilian"),
    "de": ("german", "allemand", "deutsch", "alemán"),
    "pt": ("portuguese", "portugais", "portugiesisch", "portugués", "português", "brazilian"),
    "ru": ("russian", "russe", "russisch", "ruso", "русский", "русский язык"),
    "zh": ("chinese", "mandarin", "cantonese", "chinois", "chinesisch", "chino", "中文",
           "汉语", "漢語", "普通话", "國語", "简体中文", "繁體中文", "繁体中文", "简体", "繁體"),
    "hi": ("hindi", "hindī", "हिन्दी", "हिंदी"),
    "ar": ("arabic", "arabe", "arabisch", "árabe", "العربية", "عربي", "عربى"),
}

# A country's main language among the nine. Decisions for multilingual countries:
# BE -> fr (Dutch is not one of the nine), CH -> de (the majority), CA -> en (the majority),
# LU -> fr (the language of administration and business mail), CM/TD/DJ/KM/HT -> fr,
# LB -> ar, SG -> en (the working language), HK/MO/TW -> zh, KZ/KG -> ru (co-official and the
# common written language), IN -> en: Hindi is the first language of under half of India and
# English is its pan-Indian business language; a contact who wants Hindi says so in the
# language field. Countries whose main language is none of the nine (IT, NL, JP, ...) are absent.
_COUNTRIES_BY_LANGUAGE: dict[str, tuple[str, ...]] = {
    "fr": ("FR", "BE", "LU", "MC", "CD", "CG", "CI", "SN", "ML", "BF", "NE", "GN", "BJ", "TG",
           "CM", "GA", "CF", "TD", "MG", "HT", "DJ", "KM", "BI", "RE", "GP", "MQ", "GF", "YT",
           "PF", "NC", "PM", "WF", "BL", "MF"),
    "en": ("US", "GB", "IE", "AU", "NZ", "CA", "IN", "ZA", "NG", "GH", "KE", "UG", "TZ", "ZM",
           "ZW", "BW", "NA", "SL", "LR", "GM", "JM", "TT", "BS", "BB", "BZ", "GY", "AG", "DM",
           "GD", "KN", "LC", "VC", "MT", "SG", "PH", "PK", "FJ", "PG", "GI", "IM", "JE", "GG",
           "BM", "KY", "VG", "VI", "GU", "AS", "MP", "UM", "FK", "SH", "TC", "AI", "MS", "IO"),
    "es": ("ES", "MX", "AR", "CO", "PE", "VE", "CL", "EC", "GT", "CU", "BO", "DO", "HN", "PY",
           "SV", "NI", "CR", "PA", "UY", "PR", "GQ"),
    "de": ("DE", "AT", "CH", "LI"),
    "pt": ("PT", "BR", "AO", "MZ", "CV", "GW", "ST", "TL"),
    "ru": ("RU", "BY", "KZ", "KG"),
    "zh": ("CN", "TW", "HK", "MO"),
    "hi": (),
    "ar": ("SA", "AE", "EG", "MA", "DZ", "TN", "LY", "SD", "IQ", "SY", "JO", "LB", "KW", "QA",
           "BH", "OM", "YE", "PS", "MR", "EH"),
}
COUNTRY_LANGUAGE: dict[str, str] = {
    country: language
    for language, countries in _COUNTRIES_BY_LANGUAGE.items()
    for country in countries
}

_LOCALE_TAG = re.compile(r"^([a-z]{2,3})(?:-[a-z0-9]{1,8})*\Z")
_NOT_WORD = re.compile(r"[\W_]+")


def name_key(value: str) -> str:
    """Fold a name for lookup: case, Latin accents, spaces and punctuation do not count.

    Combining marks are dropped only after Latin letters, so Devanagari and Arabic vowel
    signs (also combining marks) keep their meaning.
    """
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    kept: list[str] = []
    for char in decomposed:
        if unicodedata.combining(char) and kept and kept[-1].isascii():
            continue
        kept.append(char)
    return _NOT_WORD.sub("", unicodedata.normalize("NFC", "".join(kept)))


_NAME_INDEX: dict[str, str] = {
    name_key(name): language for language, names in _NAMES.items() for name in names
}


def parse_language(raw: str | None) -> str | None:
    """Return the ISO 639-1 code of one of the nine languages, or None.

    None means "not one of the nine": blank input, garbage, and also an explicit language that
    is not supported (``"it"``, ``"Italian"``): the caller then goes on to its next rule
    (country, TLD, tenant default) instead of sending Italian speakers the fallback blindly.
    """
    if raw is None:
        return None
    text = unicodedata.normalize("NFKC", raw).strip().casefold().replace("_", "-")
    if not text:
        return None
    tag = _LOCALE_TAG.match(text)
    if tag:
        return _CODES.get(tag.group(1))
    return _language_from_name(text)


def _language_from_name(text: str) -> str | None:
    """Whole name first ("Français"), then words ("Portuguese (Brazil)", "Chinese Simplified")."""
    whole = _NAME_INDEX.get(name_key(text))
    if whole:
        return whole
    found = {_NAME_INDEX.get(name_key(word)) for word in re.split(r"[\s,;/()\[\]-]+", text)}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def language_for_country(cc: str | None) -> str | None:
    """Main language among the nine for an ISO 3166-1 alpha-2 code, None when none applies."""
    if not cc:
        return None
    return COUNTRY_LANGUAGE.get(cc.strip().upper())


def resolve_default_language(raw: str | None) -> str:
    """A tenant's default language, itself falling back to ``FALLBACK_LANGUAGE``."""
    return parse_language(raw) or FALLBACK_LANGUAGE
