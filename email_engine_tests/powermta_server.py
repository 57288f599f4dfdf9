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

Accounting (``accounting_dir=``): every accepted message APPENDS one line per recipient to
``<dir>/acct-YYYY-MM-DD-0001.csv`` (the header first, PowerMTA's column names): ``d``, or ``b``
with the ``bounceCat`` / DSN set for that recipient by :meth:`PowerMtaStandIn.bounce`; ``envId``
is the ENVID received (or the ``x-envid`` header), ``jobId`` the ``x-job`` header. As in PowerMTA, a
header counts only where the ``<source>`` processes it: ``process_x`` (default all three) lists the
ones this stand-in's ``<source>`` sets ``process-x-...`` for; another leaves ``jobId`` / ``envId``
empty (and ``vmta`` the default).
:meth:`PowerMtaStandIn.complain` appends an ``f`` (FBL) line; :class:`AccountingFile` writes
lines by hand. :func:`running_management` serves PowerMTA's HTTP management API (``/status``,
``/queues``, ``?format=json``, ``X-API-Key``; or, as some versions may, XML or JSON without the envelope).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session, syntax
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from email_engine_tests.http_servers import serving
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
    accounting: AccountingFile | None = None
    process_x: frozenset[str] = frozenset({"x-job", "x-virtual-mta", "x-envid"})
    bounces: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)  # rcpt -> (bounceCat, status, diag)

    def account(self, message: ReceivedMessage) -> None:
        """The accounting lines of an accepted message: ``d``, or ``b`` for a recipient set to bounce."""
        envid = message.mail_parameters.get("ENVID")
        header_envid = (message.header("x-envid") or [None])[0]
        job = self.processed(message, "x-job")
        vmta = self.processed(message, "x-virtual-mta")
        if not isinstance(envid, str):
            envid = self.processed(message, "x-envid")
        now = accounting_time()
        lines = []
        for rcpt in message.recipients:
            common = {"timeLogged": now, "timeQueued": now, "orig": message.mail_from, "rcpt": rcpt,
                      "orcpt": f"rfc822;{rcpt}", "jobId": job, "vmta": vmta, "envId": envid,
                      "header_x-envid": header_envid, "srcType": "smtp", "srcMta": "client.test.local",
                      "dlvType": "smtp", "dlvSize": str(len(message.data)), "queue": f"{rcpt.rpartition('@')[2]}/{vmta or 'default'}"}
            with self.lock:
                bounce = self.bounces.get(rcpt.lower())
            if bounce is None:
                lines.append({**common, "type": "d", "dsnAction": "relayed", "dsnStatus": "2.0.0 (success)",
                              "dsnDiag": "smtp;250 2.0.0 ok, queued as 1A2B3C", "dsnMta": "mx.test.local"})
            else:
                cat, status, diag = bounce
                default_status, default_diag = BOUNCE_STATUS.get(cat, ("5.0.0 (undefined status)", "smtp;550 5.0.0 refused"))
                lines.append({**common, "type": "b", "dsnAction": "failed", "dsnStatus": status or default_status,
                              "dsnDiag": diag or default_diag.format(rcpt=rcpt), "dsnMta": "mx.test.local", "bounceCat": cat})
        self.accounting.append(*lines)

    def processed(self, message: ReceivedMessage, header: str) -> str | None:
        """The header's value where the <source> processes it (``process-x-...``); else PowerMTA ignores it."""
        return (message.header(header) or [None])[0] if header in self.process_x else None

    def delay(self, verb: str) -> float:
        return self.delays.get(verb, self.command_delay_s)

    def failure(self, stage: str, recipients: list[str]) -> Failure | None:
        with self.lock:
            return next((f for f in self.failures if f.take(stage, recipients)), None)


# PowerMTA's accounting columns (User's Guide, "Accounting file"): the union of d, b, t, rb and f records.
ACCOUNTING_COLUMNS: tuple[str, ...] = (
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "orcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta",
    "bounceCat", "srcType", "srcMta", "dlvType", "dlvSourceIp", "dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize",
    "vmta", "jobId", "envId", "queue", "vmtaPool", "feedbackType", "format", "userAgent", "reportingMta",
    "header_x-envid",
)
BOUNCE_STATUS = {
    "bad-mailbox": ("5.1.1 (bad destination mailbox address)", "smtp;550 5.1.1 <{rcpt}>: user unknown"),
    "bad-domain": ("5.1.2 (bad destination system: no such domain)", "smtp;550 5.1.2 domain not found"),
    "inactive-mailbox": ("5.2.1 (mailbox disabled)", "smtp;550 5.2.1 mailbox disabled"),
    "quota-issues": ("5.2.2 (mailbox full)", "smtp;552 5.2.2 mailbox full, try later"),
    "spam-related": ("5.7.1 (delivery not authorized)", "smtp;550 5.7.1 message rejected as spam, see policy"),
    "policy-related": ("5.7.1 (delivery not authorized)", "smtp;550 5.7.1 policy rejection"),
}


def accounting_time(at: datetime | None = None) -> str:
    """PowerMTA's ``timeLogged`` form: ``2026-11-29 12:00:00+0000``."""
    return (at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S%z")


class AccountingFile:
    """An accounting file that lines are APPENDED to (header first), as PowerMTA writes it."""

    def __init__(self, directory: str | Path, name: str | None = None, columns: tuple[str, ...] = ACCOUNTING_COLUMNS):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / (name or f"acct-{datetime.now(timezone.utc):%Y-%m-%d}-0001.csv")
        self.columns = columns
        self.lock = threading.Lock()

    def line(self, **fields: str | None) -> bytes:
        """One CSV line (with its ``\n``) of these fields by column name; unknown names are refused."""
        unknown = set(fields) - set(self.columns)
        if unknown:
            raise ValueError(f"no accounting column {sorted(unknown)}")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([fields.get(c) or "" for c in self.columns])
        return buffer.getvalue().encode("utf-8")

    def append(self, *lines: bytes | dict) -> None:
        """Append lines (bytes as given, or dicts of fields), writing the header first into a new file."""
        data = b"".join(x if isinstance(x, bytes) else self.line(**x) for x in lines)
        with self.lock:
            new = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "ab") as handle:
                if new:
                    handle.write(",".join(self.columns).encode() + b"\n")
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())


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
        if self.state.accounting is not None:
            self.state.account(record)
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
        accounting_dir: str | Path | None = None,
        process_x: tuple[str, ...] = ("x-job", "x-virtual-mta", "x-envid"),
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.log = SessionLog()
        self.state = _State(dsn=dsn, pipelining=pipelining, command_delay_s=command_delay_s, delays=dict(delays or {}),
                            accounting=AccountingFile(accounting_dir) if accounting_dir is not None else None,
                            process_x=frozenset(h.lower() for h in process_x))
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

    @property
    def accounting(self) -> AccountingFile:
        """The accounting file (``accounting_dir=`` given at construction)."""
        if self.state.accounting is None:
            raise RuntimeError("this stand-in writes no accounting file: pass accounting_dir=")
        return self.state.accounting

    def bounce(self, recipient: str, bounce_cat: str = "bad-mailbox", *, dsn_status: str | None = None,
               dsn_diag: str | None = None) -> None:
        """Messages accepted for ``recipient`` from now on get a ``b`` accounting line with this ``bounceCat``."""
        with self.state.lock:
            self.state.bounces[recipient.lower()] = (bounce_cat, dsn_status, dsn_diag)

    def complain(self, recipient: str, *, format: str = "arf", feedback_type: str = "abuse") -> int:
        """Append an ``f`` (feedback loop) line for each message received for ``recipient``; how many."""
        lines = []
        for message in self.received:
            if recipient.lower() not in (r.lower() for r in message.recipients):
                continue
            envid = message.mail_parameters.get("ENVID")
            lines.append({"type": "f", "timeLogged": accounting_time(), "orig": message.mail_from, "rcpt": recipient,
                          "jobId": self.state.processed(message, "x-job"),
                          "envId": envid if isinstance(envid, str) else self.state.processed(message, "x-envid"),
                          "header_x-envid": (message.header("x-envid") or [None])[0], "feedbackType": feedback_type,
                          "format": format, "userAgent": "ExampleFBL/1.0", "reportingMta": "dns;fbl.test.local"})
        if lines:
            self.accounting.append(*lines)
        return len(lines)


@dataclass
class ManagementState:
    """What the management stand-in answers; ``api_key`` set: requests need ``X-API-Key``."""

    api_key: str | None = None
    status: dict = field(default_factory=lambda: {
        "traffic": {"lastHr": {"out": {"rcp": 120, "msg": 118}}, "lastMin": {"out": {"rcp": 3, "msg": 3}}},
        "conn": {"smtpOut": {"cur": 7, "max": 100}, "smtpIn": {"cur": 1, "max": 50}},
        "queue": {"smtp": {"rcp": 42, "dom": 5, "kb": 1024}},
        "spool": {"files": {"total": 50, "inUse": 42}},
    })
    queues: list = field(default_factory=lambda: [
        {"queue": "gmail.com/vmta1", "rcp": 30, "kb": 700, "paused": False, "mode": "normal"},
        {"queue": "example.com/vmta1", "rcp": 12, "kb": 324, "paused": False, "mode": "backoff"},
    ])
    requests: list[str] = field(default_factory=list)
    # The JSON envelope is unconfirmed (REFERENCE.md): "xml" answers XML whatever the format asked
    # (what public tools read with ?format=xml), "bare" answers the data as JSON without the envelope.
    answer_as: str = "envelope"
    fail_with: int | None = None  # e.g. 503: every request answers that status (the management port unhealthy)

    def queued(self, recipients: int) -> None:
        """PowerMTA's queue now holds ``recipients`` (``/status``: ``queue.smtp.rcp``)."""
        self.status["queue"]["smtp"]["rcp"] = recipients


def _xml(name: str, data) -> str:
    if isinstance(data, dict):
        inner = "".join(_xml(k, v) for k, v in data.items())
    elif isinstance(data, list):
        inner = "".join(_xml("item", v) for v in data)
    else:
        inner = str(data)
    return f"<{name}>{inner}</{name}>"


def build_management_app(state: ManagementState) -> Starlette:
    def answer(request: Request, data) -> JSONResponse:
        state.requests.append(f"{request.url.path}?{request.url.query}")
        if state.fail_with is not None:
            return JSONResponse({"data": None, "status": "error", "message": "unavailable"}, status_code=state.fail_with)
        if state.api_key is not None and request.headers.get("x-api-key") != state.api_key:
            return JSONResponse({"data": None, "status": "error", "message": "unauthorized"}, status_code=401)
        if state.answer_as == "xml":
            return Response('<?xml version="1.0"?>' + _xml("rsp", {"data": data}), media_type="text/xml")
        if state.answer_as == "bare":
            return JSONResponse(data)
        if request.query_params.get("format") != "json":
            return JSONResponse({"data": None, "status": "error", "message": "format=json expected"}, status_code=400)
        return JSONResponse({"data": data, "status": "success", "message": ""})

    async def status(request: Request) -> JSONResponse:
        return answer(request, {"status": state.status})

    async def queues(request: Request) -> JSONResponse:
        return answer(request, state.queues)

    return Starlette(routes=[Route("/status", status), Route("/queues", queues)])


@contextmanager
def running_management(state: ManagementState | None = None) -> Iterator[tuple[str, ManagementState]]:
    """Serve PowerMTA's HTTP management stand-in on 127.0.0.1 in a thread: yields (base_url, state)."""
    state = state or ManagementState()
    with serving(build_management_app(state), "the PowerMTA management stand-in") as url:
        yield url, state
