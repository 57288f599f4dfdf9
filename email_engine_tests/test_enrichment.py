"""Contact enrichment: language, country and phone parsers, and the frame entry point."""

from __future__ import annotations

import random

import phonenumbers
import polars as pl
import pytest

from email_engine_assets.quality.countries import country_from_tld, parse_country
from email_engine_assets.quality.enrichment import (
    OUTPUT_COLUMNS,
    PhoneResult,
    country_from_phone,
    enrich_contacts,
    normalise_phone,
)
from email_engine_assets.quality.international_phones import read_international
from email_engine_assets.tenancy.languages import (
    FALLBACK_LANGUAGE,
    SUPPORTED_LANGUAGES,
    language_for_country,
    parse_language,
    resolve_default_language,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fr", "fr"), ("FR", "fr"), ("  fr-FR ", "fr"), ("PT_br", "pt"), ("pt_BR", "pt"),
        ("zh-Hans", "zh"), ("zh-Hant-TW", "zh"), ("en-US", "en"), ("ar-EG", "ar"),
        ("fra", "fr"), ("fre", "fr"), ("deu", "de"), ("ger", "de"), ("spa", "es"),
        ("por", "pt"), ("rus", "ru"), ("zho", "zh"), ("chi", "zh"), ("hin", "hi"),
        ("ara", "ar"), ("eng", "en"), ("cmn", "zh"),
        ("French", "fr"), ("français", "fr"), ("FRANCAIS", "fr"), ("Deutsch", "de"),
        ("español", "es"), ("Espanol", "es"), ("português", "pt"), ("русский", "ru"),
        ("中文", "zh"), ("हिन्दी", "hi"), ("العربية", "ar"), ("Chinese", "zh"),
        ("Mandarin", "zh"), ("Hindi", "hi"), ("Arabic", "ar"), ("Anglais", "en"),
        ("Portuguese (Brazil)", "pt"), ("English - US", "en"), ("Chinese Simplified", "zh"),
        # not one of the nine, or not a language: None, the caller goes on to the next rule
        ("it", None), ("Italian", None), ("ita", None), ("xx", None), ("French/German", None),
        ("", None), ("   ", None), (None, None), ("12", None),
    ],
)
def test_parse_language(raw, expected):
    assert parse_language(raw) == expected


def test_supported_languages_are_the_nine():
    assert set(SUPPORTED_LANGUAGES) == {"fr", "en", "es", "de", "pt", "ru", "zh", "hi", "ar"}
    assert FALLBACK_LANGUAGE == "en"
    assert all(parse_language(code) == code for code in SUPPORTED_LANGUAGES)


@pytest.mark.parametrize(
    ("cc", "expected"),
    [
        ("FR", "fr"), ("fr", "fr"), ("BE", "fr"), ("CH", "de"), ("CA", "en"), ("IN", "en"),
        ("ES", "es"), ("MX", "es"), ("AR", "es"), ("CO", "es"), ("DE", "de"), ("AT", "de"),
        ("PT", "pt"), ("BR", "pt"), ("AO", "pt"), ("MZ", "pt"), ("RU", "ru"), ("BY", "ru"),
        ("KZ", "ru"), ("CN", "zh"), ("TW", "zh"), ("HK", "zh"), ("SG", "en"), ("SA", "ar"),
        ("AE", "ar"), ("EG", "ar"), ("MA", "ar"), ("DZ", "ar"), ("TN", "ar"), ("US", "en"),
        ("GB", "en"), ("IE", "en"), ("AU", "en"), ("NZ", "en"),
        ("IT", None), ("JP", None), ("", None), (None, None),
    ],
)
def test_language_for_country(cc, expected):
    assert language_for_country(cc) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("de", "de"), ("Deutsch", "de"), ("it", "en"), ("", "en"), (None, "en")],
)
def test_resolve_default_language(raw, expected):
    assert resolve_default_language(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fr", "FR"), ("FR", "FR"), ("FRA", "FR"), (" France ", "FR"), ("france", "FR"),
        ("Germany", "DE"), ("Allemagne", "DE"), ("Deutschland", "DE"), ("Alemania", "DE"),
        ("United States", "US"), ("USA", "US"), ("U.S.A.", "US"), ("États-Unis", "US"),
        ("Etats Unis", "US"), ("UK", "GB"), ("United Kingdom", "GB"), ("Great Britain", "GB"),
        ("Royaume-Uni", "GB"), ("GBR", "GB"), ("España", "ES"), ("Espagne", "ES"),
        ("Brasil", "BR"), ("Suisse", "CH"), ("The Netherlands", "NL"), ("Holland", "NL"),
        ("Korea, Republic of", "KR"), ("South Korea", "KR"), ("Côte d'Ivoire", "CI"),
        ("Ivory Coast", "CI"), ("Россия", "RU"), ("中国", "CN"), ("Türkiye", "TR"),
        ("Turkey", "TR"), ("Vietnam", "VN"), ("The Bahamas", "BS"),
        ("xx", None), ("Atlantis", None), ("", None), ("   ", None), (None, None),
    ],
)
def test_parse_country(raw, expected):
    assert parse_country(raw) == expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("acme.fr", "FR"), ("a.b.de", "DE"), ("acme.uk", "GB"), ("acme.co.uk", "GB"),
        ("acme.com.br", "BR"), ("ACME.FR.", "FR"), ("uniandes.edu.co", "CO"),
        ("acme.xn--p1ai", "RU"), ("acme.рф", "RU"),
        ("acme.com", None), ("acme.org", None), ("acme.io", None), ("acme.co", None),
        ("acme.tv", None), ("acme.me", None), ("acme.ai", None), ("acme.eu", None),
        ("localhost", None), ("", None), (None, None),
    ],
)
def test_country_from_tld(domain, expected):
    assert country_from_tld(domain) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+33 6 12 34 56 78", None, PhoneResult("+33612345678", "FR", True, "+33 6 12 34 56 78")),
        ("06 12 34 56 78", "FR", PhoneResult("+33612345678", "FR", True, "06 12 34 56 78")),
        ("06 12 34 56 78", "fr", PhoneResult("+33612345678", "FR", True, "06 12 34 56 78")),
        ("0033 6 12 34 56 78", None, PhoneResult("+33612345678", "FR", True, "0033 6 12 34 56 78")),
        ("+33 6 12 34 56 78", "US", PhoneResult("+33612345678", "FR", True, "+33 6 12 34 56 78")),
        ("(416) 555-0199", "CA", PhoneResult("+14165550199", "CA", True, "(416) 555-0199")),
        ("06 12 34 56 78", None, PhoneResult(None, None, False, "06 12 34 56 78")),
        ("garbage", "FR", PhoneResult(None, None, False, "garbage")),
        ("+33 1", None, PhoneResult(None, None, False, "+33 1")),
        ("", "FR", PhoneResult(None, None, False, "")),
    ],
)
def test_normalise_phone(raw, region, expected):
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33 6 12 34 56 78", "FR"), ("0033612345678", "FR"), ("+1 416 555 0199", "CA"),
        ("+1 212 555 0199", "US"), ("+44 20 7946 0958", "GB"),
        ("06 12 34 56 78", None), ("+800 1234 5678", None), ("+", None), (None, None),
    ],
)
def test_country_from_phone(raw, expected):
    assert country_from_phone(raw) == expected


def _contacts(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"contact_id": pl.Int64, "email_key": pl.String, "language_raw": pl.String,
                      "country_raw": pl.String, "phone_raw": pl.String}, orient="row")


RULE_CASES = [
    # id, email, language, country, phone -> language, language_rule, country, country_rule, e164, valid
    ((1, "a@acme.fr", "  fr-FR ", None, "06 12 34 56 78"),
     ("fr", "field", "FR", "tld", "+33612345678", True)),
    ((2, "b@gmail.com", None, "USA", "+33 6 12 34 56 78"),
     ("en", "country", "US", "field", "+33612345678", True)),
    ((3, "c@acme.com", "PT_br", None, "+33 6 12 34 56 78"),
     ("pt", "field", "FR", "phone", "+33612345678", True)),
    ((4, "d@acme.de", None, "Italy", None), ("de", "tld", "IT", "field", None, None)),
    ((5, "e@acme.it", "it", None, "garbage"), ("es", "default", "IT", "tld", None, False)),
    ((6, "f@acme.com", None, None, "06 12 34 56 78"), ("es", "default", None, None, None, False)),
    ((7, None, None, None, None), ("es", "default", None, None, None, None)),
    ((8, "g@acme.com.br", "", "  ", "   "), ("pt", "country", "BR", "tld", None, None)),
    ((9, "h@acme.com", None, None, "0049 30 123456"),
     ("de", "country", "DE", "phone", "+4930123456", True)),
    ((10, "i@acme.io", "Italian", "Allemagne", "030 123456"),
     ("de", "country", "DE", "field", "+4930123456", True)),
]


def test_enrich_contacts_rule_order():
    rows = [case[0] for case in RULE_CASES]
    result = enrich_contacts(_contacts(rows), "español")
    assert result.columns == list(OUTPUT_COLUMNS)
    assert result.get_column("contact_id").to_list() == [r[0] for r in rows]
    assert result.get_column("phone_raw").to_list() == [r[4] for r in rows]
    got = result.select("language", "language_rule", "country", "country_rule", "phone_e164",
                        "phone_valid").rows()
    assert got == [case[1] for case in RULE_CASES]


@pytest.mark.parametrize(("default", "expected"), [("de", "de"), ("it", "en"), ("", "en")])
def test_enrich_contacts_default_language(default, expected):
    result = enrich_contacts(_contacts([(1, "a@acme.com", None, None, None)]), default)
    assert result.row(0) == (1, expected, "default", None, None, None, None, None)


def _expected_row(email, language_raw, country_raw, phone_raw, default):
    """The documented rule order, written with the scalar functions."""
    domain = email.rpartition("@")[2] if email else None
    tld = country_from_tld(domain)
    phone_country = country_from_phone(phone_raw)
    country = parse_country(country_raw) or phone_country or tld
    language = (parse_language(language_raw) or language_for_country(country)
                or language_for_country(tld) or default)
    phone = normalise_phone(phone_raw, country) if phone_raw and phone_raw.strip() else None
    return (language, country, phone.e164 if phone else None, phone.valid if phone else None)


def test_enrich_contacts_agrees_with_scalars_on_shuffled_duplicates():
    emails = ["a@acme.fr", "b@acme.de", "c@gmail.com", "d@acme.co.uk", None, "e@acme.io"]
    languages = [None, "FR", "Deutsch", "it", "", "pt_BR", "中文"]
    countries = [None, "Germany", "uk", "Brasil", "xx", "  "]
    phones = [None, "06 12 34 56 78", "+44 20 7946 0958", "garbage", "030 123456", ""]
    rows = [(i, emails[i % 6], languages[i % 7], countries[i % 5], phones[(i * 7) % 6])
            for i in range(420)]
    rows.reverse()
    result = enrich_contacts(_contacts(rows), "fr")
    assert result.get_column("contact_id").to_list() == [r[0] for r in rows]
    got = result.select("language", "country", "phone_e164", "phone_valid").rows()
    assert got == [_expected_row(*row[1:], "fr") for row in rows]
    assert result.get_column("language").null_count() == 0


def test_enrich_contacts_rejects_bad_input():
    with pytest.raises(ValueError, match="phone_raw"):
        enrich_contacts(pl.DataFrame({"contact_id": [1], "email_key": ["a@b.fr"],
                                      "language_raw": [None], "country_raw": [None]}), "en")
    with pytest.raises(ValueError, match="country_raw"):
        enrich_contacts(pl.DataFrame({"contact_id": [1], "email_key": ["a@b.fr"],
                                      "language_raw": ["fr"], "country_raw": [33],
                                      "phone_raw": [None]}), "en")


def test_enrich_contacts_empty_frame():
    result = enrich_contacts(_contacts([]), "fr")
    assert result.columns == list(OUTPUT_COLUMNS)
    assert result.height == 0


def test_enrich_contacts_all_null_columns():
    frame = pl.DataFrame({"contact_id": [1, 2], "email_key": [None, None],
                          "language_raw": [None, None], "country_raw": [None, None],
                          "phone_raw": [None, None]})
    result = enrich_contacts(frame, "fr")
    assert result.rows() == [(1, "fr", "default", None, None, None, None, None),
                             (2, "fr", "default", None, None, None, None, None)]
    assert result.schema["phone_valid"] == pl.Boolean


# --- phones in international form read in bulk, against phonenumbers one by one ------------------


def _random_phones(count: int, seed: int) -> list[str]:
    """Phones of every calling code: phonenumbers' example numbers, the same with one digit
    changed, and random digit strings of 0-18 digits; written with ``+`` or ``00``, spaces, dots
    and dashes, national prefixes and brackets (some the bulk reader handles, some it leaves)."""
    rng = random.Random(seed)
    phones = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            phones.append(f"+{example.country_code} {nsn}")
            digits = list(nsn)
            digits[rng.randrange(len(digits))] = str(rng.randrange(10))
            phones.append(f"00{example.country_code}{''.join(digits)}")
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    while len(phones) < count:
        number = str(rng.choice(codes)) + "".join(str(rng.randrange(10)) for _ in range(rng.randint(0, 18)))
        number = number[0] + "".join((rng.choice(" -.") if rng.random() < 0.2 else "") + c for c in number[1:])
        prefix = rng.choice(["+", "+", "+", "00", " +", "+ ", "00 ", "+0", "(+", "+(0)"])
        phones.append(prefix + number + rng.choice(["", "", "", "", " ", "-", " x12", "\t"]))
    return phones


def test_international_phones_read_in_bulk_as_phonenumbers_reads_them():
    phones = _random_phones(30_000, seed=6)
    read = read_international(pl.Series(phones, dtype=pl.String))
    handled = read.filter(pl.col("handled"))
    assert read.height == len(phones)
    # Enough of each kind for the comparison to mean something: valid, invalid, and left to phonenumbers.
    assert handled.height > 10_000 and handled["phone_valid"].sum() > 800 and (~handled["phone_valid"]).sum() > 5_000
    assert read.height - handled.height > 5_000
    mismatches = []
    for raw, (is_handled, valid, e164, country) in zip(phones, read.iter_rows()):
        if not is_handled:
            continue
        one = normalise_phone(raw, None)
        if (valid, e164, country) != (one.valid, one.e164, country_from_phone(raw)):
            mismatches.append((raw, (valid, e164, country), (one.valid, one.e164, country_from_phone(raw))))
    assert mismatches == []


@pytest.mark.parametrize(
    ("raw", "handled"),
    [
        ("+33 6 12 34 56 78", True), ("0033.6.12.34.56.78", True), ("  +1-416-555-0199 ", True),
        ("+800 1234 5678", True), ("+33 1", False),  # national number too short: phonenumbers refuses it
        ("+33 06 12 34 56 78", False),  # a national prefix phonenumbers may strip
        ("+33 (0)6 12 34 56 78", False), ("06 12 34 56 78", False), ("+0033 6 12", False),
        ("+33 6 12 34 56 78 x12", False), ("\t+33 6 12 34 56 78", False), ("", False), (None, False),
    ],
)
def test_international_phones_handle_only_the_clean_form(raw, handled):
    assert read_international(pl.Series([raw], dtype=pl.String))["handled"].to_list() == [handled]


def test_enrich_contacts_same_phones_with_the_bulk_reader():
    """Whole rows (country from the phone, then the phone read with that country) agree with the scalars."""
    phones = _random_phones(4_000, seed=7) + ["06 12 34 56 78", "030 123456", "garbage", "", None]
    rows = [(i, "x@acme.com", None, None, phone) for i, phone in enumerate(phones)]
    result = enrich_contacts(_contacts(rows), "fr")
    got = result.select("language", "country", "phone_e164", "phone_valid").rows()
    assert got == [_expected_row(*row[1:], "fr") for row in rows]
    assert result["phone_valid"].sum() > 100
