"""One RFC 5322 message per ledger row, for the outbox and PowerMTA (MailWizz builds its own).

Headers: Date, From, To, Reply-To, Subject, Message-ID, ``List-Unsubscribe: <https://…/u/<token>>,
<mailto:…>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), MIME-Version;
the body is ``multipart/alternative`` with the text part first and the HTML part last (the one a
client prefers). Lines end in CRLF. Non-ASCII in display names and the subject is RFC 2047
encoded; each part is UTF-8 in 7bit when it is ASCII, else quoted-printable or base64, whichever is
shorter. The link headers are written as they are (the email library would encode a long URL as
an encoded word, which no client follows); they and the caller's extra headers must be ASCII
without line breaks.

With a :class:`DkimKey` the message is signed (dkimpy, rsa-sha256, relaxed/relaxed) over the
headers a receiver checks, ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` included.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

import dkim
import idna

from email_engine_assets.content.rendering import Rendered
from email_engine_assets.tenancy.sending import DkimSettings

_POLICY = email.policy.SMTP.clone(cte_type="7bit", max_line_length=78)
_ROW_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
_RAW_VALUE = re.compile(r"^[\x20-\x7e]{1,900}$")
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


@dataclass(frozen=True)
class DkimKey:
    """A DKIM signing key; ``private_key`` (PEM) never shows in a repr."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> DkimKey:
        """The tenant's ``dkim:`` settings, the PEM read from the environment variable they name."""
        return cls(domain=settings.domain, selector=settings.selector, private_key=settings.private_key.read().encode("ascii"))


def ascii_domain(domain: str) -> str:
    """``domain`` in its ASCII (IDNA) form; ``ValueError`` if it is no domain name."""
    domain = domain.strip().rstrip(".")
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"not a valid domain name: {exc}") from None


def mail_address(display_name: str | None, address: str) -> Address:
    """An address whose domain is in ASCII form; a non-ASCII local part would need SMTPUTF8: refused."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or any(c in address for c in "\r\n<>,\"\\ \t"):
        raise ValueError("not a plain address (local@domain)")
    if not local.isascii():
        raise ValueError("a non-ASCII local part needs SMTPUTF8, which these messages do not use")
    name = re.sub(r"[\r\n\t]+", " ", display_name or "").strip()
    return Address(display_name=name, addr_spec=f"{local}@{ascii_domain(domain)}")


def message_id(row_token: str, domain: str) -> str:
    """``<row_token@domain>``: the same for every attempt of one ledger row."""
    if not _ROW_TOKEN.match(row_token or ""):
        raise ValueError("row token must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return f"<{row_token}@{ascii_domain(domain)}>"


def _raw(name: str, value: str) -> str:
    if not _RAW_VALUE.match(value):
        raise ValueError(f"header {name}: the value must be 1-900 printable ASCII characters without line breaks")
    return f"{name}: {value}"


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
    msg = EmailMessage(policy=_POLICY)
    msg["Date"] = format_datetime(date or datetime.now(timezone.utc))
    msg["From"] = mail_address(from_name, from_email)
    msg["To"] = mail_address(to_name, to_email)
    if reply_to:
        msg["Reply-To"] = mail_address(None, reply_to)
    msg["Subject"] = re.sub(r"[\r\n]+", " ", rendered.subject)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.make_alternative()
    html = MIMEPart(policy=_POLICY)
    html.set_content(rendered.html, subtype="html", charset="utf-8")
    msg.attach(html)

    links = [f"<{unsubscribe_url}>"] + ([f"<mailto:{unsubscribe_mailto}>"] if unsubscribe_mailto else [])
    raw = [
        _raw("Message-ID", message_id),
        _raw("List-Unsubscribe", ", ".join(links)).replace(">, <", ">,\r\n <"),
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]
    for name, value in extra_headers.items():
        if not _HEADER_NAME.match(name) or name.lower() in _OWN_HEADERS:
            raise ValueError(f"extra header {name[:64]!r}: not a header name this message may add")
        raw.append(_raw(name, value))
    data = msg.as_bytes(policy=_POLICY)
    head, sep, body = data.partition(b"\r\n\r\n")
    data = head + b"\r\n" + "\r\n".join(raw).encode("ascii") + sep + body
    if dkim is not None:
        data = _dkim_sign(data, dkim) + data
    return data


def _dkim_sign(data: bytes, key: DkimKey) -> bytes:
    present = {line.split(b":", 1)[0].strip().lower() for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n") if b":" in line and not line[:1].isspace()}
    try:
        return dkim.sign(
            data,
            key.selector.encode("ascii"),
            ascii_domain(key.domain).encode("ascii"),
            key.private_key,
            include_headers=[h for h in DKIM_SIGNED_HEADERS if h in present],
            canonicalize=(b"relaxed", b"relaxed"),
            linesep=b"\r\n",
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"DKIM signing for {key.domain} failed: {type(exc).__name__}") from None
