"""Contact enrichment: language, country and phone (E.164), resolved by ordered rules.

Country  <- the country field, else the calling code of a phone written in international form
            (``+33 ...`` / ``0033 ...``), else the ccTLD of the address's domain.
Language <- the language field, else the resolved country's main language, else the ccTLD
            country's language, else the tenant default (itself falling back to ``en``).
Phone    <- parsed with ``phonenumbers``, the resolved country as region hint.

Every rule runs once per distinct raw value and is mapped back onto the rows, so the cost
follows the number of distinct values, not of contacts. Phones in clean international form are
read in bulk by :mod:`~email_engine_assets.quality.international_phones` (same results); only the
others are parsed one by one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

import phonenumbers
import polars as pl

from email_engine_assets.quality.countries import country_from_tld, parse_country
from email_engine_assets.quality.international_phones import (
    NON_GEOGRAPHIC,
    read_international,
)
from email_engine_assets.tenancy.languages import (
    language_for_country,
    parse_language,
    resolve_default_language,
)
from email_engine_resources.email_domain import email_domain_expr

INPUT_COLUMNS = ("contact_id", "email_key", "language_raw", "country_raw", "phone_raw")
OUTPUT_COLUMNS = ("contact_id", "language", "language_rule", "country", "country_rule",
                  "phone_e164", "phone_valid", "phone_raw")
_INTERNATIONAL = re.compile(r"^\s*(?:\+|00)")


@dataclass(frozen=True, slots=True)
class PhoneResult:
    """One phone number: ``e164`` and ``country`` only when the number is valid."""

    e164: str | None
    country: str | None
    valid: bool
    raw: str


def _parse_key(raw: str, region: str | None) -> tuple[str, str | None]:
    text = raw.strip()
    if text.startswith("00"):  # the international prefix of most of the world, written out
        text = "+" + text[2:]
    # A number in international form reads the same in every region: one parse serves all.
    return text, None if text.startswith("+") else region


@functools.lru_cache(maxsize=1 << 17)
def _parsed(text: str, region: str | None) -> tuple[phonenumbers.PhoneNumber | None, bool]:
    """(number, valid) of a phone; cached because the country rule and the E.164 rule both parse
    each phone, and parsing is most of the cost of enrichment. The numbers are never modified."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, False
    return number, phonenumbers.is_valid_number(number)


def _valid_number(raw: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    number, valid = _parsed(*_parse_key(raw, region.upper() if region else None))
    return number if valid else None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_phone(raw: str, region: str | None) -> PhoneResult:
    """Parse a phone number to E.164; unparseable or invalid numbers keep ``raw`` only.

    ``region`` (ISO alpha-2) is how a national number (``06 12 34 56 78``) is read; numbers
    in international form ignore it.
    """
    number = _valid_number(raw, region)
    if number is None:
        return PhoneResult(e164=None, country=None, valid=False, raw=raw)
    country = phonenumbers.region_code_for_number(number)
    return PhoneResult(e164=_e164(number), valid=True, raw=raw,
                       country=None if country in NON_GEOGRAPHIC else country)


def country_from_phone(raw: str | None) -> str | None:
    """Country of a phone written in international form; None for national numbers.

    A valid number gives its exact region (``+1 416 ...`` -> CA); otherwise the main region
    of its calling code (``+33 1`` -> FR).
    """
    if not raw or not _INTERNATIONAL.match(raw):
        return None
    number, valid = _parsed(*_parse_key(raw, None))
    if number is None:
        return None
    if valid:
        region = phonenumbers.region_code_for_number(number)
    else:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return None if region in NON_GEOGRAPHIC else region


def map_distinct(column: pl.Series, function: Callable, dtype: pl.DataType) -> pl.Series:
    """Apply ``function`` once per distinct non-null value and map the column through it.

    Nulls stay null. This is what keeps enrichment fast: contacts repeat the same raw values.
    """
    mapping = {value: function(value) for value in column.drop_nulls().unique().to_list()}
    return column.replace_strict(mapping, default=None, return_dtype=dtype)


def _first_rule(candidates: dict[str, pl.Series], value: str, rule: str) -> pl.DataFrame:
    """Coalesce the candidates in order into ``value`` and name the one used in ``rule``."""
    names = list(candidates)
    chosen = pl.when(pl.col(names[0]).is_not_null()).then(pl.lit(names[0]))
    for name in names[1:]:
        chosen = chosen.when(pl.col(name).is_not_null()).then(pl.lit(name))
    return pl.DataFrame(candidates).select(
        pl.coalesce(names).cast(pl.String).alias(value),
        chosen.otherwise(pl.lit(None, dtype=pl.String)).alias(rule),
    )


def _check_input(contacts: pl.DataFrame) -> None:
    missing = [name for name in INPUT_COLUMNS if name not in contacts.columns]
    if missing:
        raise ValueError(f"enrich_contacts: missing columns {missing}")
    for name in INPUT_COLUMNS[1:]:
        dtype = contacts.schema[name]
        if dtype not in (pl.String, pl.Null):
            raise ValueError(f"enrich_contacts: column {name!r} must be String, got {dtype}")


def _slow_phones(phone_raw: pl.Series, international: pl.DataFrame) -> pl.Series:
    """The phones the bulk reader did not handle (the others null): those ``phonenumbers`` parses."""
    return international.select(pl.when(~pl.col("handled")).then(phone_raw).alias(phone_raw.name)).to_series()


def _resolve_countries(contacts: pl.DataFrame, tld_country: pl.Series, international: pl.DataFrame) -> pl.DataFrame:
    field = map_distinct(contacts.get_column("country_raw"), parse_country, pl.String)
    slow = map_distinct(_slow_phones(contacts.get_column("phone_raw"), international), country_from_phone, pl.String)
    phone = international.select(pl.when(pl.col("handled")).then(pl.col("phone_country")).otherwise(slow)).to_series()
    return _first_rule({"field": field, "phone": phone, "tld": tld_country},
                       "country", "country_rule")


def _resolve_languages(contacts: pl.DataFrame, country: pl.Series, tld_country: pl.Series,
                       default: str) -> pl.DataFrame:
    field = map_distinct(contacts.get_column("language_raw"), parse_language, pl.String)
    by_country = map_distinct(country, language_for_country, pl.String)
    by_tld = map_distinct(tld_country, language_for_country, pl.String)
    fallback = pl.repeat(default, contacts.height, dtype=pl.String, eager=True)
    return _first_rule({"field": field, "country": by_country, "tld": by_tld,
                        "default": fallback}, "language", "language_rule")


def _phones(phone_raw: pl.Series, country: pl.Series, international: pl.DataFrame) -> pl.DataFrame:
    """Phones the bulk reader handled as it read them; the others parsed once per distinct
    (phone, region) pair. Blank phones count as no phone."""
    slow = _slow_phones(phone_raw, international)
    pairs = pl.DataFrame({"phone_raw": slow, "region": country}).with_row_index("_row")
    present = pairs.filter(pl.col("phone_raw").str.strip_chars() != "")
    distinct = present.select("phone_raw", "region").unique()
    numbers = [_valid_number(raw, region) for raw, region in distinct.iter_rows()]
    parsed = distinct.with_columns(
        phone_e164=pl.Series([_e164(n) if n else None for n in numbers], dtype=pl.String),
        phone_valid=pl.Series([n is not None for n in numbers], dtype=pl.Boolean),
    )
    joined = pairs.join(parsed, on=["phone_raw", "region"], how="left", nulls_equal=True,
                        maintain_order="left")
    parsed = joined.sort("_row")
    return international.select(
        pl.when(pl.col("handled")).then(pl.col(name)).otherwise(parsed[name]).alias(name)
        for name in ("phone_e164", "phone_valid")
    )


def enrich_contacts(contacts: pl.DataFrame, default_language: str) -> pl.DataFrame:
    """Input columns: contact_id (Int64), email_key (String, 'local@domain' punycode lower
    case), language_raw, country_raw, phone_raw (String, nullable).

    Output (same rows, same order): contact_id, language (one of the nine, never null),
    language_rule ("field"|"country"|"tld"|"default"), country (alpha-2 or null),
    country_rule ("field"|"phone"|"tld"|None), phone_e164 (nullable), phone_valid (Boolean,
    null when no phone), phone_raw.
    """
    _check_input(contacts)
    contacts = contacts.with_columns(pl.col(name).cast(pl.String) for name in INPUT_COLUMNS[1:])
    domain = contacts.select(email_domain_expr(pl.col("email_key"))).to_series()
    tld_country = map_distinct(domain, country_from_tld, pl.String)
    international = read_international(contacts.get_column("phone_raw"))
    countries = _resolve_countries(contacts, tld_country, international)
    country = countries.get_column("country")
    languages = _resolve_languages(contacts, country, tld_country,
                                   resolve_default_language(default_language))
    phones = _phones(contacts.get_column("phone_raw"), country, international)
    return pl.concat(
        [contacts.select("contact_id"), languages, countries, phones,
         contacts.select("phone_raw")],
        how="horizontal",
    ).select(OUTPUT_COLUMNS)
