"""Phones written in clean international form (``+33 6 12 34 56 78``), read in bulk.

``phonenumbers`` costs about 50 µs per number in Python (parse, then validity), most of the
enrichment of a large tenant. For a number written as ``+`` or ``00`` then digits separated only
by spaces, dots or dashes, its ``parse(text, None)`` reduces to: the calling code is the first 1-3
digits that name one and the national number is the rest -- unless the national prefix of the
calling code's main region matches at its start (parse may then strip it). ``is_valid_number`` and
``region_code_for_number`` are then regular expressions of the same metadata, which polars runs
per calling code over all rows at once.

Rows outside that form, and rows whose national prefix could be stripped, come back with
``handled`` false and go through ``phonenumbers`` itself. On handled rows the results equal
``phonenumbers``' own; a differential test compares both on many random numbers of every
calling code.
"""

from __future__ import annotations

import polars as pl
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

NON_GEOGRAPHIC = frozenset({"001", "ZZ"})
OUTPUT_SCHEMA = {"handled": pl.Boolean, "phone_valid": pl.Boolean, "phone_e164": pl.String, "phone_country": pl.String}

_CLEAN = r"^ *(?:\+|00)[0-9 .\-]*[0-9] *$"
_MAX_INPUT_LENGTH = 250  # phonenumbers refuses longer input
_NSN_LENGTHS = (2, 17)  # phonenumbers' shortest and longest national significant number
_CALLING_CODES = [str(code) for code in COUNTRY_CODE_TO_REGION_CODE]
_NSN = pl.col("nsn")


def _matches(desc) -> pl.Expr:
    """``_is_number_matching_desc``: a possible length of the desc, and its whole pattern."""
    if desc is None or not desc.national_number_pattern:
        return pl.lit(False)
    expr = _NSN.str.contains(f"^(?:{desc.national_number_pattern})$")
    if desc.possible_length:
        expr = _NSN.str.len_chars().is_in(list(desc.possible_length)) & expr
    return expr


def _known_type(metadata) -> pl.Expr:
    """``_number_type_helper(nsn, metadata) != UNKNOWN``."""
    types = [metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
             metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail, metadata.fixed_line]
    if not metadata.same_mobile_and_fixed_line_pattern:
        types.append(metadata.mobile)
    return _matches(metadata.general_desc) & pl.any_horizontal([_matches(desc) for desc in types])


def _region(code: int, regions: tuple[str, ...]) -> pl.Expr:
    """``region_code_for_number``: the only region, else the first whose leading digits or types match."""
    if len(regions) == 1:
        return pl.lit(regions[0], dtype=pl.String)
    chain = None
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            condition = _NSN.str.contains(f"^(?:{metadata.leading_digits})")
        else:
            condition = _known_type(metadata)
        chain = (pl.when(condition) if chain is None else chain.when(condition)).then(pl.lit(region, dtype=pl.String))
    return pl.lit(None, dtype=pl.String) if chain is None else chain.otherwise(pl.lit(None, dtype=pl.String))


def _valid(code: int, regions: tuple[str, ...], region: pl.Expr) -> pl.Expr:
    """``is_valid_number_for_region(number, region)`` for each region the number may get."""
    chain = None
    for candidate in regions:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, candidate.upper())
        if metadata is None or (candidate != "001" and metadata.country_code != code):
            continue
        condition = region == candidate
        chain = (pl.when(condition) if chain is None else chain.when(condition)).then(_known_type(metadata))
    return pl.lit(False) if chain is None else chain.otherwise(pl.lit(False))


def _strippable(metadata) -> pl.Expr:
    """Rows where parse would try to strip a national prefix (``_maybe_strip_national_prefix_carrier_code``)."""
    prefix = metadata.national_prefix_for_parsing
    if not prefix:
        return pl.lit(False)
    return _NSN.str.contains(f"^(?:{prefix})")


def _read_code(code: int, numbers: pl.DataFrame) -> pl.DataFrame:
    """Rows of one calling code (``_row``, ``nsn``) -> ``_row`` and the output columns."""
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    main = regions[0]
    main_metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, main)
    numbers = numbers.filter(~_strippable(main_metadata))
    region = _region(code, regions)
    valid = region.is_not_null() & _valid(code, regions, region)
    country = pl.when(valid).then(region).otherwise(pl.lit(main, dtype=pl.String))
    return numbers.select(
        "_row",
        handled=pl.lit(True),
        phone_valid=valid,
        phone_e164=pl.when(valid).then(pl.lit(f"+{code}") + _NSN),
        phone_country=pl.when(country.is_in(list(NON_GEOGRAPHIC))).then(pl.lit(None, dtype=pl.String)).otherwise(country),
    )


def read_international(raw: pl.Series) -> pl.DataFrame:
    """One row per row of ``raw`` (String): ``handled``, and on handled rows ``phone_valid``,
    ``phone_e164`` (when valid) and ``phone_country``.

    On a handled row, ``phone_valid`` / ``phone_e164`` are what ``parse`` + ``is_valid_number`` +
    E.164 formatting give, and ``phone_country`` is the region of a valid number or the main region
    of the calling code otherwise (None for non-geographic codes). Other rows are all null but
    ``handled`` (false).
    """
    text = pl.col("raw").str.strip_chars(" ")
    digits = text.str.replace(r"^(?:\+|00)", "").str.replace_all(r"[ .\-]", "")
    code = pl.coalesce(
        pl.when(digits.str.head(n).is_in(_CALLING_CODES)).then(digits.str.head(n)) for n in (1, 2, 3)
    )
    candidates = (
        pl.DataFrame({"raw": raw.cast(pl.String)})
        .with_row_index("_row")
        .filter(pl.col("raw").str.len_chars() <= _MAX_INPUT_LENGTH, pl.col("raw").str.contains(_CLEAN))
        .select("_row", code=code, digits=digits)
        .filter(pl.col("code").is_not_null())
        .select("_row", "code", nsn=pl.col("digits").str.slice(pl.col("code").str.len_chars()))
        .filter(_NSN.str.len_chars().is_between(*_NSN_LENGTHS))
    )
    parts = [_read_code(int(key[0]), part) for key, part in candidates.partition_by("code", as_dict=True).items()]
    read = pl.concat(parts) if parts else pl.DataFrame(schema={"_row": pl.UInt32, **OUTPUT_SCHEMA})
    rows = pl.DataFrame({"_row": pl.arange(0, len(raw), dtype=pl.UInt32, eager=True)})
    return (
        rows.join(read.cast({"_row": pl.UInt32, **OUTPUT_SCHEMA}), on="_row", how="left", maintain_order="left")
        .with_columns(pl.col("handled").fill_null(False))
        .select(list(OUTPUT_SCHEMA))
    )
