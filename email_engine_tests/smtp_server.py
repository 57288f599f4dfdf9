"""A real SMTP server on loopback for tests of the mailbox probe.

``LoopbackSmtpServer`` runs ``aiosmtpd`` (its threaded ``Controller``) on a loopback address and
a free port. Its handler answers ``RCPT TO`` from ``MailboxRules``:

* listed mailboxes: ``250``;
* a mailbox full: ``452 4.2.2``; a mailbox disabled: ``550 5.2.1``; a greylisted one: ``451 4.7.1``;
* a ``421`` for chosen addresses (the server is going away);
* every local part on a catch-all domain: ``250``;
* anything else: ``550 5.1.1 user unknown``;
* past ``max_recipients`` accepted recipients in one transaction: ``452 4.5.3``.

``rcpt_delay_s`` holds every RCPT reply for a while so that sessions overlap.

Every connection is recorded as a ``ServerSession``: when it opened and closed and each command
with its argument, so a test can check that ``DATA`` was never sent, count connections, and read
the largest number of sessions open at once (``max_concurrent``).

``SilentServer`` listens without ever accepting: a client's TCP connect succeeds and no banner
ever arrives.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"


@dataclass
class MailboxRules:
    """How the server answers ``RCPT TO``; addresses and domains are compared lower-cased."""

    mailboxes: set[str] = field(default_factory=set)
    full: set[str] = field(default_factory=set)
    disabled: set[str] = field(default_factory=set)
    greylisted: set[str] = field(default_factory=set)
    shutting_down: set[str] = field(default_factory=set)
    catch_all_domains: set[str] = field(default_factory=set)
    max_recipients: int | None = None
    rcpt_delay_s: float = 0.0

    def reply(self, address: str, accepted_so_far: int) -> str:
        """The reply line for ``RCPT TO:<address>``."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        if self.max_recipients is not None and accepted_so_far >= self.max_recipients:
            return "452 4.5.3 Error: too many recipients"
        if address in self.shutting_down:
            return "421 4.3.2 Service shutting down, closing transmission channel"
        if address in self.full:
            return "452 4.2.2 Mailbox full: user is over quota"
        if address in self.disabled:
            return "550 5.2.1 Mailbox disabled, not accepting messages"
        if address in self.greylisted:
            return "451 4.7.1 Greylisted, please try again later"
        if address in self.mailboxes or domain in self.catch_all_domains:
            return "250 2.1.5 OK"
        return "550 5.1.1 <{}>: Recipient address rejected: User unknown".format(address)


@dataclass
class ServerSession:
    """One client connection as the server saw it (``time.monotonic()`` clock)."""

    opened_at: float
    closed_at: float | None = None
    quit_at: float | None = None  # when QUIT arrived: the client is done; the socket close is seen later
    commands: list[tuple[str, str | None]] = field(default_factory=list)

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.commands]

    def args(self, verb: str) -> list[str | None]:
        return [arg for seen, arg in self.commands if seen == verb]


class SessionLog:
    """Thread-safe record of sessions; written from the server thread, read by tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: list[ServerSession] = []
        self._open = 0
        self._max_open = 0

    def opened(self) -> ServerSession:
        session = ServerSession(opened_at=time.monotonic())
        with self._lock:
            self._sessions.append(session)
            self._open += 1
            self._max_open = max(self._max_open, self._open)
        return session

    def closed(self, session: ServerSession) -> None:
        with self._lock:
            session.closed_at = time.monotonic()
            self._open -= 1

    def command(self, session: ServerSession, verb: str, arg: str | None) -> None:
        with self._lock:
            session.commands.append((verb, arg))
            if verb == "QUIT":
                session.quit_at = time.monotonic()

    @property
    def open_now(self) -> int:
        with self._lock:
            return self._open

    def snapshot(self) -> tuple[list[ServerSession], int]:
        with self._lock:
            return list(self._sessions), self._max_open

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._max_open = self._open


class RulesHandler:
    """aiosmtpd handler: RCPT replies from ``MailboxRules``; DATA is refused (never expected)."""

    def __init__(self, rules: MailboxRules) -> None:
        self.rules = rules

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rules.rcpt_delay_s:
            await asyncio.sleep(self.rules.rcpt_delay_s)
        reply = self.rules.reply(address, len(envelope.rcpt_tos))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "554 5.6.0 This test server takes no messages"


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP protocol that logs the connection and every command it dispatches."""

    def __init__(self, handler: Any, log: SessionLog, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._log = log
        self._record: ServerSession | None = None
        self._smtp_methods = {
            verb: self._recorded(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _recorded(self, verb: str, method: Any) -> Any:
        @functools.wraps(method)
        async def run(arg: str | None) -> None:
            if self._record is not None:
                self._log.command(self._record, verb, arg)
            await method(arg)

        return run

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._record is None:  # STARTTLS calls this again on the same connection
            self._record = self._log.opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._record is not None:
            self._log.closed(self._record)
        super().connection_lost(error)


class _RecordingController(Controller):
    def __init__(self, handler: Any, log: SessionLog, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._log = log

    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, self._log, **self.SMTP_kwargs)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LoopbackSmtpServer:
    """``with LoopbackSmtpServer(rules) as server:`` serves on ``server.host``:``server.port``."""

    def __init__(self, rules: MailboxRules, host: str = LOOPBACK, port: int | None = None) -> None:
        self.rules = rules
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log = SessionLog()
        self._controller = _RecordingController(
            RulesHandler(rules),
            self.log,
            hostname=host,
            port=self.port,
            server_hostname="mx.test.local",
            ready_timeout=5.0,
        )

    def start(self) -> None:
        self._controller.start()
        self._forget_startup_connection()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LoopbackSmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _forget_startup_connection(self) -> None:
        """The controller connects once to check it is up; that session is not the test's."""
        deadline = time.monotonic() + 2.0
        while self.log.open_now and time.monotonic() < deadline:
            time.sleep(0.005)
        self.log.clear()

    def reset(self) -> None:
        """Forget the sessions seen so far."""
        self.log.clear()

    @property
    def sessions(self) -> list[ServerSession]:
        return self.log.snapshot()[0]

    @property
    def max_concurrent(self) -> int:
        return self.log.snapshot()[1]

    def all_verbs(self) -> list[str]:
        return [verb for session in self.sessions for verb in session.verbs()]

    def rcpt_addresses(self) -> list[str]:
        """Every ``RCPT TO`` argument, reduced to the address between angle brackets."""
        found = []
        for session in self.sessions:
            for arg in session.args("RCPT"):
                text = arg or ""
                found.append(text[text.find("<") + 1 : text.rfind(">")])
        return found


@contextmanager
def SilentServer(host: str = LOOPBACK, port: int | None = None) -> Iterator[tuple[str, int]]:
    """Listen on ``host``:``port`` and never accept: connects succeed, no banner ever comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((host, port if port is not None else 0))
        listener.listen(16)
        yield host, listener.getsockname()[1]
