"""Messages parsed back with the standard library; unsubscribe tokens; DKIM; the signing key file."""

from __future__ import annotations

import base64
import email
import email.header
import email.policy
import os
import shutil
import stat
import subprocess
import threading

import dkim
import pytest

from email_engine_assets.content.messages import DkimKey, build_message, message_id
from email_engine_assets.content.rendering import Rendered
from email_engine_assets.content.unsubscribe import (
    BadToken,
    unsubscribe_token,
    unsubscribe_url,
    verify_unsubscribe_token,
)
from email_engine_resources import signing_key as signing

KEY = b"k" * 32
URL = "https://unsubscribe.acme.example/u/" + "T" * 120


def build(rendered: Rendered, **overrides) -> bytes:
    args = dict(
        rendered=rendered,
        from_name="Société Acme",
        from_email="news@acme.example",
        reply_to="hello@acme.example",
        to_email="ann@bücher.example",
        to_name="Ann Émile",
        message_id=message_id("row-42", "acme.example"),
        unsubscribe_url=URL,
        unsubscribe_mailto="unsubscribe@acme.example",
        dkim=None,
    )
    return build_message(**(args | overrides))


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_headers_parts_and_encodings():
    data = build(Rendered("Bonjour Ann — offre", "<html><p>Bonjour</p></html>", "Bonjour\n"))
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert data.isascii()
    msg = parse(data)
    assert msg["Subject"] == "Bonjour Ann — offre"
    assert str(msg["From"]) == "Société Acme <news@acme.example>"
    assert str(msg["To"]) == "Ann Émile <ann@xn--bcher-kva.example>"
    assert msg["Reply-To"] == "hello@acme.example"
    assert msg["Message-ID"] == "<row-42@acme.example>"
    assert msg["Date"].datetime is not None
    assert msg["List-Unsubscribe"] == f"<{URL}>, <mailto:unsubscribe@acme.example>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content() == "Bonjour\r\n"  # text in canonical form: CRLF line ends
    assert html.get_content() == "<html><p>Bonjour</p></html>\r\n"
    assert text["Content-Transfer-Encoding"] == "7bit"
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


@pytest.mark.parametrize(("language", "body"), [("ar", "مرحبا بكم في عرضنا الجديد "), ("zh", "欢迎参加我们的新活动 "), ("fr", "Découvrez notre offre spéciale ")])
def test_non_ascii_bodies_are_utf8_in_qp_or_base64(language, body):
    direction = ' dir="rtl"' if language == "ar" else ""
    html = f'<html lang="{language}"{direction}><p>{body * 8}</p></html>'
    msg = parse(build(Rendered(body.strip(), html, body * 8 + "\n")))
    for part in msg.iter_parts():
        assert part.get_content_charset() == "utf-8"
        expected = "quoted-printable" if language == "fr" else "base64"
        assert part["Content-Transfer-Encoding"] == expected
    assert msg["Subject"] == body.strip()
    html_part = msg.get_body(("html",)).get_content()
    assert body in html_part and f'lang="{language}"' in html_part
    assert ('dir="rtl"' in html_part) == (language == "ar")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"to_email": "ann@example.com\r\nBcc: x@example.com"}, "plain address"),
        ({"to_email": "josé@example.com"}, "SMTPUTF8"),
        ({"unsubscribe_url": "https://u.example/u/x\r\nBcc: x@example.com"}, "List-Unsubscribe"),
        ({"extra_headers": {"X-Job": "a\r\nBcc: x"}}, "X-Job"),
        ({"extra_headers": {"Bcc": "x@example.com"}}, "Bcc"),
        ({"extra_headers": {"Bad Name": "x"}}, "Bad Name"),
    ],
)
def test_header_injection_is_refused(override, fragment):
    with pytest.raises(ValueError, match=fragment):
        build(Rendered("s", "<p>h</p>", "t\n"), **override)


def test_message_id_is_deterministic_and_checked():
    assert message_id("row-42", "Bücher.example") == "<row-42@xn--bcher-kva.example>"
    assert message_id("row-42", "acme.example") == message_id("row-42", "acme.example")
    with pytest.raises(ValueError):
        message_id("a b>", "acme.example")


def test_token_round_trip_and_forgeries():
    token = unsubscribe_token(KEY, "acme", "spring-sale", 12345)
    assert verify_unsubscribe_token(KEY, token) == ("acme", "spring-sale", 12345)
    assert unsubscribe_url("https://u.acme.example/", token) == f"https://u.acme.example/u/{token}"
    assert all(c.isalnum() or c in "-_." for c in token)
    payload, mac = token.split(".")
    forged_payload = base64.urlsafe_b64encode(b"v1\x00acme\x00spring-sale\x0099").rstrip(b"=").decode()
    other_key = unsubscribe_token(b"z" * 32, "acme", "spring-sale", 12345)
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in (f"{forged_payload}.{mac}", f"{payload}.{flipped}", other_key, token + "x", "", "a.b.c", "é.x", "A" * 5000, f"{payload}."):
        with pytest.raises(BadToken) as caught:
            verify_unsubscribe_token(KEY, bad)
        assert payload not in str(caught.value)


def test_tokens_are_scoped_to_their_use():
    """A MAC made with the raw key over the same payload is not a token."""
    import hashlib
    import hmac

    payload = b"v1\x00acme\x00spring\x001"
    raw_mac = hmac.new(KEY, payload, hashlib.sha256).digest()[:16]
    forged = base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + "." + base64.urlsafe_b64encode(raw_mac).rstrip(b"=").decode()
    with pytest.raises(BadToken):
        verify_unsubscribe_token(KEY, forged)


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to generate a test key")
    folder = tmp_path_factory.mktemp("dkim")
    pem = subprocess.run(["openssl", "genrsa", "1024"], capture_output=True, check=True).stdout
    (folder / "k.pem").write_bytes(pem)
    der = subprocess.run(["openssl", "rsa", "-in", str(folder / "k.pem"), "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
    return pem, base64.b64encode(der)


def test_dkim_signature_verifies_and_covers_list_unsubscribe(rsa_key):
    pem, public = rsa_key
    key = DkimKey(domain="acme.example", selector="s1", private_key=pem)
    assert "PRIVATE" not in repr(key) and "private_key" not in repr(key)
    data = build(Rendered("مرحبا", '<html lang="ar" dir="rtl"><p>مرحبا</p></html>', "مرحبا\n"), dkim=key)
    assert data.startswith(b"DKIM-Signature:")

    def dns(name, timeout=5):
        assert name == b"s1._domainkey.acme.example."
        return b"v=DKIM1; k=rsa; p=" + public

    assert dkim.verify(data, dnsfunc=dns)
    signed = parse(data)["DKIM-Signature"]
    assert "list-unsubscribe:list-unsubscribe-post" in signed.replace(" ", "").lower()
    tampered = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=Two-Click")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_key_from_settings_reads_the_environment(monkeypatch, rsa_key):
    from email_engine_assets.tenancy.sending import DkimSettings

    settings = DkimSettings(domain="acme.example", selector="s1", private_key={"env": "ACME_DKIM_PEM"})
    monkeypatch.delenv("ACME_DKIM_PEM", raising=False)
    with pytest.raises(LookupError, match="ACME_DKIM_PEM"):
        DkimKey.from_settings(settings)
    monkeypatch.setenv("ACME_DKIM_PEM", "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="^private_key: not a valid PEM private key") as caught:
        DkimKey.from_settings(settings)  # parsed when built, never at the first message
    assert "abc" not in str(caught.value)
    monkeypatch.setenv("ACME_DKIM_PEM", rsa_key[0].decode("ascii"))
    key = DkimKey.from_settings(settings)
    assert key.private_key.startswith(b"-----BEGIN") and "PRIVATE" not in repr(key)


def test_signing_key_from_the_environment(monkeypatch):
    monkeypatch.setenv(signing.SECRET_KEY_ENV, "s" * 40)
    assert signing.signing_key() == b"s" * 40
    monkeypatch.setenv(signing.SECRET_KEY_ENV, "short")
    with pytest.raises(signing.SigningKeyError) as caught:
        signing.signing_key()
    assert "short" not in str(caught.value)


def test_signing_key_file_is_made_once_private_and_never_through_a_link(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.SECRET_KEY_ENV, raising=False)
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(signing.signing_key())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 32  # racing first runs agree on one key
    path = tmp_path / "home" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(path.parent)) == ["secret_key"]  # no temporary file left
    assert signing.signing_key() == results[0]

    os.chmod(path, 0o644)
    with pytest.raises(signing.SigningKeyError, match="readable by other users"):
        signing.signing_key()
    os.chmod(path, 0o600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("00" * 32)
    os.chmod(elsewhere, 0o600)
    path.unlink()
    os.symlink(elsewhere, path)
    with pytest.raises(signing.SigningKeyError, match="symbolic link"):
        signing.signing_key()


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ('Martin, "Anne" \\ Jr.', "Plain ASCII subject " * 12),
        ("=?utf-8?b?ZXZpbA==?=", "=?utf-8?q?not_an_encoded_word?="),
        ("王小明 " * 30, "你好 " * 60),
        ("", "x" * 950),
    ],
)
def test_names_and_subjects_of_every_shape_parse_back(name, subject):
    long_ascii_html = "<p>" + "word " * 400 + "</p>"  # one long ASCII line: quoted-printable
    data = build(Rendered(subject, long_ascii_html, "--=_ boundary-like text\n"), to_name=name)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    assert msg["Subject"] == subject.strip()
    to = msg["To"].addresses[0]
    assert to.addr_spec == "ann@xn--bcher-kva.example"
    # RFC 2047 decoding (the white space between encoded words is not part of the name; the
    # address parser of the standard library keeps it, hence the decode of the raw phrase)
    raw_phrase = email.message_from_bytes(data)["To"].rpartition(" <")[0]
    decoded = str(email.header.make_header(email.header.decode_header(raw_phrase))) if "=?" in raw_phrase else to.display_name
    assert decoded == name.strip()[:200].strip()
    assert not msg.defects and all(not part.defects for part in msg.walk())
    html = msg.get_body(("html",))
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content().rstrip("\r\n") == long_ascii_html
    assert msg.get_body(("plain",)).get_content() == "--=_ boundary-like text\r\n"


def test_the_same_row_gives_the_same_message():
    from datetime import datetime, timezone

    when = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    one = build(Rendered("s", "<p>h</p>", "t\n"), date=when)
    assert one == build(Rendered("s", "<p>h</p>", "t\n"), date=when)
    assert b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n" in one
