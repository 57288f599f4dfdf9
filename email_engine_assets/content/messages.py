"""One RFC 5322 message per ledger row, for the outbox and PowerMTA (MailWizz builds its own).

Headers: Date, From, To, Reply-To, Subject, Message-ID, ``List-Unsubscribe: <https://…/u/<token>>,
<mailto:…>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), MIME-Version;
the body is ``multipart/alternative`` with the text part first and the HTML part last (the one a
client prefers). Lines end in CRLF and stay under 998 octets. Non-ASCII display names and
subjects are RFC 2047 encoded words (folded); each part is UTF-8, sent as 7bit when it is short-lined
ASCII, else quoted-printable or base64, whichever is shorter. Addresses are ASCII: domains in their
IDNA form, a non-ASCII local part refused (it would need SMTPUTF8).

The message is written directly rather than through :mod:`email.message` (whose header objects
cost milliseconds per message); the tests parse every shape back with :mod:`email.parser`.
The boundary is derived from the Message-ID, so one ledger row always yields the same message but
for its Date.

With a :class:`DkimKey` the message is signed (rsa-sha256, relaxed/relaxed, by OpenSSL: see
:mod:`~email_engine_assets.content.dkim_signing`) over the headers a receiver checks,
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` included. The key is parsed once, when the
:class:`DkimKey` is built: a key that cannot sign fails there, before any message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime

import idna

from email_engine_assets.content.dkim_signing import DkimKeyError, RsaSigner
from email_engine_assets.content.rendering import Rendered
from email_engine_assets.tenancy.sending import DkimSettings
from email_engine_resources.email_domain import split_address

DISPLAY_NAME_MAX_CHARS = 200
_ROW_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}\Z")
_RAW_VALUE = re.compile(r"^[\x20-\x7e]{1,900}\Z")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*\Z")
_LINE_BREAKS = re.compile(r"[\r\n\t\x0b\x0c\x85\u2028\u2029]+")
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "List-Unsubscribe",
        "List-Unsubscribe-Post", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "DKIM-Signature",
    )
)
DKIM_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"reply-to", b"subject", b"date", b"message-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"mime-version", b"content-type", b"content-language",
)


class AddressError(ValueError):
    """An address that cannot be written in a message (the contact is skipped, not the campaign)."""


@dataclass(frozen=True)
class DkimKey:
    """A DKIM signing key, parsed once here: :class:`DkimKeyError` (a ``ValueError`` naming the
    setting and why) for a key that is no PEM private key, not RSA or under 1024 bits, or a bad
    domain or selector. ``private_key`` (PEM) never shows in a repr."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)
    signer: RsaSigner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            domain = ascii_domain(self.domain)
        except ValueError as exc:
            raise DkimKeyError("domain", str(exc)) from None
        object.__setattr__(self, "signer", RsaSigner(self.private_key, domain=domain, selector=self.selector))

    def __reduce__(self):  # the parsed key does not pickle: another process parses the PEM again
        return (DkimKey, (self.domain, self.selector, self.private_key))

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> DkimKey:
        """The tenant's ``dkim:`` settings, the PEM read from the environment variable they name."""
        return cls(domain=settings.domain, selector=settings.selector, private_key=settings.private_key.read().encode("ascii"))


def ascii_domain(domain: str) -> str:
    """``domain`` in its ASCII (IDNA) form; ``ValueError`` if it is no domain name."""
    domain = domain.strip().rstrip(".")
    if domain.isascii() and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", domain):
        domain = domain.lower()
        if all(0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-") for label in domain.split(".")):
            return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"not a valid domain name: {exc}") from None


def addr_spec(address: str) -> str:
    """``local@domain`` with the domain in ASCII form; ``ValueError`` for anything else."""
    local, domain = split_address(address.strip())
    if domain is None or not local or len(address) > 254:
        raise ValueError("not a plain address (local@domain)")
    if not local.isascii():
        raise ValueError("a non-ASCII local part needs SMTPUTF8, which these messages do not use")
    if not _LOCAL_PART.match(local):
        raise ValueError("not a plain address (local@domain): the local part is not a dot-atom")
    return f"{local}@{ascii_domain(domain)}"


_WORD_BYTES = 42  # base64 of 42 bytes is 56 characters: an encoded word of 68, a line under 78


def _encoded(text: str) -> str:
    """RFC 2047 ``B`` encoded words of whole characters, one per folded line (CRLF + space).

    (``email.header.Header`` does the same at about a millisecond per header.)"""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        data = char.encode("utf-8")
        if len(chunk) + len(data) > _WORD_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = bytearray()
        chunk += data
    if chunk:
        words.append(chunk.decode("utf-8"))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words)


def _fold_ascii(text: str, first_line_used: int) -> str:
    """Plain ASCII folded at spaces to lines under 78 characters where words allow."""
    lines: list[str] = []
    current = ""
    used = first_line_used
    for word in text.split(" "):
        if current and used + len(current) + 1 + len(word) > 78:
            lines.append(current)
            current, used = word, 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def mail_address(display_name: str | None, address: str) -> str:
    """``Name <local@domain>`` as a header value (the name quoted or encoded as needed)."""
    spec = addr_spec(address)
    name = _LINE_BREAKS.sub(" ", display_name or "").strip()[:DISPLAY_NAME_MAX_CHARS]
    if not name:
        return spec
    if name.isascii() and name.isprintable() and "=?" not in name:
        shown = name if _ATOM_PHRASE.match(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        shown = _encoded(name)
    return f"{shown} <{spec}>"


def message_id(row_token: str, domain: str) -> str:
    """``<row_token@domain>``: the same for every attempt of one ledger row."""
    if not _ROW_TOKEN.match(row_token or ""):
        raise ValueError("row token must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return f"<{row_token}@{ascii_domain(domain)}>"


def _raw(name: str, value: str) -> str:
    if not _RAW_VALUE.match(value):
        raise ValueError(f"header {name}: the value must be 1-900 printable ASCII characters without line breaks")
    return f"{name}: {value}"


def _subject(subject: str) -> str:
    subject = _LINE_BREAKS.sub(" ", subject).strip()
    if subject.isascii() and subject.isprintable() and "=?" not in subject and all(len(w) < 900 for w in subject.split(" ")):
        return _fold_ascii(subject, len("Subject: "))
    return _encoded(subject)


def _part(content: str, subtype: str) -> bytes:
    """One ``text/<subtype>`` part, UTF-8, in the shortest safe transfer encoding."""
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if content.isascii() and all(len(line) <= 78 for line in lines):
        cte, body = "7bit", "".join(line + "\r\n" for line in lines).encode("ascii")
    else:
        raw = "".join(line + "\n" for line in lines).encode("utf-8")
        qp = binascii.b2a_qp(raw, istext=True).replace(b"\n", b"\r\n")
        b64 = base64.encodebytes(raw.replace(b"\n", b"\r\n")).replace(b"\n", b"\r\n")
        cte, body = ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    return head.encode("ascii") + body + b"\r\n"


def build_message(
    *,
    rendered: Rendered,
    from_name: str | None,
    from_email: str,
    reply_to: str | None,
    to_email: str,
    to_name: str | None,
    message_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None,
    dkim: DkimKey | None,
    extra_headers: Mapping[str, str] = {},  # noqa: B006 (read only)
    date: datetime | None = None,
) -> bytes:
    """The whole message (headers and body, CRLF line ends), DKIM-signed when a key is given.
    ``ValueError`` naming the header for an address, URL or extra header that cannot be used."""
    try:
        sender = mail_address(from_name, from_email)
        recipient = mail_address(to_name, to_email)
        answer = addr_spec(reply_to) if reply_to else None
    except ValueError as exc:
        raise AddressError(f"address: {exc}") from None
    links = [f"<{unsubscribe_url}>"] + ([f"<mailto:{unsubscribe_mailto}>"] if unsubscribe_mailto else [])
    headers = [
        f"Date: {format_datetime(date or datetime.now(timezone.utc))}",
        f"From: {sender}",
        f"To: {recipient}",
        *([f"Reply-To: {answer}"] if answer else []),
        f"Subject: {_subject(rendered.subject)}",
        _raw("Message-ID", message_id),
        _raw("List-Unsubscribe", ", ".join(links)).replace(">, <", ">,\r\n <"),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]
    for name, value in extra_headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _OWN_HEADERS:
            raise ValueError(f"extra header {name[:64]!r}: not a header name this message may add")
        headers.append(_raw(name, value))
    parts = [_part(rendered.text, "plain"), _part(rendered.html, "html")]
    boundary = "=_" + hashlib.sha256(message_id.encode()).hexdigest()[:28]
    while any(boundary.encode() in p for p in parts):  # cannot happen with qp/base64; 7bit text could hold it
        boundary += "_"
    headers += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"']
    delimiter = b"--" + boundary.encode("ascii")
    body = b"".join(delimiter + b"\r\n" + p for p in parts) + delimiter + b"--\r\n"
    data = "\r\n".join(headers).encode("ascii") + b"\r\n\r\n" + body
    if dkim is not None:
        data = _dkim_sign(data, dkim) + data
    return data


def _dkim_sign(data: bytes, key: DkimKey) -> bytes:
    try:
        return key.signer.signature_header(data, DKIM_SIGNED_HEADERS)
    except ValueError as exc:
        raise ValueError(f"DKIM signing for {key.domain} failed: {exc}") from None
