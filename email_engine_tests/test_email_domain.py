"""One rule for an email's domain: the part after the last ``@``, for a value and for a column."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from email_engine_resources.email_domain import (
    email_domain,
    email_domain_expr,
    split_address,
)

CASES = [
    ("ann@example.com", "example.com"),
    ("Jo@Mail.Example.FR", "Mail.Example.FR"),  # as given: keys are already lower case
    ('"a@b"@example.org', "example.org"),  # the last '@' decides
    ("a@b@c.example", "c.example"),
    ("no-at-sign", None),
    ("trailing@", None),
    ("@example.com", "example.com"),
    ("", None),
]
PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("address", "domain"), CASES)
def test_value_and_column_agree_on_the_domain(address, domain):
    assert email_domain(address) == domain
    column = pl.select(email_domain_expr(pl.lit(address, pl.String))).to_series()
    assert column.to_list() == [domain]


@pytest.mark.db
def test_the_sql_function_follows_the_same_rule(engine):
    with engine.connect() as conn:
        got = [conn.exec_driver_sql("SELECT email_domain(%(a)s)", {"a": address}).scalar() for address, _ in CASES]
    assert got == [domain for _, domain in CASES]


def test_null_has_no_domain():
    assert email_domain(None) is None
    assert pl.select(email_domain_expr(pl.lit(None, pl.String))).item() is None


def test_split_address_keeps_the_local_part_whole():
    assert split_address('"a@b"@example.org') == ('"a@b"', "example.org")
    assert split_address("plain") == ("plain", None)


def test_no_module_extracts_a_domain_its_own_way():
    """The regexes, splits and SQL the project used before the one rule."""
    patterns = re.compile(
        r"""split_part\([^)]*'@'|r?partition\(["']@["']\)|split\(["']@["']\)|@\(\[\^@\]|rsplit\(["']@["']"""
    )
    offenders = [
        f"{path.relative_to(PROJECT)}:{n}"
        for package in ("email_engine_assets", "email_engine_resources")
        for path in (PROJECT / package).rglob("*.py")
        if path.name != "email_domain.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if patterns.search(line)
    ]
    assert offenders == []
