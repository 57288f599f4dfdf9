"""Mailbox check by SMTP: ``RCPT TO`` against the domain's MX hosts, without sending a message.

One SMTP session per domain: ``EHLO``, ``MAIL FROM``, then one ``RCPT TO`` per address (and one
for a random local part when catch-all detection is on), then ``QUIT``. ``DATA`` is never sent.
The MX hosts come from the caller in preference order; when one cannot be reached (refused,
timeout, no banner, a ``421``, a refused ``MAIL FROM``) the next is tried with the addresses it
left open.

Statuses (REFERENCE.md, "Email address checks"):

* ``deliverable``: ``250``/``251`` to ``RCPT``;
* ``undeliverable``: a "no such user" refusal (``550``/``551``/``553``, enhanced ``5.1.x``);
* ``catch_all``: accepted, and so was a random local part on the same domain;
* ``full_inbox``: ``452``/``552``, enhanced ``4.2.2``/``5.2.2``, or a reply about quota / a full
  mailbox;
* ``disabled``: enhanced ``5.2.1`` or a 5xx that says disabled / inactive;
* ``refused_private_target``: every address of every MX host is loopback, private, link-local
  or otherwise not public (:mod:`.network_policy`), and the configuration does not allow
  private targets: nothing was connected to;
* ``unknown``: everything else: no connection, timeouts, ``421``, greylisting and other 4xx,
  policy refusals (``5.7.x``, block lists), protocol errors, input that cannot be probed, a
  session refused by the shared per-IP limit (``take_slot``).

The client never resolves a host name itself: the MX host names come with their addresses
(``addresses``, resolved by the caller through the configured nameservers); each address is
checked by :func:`.network_policy.target_refusal` and the connection goes to that address, so
the answer checked is the answer used. An MX "host" that is an IP address is its own address.

Limits: connections per destination IP in this process (``per_mx_concurrency`` open at once,
starts spaced by ``1 / per_mx_rate_per_s``) and overall (``total_concurrency``); sessions per
IP across processes through ``take_slot``, a callable the caller backs with shared state (the
database), asked before every connection; at most ``max_recipients_per_session`` addresses per
session (the catch-all probe comes on top); and a ``session_deadline_s`` for a whole session,
besides the per-command timeouts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import secrets
import socket
import string
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosmtplib
import idna

from email_engine_resources.email_domain import split_address
from email_engine_resources.network_policy import target_refusal

DELIVERABLE = "deliverable"
UNDELIVERABLE = "undeliverable"
CATCH_ALL = "catch_all"
FULL_INBOX = "full_inbox"
DISABLED = "disabled"
UNKNOWN = "unknown"
REFUSED_PRIVATE_TARGET = "refused_private_target"
STATUSES = (DELIVERABLE, UNDELIVERABLE, CATCH_ALL, FULL_INBOX, DISABLED, UNKNOWN, REFUSED_PRIVATE_TARGET)

MAX_MESSAGE_CHARS = 300
RANDOM_LOCAL_PART_LENGTH = 20

_ENHANCED_CODE = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_FULL_TEXT = re.compile(
    r"quota|mailbox (is )?full|inbox (is )?full|full mailbox|mailbox size|storage allocation"
    r"|exceeded storage|out of storage",
    re.IGNORECASE,
)
_DISABLED_TEXT = re.compile(r"disabled|inactive|deactivated|suspended|no longer active", re.IGNORECASE)
_POLICY_TEXT = re.compile(
    r"block|blacklist|spamhaus|dnsbl|\brbl\b|spam|reputation|policy|relay|not permitted"
    r"|access denied|too many connections|rate limit",
    re.IGNORECASE,
)
_NO_USER_TEXT = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does ?n[o']t exist|not exist"
    r"|invalid (recipient|mailbox|address)|recipient (address )?rejected|mailbox unavailable"
    r"|mailbox not found|user not found|address rejected",
    re.IGNORECASE,
)
_TOO_MANY_TEXT = re.compile(r"too many recipients", re.IGNORECASE)
_UNSAFE_ADDRESS_CHARS = re.compile(r"[\x00-\x20\x7f<>]")
_HELO_NAME = re.compile(r"[A-Za-z0-9.\-\[\]:]+")


@dataclass(frozen=True)
class ProbeConfig:
    """How to probe; ``mail_from=""`` sends the null reverse-path ``<>``.

    ``helo_name=""`` means the machine's fully qualified name (``socket.getfqdn()``): receivers
    check that the EHLO name is a real name of the connecting host.
    """

    helo_name: str = ""
    mail_from: str = ""
    port: int = 25
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 10.0
    session_deadline_s: float = 60.0
    max_recipients_per_session: int = 50
    per_mx_concurrency: int = 2
    per_mx_rate_per_s: float = 5.0
    total_concurrency: int = 50
    detect_catch_all: bool = True
    allow_private_targets: bool = False

    def __post_init__(self) -> None:
        if self.helo_name == "":
            object.__setattr__(self, "helo_name", socket.getfqdn())
        if not isinstance(self.helo_name, str) or not _HELO_NAME.fullmatch(self.helo_name):
            raise ValueError(
                f"ProbeConfig.helo_name must be a host name (letters, digits, '.', '-'), got {self.helo_name!r}"
            )
        if not isinstance(self.mail_from, str) or _UNSAFE_ADDRESS_CHARS.search(self.mail_from):
            raise ValueError(
                f"ProbeConfig.mail_from must be an address without spaces or '<>', got {self.mail_from!r}"
            )
        if self.mail_from and "@" not in self.mail_from:
            raise ValueError(
                f"ProbeConfig.mail_from must be empty or an address with '@', got {self.mail_from!r}"
            )
        _require_int("port", self.port, 1, 65535)
        _require_int("per_mx_concurrency", self.per_mx_concurrency, 1)
        _require_int("total_concurrency", self.total_concurrency, 1)
        _require_int("max_recipients_per_session", self.max_recipients_per_session, 1)
        for name in ("connect_timeout_s", "command_timeout_s", "session_deadline_s", "per_mx_rate_per_s"):
            _require_positive(name, getattr(self, name))


def _require_int(name: str, value: object, low: int, high: int | None = None) -> None:
    in_range = isinstance(value, int) and low <= value and (high is None or value <= high)
    if isinstance(value, bool) or not in_range:
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"ProbeConfig.{name} must be an integer {bound}, got {value!r}")


def _require_positive(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"ProbeConfig.{name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class MailboxResult:
    """The verdict for one address, with the SMTP reply it rests on (``None`` when there was none)."""

    address: str
    status: str
    smtp_code: int | None
    smtp_message: str | None
    mx_host: str | None


# --- reply classification -------------------------------------------------------------------


def enhanced_status(message: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text (``"5.1.1"``), if any."""
    match = _ENHANCED_CODE.match(message or "")
    return match.group(1) if match else None


def is_too_many_recipients(code: int, message: str) -> bool:
    """``452 4.5.3``: the transaction holds enough recipients; a new one starts with RSET."""
    if code not in (452, 552):
        return False
    return enhanced_status(message) in ("4.5.3", "5.5.3") or bool(_TOO_MANY_TEXT.search(message))


def classify_rcpt_reply(code: int, message: str) -> str:
    """The mailbox status an ``RCPT TO`` reply means (catch-all is decided by the caller)."""
    message = message or ""
    enhanced = enhanced_status(message)
    if code in (250, 251):
        return DELIVERABLE
    if code == 421 or is_too_many_recipients(code, message):
        return UNKNOWN
    if _means_full(code, enhanced, message):
        return FULL_INBOX
    if 500 <= code < 600:
        return _classify_permanent(code, enhanced, message)
    return UNKNOWN


def _means_full(code: int, enhanced: str | None, message: str) -> bool:
    if not 400 <= code < 600:
        return False
    if enhanced in ("4.2.2", "5.2.2"):
        return True
    if enhanced is not None and not enhanced[2:].startswith("2."):
        return False  # e.g. 452 4.3.1: the server's own disk, not the mailbox
    return code in (452, 552) or bool(_FULL_TEXT.search(message))


def _classify_permanent(code: int, enhanced: str | None, message: str) -> str:
    """A 5xx: the enhanced code decides first, then the reply text, then the bare code."""
    policy = (enhanced or "").startswith("5.7.")
    if enhanced == "5.2.1" or (not policy and _DISABLED_TEXT.search(message)):
        return DISABLED
    if (enhanced or "").startswith("5.1."):
        return UNDELIVERABLE
    if policy or _POLICY_TEXT.search(message):
        return UNKNOWN  # the server refuses us, which says nothing about the mailbox
    if _NO_USER_TEXT.search(message):
        return UNDELIVERABLE
    if code in (550, 551, 553) and enhanced in (None, "5.0.0"):
        return UNDELIVERABLE
    return UNKNOWN


def bounded(message: str | None) -> str | None:
    """Reply text on one line, at most ``MAX_MESSAGE_CHARS`` characters."""
    if message is None:
        return None
    text = " ".join(message.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


# --- input ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    address: str  # as given; the key of the result
    wire: str  # as sent in RCPT TO (A-label domain)
    domain: str  # A-label, lower case
    needs_smtputf8: bool


class _BadAddress(ValueError):
    pass


def _target(address: str) -> _Target:
    if not isinstance(address, str):
        raise _BadAddress(f"address must be a string, got {type(address).__name__}")
    local, domain = split_address(address)
    if not local or not domain:
        raise _BadAddress("not an email address: needs a local part, '@' and a domain")
    if _UNSAFE_ADDRESS_CHARS.search(address):
        raise _BadAddress("address contains spaces, control characters or '<>'")
    try:
        ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise _BadAddress(f"domain {domain!r} is not a valid IDNA name: {exc}") from None
    return _Target(address, f"{local}@{ascii_domain}", ascii_domain, not local.isascii())


def _mx_hosts(address: str, hosts: object) -> tuple[str, ...]:
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Sequence):
        raise TypeError(f"MX hosts for {address!r} must be a list of host names, got {type(hosts).__name__}")
    cleaned: dict[str, None] = {}
    for host in hosts:
        if not isinstance(host, str):
            raise TypeError(f"MX host for {address!r} must be a string, got {type(host).__name__}")
        name = host.strip().rstrip(".").lower()
        if name:
            cleaned.setdefault(name, None)
    return tuple(cleaned)


# --- connection limits ------------------------------------------------------------------------


class _HostGate:
    """At most ``concurrency`` sessions open, and starts spaced by ``1 / rate`` seconds."""

    def __init__(self, concurrency: int, rate_per_s: float) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self._interval = 1.0 / rate_per_s
        self._next_start = 0.0

    async def wait_turn(self) -> None:
        now = asyncio.get_running_loop().time()
        start = max(now, self._next_start)
        self._next_start = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


TakeSlot = Callable[[str], bool]
"""``take_slot(ip)``: True when one more session to ``ip`` may start now (a shared, cross-process
count); False refuses this session. Blocking; the client calls it from a worker thread."""


class _Limits:
    """In-process limits per destination IP and overall, then the shared per-IP slot."""

    def __init__(self, config: ProbeConfig, take_slot: TakeSlot | None) -> None:
        self._config = config
        self._take_slot = take_slot
        self._total = asyncio.Semaphore(config.total_concurrency)
        self._gates: dict[str, _HostGate] = {}

    @asynccontextmanager
    async def connection(self, ip: str) -> AsyncIterator[bool]:
        """Yields whether the session may go ahead (False: the shared per-IP limit is reached)."""
        gate = self._gates.get(ip)
        if gate is None:
            gate = _HostGate(self._config.per_mx_concurrency, self._config.per_mx_rate_per_s)
            self._gates[ip] = gate
        async with gate.slots, self._total:
            await gate.wait_turn()
            allowed = self._take_slot is None or await asyncio.to_thread(self._take_slot, ip)
            yield allowed


# --- one SMTP session -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """Why a session left addresses open; becomes their ``unknown`` result if no MX does better."""

    code: int | None
    message: str
    host: str | None


class _SessionFailed(Exception):
    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Outcome:
    results: dict[str, MailboxResult] = field(default_factory=dict)
    failure: _Failure | None = None


def _random_local_part() -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(RANDOM_LOCAL_PART_LENGTH))


class _Session:
    """One connection to one address of one MX host, probing the addresses of one domain."""

    def __init__(self, host: str, ip: str, domain: str, config: ProbeConfig) -> None:
        self.host = host
        self.domain = domain
        self.config = config
        self.smtp = aiosmtplib.SMTP(
            hostname=ip,  # the checked address, never the name again
            port=config.port,
            local_hostname=config.helo_name,
            timeout=config.command_timeout_s,
            start_tls=False,
            use_tls=False,
        )
        self.smtputf8 = False

    async def run(self, targets: list[_Target], outcome: _Outcome) -> None:
        """Probe ``targets``; the session ends by ``session_deadline_s`` whatever the server does."""
        deadline = self.config.session_deadline_s
        try:
            async with asyncio.timeout(deadline):
                await self._exchange(targets, outcome)
        except TimeoutError:
            outcome.failure = _Failure(None, f"session deadline of {deadline:g} s passed", self.host)
            self.smtp.close()  # no polite QUIT: the deadline bounds the whole session
        finally:
            await self._close()

    async def _exchange(self, targets: list[_Target], outcome: _Outcome) -> None:
        try:
            await self._open(needs_smtputf8=any(t.needs_smtputf8 for t in targets))
            catch_all = await self._domain_is_catch_all()
            for target in targets:
                outcome.results[target.address] = await self._probe(target, catch_all)
        except _SessionFailed as exc:
            outcome.failure = _Failure(exc.code, exc.message, self.host)
        except aiosmtplib.SMTPResponseException as exc:
            outcome.failure = _Failure(exc.code, exc.message, self.host)
        except (aiosmtplib.SMTPException, OSError, ValueError, UnicodeError) as exc:
            outcome.failure = _Failure(None, f"{type(exc).__name__}: {exc}", self.host)

    async def _open(self, needs_smtputf8: bool) -> None:
        await self.smtp.connect(timeout=self.config.connect_timeout_s)
        try:
            await self.smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            await self.smtp.helo()
        self.smtputf8 = needs_smtputf8 and self.smtp.supports_extension("smtputf8")
        await self._mail_from()

    async def _mail_from(self) -> None:
        options = [b"SMTPUTF8"] if self.smtputf8 else []
        sender = f"FROM:<{self.config.mail_from}>".encode()
        reply = await self.smtp.execute_command(b"MAIL", sender, *options)
        if reply.code != 250:
            raise _SessionFailed(reply.code, f"MAIL FROM refused: {reply.message}")

    async def _rcpt(self, address: str) -> aiosmtplib.SMTPResponse:
        """``RCPT TO``; a ``452 4.5.3`` starts a new transaction and asks once more."""
        reply = await self._rcpt_once(address)
        if is_too_many_recipients(reply.code, reply.message):
            await self._reset()
            reply = await self._rcpt_once(address)
        if reply.code == 421:
            raise _SessionFailed(reply.code, reply.message)
        return reply

    async def _rcpt_once(self, address: str) -> aiosmtplib.SMTPResponse:
        encoding = "utf-8" if self.smtputf8 else "ascii"
        return await self.smtp.execute_command(b"RCPT", f"TO:<{address}>".encode(encoding))

    async def _reset(self) -> None:
        reply = await self.smtp.execute_command(b"RSET")
        if reply.code != 250:
            raise _SessionFailed(reply.code, f"RSET refused: {reply.message}")
        await self._mail_from()

    async def _domain_is_catch_all(self) -> bool:
        if not self.config.detect_catch_all:
            return False
        reply = await self._rcpt(f"{_random_local_part()}@{self.domain}")
        return reply.code in (250, 251)

    async def _probe(self, target: _Target, catch_all: bool) -> MailboxResult:
        if target.needs_smtputf8 and not self.smtputf8:
            reason = "server does not offer SMTPUTF8 for a non-ASCII local part"
            return self._result(target, UNKNOWN, None, reason)
        reply = await self._rcpt(target.wire)
        status = classify_rcpt_reply(reply.code, reply.message)
        if status == DELIVERABLE and catch_all:
            status = CATCH_ALL
        return self._result(target, status, reply.code, reply.message)

    def _result(self, target: _Target, status: str, code: int | None, message: str | None) -> MailboxResult:
        return MailboxResult(target.address, status, code, bounded(message), self.host)

    async def _close(self) -> None:
        if self.smtp.is_connected:
            try:
                await self.smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
        self.smtp.close()


# --- domains and the batch --------------------------------------------------------------------


def _candidates(host: str, addresses: Mapping[str, Sequence[str]]) -> tuple[tuple[str, ...], str | None]:
    """The addresses to try for ``host`` and, when there are none, why."""
    if host in addresses:
        found = tuple(addresses[host])
        return found, None if found else f"MX host {host}: no address"
    try:
        return (str(ipaddress.ip_address(host)),), None
    except ValueError:
        return (), f"MX host {host} was not resolved"


@dataclass(frozen=True)
class _Run:
    """What every session of one probe call shares."""

    config: ProbeConfig
    limits: _Limits
    addresses: Mapping[str, Sequence[str]]  # MX host name -> IP addresses


async def _probe_chunk(run: _Run, domain: str, hosts: tuple[str, ...], targets: list[_Target]) -> dict[str, MailboxResult]:
    """Try the MX hosts (each of their public addresses) in order until every address has a verdict."""
    config, limits = run.config, run.limits
    results: dict[str, MailboxResult] = {}
    pending = targets
    failure: _Failure | None = None
    refused: _Failure | None = None
    for host in hosts:
        ips, missing = _candidates(host, run.addresses)
        if missing:
            failure = _Failure(None, missing, host)
        for ip in ips:
            refusal = target_refusal(ip, allow_private=config.allow_private_targets)
            if refusal:
                refused = refused or _Failure(None, f"not probed: MX host {host}: {refusal}", host)
                continue
            outcome = _Outcome()
            async with limits.connection(ip) as allowed:
                if allowed:
                    await _Session(host, ip, domain, config).run(pending, outcome)
                else:
                    outcome.failure = _Failure(None, f"deferred: probe limit for {ip} reached", host)
            results.update(outcome.results)
            pending = [t for t in pending if t.address not in outcome.results]
            failure = outcome.failure or failure
            if not pending:
                return results
    status = UNKNOWN
    if failure is None and refused is not None:
        status, failure = REFUSED_PRIVATE_TARGET, refused
    failure = failure or _Failure(None, "no MX host given", None)
    for target in pending:
        results[target.address] = MailboxResult(
            target.address, status, failure.code, bounded(failure.message), failure.host
        )
    return results


async def _probe_domain(run: _Run, domain: str, hosts: tuple[str, ...], targets: list[_Target]) -> dict[str, MailboxResult]:
    """The addresses of one domain in sessions of at most ``max_recipients_per_session``."""
    size = run.config.max_recipients_per_session
    chunks = [targets[i : i + size] for i in range(0, len(targets), size)]
    found = await asyncio.gather(*(_probe_chunk(run, domain, hosts, chunk) for chunk in chunks))
    return {address: result for part in found for address, result in part.items()}


def _group(
    targets: Mapping[str, Sequence[str]],
) -> tuple[dict[tuple[str, tuple[str, ...]], list[_Target]], dict[str, MailboxResult]]:
    """Targets grouped by (domain, MX hosts); addresses that cannot be probed get ``unknown`` now."""
    if not isinstance(targets, Mapping):
        raise TypeError(f"targets must be a mapping of address -> MX hosts, got {type(targets).__name__}")
    groups: dict[tuple[str, tuple[str, ...]], list[_Target]] = defaultdict(list)
    refused: dict[str, MailboxResult] = {}
    for address, hosts in targets.items():
        mx = _mx_hosts(address, hosts)
        try:
            target = _target(address)
        except _BadAddress as exc:
            refused[address] = MailboxResult(address, UNKNOWN, None, f"not probed: {exc}", None)
            continue
        groups[(target.domain, mx)].append(target)
    return groups, refused


async def probe_mailboxes_async(
    targets: Mapping[str, Sequence[str]],
    config: ProbeConfig,
    *,
    addresses: Mapping[str, Sequence[str]] | None = None,
    take_slot: TakeSlot | None = None,
) -> dict[str, MailboxResult]:
    """Probe every address; ``targets`` maps address -> MX hosts in preference order.

    ``addresses`` maps each MX host name to its IP addresses (from the configured resolver); a
    host missing there is tried only when it is itself an IP address. ``take_slot`` is asked
    before every connection (see :data:`TakeSlot`). Returns a result for every address given
    (same keys). Raises ``TypeError`` only when the arguments have the wrong shape; bad
    addresses come back ``unknown`` with the reason.
    """
    if not isinstance(config, ProbeConfig):
        raise TypeError(f"config must be a ProbeConfig, got {type(config).__name__}")
    groups, results = _group(targets)
    run = _Run(config, _Limits(config, take_slot), addresses or {})
    found = await asyncio.gather(
        *(_probe_domain(run, domain, hosts, group) for (domain, hosts), group in groups.items())
    )
    for part in found:
        results.update(part)
    return {address: results[address] for address in targets}


def probe_mailboxes(
    targets: Mapping[str, Sequence[str]],
    config: ProbeConfig,
    *,
    addresses: Mapping[str, Sequence[str]] | None = None,
    take_slot: TakeSlot | None = None,
) -> dict[str, MailboxResult]:
    """Blocking :func:`probe_mailboxes_async`; runs in a fresh thread when a loop is already running."""
    probe = probe_mailboxes_async(targets, config, addresses=addresses, take_slot=take_slot)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, probe).result()
