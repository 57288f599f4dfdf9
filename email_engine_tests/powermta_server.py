"""A PowerMTA stand-in on loopback for tests of SMTP injection.

Built on ``aiosmtpd`` like :mod:`email_engine_tests.smtp_server` and speaking what PowerMTA
speaks to an injecting client (REFERENCE.md, "PowerMTA"): ``EHLO`` advertises ``DSN``,
``PIPELINING``, ``8BITMIME`` and ``SMTPUTF8``; ``MAIL FROM`` takes ``ENVID`` (its case kept),
``RET``, ``BODY``, ``SIZE`` and ``SMTPUTF8``; ``RCPT TO`` takes ``NOTIFY`` and ``ORCPT``. Other
parameters get ``555`` as aiosmtpd answers them. ``dsn=False`` drops ``DSN`` from ``EHLO`` and
refuses its parameters, like a listener without it; ``smtputf8=False`` drops ``SMTPUTF8`` and
``pipelining=False`` drops ``PIPELINING``.

Every accepted message is recorded as a :class:`ReceivedMessage` (session, envelope, parameters,
headers, bytes). Failures on demand (:meth:`PowerMtaStandIn.fail`): a reply to ``RCPT`` or to the
end of ``DATA`` (``4xx``/``5xx``), or a dropped connection once the data has arrived, for one
recipient or for any, for the next ``times`` matches or always. ``command_delay_s`` holds every
reply (``EHLO``, ``MAIL``, ``RCPT``, ``DATA``, the end of the data, ``RSET``, ``QUIT``) for a
while; ``delays`` sets it per verb (``"END"`` is the reply to the end of the data).
``idle_timeout_s`` closes a connection that stays idle that long.
Sessions are counted through :class:`email_engine_tests.smtp_server.SessionLog`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from email_engine_tests.smtp_server import (
    LOOPBACK,
    RecordingSMTP,
    ServerSession,
    SessionLog,
    free_port,
)

MAIL_PARAMETERS = ("BODY", "SIZE", "SMTPUTF8", "ENVID", "RET")
RCPT_PARAMETERS = ("NOTIFY", "ORCPT")
DSN_PARAMETERS = ("ENVID", "RET", "NOTIFY", "ORCPT")
DROP = None  # the reply of a failure that closes the connection instead of answering


def _parameters(text: str) -> dict[str, str | bool] | None:
    """``KEY=value`` words with the key upper-cased and the value as sent; ``None`` if malformed."""
    found: dict[str, str | bool] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        found[key.upper()] = value if eq else True
    return found


@dataclass
class Failure:
    """Answer ``reply`` (or drop the connection when ``reply`` is ``DROP``) at ``stage``.

    ``stage`` is ``"rcpt"`` or ``"data"`` (the reply to the end of the data); a drop is only
    possible at ``"data"``. ``recipient=None`` matches every recipient; ``times=None`` never runs out.
    """

    stage: str
    reply: str | None
    recipient: str | None = None
    times: int | None = 1

    def take(self, stage: str, recipients: list[str]) -> bool:
        if stage != self.stage or self.times == 0:
            return False
        if self.recipient is not None and self.recipient.lower() not in (r.lower() for r in recipients):
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the stand-in answered ``250`` to."""

    session: int  # index of the connection in ``sessions``
    mail_from: str
    mail_parameters: dict[str, str | bool]
    recipients: list[str]
    rcpt_parameters: list[dict[str, str | bool]]
    data: bytes
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class _State:
    dsn: bool = True
    pipelining: bool = True
    command_delay_s: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    received: list[ReceivedMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, verb: str) -> float:
        return self.delays.get(verb, self.command_delay_s)

    def failure(self, stage: str, recipients: list[str]) -> Failure | None:
        with self.lock:
            return next((f for f in self.failures if f.take(stage, recipients)), None)


class _Handler:
    def __init__(self, state: _State, log: SessionLog) -> None:
        self.state = state
        self.log = log

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        extra = (["250-PIPELINING"] if self.state.pipelining else []) + (["250-DSN"] if self.state.dsn else [])
        extra += ["250-XACK", "250-VERP"]
        return responses[:-1] + extra + responses[-1:]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        failure = self.state.failure("rcpt", [address])
        if failure is not None and failure.reply is not DROP:
            return failure.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(" ".join(options))  # kept per recipient, as sent
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self.state.failure("data", list(envelope.rcpt_tos))
        if failure is not None and failure.reply is DROP:
            server.transport.abort()
            return "421 4.3.0 connection dropped"  # never reaches the client: the socket is gone
        if failure is not None:
            return failure.reply
        data = envelope.original_content or b""
        parsed = BytesHeaderParser().parsebytes(data)  # compat32: plain strings, cheap
        mail_parameters = _parameters(" ".join(envelope.mail_options)) or {}
        record = ReceivedMessage(
            session=server.session_index,
            mail_from=envelope.mail_from,
            mail_parameters=mail_parameters,
            recipients=list(envelope.rcpt_tos),
            rcpt_parameters=[_parameters(o) or {} for o in envelope.rcpt_options],
            data=data,
            headers=[(k, str(v)) for k, v in parsed.items()],
        )
        with self.state.lock:
            self.state.received.append(record)  # spooled: a slow reply below does not undo it
        if self.state.delay("END"):
            await asyncio.sleep(self.state.delay("END"))
        return "250 2.6.0 message received"


class PowerMtaSMTP(RecordingSMTP):
    """aiosmtpd's protocol with DSN parameters on ``MAIL``/``RCPT`` and a delay per reply."""

    def __init__(self, handler: Any, log: SessionLog, state: _State, **kwargs: Any) -> None:
        self._state = state
        super().__init__(handler, log, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.session_index = len(self._log.snapshot()[0]) - 1  # this connection's place in ``sessions``

    def _recorded(self, verb: str, method: Any) -> Any:
        recorded = super()._recorded(verb, method)

        async def run(arg: str | None) -> None:
            if self._state.delay(verb):
                await asyncio.sleep(self._state.delay(verb))
            await recorded(arg)

        return run

    def _allowed(self, known: tuple[str, ...]) -> tuple[str, ...]:
        off = (() if self._state.dsn else DSN_PARAMETERS) + (() if self.enable_SMTPUTF8 else ("SMTPUTF8",))
        return tuple(k for k in known if k not in off)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        text = self._strip_command_keyword("FROM:", arg or "")
        address, rest = self._getaddr(text) if text is not None else (None, None)
        if not address:
            await self.push("501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
            return
        if self.envelope.mail_from:
            await self.push("503 Error: nested MAIL command")
            return
        params = _parameters(rest or "")
        if params is None or any(k not in self._allowed(MAIL_PARAMETERS) for k in params):
            await self.push("555 MAIL FROM parameters not recognized or not implemented")
            return
        self.envelope.mail_from = address
        self.envelope.mail_options.extend((rest or "").split())
        self.envelope.smtp_utf8 = bool(params.get("SMTPUTF8"))
        await self.push("250 2.1.0 ok")

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if not self.envelope.mail_from:
            await self.push("503 Error: need MAIL command")
            return
        text = self._strip_command_keyword("TO:", arg or "")
        address, rest = self._getaddr(text) if text is not None else (None, None)
        if not address:
            await self.push("501 Syntax: RCPT TO: <address> [SP <mail-parameters>]")
            return
        params = _parameters(rest or "")
        if params is None or any(k not in self._allowed(RCPT_PARAMETERS) for k in params):
            await self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        status = await self._call_handler_hook("RCPT", address, (rest or "").split())
        await self.push(status)


class _Controller(Controller):
    def __init__(self, handler: Any, log: SessionLog, state: _State, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._log = log
        self._state = state

    def factory(self) -> SMTP:
        return PowerMtaSMTP(self.handler, self._log, self._state, **self.SMTP_kwargs)


class PowerMtaStandIn:
    """``with PowerMtaStandIn() as mta:`` listens on ``mta.host``:``mta.port``."""

    def __init__(
        self,
        *,
        dsn: bool = True,
        smtputf8: bool = True,
        pipelining: bool = True,
        command_delay_s: float = 0.0,
        delays: dict[str, float] | None = None,
        idle_timeout_s: float = 300.0,
        host: str = LOOPBACK,
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.log = SessionLog()
        self.state = _State(dsn=dsn, pipelining=pipelining, command_delay_s=command_delay_s, delays=dict(delays or {}))
        self._controller = _Controller(
            _Handler(self.state, self.log),
            self.log,
            self.state,
            hostname=host,
            port=self.port,
            server_hostname="pmta.test.local",
            enable_SMTPUTF8=smtputf8,
            timeout=idle_timeout_s,  # aiosmtpd closes a connection idle this long, as PowerMTA does
            ready_timeout=5.0,
        )

    def __enter__(self) -> PowerMtaStandIn:
        self._controller.start()
        self._forget_startup_connection()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def _forget_startup_connection(self) -> None:
        """The controller connects once to check it is up; that session is not the test's."""
        deadline = time.monotonic() + 2.0
        while self.log.open_now and time.monotonic() < deadline:
            time.sleep(0.005)
        self.log.clear()

    def fail(self, stage: str, reply: str | None, *, recipient: str | None = None, times: int | None = 1) -> None:
        """Add a failure on demand (see :class:`Failure`); the first that matches is used."""
        if stage not in ("rcpt", "data") or (reply is DROP and stage != "data"):
            raise ValueError("stage is 'rcpt' or 'data'; a drop happens during DATA")
        with self.state.lock:
            self.state.failures.append(Failure(stage, reply, recipient, times))

    @property
    def received(self) -> list[ReceivedMessage]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def sessions(self) -> list[ServerSession]:
        return self.log.snapshot()[0]

    @property
    def max_concurrent(self) -> int:
        return self.log.snapshot()[1]
