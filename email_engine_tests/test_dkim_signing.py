"""DKIM signatures made through OpenSSL, each checked by an independent verifier: dkimpy's
``dkim.verify``, the public key served as a TXT record by the loopback DNS server.

Covered: the messages ``build_message`` writes (multipart, non-ASCII subject and body, long folded
headers), raw messages with tabs, trailing whitespace and empty lines at the end of the body, CRLF
and LF line ends; the body hash (``bh=``), signed header list and tag order equal to dkimpy's for
the same message; keys refused when the :class:`DkimKey` is built (no PEM, a 512-bit RSA key, an
EC key, a passphrase), the error naming the setting and never the key.
"""

from __future__ import annotations

import base64
import pickle
import re
import shutil
import subprocess
from datetime import datetime, timezone

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from email_engine_assets.content.dkim_signing import (
    DkimKeyError,
    RsaSigner,
    body_hash,
    relaxed_body,
)
from email_engine_assets.content.messages import DKIM_SIGNED_HEADERS, DkimKey, build_message, message_id
from email_engine_assets.content.rendering import Rendered
from email_engine_tests.dns_server import LoopbackDnsServer, TestZone, txt_lookup

DOMAIN, SELECTOR = "acme.example", "s2048"
RELAXED = (b"relaxed", b"relaxed")


def pem_of(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def txt_value(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


@pytest.fixture(scope="module")
def keys():
    return {bits: rsa.generate_private_key(public_exponent=65537, key_size=bits) for bits in (1024, 2048)}


@pytest.fixture(scope="module")
def dns_server(keys):
    zone = TestZone(txt={
        f"{SELECTOR}._domainkey.{DOMAIN}": [txt_value(keys[2048])],
        f"s1024._domainkey.{DOMAIN}": [txt_value(keys[1024])],
        f"other._domainkey.{DOMAIN}": [txt_value(rsa.generate_private_key(public_exponent=65537, key_size=2048))],
    })
    with LoopbackDnsServer(zone) as server:
        yield server


@pytest.fixture(scope="module")
def verify(dns_server):
    lookup = txt_lookup(dns_server)

    def verified(message: bytes) -> bool:
        return dkim.verify(message, dnsfunc=lookup)

    return verified


@pytest.fixture(scope="module")
def key(keys) -> DkimKey:
    return DkimKey(DOMAIN, SELECTOR, pem_of(keys[2048]))


def tags(message: bytes) -> dict[bytes, bytes]:
    """The DKIM-Signature's tags (the first field of ``message``), whitespace removed."""
    header = re.match(rb"DKIM-Signature:(.*?)\r?\n(?![ \t])", message, re.S).group(1)
    pairs = [t.split(b"=", 1) for t in re.sub(rb"\s+", b"", header).split(b";") if t]
    return {k: v for k, v in pairs}


def dkimpy_signature(message: bytes, pem: bytes, selector: bytes = SELECTOR.encode()) -> bytes:
    """dkimpy's signature of ``message`` as messages.py made it before (the same call)."""
    present = {line.split(b":", 1)[0].strip().lower() for line in re.split(rb"\r?\n", message.partition(b"\n\n")[0].partition(b"\r\n\r\n")[0])
               if b":" in line and not line[:1].isspace()}
    return dkim.sign(message, selector, DOMAIN.encode(), pem, include_headers=[h for h in DKIM_SIGNED_HEADERS if h in present],
                     canonicalize=RELAXED, linesep=b"\r\n")


def built(key: DkimKey | None, rendered: Rendered, **overrides) -> bytes:
    args = dict(rendered=rendered, from_name="Société Acme — le service clients de la région Île-de-France",
                from_email="news@acme.example", reply_to="hello@acme.example", to_email="ann@bücher.example",
                to_name="Ann-Émilie de la Fontaine-Müller", message_id=message_id("row-42", DOMAIN),
                unsubscribe_url="https://unsubscribe.acme.example/u/" + "T" * 300, unsubscribe_mailto="unsubscribe@acme.example",
                dkim=key, extra_headers={"Content-Language": "fr"})
    return build_message(**(args | overrides))


MESSAGES = {
    "multipart non-ASCII": Rendered(
        "Votre offre d'été — 20 % de remise sur tout le catalogue, jusqu'à dimanche soir, 日本語も",
        "<html><body><p>Bonjour Ann,</p>\n<p>L'été arrive : «\u00a0remise\u00a0» sur  tout.</p>  \n\n\n</body></html>\n\n",
        "Bonjour Ann,\n\nL'été arrive : remise sur  tout.\t \n   \n\n\n"),
    "ascii long lines": Rendered(
        "A subject that is long enough to be folded over several lines by the message writer " * 3,
        "<p>" + "word " * 400 + "</p>", "line with trailing spaces   \n" * 20 + "\n\n"),
    "arabic": Rendered("مرحبا بكم في عرضنا", '<html lang="ar" dir="rtl"><p>مرحبا</p></html>', "مرحبا\n"),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_built_messages_verify_and_match_dkimpy_but_for_b(name, key, keys, verify):
    rendered = MESSAGES[name]
    date = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    signed = built(key, rendered, date=date)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=acme.example;")
    assert verify(signed)
    unsigned = built(None, rendered, date=date)
    assert signed.endswith(unsigned)
    ours, theirs = tags(signed), tags(dkimpy_signature(unsigned, key.private_key) + unsigned)
    assert ours[b"bh"] == theirs[b"bh"]
    assert ours[b"h"] == theirs[b"h"] == b"from:to:reply-to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post:mime-version:content-type:content-language"
    assert list(ours) == list(theirs) and {k: v for k, v in ours.items() if k not in (b"b", b"t")} == {
        k: v for k, v in theirs.items() if k not in (b"b", b"t")}
    assert all(len(line) <= 78 for line in signed.partition(b"\r\nDate:")[0].split(b"\r\n"))
    # an altered body or a signed header breaks it
    assert not verify(signed[:-5] + bytes([signed[-5] ^ 1]) + signed[-4:])  # the closing boundary
    assert not verify(signed.replace(b"Message-ID: <row-42@", b"Message-ID: <row-43@"))


RAW = (
    b"From: Acme <news@acme.example>\r\n"
    b"To: ann@example.com\r\n"
    b"Subject:   A subject\twith   runs of  whitespace   \r\n"
    b"X-Unsigned: not in the list\r\n"
    b"List-Unsubscribe: <https://unsubscribe.acme.example/u/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa>,\r\n"
    b"\t<mailto:unsubscribe@acme.example>   \r\n"
    b"Message-ID: <raw-1@acme.example>\r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hello  \t there  \r\n"
    b"\r\n"
    b" indented line\twith a tab\r\n"
    b"trailing spaces   \r\n"
    b"   \r\n"
    b"\t\r\n"
    b"\r\n"
    b"\r\n"
)


@pytest.mark.parametrize("body_end", [b"", b"last line\r\n", b"last line", b"last line  \r\n\r\n \r\n", b"\r\n\r\n", b"last  \t"])
@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_raw_messages_in_crlf_or_lf_verify_with_dkimpys_body_hash(body_end, line_end, key, verify):
    message = (RAW + body_end).replace(b"\r\n", line_end)
    header = key.signer.signature_header(message, DKIM_SIGNED_HEADERS)
    assert header.endswith(line_end) and (line_end == b"\r\n" or b"\r" not in header)
    # SMTP ends the data with CRLF: a last line without one gets it in transit, and its WSP then goes
    # (dkimpy keeps that WSP when it signs or verifies the bytes without the CRLF)
    received = message if message.endswith(line_end) or not body_end else message + line_end
    assert verify(header + received)
    ours, theirs = tags(header + message), tags(dkimpy_signature(received, key.private_key) + received)
    assert ours[b"h"] == theirs[b"h"] == b"from:to:subject:date:message-id:list-unsubscribe"
    assert ours[b"bh"] == theirs[b"bh"]
    crlf_header = key.signer.signature_header((RAW + body_end), DKIM_SIGNED_HEADERS)
    assert tags(crlf_header)[b"bh"] == ours[b"bh"]  # LF or CRLF: the same body


def test_relaxed_body_canonicalization_rfc_6376_3_4_4():
    assert relaxed_body(b"") == b""
    assert relaxed_body(b"\r\n\r\n\r\n") == b""
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"  # the RFC's example (§3.4.5)
    assert relaxed_body(b"no end of line") == b"no end of line\r\n"
    assert relaxed_body(b"trailing  \t") == b"trailing\r\n"  # the CRLF the transport adds: WSP before it goes
    assert relaxed_body(b"a\r\n \r\n\t\r\n") == b"a\r\n"
    assert relaxed_body(b"a\r\r\n\r\n") == b"a\r\r\n"  # a bare CR is content
    assert body_hash(b"") == b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # RFC 6376 §3.4.4: sha256 of nothing


def test_a_1024_bit_key_signs_and_verifies(keys, verify):
    small = DkimKey(DOMAIN, "s1024", pem_of(keys[1024]))
    assert verify(built(small, MESSAGES["arabic"]))


def test_a_signature_under_another_selectors_key_does_not_verify(keys, verify):
    wrong = DkimKey(DOMAIN, "other", pem_of(keys[2048]))  # "other" publishes a different public key
    assert not verify(built(wrong, MESSAGES["arabic"]))


def test_the_key_record_is_split_into_character_strings_as_real_dns_does(dns_server, keys):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [dns_server.host], dns_server.port
    (record,) = resolver.resolve(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT").rrset
    assert len(record.strings) == 2 and all(len(s) <= 255 for s in record.strings)
    assert b"".join(record.strings).decode() == txt_value(keys[2048])
    assert txt_lookup(dns_server)(f"nobody._domainkey.{DOMAIN}.".encode()) is None


def test_the_key_never_shows_and_is_parsed_once(key, keys):
    for text in (repr(key), str(key), repr(key.signer)):
        assert "PRIVATE" not in text and "MII" not in text and "rsa-2048" not in repr(key)
    assert repr(key.signer) == "RsaSigner(domain='acme.example', selector='s2048', rsa-2048)"
    again = pickle.loads(pickle.dumps(key))  # a worker process parses the PEM again
    assert again == key and again.signer is not key.signer
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(key.signer)


def openssl_rsa(bits: int) -> bytes:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a key shorter than cryptography generates")
    return subprocess.run(["openssl", "genrsa", str(bits)], capture_output=True, check=True).stdout


def _refusals(keys):
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    encrypted = keys[1024].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret"))
    return {
        "not a PEM": (b"just some text", r"^private_key: not a PEM private key"),
        "a broken PEM": (garbage, r"^private_key: not a valid PEM private key"),
        "a PEM on one line": (pem_of(keys[1024]).replace(b"\n", b"\\n"), r"^private_key: .*line breaks are the two characters \\n"),
        "a 512-bit RSA key": (openssl_rsa(512), r"^private_key: an RSA key of 512 bits; DKIM needs at least 1024"),
        "an EC key": (pem_of(ec.generate_private_key(ec.SECP256R1())), r"^private_key: an EC \(elliptic-curve\) key; .*needs an RSA key"),
        "a passphrase": (encrypted, r"^private_key: the PEM key is encrypted"),
    }


def test_keys_that_cannot_sign_are_refused_when_the_key_is_built(keys):
    for case, (pem, reason) in _refusals(keys).items():
        with pytest.raises(DkimKeyError, match=reason) as caught:
            DkimKey(DOMAIN, SELECTOR, pem)
        body = pem.split(b"\n")[1][:16].decode("ascii", "replace") if b"\n" in pem else "just some"
        assert body not in str(caught.value), case
    with pytest.raises(DkimKeyError, match=r"^selector: "):
        RsaSigner(pem_of(keys[1024]), domain=DOMAIN, selector="bad selector;")
    with pytest.raises(DkimKeyError, match=r"^domain: "):
        DkimKey("not a domain!", SELECTOR, pem_of(keys[1024]))


def test_a_message_without_from_or_with_a_broken_header_is_refused(key):
    with pytest.raises(ValueError, match="From"):
        key.signer.signature_header(b"To: a@example.com\r\n\r\nbody\r\n", DKIM_SIGNED_HEADERS)
    with pytest.raises(ValueError, match="not a field"):
        key.signer.signature_header(b"From: a@example.com\r\nno colon here\r\n\r\nbody\r\n", DKIM_SIGNED_HEADERS)


def test_the_campaign_composer_composes_in_worker_processes_messages_that_verify(tmp_path, key, verify):
    """A big send composes in worker processes: the composer (templates, signing key, DKIM key) pickles
    there, and what they compose is what this process would, signed."""
    from email_engine_assets.campaigns.composing import ComposePool
    from email_engine_assets.campaigns.wiring import TemplateComposer
    from email_engine_assets.content.composer import Composed
    from email_engine_assets.content.templates import load_templates
    from email_engine_assets.tenancy.config import parse_tenant
    from email_engine_tests.campaign_parts import write_real_templates

    (tmp_path / "tenants").mkdir()
    write_real_templates(tmp_path)
    composer = TemplateComposer(templates=load_templates(tmp_path, "acme"), tenant=parse_tenant(tmp_path / "tenants" / "acme.yaml"),
                                campaign="spring", category="news", from_name="Acme", from_email="news@acme.example",
                                reply_to=None, signing_key=b"k" * 32, dkim_key=key)
    rows = [{"contact": {"email": f"u{i}@example.com", "first_name": f"Ann{i}"}, "contact_id": i, "token": f"T{i}"} for i in range(6)]
    pool = ComposePool(composer, 2)
    try:
        made = pool.submit(rows).result(timeout=60)
    finally:
        pool.close()
    here = [composer.compose(r["contact"], contact_id=r["contact_id"], row_token=r["token"]) for r in rows]
    assert all(isinstance(m, Composed) for m in made), made
    assert [(m.template, m.message_id, m.subject) for m in made] == [(m.template, m.message_id, m.subject) for m in here]
    assert all(verify(m.message) for m in made)
    assert [m.message.split(b"\r\n\r\n", 1)[1] for m in made] == [m.message.split(b"\r\n\r\n", 1)[1] for m in here]
