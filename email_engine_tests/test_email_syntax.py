"""Address syntax check: verdicts and keys identical to email-validator (strict, no DNS)."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

import email_validator
import polars as pl
import pytest

from email_engine_assets.quality.syntax import (
    SyntaxVerdict,
    check_address,
    check_addresses,
)

CONFORMANCE = Path(__file__).parent / "data" / "conformance" / "isemail-tests.xml"
ACCEPTED_CATEGORIES = {"ISEMAIL_VALID_CATEGORY", "ISEMAIL_DNSWARN"}


def reference_key(address: str, allow_smtputf8: bool = True) -> str | None:
    """The email key email-validator implies, or None when it rejects the address."""
    try:
        checked = email_validator.validate_email(
            address, check_deliverability=False, strict=True, allow_smtputf8=allow_smtputf8
        )
    except email_validator.EmailNotValidError:
        return None
    return f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}"


def batch(addresses: list[str | None], allow_smtputf8: bool = True) -> list[tuple[str | None, str | None]]:
    frame = check_addresses(pl.Series(addresses, dtype=pl.String), allow_smtputf8=allow_smtputf8)
    return list(frame.iter_rows())


# --- conformance suite (is_email, BSD licence beside the data) -------------------------------


def conformance_cases() -> list[tuple[str, str, bool]]:
    """(id, address, expected accept); control characters are stored as U+2400 + code."""
    cases = []
    for test in ET.parse(CONFORMANCE).getroot().iter("test"):
        raw = test.findtext("address") or ""
        address = "".join(chr(ord(c) - 0x2400) if 0x2400 <= ord(c) < 0x2420 else c for c in raw)
        accepted = test.findtext("category") in ACCEPTED_CATEGORIES and address != "test@io"
        cases.append((test.get("id"), address, accepted))
    return cases


CONFORMANCE_CASES = conformance_cases()


def test_conformance_suite_is_complete_and_decoded() -> None:
    assert len(CONFORMANCE_CASES) == 164
    addresses = [address for _, address, _ in CONFORMANCE_CASES]
    assert any("\r\n" in address for address in addresses)
    assert any("\x00" in address for address in addresses)
    assert not any("\u2400" <= c < "\u2420" for address in addresses for c in address)


@pytest.mark.parametrize(("case_id", "address", "accepted"), CONFORMANCE_CASES, ids=[c[0] for c in CONFORMANCE_CASES])
def test_conformance_check_address(case_id: str, address: str, accepted: bool) -> None:
    verdict = check_address(address)
    assert verdict.ok is accepted, (address, verdict)
    assert verdict.email_key == reference_key(address)
    assert (verdict.reason is None) is accepted


def test_conformance_check_addresses_in_one_batch() -> None:
    rows = batch([address for _, address, _ in CONFORMANCE_CASES])
    assert len(rows) == len(CONFORMANCE_CASES)
    for (case_id, address, accepted), (key, error) in zip(CONFORMANCE_CASES, rows):
        assert (key is not None) is accepted, (case_id, address, error)
        assert (error is None) is accepted, (case_id, address)
        assert key == reference_key(address)


# --- property test: random messy addresses, both paths vs email-validator ----------------------

POOL = (
    list("abcxyzABCXYZ0189._-+!#$%&'*/=?^`{|}~")
    + list(' "<>()[]\\,;:@\t\r\n\x00\x7f')
    + list("éüñßøÉ")                          # Latin accents (also upper case)
    + list("аеорсԁ")                          # Cyrillic look-alikes of a e o p c d
    + list("例え中文ישראלعربي")               # CJK, Hebrew, Arabic
    + ["\u0301", "\u200b", "\u200d", "\u00ad", "\u2028", "\ufeff", "\ue000"]  # combining, invisible, private
    + ["．", "。", "＠", "﹫", "ｅ", "Ⓐ", "⒈", "\U0001f600"]                  # full-width, enclosed, emoji
)
LOCALS = ["john", "Jane.Doe", "a", "x+tag", "o'neil", "zoë", "пётр", "用户", "a.b.c", "_", "Ab-C"]
DOMAINS = ["example.com", "Mail.Example.ORG", "münchen.de", "xn--mnchen-3ya.de", "пример.рф", "例え.jp",
           "a.b", "ab.cd.ef.gh", "sub-domain.co.uk", "xn--zz.com", "b.test", "foo.onion", "x.123",
           "xn--4dbc.1.com", "ʼ.com", "a1.io", "ABC-DEF.net"]


def mutate(address: str, rng: random.Random) -> str:
    position = rng.randrange(len(address) + 1)
    operation = rng.randrange(9)
    if operation == 0:
        return address[:position] + rng.choice(POOL) + address[position:]
    if operation == 1 and address:
        return address[:position] + address[position + 1:]
    if operation == 2:
        return address[:position] + rng.choice([".", "..", "-", "--", "@"]) + address[position:]
    if operation == 3:
        return address.upper() if rng.random() < 0.5 else address.swapcase()
    if operation == 4:  # grow the local part around the 64-octet limit
        local, _, domain = address.partition("@")
        return local + "x" * max(0, rng.randint(60, 66) - len(local)) + "@" + domain
    if operation == 5:  # a domain label around the 63-octet limit
        return address + "." + "l" * rng.randint(61, 65) + ".com"
    if operation == 6:  # the whole address around the 254-octet limit
        local, _, domain = address.partition("@")
        target = rng.randint(250, 258) - len(address)
        labels = ".".join("d" * 60 for _ in range(max(0, target) // 61))
        return f"{local}@{labels}.{domain}" if labels else address
    if operation == 7:
        return address + rng.choice(["", ".", "-", ".com", "x"])
    return rng.choice(POOL) + address


def messy_addresses(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    addresses = []
    for _ in range(count):
        address = f"{rng.choice(LOCALS)}@{rng.choice(DOMAINS)}"
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            address = mutate(address, rng)
        addresses.append(address)
    return addresses


@pytest.mark.parametrize("allow_smtputf8", [True, False])
def test_random_messy_addresses_match_email_validator(allow_smtputf8: bool) -> None:
    addresses = messy_addresses(4000, seed=20240611 + allow_smtputf8)
    expected = [reference_key(address, allow_smtputf8) for address in addresses]
    rows = batch(addresses, allow_smtputf8)

    mismatches = [(a, key, want) for a, (key, _), want in zip(addresses, rows, expected) if key != want]
    assert mismatches == []
    assert all((key is None) != (error is None) for key, error in rows)
    assert not any(error == "invalid address" for _, error in rows)  # every rejection is explained

    # The sample reaches every path: ASCII and non-ASCII, valid and invalid, and the limits.
    valid = [a for a, key in zip(addresses, expected) if key]
    invalid = [a for a, key in zip(addresses, expected) if key is None]
    assert len(valid) > 800 and len(invalid) > 800
    assert sum(not a.isascii() for a in valid) > 100
    assert sum(not a.isascii() for a in invalid) > 200
    assert sum("xn--" in (key or "") for key in expected) > 100
    assert {"local part longer than 64 octets", "domain label longer than 63 octets",
            "address longer than 254 octets"} <= {error for _, error in rows}

    for address, (key, error) in list(zip(addresses, rows))[::20]:
        assert check_address(address, allow_smtputf8=allow_smtputf8) == SyntaxVerdict(
            ok=key is not None, email_key=key, reason=error
        )


# --- edge cases -----------------------------------------------------------------------------

EDGE_CASES = [
    # (address, expected key or None, reason fragment when rejected)
    ("user@münchen.de", "user@xn--mnchen-3ya.de", None),
    ("user@MÜNCHEN.DE", "user@xn--mnchen-3ya.de", None),
    ("user@xn--mnchen-3ya.de", "user@xn--mnchen-3ya.de", None),
    ("John.DOE@Example.COM", "john.doe@example.com", None),
    ("ZOË@Example.com", "zoë@example.com", None),
    ("a" * 64 + "@example.com", "a" * 64 + "@example.com", None),
    ("a" * 65 + "@example.com", None, "local part longer than 64 octets"),
    ("x@" + ".".join(["a" * 63] * 3) + "." + "b" * 57 + ".com", None, "address longer than 254 octets"),
    ("x@" + ".".join(["a" * 63] * 3) + "." + "b" * 56 + ".com", "x@" + ".".join(["a" * 63] * 3) + "." + "b" * 56 + ".com", None),
    ("x@" + "a" * 63 + ".com", "x@" + "a" * 63 + ".com", None),
    ("x@" + "a" * 64 + ".com", None, "domain label longer than 63 octets"),
    ("x@" + "a" * 300 + ".com", None, "longer than"),
    ("x@-example.com", None, "domain label starts with '-'"),
    ("x@example-.com", None, "domain label ends with '-'"),
    ("x@mail.-example.com", None, "domain label starts with '-'"),
    ("x@ab--cd.com", None, "'--' in 3rd and 4th position"),
    ("john..doe@example.com", None, "consecutive dots in local part"),
    ("john@example..com", None, "consecutive dots in domain"),
    (".john@example.com", None, "local part starts with '.'"),
    ("john.@example.com", None, "local part ends with '.'"),
    ("john@example.com.", None, "domain ends with '.'"),
    ("john@.example.com", None, "domain starts with '.'"),
    ('=HYPERLINK("mailto:john@example.com")', None, "invalid character in local part"),
    ("john@example.com,jane@example.com", None, "invalid character in domain"),
    ("john example.com", None, "no @"),
    ("john@", None, "empty domain"),
    ("@example.com", None, "empty local part"),
    ('"john"@example.com', None, "quoted local part not allowed"),
    ("John <john@example.com>", None, "display name or angle brackets not allowed"),
    ("john@[192.168.0.1]", None, "IP-address literal domain not allowed"),
    ("john@printer.local", None, "special-use domain 'local'"),
    ("john@localhost", None, "domain has no '.'"),
    ("john@host.LOCALHOST", None, "special-use domain 'localhost'"),
    ("john@x.onion", None, "special-use domain 'onion'"),
    ("john@example.123", None, "top-level domain does not end with a letter"),
    ("test@io", None, "domain has no '.'"),
    ("john@exa_mple.com", None, "invalid character in domain: '_'"),
    ("jo hn@example.com", None, "invalid character in local part: SPACE"),
    ("john＠example.com", None, "full-width at-sign"),
    ("jöhn@example.com", "jöhn@example.com", None),
    ("john@gmаil.com", "john@xn--gmil-63d.com", None),  # Cyrillic 'а': a different domain than gmail.com
    ("john@xn--zz.com", None, "not valid IDNA"),
    ("john@exam\u200bple.com", None, "unsafe character: ZERO WIDTH SPACE"),
    ("\u0301john@example.com", None, "unsafe character"),
]


@pytest.mark.parametrize(("address", "key", "reason"), EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases(address: str, key: str | None, reason: str | None) -> None:
    verdict = check_address(address)
    assert verdict.email_key == key
    assert verdict.email_key == reference_key(address)
    assert verdict.ok is (key is not None)
    if reason is None:
        assert verdict.reason is None
    else:
        assert reason in verdict.reason


def test_edge_cases_in_one_batch_match_single_checks() -> None:
    addresses = [address for address, _, _ in EDGE_CASES]
    rows = batch(addresses)
    for address, (key, error) in zip(addresses, rows):
        assert check_address(address) == SyntaxVerdict(ok=key is not None, email_key=key, reason=error)


def test_single_checks_match_the_batch_everywhere() -> None:
    # check_address decides plain valid ASCII addresses in Python's re, not in the frame: the two
    # must agree on every address, the ones a regex engine may treat differently included.
    addresses = (messy_addresses(3000, seed=17) + [a for _, a, _ in CONFORMANCE_CASES]
                 + [a for a, _, _ in EDGE_CASES]
                 + ["john@example.com\n", "john@example.com\r", "\njohn@example.com", "john@example.local\n",
                    "JOHN@EXAMPLE.COM", "a@b.co", "x" * 64 + "@example.com", "x" * 65 + "@example.com",
                    "a@" + "l" * 63 + ".com", "a@" + "l" * 64 + ".com", "a@b.invalid", "a@Sub.LocalHost",
                    "a--b@ab--cd.com", "a@xn--zz.com", "a@example.com.", "a@1.2"])
    rows = batch(addresses)
    plain = 0
    for address, (key, error) in zip(addresses, rows):
        assert check_address(address) == SyntaxVerdict(ok=key is not None, email_key=key, reason=error), address
        plain += address.isascii() and key is not None
    assert plain > 500


def test_lookalike_domain_does_not_share_a_key_with_the_real_one() -> None:
    real, lookalike = check_address("john@gmail.com"), check_address("john@gmаil.com")
    assert real.ok and lookalike.ok
    assert real.email_key != lookalike.email_key
    assert lookalike.email_key.isascii()


@pytest.mark.parametrize(
    ("ascii_address", "unicode_address"),
    [
        ("a..x@example.com", "é..x@example.com"),
        ("a@example..com", "a@exämple..com"),
        (".a@example.com", ".é@example.com"),
        ("a@-example.com", "a@-exämple.com"),
        ("a@printer.local", "é@printer.local"),
        ("a" * 65 + "@example.com", "é" * 65 + "@example.com"),
        ("a@" + "b" * 64 + ".com", "a@" + "ü" * 64 + ".com"),
        ("a@example", "a@exämple"),
    ],
)
def test_reasons_use_one_vocabulary_on_both_paths(ascii_address: str, unicode_address: str) -> None:
    fast, slow = check_address(ascii_address), check_address(unicode_address)
    assert not fast.ok and not slow.ok
    assert fast.reason == slow.reason


def test_smtputf8_switch_only_affects_internationalised_local_parts() -> None:
    assert check_address("jöhn@example.com", allow_smtputf8=False).reason.startswith(
        "internationalised local part needs SMTPUTF8"
    )
    assert check_address("john@münchen.de", allow_smtputf8=False).email_key == "john@xn--mnchen-3ya.de"
    assert check_address("john@example.com", allow_smtputf8=False).ok


# --- robustness and shape ------------------------------------------------------------------


def test_bad_input_never_crashes_and_keeps_length_and_order() -> None:
    huge_ascii = "a" * 2_000_000 + "@example.com"
    huge_unicode = "é" * 1_000_000 + "@example.com"
    addresses = [None, "", "a\x00b@example.com", huge_ascii, "ok@example.com", huge_unicode,
                 "\x00", "@", "@@", "OK@Example.com", None]
    rows = batch(addresses)
    assert len(rows) == len(addresses)
    assert rows[0] == (None, "empty address") and rows[-1] == (None, "empty address")
    assert rows[1] == (None, "empty address")
    assert rows[2] == (None, "invalid character in local part: U+0000")
    assert rows[3] == (None, "local part longer than 64 octets")
    assert rows[4] == ("ok@example.com", None)
    assert rows[5] == (None, "address longer than 254 octets")
    assert rows[6] == (None, "no @")
    assert rows[7] == (None, "empty local part")
    assert rows[9] == ("ok@example.com", None)


def test_frame_columns_and_types() -> None:
    frame = check_addresses(pl.Series("email", ["a@example.com", "bad"]))
    assert frame.columns == ["email_key", "syntax_error"]
    assert frame.dtypes == [pl.String, pl.String]
    assert frame.height == 2
    empty = check_addresses(pl.Series("email", [], dtype=pl.String))
    assert empty.shape == (0, 2) and empty.dtypes == [pl.String, pl.String]
    all_null = check_addresses(pl.Series([None, None]))
    assert all_null["syntax_error"].to_list() == ["empty address", "empty address"]


def test_duplicates_in_a_batch_get_the_same_verdict() -> None:
    addresses = ["jöhn@münchen.de", "JÖHN@MÜNCHEN.DE", "x@b..com", "jöhn@münchen.de", "x@b..com"] * 3
    rows = batch(addresses)
    assert {rows[i] for i in (0, 1, 3)} == {("jöhn@xn--mnchen-3ya.de", None)}
    assert {rows[i] for i in (2, 4)} == {(None, "consecutive dots in domain")}
    assert rows[:5] * 3 == rows


def test_wrong_input_types_are_named_in_the_error() -> None:
    with pytest.raises(TypeError, match="String series, got dtype Int64"):
        check_addresses(pl.Series([1, 2]))
    with pytest.raises(TypeError, match="polars Series, got list"):
        check_addresses(["a@example.com"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a str, got bytes"):
        check_address(b"a@example.com")  # type: ignore[arg-type]
