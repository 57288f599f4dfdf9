"""DKIM signatures per second: ours (OpenSSL through ``cryptography``) against dkimpy.

    python benchmarks/dkim_sign.py --messages 2000 --bits 2048

Both sign the same messages, written by ``build_message`` (multipart text + HTML, 1–2 KB, a
French subject and body), over the same header list, rsa-sha256 relaxed/relaxed:

* ours: :class:`email_engine_assets.content.messages.DkimKey` built once (the PEM parsed once),
  then ``key.signer.signature_header(message, DKIM_SIGNED_HEADERS)`` per message;
* reference: ``dkim.sign(message, selector, domain, pem, include_headers=..., canonicalize=
  (b"relaxed", b"relaxed"))`` per message, as messages.py called it before (pure-Python RSA, the
  PEM parsed for every message).

Also printed: our canonicalization and hashing alone, and the bare OpenSSL RSA signature alone
(the floor). A sample of our signatures is checked with ``dkim.verify`` before the figures count.

With ``--send N``: a campaign of N recipients sent by ``sender.send_campaign`` (claim, compose with
the real Composer and a template, inject, record) through the PowerMTA transport (``--connections``)
to the PowerMTA stand-in of the tests in a child process, three times: unsigned, signed by us, and
signed by dkimpy per message as before this change (``DkimpyComposer``). Scratch database
``email_engine_bench_dkim`` on ``--database-url`` (else ``EMAIL_ENGINE_DATABASE_URL``, else the
embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from email_engine_assets.content.composer import Composed, Composer  # noqa: E402
from email_engine_assets.content.dkim_signing import signing_input  # noqa: E402
from email_engine_assets.content.messages import DKIM_SIGNED_HEADERS, DkimKey, build_message, message_id  # noqa: E402
from email_engine_assets.content.rendering import Rendered  # noqa: E402
from email_engine_assets.content.templates import load_templates  # noqa: E402
from email_engine_assets.tenancy.config import parse_tenant  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

DOMAIN, SELECTOR = "acme.example", "s2026"
WORDS = "nous avons préparé pour votre société une offre adaptée à Lyon été démonstrations tarifs dédiés".split()


def messages(count: int) -> list[bytes]:
    """``count`` unsigned messages of 1–2 KB (the size varies with the body)."""
    rng = random.Random(17)
    out = []
    for i in range(count):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(rng.randint(2, 7))) + "\n"
        html = "<html><body>" + "".join(f"<p>{line}</p>\n" for line in text.splitlines()) + "</body></html>\n"
        out.append(build_message(
            rendered=Rendered(f"Anne, notre offre d'été n°{i}", html, text), from_name="Acme Industrie",
            from_email="news@acme.example", reply_to="hello@acme.example", to_email=f"user{i}@example.com",
            to_name=f"Anne Nom{i}", message_id=message_id(f"row-{i}", DOMAIN),
            unsubscribe_url=f"https://unsubscribe.acme.example/u/{'T' * 100}{i}", unsubscribe_mailto=None, dkim=None,
            extra_headers={"Content-Language": "fr"},
        ))
    return out


def rate(label: str, n: int, run, rounds: int = 3) -> float:
    """The best of ``rounds`` runs (other processes on a small machine only ever slow a run down)."""
    elapsed = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        elapsed = min(elapsed, time.perf_counter() - start)
    print(f"{label:<52} {n / elapsed:>9,.0f} signatures/s  {elapsed / n * 1e3:7.3f} ms each")
    return n / elapsed


TEMPLATE = """\
category: news
language: en
subject: "{{ first_name or 'Hello' }}, our spring offer"
html: |
  <html><body><h1>Hello {{ first_name }}</h1>
  <p>At {{ tenant }} we prepared an offer for your company: demonstrations, dedicated prices and support.</p>
  <p>Our teams are waiting for you in every city, with the catalogue of the season and its novelties.</p>
  <p><a href="https://acme.example/offer?c={{ campaign }}">Discover</a> - <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
  </body></html>
"""
TENANT = """\
id: acme
name: Acme Industrie
default_category: news
sources: [{id: crm}]
unsubscribe: {base_url: "https://unsubscribe.acme.example"}
"""


class DkimpyComposer:
    """A composer signing as messages.py did before: ``dkim.sign`` per message, the PEM parsed each time."""

    def __init__(self, inner: Composer, pem: bytes):
        self.inner, self.pem = inner, pem

    def preflight(self, samples):
        return self.inner.preflight(samples)

    def compose(self, contact, *, contact_id, row_token):
        made = self.inner.compose(contact, contact_id=contact_id, row_token=row_token)
        if not isinstance(made, Composed):
            return made
        head = made.message.partition(b"\r\n\r\n")[0]
        present = {line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n") if b":" in line and not line[:1].isspace()}
        signature = dkim.sign(made.message, SELECTOR.encode(), DOMAIN.encode(), self.pem, canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=[h for h in DKIM_SIGNED_HEADERS if h in present], linesep=b"\r\n")
        return dataclasses.replace(made, message=signature + made.message)


def composer_factory():
    """``composer(campaign, dkim_key)``: the real Composer of tenant ``acme`` with :data:`TEMPLATE`
    (messages of about 1.5 KB), as ``campaign send`` builds it (also used by ``benchmarks/send.py``)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "templates" / "acme").mkdir(parents=True)
        (root / "templates" / "acme" / "news_en.yaml").write_text(TEMPLATE, encoding="utf-8")
        (root / "tenants").mkdir()
        (root / "tenants" / "acme.yaml").write_text(TENANT, encoding="utf-8")
        tenant, templates = parse_tenant(root / "tenants" / "acme.yaml"), load_templates(root, "acme")

    def composer(name: str, key: DkimKey | None) -> Composer:
        return Composer(templates=templates, tenant=tenant, campaign=name, category="news", from_name="Acme",
                        from_email="news@acme.example", reply_to=None, signing_key=b"k" * 32, dkim_key=key)

    return composer


def send(recipients: int, connections: int, database_url: str, pem: bytes) -> None:
    """The same campaign sent unsigned, signed by us and signed by dkimpy, through the PowerMTA stand-in."""
    from benchmarks.campaign_ledger import setup
    from benchmarks.scratch import scratch_database
    from benchmarks.smtp_injection import _Server
    from email_engine_assets.campaigns.sender import send_campaign
    from email_engine_resources.powermta import PowerMtaSmtpTransport

    composer = composer_factory()
    mta = _Server(0.0)
    rates = {}
    try:
        with scratch_database("email_engine_bench_dkim", database_url) as engine:
            for name, label in (("unsigned", "unsigned"), ("ours", "DKIM rsa-2048, ours (OpenSSL)"),
                                ("dkimpy", "DKIM rsa-2048, dkimpy (before)")):
                campaign = setup(engine, name, recipients)
                made = (composer(name, None) if name == "unsigned" else composer(name, DkimKey(DOMAIN, SELECTOR, pem))
                        if name == "ours" else DkimpyComposer(composer(name, None), pem))
                transport = PowerMtaSmtpTransport(name="pmta", host=mta.host, port=mta.port, bounce_address="b@bounce.acme.example",
                                                  connections=connections, allow_private=True, helo_name="bench.example")
                _, before = mta.counts()
                started = time.perf_counter()
                report = send_campaign(engine, campaign, made, transport)
                elapsed = time.perf_counter() - started
                _, after = mta.counts()
                assert report.outcomes["sent"] == recipients == after - before, (report, after - before)
                rates[name] = recipients / elapsed
                print(f"send {recipients:,} through the PowerMTA stand-in, {label:<32} {rates[name]:>7,.0f} msg/s ({elapsed:.1f} s)")
    finally:
        mta.stop()
    print(f"signed send: ours / dkimpy {rates['ours'] / rates['dkimpy']:.1f}x; ours reaches {rates['ours'] / rates['unsigned']:.0%} "
          "of the unsigned rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--reference-messages", type=int, default=300, help="dkimpy is slow: it signs this many")
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--send", type=int, default=0, metavar="N", help="also time a campaign of N recipients (e.g. 10000)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    args = parser.parse_args()

    private = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    corpus = messages(args.messages)
    sizes = sorted(len(m) for m in corpus)
    print(f"{len(corpus)} messages of {sizes[0]}-{sizes[-1]} bytes (median {sizes[len(sizes) // 2]}), RSA {args.bits} bits")

    start = time.perf_counter()
    key = DkimKey(DOMAIN, SELECTOR, pem)
    print(f"{'key parsed once (DkimKey)':<52} {(time.perf_counter() - start) * 1e3:9.1f} ms")
    signer = key.signer
    for message in corpus[:20]:
        assert dkim.verify(signer.signature_header(message, DKIM_SIGNED_HEADERS) + message,
                           dnsfunc=lambda name, timeout=5: record), "a signature did not verify"

    ours = rate("ours (OpenSSL via cryptography)", len(corpus),
                lambda: [signer.signature_header(m, DKIM_SIGNED_HEADERS) for m in corpus])
    inputs = [signing_input(m, DKIM_SIGNED_HEADERS, domain=DOMAIN, selector=SELECTOR, timestamp=1) for m in corpus]
    rate("  of which canonicalization + hashing alone", len(corpus),
         lambda: [signing_input(m, DKIM_SIGNED_HEADERS, domain=DOMAIN, selector=SELECTOR, timestamp=1) for m in corpus])
    rate("  of which the OpenSSL RSA signature alone", len(corpus),
         lambda: [private.sign(data, padding.PKCS1v15(), hashes.SHA256()) for _, data in inputs])
    sample = corpus[: args.reference_messages]
    present = [h for h in DKIM_SIGNED_HEADERS if h in sample[0].partition(b"\r\n\r\n")[0].lower()]
    theirs = rate("dkimpy (dkim.sign, pure Python)", len(sample), lambda: [
        dkim.sign(m, SELECTOR.encode(), DOMAIN.encode(), pem, include_headers=present, canonicalize=(b"relaxed", b"relaxed"),
                  linesep=b"\r\n") for m in sample], rounds=1)
    print(f"ratio ours / dkimpy: {ours / theirs:.1f}x")
    if args.send:
        send(args.send, args.connections, args.database_url, pem)


if __name__ == "__main__":
    main()
