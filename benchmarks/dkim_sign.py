"""DKIM signatures per second: ours (OpenSSL through ``cryptography``) against dkimpy.

    python benchmarks/dkim_sign.py --messages 2000 --bits 2048

Both sign the same messages, written by ``build_message`` (multipart text + HTML, 1–2 KB, a
French subject and body), over the same header list, rsa-sha256 relaxed/relaxed:

* ours: :class:`email_engine_assets.content.messages.DkimKey` built once (the PEM parsed once),
  then ``key.signer.signature_header(message, DKIM_SIGNED_HEADERS)`` per message;
* reference: ``dkim.sign(message, selector, domain, pem, include_headers=..., canonicalize=
  (b"relaxed", b"relaxed"))`` per message, as messages.py called it before (pure-Python RSA, the
  PEM parsed for every message).

Also printed: one bare OpenSSL RSA signature (the floor), and our cost beyond it (canonicalization
and hashing). A sample of our signatures is checked with ``dkim.verify`` before the figures count.
"""

from __future__ import annotations

import argparse
import base64
import random
import time

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from email_engine_assets.content.messages import DKIM_SIGNED_HEADERS, DkimKey, build_message, message_id
from email_engine_assets.content.rendering import Rendered

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--reference-messages", type=int, default=300, help="dkimpy is slow: it signs this many")
    parser.add_argument("--bits", type=int, default=2048)
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
    digest = b"x" * 600
    floor = rate("  bare RSA signature alone (the floor)", len(corpus),
                 lambda: [private.sign(digest, padding.PKCS1v15(), hashes.SHA256()) for _ in corpus])
    print(f"{'  canonicalization + hashing + header, per message':<52} {(1 / ours - 1 / floor) * 1e6:9.0f} µs")
    sample = corpus[: args.reference_messages]
    present = [h for h in DKIM_SIGNED_HEADERS if h in sample[0].partition(b"\r\n\r\n")[0].lower()]
    theirs = rate("dkimpy (dkim.sign, pure Python)", len(sample), lambda: [
        dkim.sign(m, SELECTOR.encode(), DOMAIN.encode(), pem, include_headers=present, canonicalize=(b"relaxed", b"relaxed"),
                  linesep=b"\r\n") for m in sample], rounds=1)
    print(f"ratio ours / dkimpy: {ours / theirs:.1f}x")


if __name__ == "__main__":
    main()
