"""DKIM signatures (RFC 6376: rsa-sha256, relaxed/relaxed) signed by OpenSSL through ``cryptography``.

dkimpy signs in pure Python (about 9 ms a 2048-bit signature, the PEM parsed again every time);
here the key is parsed once (:class:`RsaSigner`) and each message costs one OpenSSL signature
(under a millisecond) plus canonicalization done with bytes methods and compiled expressions.

The signature header has dkimpy's shape (the same tags in the same order, ``h=`` joined with
``" : "``, folded near column 72, ``b=`` on lines of its own), so a message signed here is
indistinguishable from one signed by ``dkim.sign(..., canonicalize=(b"relaxed", b"relaxed"))``
but for the signature value itself. Lines of the input may end in CRLF or LF (a bare LF counts
as CRLF, as every verifier reads it); the header comes back with the message's own line end.

A key that cannot sign (not a PEM private key, a passphrase on it, not RSA, under 1024 bits) is
refused when the signer is built, with :class:`DkimKeyError` saying why and never quoting the key.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024 bits (SHOULD use 2048)
FOLD_WIDTH = 72  # dkimpy's width for the signature header's lines
_WSP_RUN = re.compile(rb"[ \t]+")
# A header field: its name (printable ASCII but ':', RFC 5322 ftext), WSP, ':', the value with its
# folding (CRLF + WSP), CRLF. No alternative overlaps another: linear whatever the input.
_FIELDS = re.compile(rb"([!-9;-~]+)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n")
_HEAD = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n)*")  # the same, whole
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_ASCII_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


class DkimKeyError(ValueError):
    """A DKIM setting that cannot sign: ``str()`` is ``"<setting>: <reason>"`` (``private_key``,
    ``domain`` or ``selector``), never the key itself."""

    def __init__(self, setting: str, reason: str):
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


def load_rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The RSA private key of ``pem`` (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE KEY``)."""
    if not isinstance(pem, bytes) or b"-----BEGIN" not in pem or b"PRIVATE KEY-----" not in pem:
        raise DkimKeyError("private_key", "not a PEM private key (expected -----BEGIN PRIVATE KEY----- "
                                          "or -----BEGIN RSA PRIVATE KEY-----)")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise DkimKeyError("private_key", "the PEM key is encrypted; give it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        if b"\\n" in pem and b"\n" not in pem.strip():
            raise DkimKeyError("private_key", "not a valid PEM private key: its line breaks are the two characters "
                                              "\\n; give the PEM with real line breaks") from None
        raise DkimKeyError("private_key", "not a valid PEM private key (its content does not decode as a key)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = "an EC (elliptic-curve)" if isinstance(key, ec.EllipticCurvePrivateKey) else "a non-RSA"
        raise DkimKeyError("private_key", f"{kind} key; DKIM signing here is rsa-sha256 and needs an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise DkimKeyError("private_key", f"an RSA key of {key.key_size} bits; DKIM needs at least {MIN_RSA_BITS} "
                                          "(RFC 8301), 2048 recommended")
    return key


def check_domain(domain: str) -> str:
    """The signing domain as it goes in ``d=`` (lower-case ASCII, at least two labels)."""
    if not _ASCII_DOMAIN.fullmatch(domain or "") or len(domain) > 253:
        raise DkimKeyError("domain", f"{domain[:80]!r} is not a domain name in ASCII form")
    return domain


def check_selector(selector: str) -> str:
    if not _SELECTOR.fullmatch(selector or "") or len(selector) > 200:
        raise DkimKeyError("selector", f"{selector[:80]!r} is not a selector (dot-separated labels of letters, digits and '-')")
    return selector


def crlf(message: bytes) -> bytes:
    """``message`` with every line ending in CRLF (a bare LF taken as CRLF, a bare CR kept)."""
    if message.count(b"\n") == message.count(b"\r\n"):
        return message
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 (``body`` with CRLF line ends): runs of WSP become one SP, WSP at line ends
    and empty lines at the end go, a non-empty body ends in exactly one CRLF."""
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")  # after the runs were compressed: one SP at most
    if body.endswith(b" "):  # a last line without its CRLF (the transport adds one): its WSP goes too
        body = body[:-1]
    end = len(body)
    while end >= 2 and body.startswith(b"\r\n", end - 2):
        end -= 2
    if end < len(body):
        body = body[:end]
    return body + b"\r\n" if body else b""


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: ``name:value`` with the name in lower case, the value unfolded, runs of
    WSP as one SP and no WSP around it (no CRLF at the end)."""
    value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" \t")


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``([(name, value), ...], body)`` of a message with CRLF line ends: the name without the WSP
    before its colon, the value with its folding (its CRLFs). ``ValueError`` for a header line that
    is neither a field nor a continuation (or holds a bare CR)."""
    if message.startswith(b"\r\n"):
        return [], message[2:]
    head, blank, body = message.partition(b"\r\n\r\n")
    head = head if head.endswith(b"\r\n") else head + b"\r\n"
    if not _HEAD.fullmatch(head):
        raise ValueError("a header line that is not a field (name: value), or a bare CR in a header")
    return _FIELDS.findall(head), body


def selected(fields: Sequence[tuple[bytes, bytes]], names: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """The fields ``names`` (lower case) sign, RFC 6376 §5.4.2: a name listed n times takes the
    last n instances from the bottom up; a name with no instance (left) takes nothing."""
    instances: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(fields):
        instances.setdefault(name.lower(), []).append(i)
    return [fields[found.pop()] for name in names if (found := instances.get(name))]


def body_hash(body: bytes) -> bytes:
    """``bh=``: base64 SHA-256 of the relaxed body (``body`` with CRLF line ends)."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


def _fold(text: bytes, first_used: int) -> bytes:
    """``text`` folded at its spaces (CRLF + the space) into lines of at most FOLD_WIDTH where words allow."""
    lines: list[bytes] = []
    current = b""
    used = first_used
    for word in text.split(b" "):
        if current and used + len(current) + 1 + len(word) > FOLD_WIDTH:
            lines.append(current)
            current, used = word, 1
        else:
            current = current + b" " + word if current else word
    lines.append(current)
    return b"\r\n ".join(lines)


class RsaSigner:
    """One DKIM identity (domain, selector) with its RSA key, parsed once; no repr shows the key."""

    __slots__ = ("domain", "selector", "_key", "_bits")

    def __init__(self, pem: bytes, *, domain: str, selector: str):
        self.domain = check_domain(domain)
        self.selector = check_selector(selector)
        self._key = load_rsa_key(pem)
        self._bits = self._key.key_size

    def __repr__(self) -> str:
        return f"RsaSigner(domain={self.domain!r}, selector={self.selector!r}, rsa-{self._bits})"

    def __reduce__(self):
        raise TypeError("an RsaSigner holds a private key and is not pickled; build it again from the settings")

    def signature_header(self, message: bytes, signed_headers: Sequence[bytes], *, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature:`` field (folded, ending in the message's line end) to put on top of
        ``message``, signing the fields of ``signed_headers`` (lower case) that it has, in that order.
        ``ValueError`` when the message has no From field or a malformed header."""
        unsigned, signed_data = signing_input(message, signed_headers, domain=self.domain, selector=self.selector,
                                              timestamp=int(time.time()) if timestamp is None else timestamp)
        signature = base64.b64encode(self._key.sign(signed_data, padding.PKCS1v15(), hashes.SHA256()))
        width = FOLD_WIDTH - 3
        chunks = [signature[i:i + width] for i in range(0, len(signature), width)]
        header = b"DKIM-Signature:" + unsigned + b"\r\n ".join(chunks) + b"\r\n"
        return header if message.count(b"\n") == message.count(b"\r\n") else header.replace(b"\r\n", b"\n")


def signing_input(message: bytes, signed_headers: Sequence[bytes], *, domain: str, selector: str,
                  timestamp: int) -> tuple[bytes, bytes]:
    """``(value, data)``: the signature field's value up to its empty ``b=`` (folded, after the
    colon), and the bytes the signature covers: the signed fields in relaxed form, then the
    signature field itself with ``b=`` empty and no CRLF (RFC 6376 §3.7)."""
    fields, body = split_message(crlf(message))
    present = {name.lower() for name, _ in fields}
    names = [h for h in signed_headers if h in present]
    if b"from" not in names:
        raise ValueError("a DKIM signature must cover the From field, and the message has none")
    d, s = domain.encode("ascii"), selector.encode("ascii")
    tags = (b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + d + b"; i=@" + d + b"; q=dns/txt; s=" + s
            + b"; t=" + str(timestamp).encode("ascii") + b"; h=" + b" : ".join(names) + b"; bh=" + body_hash(body) + b";")
    unsigned = b" " + _fold(tags, len(b"DKIM-Signature:")) + b"\r\n b="
    # one field at a time: faster than regular expressions over the whole block (~8 µs for a dozen)
    data = b"".join([relaxed_header(name, value) + b"\r\n" for name, value in selected(fields, names)])
    return unsigned, data + relaxed_header(b"DKIM-Signature", unsigned)
