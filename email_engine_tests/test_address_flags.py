"""Address flags: disposable, role account, free mail, typo suggestion; scalar and frame."""

from __future__ import annotations

import polars as pl
import pytest

from email_engine_assets.quality.flags import (
    FREE_MAIL_DOMAINS,
    address_flags,
    is_disposable,
    is_free_mail,
    is_role_account,
    registrable_domain,
    typo_suggestion,
)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("mailinator.com", True),
        ("sub.mailinator.com", True),
        ("a.b.MAILINATOR.com.", True),
        ("yopmail.com", True),
        ("gmail.com", False),
        ("example.co.uk", False),
        ("mailinator.com.example.org", False),
        ("", False),
        (None, False),
        ("com", False),
    ],
)
def test_is_disposable(domain, expected):
    assert is_disposable(domain) is expected


def test_registrable_domain_uses_the_public_suffix_list():
    assert registrable_domain("x.mailinator.com") == "mailinator.com"
    assert registrable_domain("a.b.example.co.uk") == "example.co.uk"
    assert registrable_domain("co.uk") is None


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("info", True), ("Info", True), (" INFO ", True), ("no-reply", True), ("noreply", True),
        ("no_reply", True), ("no.reply", True), ("support+eu", True), ("mailer-daemon", True),
        ("postmaster", True), ("contact", True),
        ("info1", False), ("sales-fr", False), ("john", False), ("information.desk", False),
        ("", False), (None, False),
    ],
)
def test_is_role_account(local, expected):
    assert is_role_account(local) is expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("gmail.com", True), ("GMAIL.COM", True), ("yahoo.fr", True), ("yahoo.co.uk", True),
        ("hotmail.com.br", True), ("gmx.at", True), ("orange.fr", True), ("proton.me", True),
        ("yahoo.co", False), ("hotmail.con", False), ("acme.com", False),
        ("mail.yahoo.fr", False), ("", False), (None, False),
    ],
)
def test_is_free_mail(domain, expected):
    assert is_free_mail(domain) is expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("gmial.com", "gmail.com"), ("gmail.con", "gmail.com"), ("GMAIL.CMO", "gmail.com"),
        ("gmai.com", "gmail.com"), ("gmail.co", "gmail.com"), ("hotmial.com", "hotmail.com"),
        ("hotmai.con", "hotmail.com"), ("yaho.com", "yahoo.com"), ("yahoo.co", "yahoo.com"),
        ("outlok.com", "outlook.com"), ("gogolemail.com", "googlemail.com"),
        ("wanado.fr", "wanadoo.fr"), ("acme.con", "acme.com"), ("acme.ogr", "acme.org"),
        # known or plausible real domains are left alone
        ("gmail.com", None), ("gmail.com.", None), ("mail.com", None), ("ymail.com", None),
        ("yahoo.fr", None), ("hotmail.de", None), ("startup.co", None), ("acme.com", None),
        ("aol.co", None), ("x.cm", None), ("localhost", None), ("", None), (None, None),
    ],
)
def test_typo_suggestion(domain, expected):
    assert typo_suggestion(domain) == expected


def test_known_free_mail_domains_are_never_corrected():
    assert [d for d in sorted(FREE_MAIL_DOMAINS) if typo_suggestion(d)] == []


def test_address_flags_frame_matches_scalars_and_keeps_order():
    keys = ["ann@gmial.com", "info@", "Info@x.fr", None, "noatsign", "x@sub.mailinator.com",
            "a@b@gmail.con", "no_reply+x@hotmail.co", "bob@gmail.com", "c@startup.co",
            "bob@gmail.com", "d@yahoo.co.uk", "h@"]
    frame = pl.DataFrame({"contact_id": list(range(len(keys))), "email_key": keys})
    result = address_flags(frame)
    assert result.get_column("contact_id").to_list() == list(range(len(keys)))
    assert result.schema["typo_suggestion"] == pl.String
    for row in result.iter_rows(named=True):
        key = row["email_key"]
        if key is None:
            assert (row["disposable"], row["role_account"], row["free_mail"],
                    row["typo_suggestion"]) == (None, None, None, None)
            continue
        local, _, domain = key.rpartition("@") if "@" in key else (key, "", "")
        suggestion = typo_suggestion(domain)
        assert row["disposable"] is is_disposable(domain), key
        assert row["role_account"] is is_role_account(local), key
        assert row["free_mail"] is is_free_mail(domain), key
        assert row["typo_suggestion"] == (f"{local}@{suggestion}" if suggestion else None), key


def test_address_flags_known_rows():
    frame = pl.DataFrame({"email_key": ["x@sub.mailinator.com", "info@", "a@b@gmail.con"]})
    result = address_flags(frame)
    assert result.get_column("disposable").to_list() == [True, False, False]
    assert result.get_column("role_account").to_list() == [False, True, False]
    assert result.get_column("typo_suggestion").to_list() == [None, None, "a@b@gmail.com"]


def test_address_flags_rejects_bad_input():
    with pytest.raises(ValueError, match="email_key"):
        address_flags(pl.DataFrame({"email": ["a@b.c"]}))
    with pytest.raises(ValueError, match="String"):
        address_flags(pl.DataFrame({"email_key": [1, 2]}))


def test_address_flags_all_null_column():
    result = address_flags(pl.DataFrame({"email_key": [None, None]}))
    assert result.get_column("disposable").to_list() == [None, None]
    assert result.schema["role_account"] == pl.Boolean
