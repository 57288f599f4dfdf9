"""SMTP injection into PowerMTA: several connections, each reused for many messages.

:func:`deliver_from` sends what a :class:`~.delivery.MessageSource` (the send ledger) hands over;
:func:`inject` delivers a list. ``connections`` slots each open one SMTP session (banner, ``EHLO``)
and then run one transaction per message on it: ``MAIL FROM``, ``RCPT TO``, ``DATA``, sent
together when the server offers ``PIPELINING``. A slot takes at most ``pipeline_depth`` messages
at a time from the source, sends them one after another (a 4xx retry waits in the slot, still
held), and gives their outcomes back before it takes more: so at most ``connections`` x
``pipeline_depth`` messages are in flight, whatever the rate. The client is written on asyncio
streams rather than aiosmtplib because the boundary that decides ``unknown`` must be exact (the
moment the message data starts to go out), replies must be capped, and aiosmtplib reads one reply
per command (no pipelining).

What PowerMTA needs to map its accounting lines back to a ledger row (REFERENCE.md, "PowerMTA"):
``x-job: <tenant>.<campaign>`` and ``x-virtual-mta`` headers added at the top of the message, and
the ledger token as ``ENVID`` on ``MAIL FROM`` when the server offers ``DSN`` (with ``RET=HDRS``
and, per recipient, ``NOTIFY=FAILURE`` and ``ORCPT``), else as an ``x-envid`` header -- unless
``x_envid_header`` is off (PowerMTA's ``<source>`` does not process it), then the message fails
rather than carry the header to its recipient. The token is sent with its case kept.
:func:`connecting_address` says which address PowerMTA sees the engine connect from.

Outcomes, per message:

* ``sent``: a 2xx (``250``) to the end of the data;
* ``failed``: a 5xx to ``MAIL``, ``RCPT``, ``DATA`` or the data; or a 4xx (or a connection that
  could not be opened or was lost before the data went out) still there after ``retries`` tries
  with exponential backoff; or a message that cannot be sent as given (bad token, header
  injection, too large, a non-ASCII local part without ``SMTPUTF8``);
* a ``421`` (PowerMTA itself full or shutting down) closes the connection, and the slot backs
  off before reconnecting: every message it holds waits ``retry_backoff_s`` (doubling with each
  ``421`` in a row), so a full PowerMTA is not hammered with new sessions;
* ``unknown``: the connection was lost or timed out once the message data had started to go out:
  the server may have accepted it, so it is never retried; so is a reply to the data that is
  neither 2xx, 4xx nor 5xx.

A destination that :func:`.network_policy.target_refusal` refuses is never connected to: the host
is resolved once, every address is checked, and the connection goes to a checked address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import idna

from email_engine_resources.delivery import (
    DEFAULT_PIPELINE_DEPTH,
    DeliveryResult,
    MessageSource,
    OutgoingMessage,
)
from email_engine_resources.email_domain import split_address
from email_engine_resources.network_policy import target_refusal

SENT, FAILED, UNKNOWN = "sent", "failed", "unknown"

MAX_DETAIL_CHARS = 300
MAX_REPLY_LINE_BYTES = 2048  # RFC 5321 allows 512; a longer line is a protocol error
MAX_REPLY_LINES = 100
MAX_ENVID_CHARS = 100  # RFC 3461
MAX_BACKOFF_S = 60.0

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_ENVID = re.compile(r"[!-~]{1,%d}" % MAX_ENVID_CHARS)  # printable ASCII, no space
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_VMTA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_HELO_NAME = re.compile(r"[A-Za-z0-9.\-\[\]:]{1,255}")
_HEADER_NAME = re.compile(rb"(?im)^(x-job|x-virtual-mta|x-envid)\s*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_XTEXT_PLAIN = re.compile(r"[!-*,-<>-~]*")  # nothing xtext encodes


@dataclass(frozen=True)
class InjectionConfig:
    """Where and how to inject; ``helo_name=""`` means this machine's fully qualified name."""

    host: str
    bounce_address: str
    port: int = 25
    virtual_mta: str | None = None
    connections: int = 4
    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    timeout_s: float = 30.0
    retries: int = 3
    retry_backoff_s: float = 1.0
    allow_private: bool = False
    helo_name: str = ""
    max_message_bytes: int = 50 * 1024 * 1024
    # False when PowerMTA's <source> does not set process-x-envid: the ENVID goes only on MAIL FROM (DSN)
    x_envid_header: bool = True

    def __post_init__(self) -> None:
        if self.helo_name == "":
            object.__setattr__(self, "helo_name", socket.getfqdn())
        if not isinstance(self.helo_name, str) or not _HELO_NAME.fullmatch(self.helo_name):
            raise ValueError(f"powermta helo_name must be a host name, got {_excerpt(str(self.helo_name))!r}")
        if not isinstance(self.host, str) or not self.host.strip() or _UNSAFE_ADDRESS.search(self.host):
            raise ValueError(f"powermta host must be a host name or IP address, got {_excerpt(str(self.host))!r}")
        if not isinstance(self.bounce_address, str) or _UNSAFE_ADDRESS.search(self.bounce_address) or (
            "@" not in self.bounce_address
        ):
            raise ValueError(
                f"powermta bounce_address must be an address without spaces or '<>', got {_excerpt(str(self.bounce_address))!r}"
            )
        if self.virtual_mta is not None and not (isinstance(self.virtual_mta, str) and _VMTA.fullmatch(self.virtual_mta)):
            raise ValueError(
                f"powermta virtual_mta must be a name of letters, digits, '.', '_', '-', got {_excerpt(str(self.virtual_mta))!r}"
            )
        _require_int("port", self.port, 1, 65535)
        _require_int("connections", self.connections, 1, 64)
        _require_int("pipeline_depth", self.pipeline_depth, 1, 64)
        _require_int("retries", self.retries, 0, 10)
        _require_int("max_message_bytes", self.max_message_bytes, 1)
        for name in ("timeout_s", "retry_backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"powermta {name} must be a number >= 0, got {value!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"powermta timeout_s must be > 0, got {self.timeout_s!r}")


def connecting_address(host: str, port: int) -> str:
    """The local address a connection to ``host``:``port`` leaves from (the address PowerMTA matches its
    ``<source>`` blocks against). A UDP socket is connected, which picks the route without sending
    anything; ``OSError`` when the host does not resolve or has no route."""
    family, _kind, _proto, _name, target = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(target)
        return probe.getsockname()[0]


def _require_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high)
    if not ok:
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"powermta {name} must be an integer {bound}, got {value!r}")


def _excerpt(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """One line, control characters escaped (``\\r``, ``\\x1b``), at most ``limit`` characters."""
    if len(text) <= limit and text.isprintable():  # the usual "250 ok": nothing to escape or cut
        return text
    text = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def xtext(value: str) -> str:
    """RFC 3461 xtext: ``+``, ``=`` and characters outside ``!``..``~`` as ``+XX``."""
    if _XTEXT_PLAIN.fullmatch(value):
        return value
    out = []
    for char in value:
        code = ord(char)
        out.append(char if 33 <= code <= 126 and char not in "+=" else f"+{code:02X}")
    return "".join(out)


# --- the message as it goes on the wire -------------------------------------------------------


class _Unsendable(ValueError):
    """The message cannot be sent as given; it fails without being retried."""


@dataclass(frozen=True)
class _Prepared:
    message: OutgoingMessage
    local: str
    domain: str  # as given (may be non-ASCII)
    ascii_domain: str  # IDNA A-label
    body: bytes  # normalised to CRLF, dot-stuffed, terminated by ".\r\n"
    eight_bit: bool


def _prepare(message: OutgoingMessage, config: InjectionConfig) -> _Prepared:
    if not isinstance(message.job, str) or not _JOB.fullmatch(message.job):
        raise _Unsendable(f"x-job {_excerpt(str(message.job), 60)!r} is not a name of letters, digits, '.', '_', '-'")
    if not isinstance(message.envelope_id, str) or not _ENVID.fullmatch(message.envelope_id):
        raise _Unsendable(f"envelope id must be 1..{MAX_ENVID_CHARS} printable ASCII characters without spaces")
    recipient = message.recipient
    local, domain = split_address(recipient) if isinstance(recipient, str) else ("", None)
    domain = domain or ""
    if not local or not domain or _UNSAFE_ADDRESS.search(recipient):
        raise _Unsendable(f"recipient {_excerpt(str(recipient), 80)!r} is not an address without spaces or '<>'")
    ascii_domain = _idna(domain.rstrip("."))
    if ascii_domain is None:
        raise _Unsendable(f"recipient domain {_excerpt(domain, 80)!r} is not a valid IDNA name")
    data = message.message
    if not isinstance(data, bytes) or not data:
        raise _Unsendable("message is empty or not bytes")
    if len(data) > config.max_message_bytes:
        raise _Unsendable(f"message is {len(data)} bytes, over the limit of {config.max_message_bytes}")
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    end = head.find(b"\n\n")
    if _HEADER_NAME.search(head if end < 0 else head[:end]):
        raise _Unsendable("message already carries an x-job, x-virtual-mta or x-envid header")
    crlf = data.count(b"\r\n")  # a composed message is all CRLF already: counted, not rewritten
    if crlf != data.count(b"\n") or crlf != data.count(b"\r"):
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    body = data + b".\r\n"
    return _Prepared(message, local, domain, ascii_domain, body, not data.isascii())


@functools.lru_cache(maxsize=4096)
def _idna(domain: str) -> str | None:
    """The IDNA A-label form of ``domain`` (None: not a valid IDNA name); a campaign's recipients share
    few domains, so each is encoded once."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


# --- SMTP replies and one connection ----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return _excerpt(f"{self.code} {' '.join(self.text.splitlines())}")


class _Lost(Exception):
    """The connection is gone, timed out or spoke something that is not SMTP."""


class _Connection:
    """One SMTP session on one checked address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: set[str] = set()
        self.used = False  # a transaction already ran on it

    @classmethod
    async def open(cls, ip: str, config: InjectionConfig) -> _Connection:
        try:
            async with asyncio.timeout(config.timeout_s):
                reader, writer = await asyncio.open_connection(ip, config.port, limit=MAX_REPLY_LINE_BYTES)
        except (OSError, TimeoutError) as exc:
            raise _Lost(f"cannot connect to {ip} port {config.port}: {type(exc).__name__}: {exc}") from None
        conn = cls(reader, writer, config.timeout_s)
        try:
            banner = await conn.reply()
            if banner.code != 220:
                raise _Lost(f"server refused the session: {banner}")
            conn.send(f"EHLO {config.helo_name}".encode("ascii"))
            ehlo = await conn.reply()
            if ehlo.code == 250:
                conn.extensions = {line.split(" ", 1)[0].upper() for line in ehlo.text.split("\n")[1:] if line}
            else:
                conn.send(f"HELO {config.helo_name}".encode("ascii"))
                helo = await conn.reply()
                if helo.code != 250:
                    raise _Lost(f"server refused HELO: {helo}")
        except _Lost:
            conn.close()
            raise
        return conn

    def offers(self, extension: str) -> bool:
        return extension in self.extensions

    def send(self, *lines: bytes) -> None:
        try:
            self.writer.write(b"".join(line + b"\r\n" for line in lines))
        except (OSError, RuntimeError) as exc:
            raise _Lost(f"connection lost: {type(exc).__name__}") from None

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (OSError, RuntimeError, TimeoutError) as exc:
            raise _Lost(f"connection lost while writing: {type(exc).__name__}") from None

    async def reply(self) -> Reply:
        """One (possibly multi-line) reply; over ``MAX_REPLY_LINES`` lines or a bad line is ``_Lost``."""
        return (await self.replies(1))[0]

    async def replies(self, count: int, data: bytes = b"", out: list[Reply] | None = None) -> list[Reply]:
        """``data`` written (if any), then ``count`` replies (appended to ``out`` as they come, so a caller
        knows how many came before a loss), all within one ``timeout``: one timer for the pipelined
        ``MAIL``/``RCPT``/``DATA``, one for the message and its reply, rather than one per line."""
        out = [] if out is None else out
        written = not data
        try:
            async with asyncio.timeout(self.timeout):
                if data:
                    try:
                        self.writer.write(data)
                        await self.writer.drain()
                    except (OSError, RuntimeError) as exc:
                        raise _Lost(f"connection lost while writing: {type(exc).__name__}") from None
                    written = True
                for _ in range(count):
                    out.append(await self._read_reply())
        except TimeoutError:
            if not written:
                raise _Lost("connection lost while writing: TimeoutError") from None
            raise _Lost(f"no reply within {self.timeout:g} s") from None
        except ValueError:  # readline over the stream limit
            raise _Lost(f"reply line longer than {MAX_REPLY_LINE_BYTES} bytes") from None
        except OSError as exc:
            raise _Lost(f"connection lost: {type(exc).__name__}") from None
        return out

    async def _read_reply(self) -> Reply:
        lines: list[str] = []
        code = None
        while True:
            raw = await self.reader.readline()
            if not raw.endswith(b"\n"):
                raise _Lost("connection closed by the server")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise _Lost(f"not an SMTP reply: {_excerpt(line, 60)!r}")
            if code is not None and int(line[:3]) != code:
                raise _Lost("multi-line reply changes its code")
            code = int(line[:3])
            lines.append(line[4:])
            if len(lines) > MAX_REPLY_LINES:
                raise _Lost(f"reply longer than {MAX_REPLY_LINES} lines")
            if line[3:4] != "-":
                return Reply(code, "\n".join(lines))

    async def quit(self) -> None:
        """Say QUIT and read up to its 221. A run stopped mid-transaction still has replies on the
        way; closing with them unread makes the kernel reset the connection, which can discard the
        QUIT before the server reads it and leave PowerMTA a session that ended without one."""
        try:
            self.send(b"QUIT")
            async with asyncio.timeout(min(self.timeout, 2.0)):
                await self.writer.drain()
                while (await self.reply()).code != 221:
                    pass
        except (_Lost, OSError, TimeoutError):
            pass
        self.close()

    def close(self) -> None:
        self.writer.close()


# --- one transaction --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    status: str  # SENT, FAILED, UNKNOWN, or RETRY (a transient refusal before the data was taken)
    detail: str
    keep_connection: bool = True
    before_any_reply: bool = False  # a reused connection that was already gone
    server_busy: bool = False  # a 421: PowerMTA itself closes the session (full, shutting down)


RETRY = "retry"


def _accepted(reply: Reply, expected: int) -> bool:
    """``MAIL``/``RCPT`` take any 2xx (``250``, ``251``); ``DATA`` must open with ``354``."""
    return reply.code == 354 if expected == 354 else 200 <= reply.code < 300


def _classify(stage: str, reply: Reply) -> _Outcome:
    detail = f"{stage}: {reply}"
    if reply.code == 421:
        return _Outcome(RETRY, detail, keep_connection=False, server_busy=True)
    if 400 <= reply.code < 500:
        return _Outcome(RETRY, detail)
    return _Outcome(FAILED, detail)


def _envelope(conn: _Connection, item: _Prepared, config: InjectionConfig) -> tuple[bytes, bytes, bytes] | str:
    """``MAIL``, ``RCPT`` lines and the header lines to put on top; or why it cannot be sent."""
    message = item.message
    utf8 = not (item.local.isascii() and item.domain.isascii() and config.bounce_address.isascii())
    if utf8 and not conn.offers("SMTPUTF8"):
        if not (item.local.isascii() and config.bounce_address.isascii()):
            return "server does not offer SMTPUTF8 for a non-ASCII address"
        utf8 = False
    domain = item.domain if utf8 else item.ascii_domain
    recipient = f"{item.local}@{domain}"
    mail = [f"MAIL FROM:<{config.bounce_address}>"]
    rcpt = [f"RCPT TO:<{recipient}>"]
    headers = [f"x-job: {message.job}"]
    if config.virtual_mta:
        headers.append(f"x-virtual-mta: {config.virtual_mta}")
    if item.eight_bit and conn.offers("8BITMIME"):
        mail.append("BODY=8BITMIME")
    if utf8:
        mail.append("SMTPUTF8")
    if conn.offers("DSN"):
        mail += [f"ENVID={xtext(message.envelope_id)}", "RET=HDRS"]
        rcpt.append("NOTIFY=FAILURE")
        if recipient.isascii():
            rcpt.append(f"ORCPT=rfc822;{xtext(recipient)}")
    elif config.x_envid_header:
        headers.append(f"x-envid: {message.envelope_id}")
    else:
        return ("the server offers no DSN and PowerMTA's <source> does not set process-x-envid: "
                "the ENVID would reach the recipient as an x-envid header")
    top = "".join(f"{line}\r\n" for line in headers).encode("ascii")
    return " ".join(mail).encode("utf-8"), " ".join(rcpt).encode("utf-8"), top


async def _transaction(conn: _Connection, item: _Prepared, config: InjectionConfig) -> _Outcome:
    envelope = _envelope(conn, item, config)
    if isinstance(envelope, str):
        return _Outcome(FAILED, envelope)
    mail, rcpt, top = envelope
    reused = conn.used
    conn.used = True
    replies: list[Reply] = []
    try:
        if conn.offers("PIPELINING"):
            conn.send(mail, rcpt, b"DATA")
            await conn.replies(3, out=replies)
        else:
            for line, expected in ((mail, 250), (rcpt, 250), (b"DATA", 354)):
                conn.send(line)
                replies.append(await conn.reply())
                if not _accepted(replies[-1], expected):
                    break
    except _Lost as exc:
        return _Outcome(RETRY, f"before DATA: {exc}", keep_connection=False, before_any_reply=reused and not replies)
    for stage, reply in zip(("MAIL FROM", "RCPT TO"), replies):
        if not _accepted(reply, 250):
            return await _abandon(conn, replies, _classify(stage, reply))
    if replies[2].code != 354:
        return await _abandon(conn, replies, _classify("DATA", replies[2]))
    # From here on the server may take the message: a lost connection is ``unknown``.
    try:
        [final] = await conn.replies(1, top + item.body)
    except _Lost as exc:
        return _Outcome(UNKNOWN, f"after the message data went out: {exc}", keep_connection=False)
    if 200 <= final.code < 300:
        return _Outcome(SENT, str(final))
    if not 400 <= final.code < 600:  # neither taken nor refused: the fate is not known
        return _Outcome(UNKNOWN, f"end of DATA: unexpected reply {final}", keep_connection=False)
    return _classify("end of DATA", final)


async def _abandon(conn: _Connection, replies: list[Reply], outcome: _Outcome) -> _Outcome:
    """After a refusal: end a DATA the server opened anyway, then ``RSET`` for the next message."""
    if not outcome.keep_connection:
        return outcome
    try:
        if len(replies) == 3 and replies[2].code == 354:
            await conn.write(b".\r\n")  # an empty message; RCPT was refused, so it goes nowhere
            await conn.reply()
        conn.send(b"RSET")
        if (await conn.reply()).code != 250:
            return _Outcome(outcome.status, outcome.detail, keep_connection=False)
    except _Lost:
        return _Outcome(outcome.status, outcome.detail, keep_connection=False)
    return outcome


# --- the connections -------------------------------------------------------------------------


@dataclass
class _Item:
    prepared: _Prepared
    attempts: int = 0
    reconnected: bool = False
    not_before: float = 0.0  # loop time before which a retry waits


class _Slot:
    """One connection and the messages it holds: at most ``pipeline_depth``, taken from the source
    together, sent one after another; their outcomes go back to the source (recorded) before it
    takes more. A message waiting for a retry stays held, so what is in flight never grows."""

    def __init__(self, source: MessageSource, ips: list[str], refusal: str | None, config: InjectionConfig,
                 stop: asyncio.Event) -> None:
        self.source = source
        self.stop = stop  # set once the source failed: every slot ends the transaction it is in, then QUITs
        self.ips = ips
        self.refusal = refusal
        self.config = config
        self.held: list[_Item] = []
        self.outcomes: list[DeliveryResult] = []
        self.drained = False
        self.conn: _Connection | None = None
        self.busy = 0  # 421s in a row: the backoff before reconnecting doubles with each
        self.exchanging: tuple[asyncio.Future, int] | None = None  # the exchange under way, and how many it asked for
        self.loop = asyncio.get_running_loop()

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._start_exchange()
                item = self._ready()
                if item is not None:
                    await self._send(item)
                elif self.exchanging is not None:
                    await self._end_exchange()
                elif self.held:  # every message held waits for its retry, or the stop
                    wait = max(0.0, min(held.not_before for held in self.held) - self.loop.time())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), wait)
                elif self.drained and not self.outcomes:
                    return
        finally:
            if self.exchanging is not None:  # the source is told what it handed over came to, even on the stop
                with contextlib.suppress(Exception):
                    await self._end_exchange()
            if self.conn is not None:
                await self.conn.quit()

    def _ready(self) -> _Item | None:
        now = self.loop.time()
        return next((item for item in self.held if item.not_before <= now), None)

    def _start_exchange(self) -> None:
        """Give back the outcomes and take what the connection has room for, in the background: the
        connection goes on sending what it holds meanwhile. One exchange at a time, so what is held
        plus what it takes stays within ``pipeline_depth``. It starts once half the depth is free
        (fewer, larger exchanges), or when nothing is left to send until it returns."""
        if self.exchanging is not None:
            return
        room = 0 if self.drained else self.config.pipeline_depth - len(self.held)
        idle = self._ready() is None
        if not (room >= max(1, self.config.pipeline_depth // 2) or (idle and (room or self.outcomes))):
            return
        outcomes, self.outcomes = self.outcomes, []
        self.exchanging = (asyncio.ensure_future(asyncio.to_thread(self.source.exchange, outcomes, room)), room)

    async def _end_exchange(self) -> None:
        (task, want), self.exchanging = self.exchanging, None
        try:
            taken = await task
        except BaseException:
            self.stop.set()
            raise
        self.drained = self.drained or (want > 0 and not taken)
        for message in taken:
            self._take(message)

    def _take(self, message: OutgoingMessage) -> None:
        try:
            prepared = _prepare(message, self.config)
        except _Unsendable as exc:
            self.outcomes.append(DeliveryResult(message.row_id, FAILED, f"not sent: {exc}"))
            return
        if self.refusal is not None:
            self.outcomes.append(DeliveryResult(message.row_id, FAILED, self.refusal))
            return
        self.held.append(_Item(prepared))

    def _resolve(self, item: _Item, status: str, detail: str) -> None:
        self.held.remove(item)
        self.outcomes.append(DeliveryResult(item.prepared.message.row_id, status, _excerpt(detail)))

    def _retry_later(self, item: _Item, detail: str) -> None:
        item.attempts += 1
        if item.attempts > self.config.retries:
            tries = "try" if item.attempts == 1 else "tries"
            self._resolve(item, FAILED, f"{detail} (after {item.attempts} {tries})")
            return
        item.not_before = self.loop.time() + min(self.config.retry_backoff_s * 2 ** (item.attempts - 1), MAX_BACKOFF_S)

    async def _open(self) -> _Connection:
        failure = "no address"
        for ip in self.ips:
            try:
                return await _Connection.open(ip, self.config)
            except _Lost as exc:
                failure = str(exc)
        raise _Lost(failure)

    async def _send(self, item: _Item) -> None:
        if self.conn is not None and self.conn.reader.at_eof():  # the server closed it while idle
            self.conn.close()
            self.conn = None
        if self.conn is None:
            try:
                self.conn = await self._open()
            except _Lost as exc:
                self._retry_later(item, str(exc))
                return
        try:
            outcome = await _transaction(self.conn, item.prepared, self.config)
        except Exception as exc:  # a fault of ours must not stop the others; the data may have gone
            outcome = _Outcome(UNKNOWN, f"client error: {type(exc).__name__}", keep_connection=False)
        if not outcome.keep_connection:
            self.conn.close()
            self.conn = None
        if outcome.server_busy:  # PowerMTA is full: this connection backs off before it reconnects, whatever it holds
            self.busy += 1
            until = self.loop.time() + min(self.config.retry_backoff_s * 2 ** (self.busy - 1), MAX_BACKOFF_S)
            for held in self.held:
                held.not_before = max(held.not_before, until)
        elif outcome.status == SENT:
            self.busy = 0
        if outcome.status == RETRY and outcome.before_any_reply and not item.reconnected:
            item.reconnected = True  # an idle connection the server had closed: not a try
        elif outcome.status == RETRY:
            self._retry_later(item, outcome.detail)
        else:
            self._resolve(item, outcome.status, outcome.detail)


class _ListSource:
    """The messages of one :func:`inject` call as a source; the results are kept in ``results``.

    Each take is at most an even share of what is left, so a few messages still spread over the
    connections."""

    def __init__(self, messages: Sequence[OutgoingMessage], slots: int) -> None:
        self.pending = list(reversed(messages))
        self.slots = slots
        self.results: list[DeliveryResult] = []
        self.lock = threading.Lock()

    def exchange(self, results: Sequence[DeliveryResult], want: int) -> list[OutgoingMessage]:
        with self.lock:
            self.results.extend(results)
            share = min(want, -(-len(self.pending) // self.slots))
            return [self.pending.pop() for _ in range(share)]


async def _addresses(config: InjectionConfig) -> tuple[list[str], str | None]:
    """The checked addresses to connect to, or why there are none (nothing was connected to)."""
    host = config.host.strip()
    try:
        ips = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, config.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return [], f"cannot resolve powermta host {_excerpt(host, 80)!r}: {exc}"
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [ip for ip in ips if target_refusal(ip, allow_private=config.allow_private) is None]
    if not allowed:
        refusal = target_refusal(ips[0], allow_private=config.allow_private) if ips else "no address"
        return [], f"not sent: powermta host {_excerpt(host, 80)!r}: {refusal}"
    return allowed, None


async def deliver_from_async(source: MessageSource, config: InjectionConfig, *, slots: int | None = None) -> None:
    """Send what ``source`` hands over on ``slots`` connections (default ``config.connections``),
    each outcome given back through it; never raises for one message. An error of the source
    itself (its database) stops every connection and the first is raised: each connection first
    ends the transaction it is in (cutting one in DATA would leave the server half a message and no
    QUIT), then says QUIT; what it still holds was never sent."""
    if not isinstance(config, InjectionConfig):
        raise TypeError(f"config must be an InjectionConfig, got {type(config).__name__}")
    ips, refusal = await _addresses(config)
    stop = asyncio.Event()
    failures: list[BaseException] = []

    async def run(slot: _Slot) -> None:
        try:
            await slot.run()
        except Exception as exc:
            failures.append(exc)

    await asyncio.gather(*(run(_Slot(source, ips, refusal, config, stop)) for _ in range(slots or config.connections)))
    if failures:
        raise failures[0]


async def inject_async(messages: Sequence[OutgoingMessage], config: InjectionConfig) -> list[DeliveryResult]:
    """One :class:`DeliveryResult` per message (in completion order); never raises for one message."""
    if not messages:
        return []
    source = _ListSource(messages, min(config.connections, len(messages)))
    await deliver_from_async(source, config, slots=source.slots)
    return source.results


def _blocking(work):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def inject(messages: Sequence[OutgoingMessage], config: InjectionConfig) -> list[DeliveryResult]:
    """Blocking :func:`inject_async`; runs in a fresh thread when a loop is already running."""
    return _blocking(inject_async(messages, config))


def deliver_from(source: MessageSource, config: InjectionConfig) -> None:
    """Blocking :func:`deliver_from_async`; runs in a fresh thread when a loop is already running."""
    _blocking(deliver_from_async(source, config))
