"""Domain checks for email addresses: does a domain accept mail, by DNS.

Rules (REFERENCE "Email address checks", RFC 5321 §5.1, RFC 7505):

* MX present -> ``mx`` (hosts sorted by preference, then name);
* MX holding only ``0 .`` (null MX) -> ``null_mx``: the domain accepts no mail;
* no MX (NOERROR, no data) -> ask A, then AAAA: present -> ``a_fallback`` (implicit MX),
  neither -> ``no_mail``;
* NXDOMAIN -> ``nxdomain``;
* timeout, SERVFAIL, REFUSED, network error -> ``unknown``, never invalid.

CNAME chains are followed (also when a resolver returns only the CNAME). Queries go over UDP
and are asked again over TCP when the answer comes back truncated (over 512 bytes, or over
1232 with ``use_edns``). EDNS is off by default: MX answers nearly always fit in 512 bytes,
and encoding and parsing the OPT record is a quarter of the client's CPU per query.

Every distinct domain is looked up once, by ``concurrency`` workers on one asyncio loop, so
at most ``concurrency`` queries are in flight. Each query goes out on a fresh UDP socket, so
each has its own random source port (chosen by the kernel) besides its random id: an answer
forged off-path has to guess both. Before the fan-out one probe query for the
root (``. NS``) checks that a nameserver answers at all; if none does, every domain is
``unknown`` with detail ``"resolver unreachable"`` at once instead of timing out one by one.
During the run, ``breaker_failures`` consecutive queries without any answer trigger the same
probe again, and a failed probe stops the run the same way.

Results carry a TTL for caching: the smallest TTL of the records used (for negative answers
the SOA minimum, RFC 2308), clamped to ``[min_ttl_s, max_ttl_s]``; ``unknown`` results get
``unknown_ttl_s``. ``check_domains`` only asks the network; caching is the caller's job.

``resolve_hosts`` gives the A and AAAA addresses of mail hosts through the same nameservers,
so that a client can check an address (:mod:`.network_policy`) and connect to that address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import idna

STATUSES = ("mx", "a_fallback", "null_mx", "nxdomain", "no_mail", "unknown")
ACCEPTS_MAIL = {"mx": True, "a_fallback": True, "null_mx": False, "nxdomain": False, "no_mail": False}
RESOLVER_UNREACHABLE = "resolver unreachable"
EDNS_PAYLOAD = 1232
MAX_CNAME_QUERIES = 8
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\Z")
_R = TypeVar("_R")


@dataclass(frozen=True)
class DomainResult:
    """What DNS says about one domain's ability to receive mail."""

    domain: str
    status: str
    mx_hosts: tuple[str, ...] = ()
    ttl: int = 300
    detail: str | None = None

    @property
    def accepts_mail(self) -> bool | None:
        """True for mx/a_fallback, False for null_mx/nxdomain/no_mail, None for unknown."""
        return ACCEPTS_MAIL.get(self.status)


@dataclass(frozen=True)
class ResolverConfig:
    """Where and how to ask. Empty ``nameservers`` means the system's resolv.conf."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout_s: float = 2.0
    retries: int = 1
    concurrency: int = 256
    min_ttl_s: int = 300
    max_ttl_s: int = 86_400
    unknown_ttl_s: int = 300
    breaker_failures: int = 32
    use_edns: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "nameservers", tuple(self.nameservers))
        problems = [
            f"nameserver {ns!r} is not an IP address"
            for ns in self.nameservers
            if not dns.inet.is_address(ns)
        ]
        checks = {
            "port must be 1..65535": 1 <= self.port <= 65535,
            "timeout_s must be > 0": self.timeout_s > 0,
            "retries must be >= 0": self.retries >= 0,
            "concurrency must be >= 1": self.concurrency >= 1,
            "min_ttl_s must be >= 0": self.min_ttl_s >= 0,
            "max_ttl_s must be >= min_ttl_s": self.max_ttl_s >= self.min_ttl_s,
            "unknown_ttl_s must be >= 0": self.unknown_ttl_s >= 0,
            "breaker_failures must be >= 1": self.breaker_failures >= 1,
        }
        problems += [message for message, ok in checks.items() if not ok]
        if problems:
            raise ValueError("invalid ResolverConfig: " + "; ".join(problems))

    @property
    def tries(self) -> int:
        return self.retries + 1

    def clamp_ttl(self, ttl: int) -> int:
        return max(self.min_ttl_s, min(self.max_ttl_s, int(ttl)))


class InvalidDomainName(ValueError):
    """The text cannot be a DNS name (so no query is sent)."""


def normalize_domain(raw: str) -> str:
    """ASCII (IDNA 2008 / punycode) lower-case form of ``raw``; raises ``InvalidDomainName``."""
    if not isinstance(raw, str):
        raise InvalidDomainName(f"domain must be text, got {type(raw).__name__}")
    text = raw.strip().lower()
    text = text[:-1] if text.endswith(".") else text
    if not text:
        raise InvalidDomainName("empty domain")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidDomainName(f"not an IDNA 2008 domain: {exc}") from None
    labels = text.split(".")
    for position, label in enumerate(labels, start=1):
        if len(label) > 63:
            raise InvalidDomainName(f"label {position} is {len(label)} octets (max 63)")
        if not _LABEL.match(label):
            raise InvalidDomainName(f"label {position} {label[:70]!r} is not a DNS label")
    if len(text) > 253:
        raise InvalidDomainName(f"name is {len(text)} octets (max 253)")
    return text


class _Unknown(Exception):
    """No definitive answer for one query; ``str(exc)`` is the reason."""


class _ResolverDown(Exception):
    """The resolver stopped answering; the run ends with ``resolver unreachable``."""


@dataclass
class _Outcome:
    """Definitive answer to one (name, type) after following CNAMEs."""

    kind: str  # "answer" | "nodata" | "nxdomain"
    rrset: dns.rrset.RRset | None
    ttl: int


@dataclass
class _Health:
    """Counts consecutive queries nobody answered; past the limit the resolver is re-probed."""

    limit: int
    silent: int = 0
    down: asyncio.Event = field(default_factory=asyncio.Event)
    probing: bool = False

    def answered(self) -> None:
        self.silent = 0

    def unanswered(self) -> bool:
        """Count one silent query; True when a probe should run now."""
        self.silent += 1
        if self.silent >= self.limit and not self.probing:
            self.probing = True
            return True
        return False


class _Client:
    """Sends queries with retries, nameserver rotation and the circuit breaker."""

    def __init__(self, config: ResolverConfig, nameservers: tuple[str, ...]) -> None:
        self.config = config
        self.nameservers = nameservers
        self.health = _Health(config.breaker_failures)
        self._rotation = itertools.count()
        self._probe_task: asyncio.Task | None = None

    async def send(self, query: dns.message.Message, where: str) -> dns.message.Message:
        """Over UDP, again over TCP when truncated.

        The UDP socket is new for every query (a new random source port) and connected, so a
        refusal (ICMP port unreachable) shows at once; stray datagrams are skipped.
        """
        backend = dns.asyncbackend.get_default_backend()
        af = dns.inet.af_for_address(where)
        udp_sock = await backend.make_socket(af, socket.SOCK_DGRAM, 0, None, (where, self.config.port))
        try:
            response, _used_tcp = await dns.asyncquery.udp_with_fallback(
                query,
                where,
                timeout=self.config.timeout_s,
                port=self.config.port,
                udp_sock=udp_sock,
                ignore_errors=True,
            )
        finally:
            await udp_sock.close()
        return response

    async def probe(self) -> tuple[str, ...]:
        """Nameservers that answer a root query at all (any rcode), asked in parallel."""
        alive = await asyncio.gather(*(self._probe_one(ns) for ns in self.nameservers))
        return tuple(ns for ns, ok in zip(self.nameservers, alive, strict=True) if ok)

    async def _probe_one(self, where: str) -> bool:
        for _ in range(self.config.tries):
            try:
                query = dns.message.make_query(dns.name.root, dns.rdatatype.NS)
                await self.send(query, where)
                return True
            except (dns.exception.Timeout, OSError):
                continue
            except dns.exception.DNSException:
                return True  # something answered, even if oddly
        return False

    async def _reprobe(self) -> None:
        alive = await self.probe()
        self.health.probing = False
        if alive:
            self.health.answered()
        else:
            self.health.down.set()

    def _note_silence(self) -> None:
        if self.health.unanswered():
            self._probe_task = asyncio.get_running_loop().create_task(self._reprobe())

    async def _wait_for_probe(self) -> None:
        """Hold new queries while a re-probe decides whether the resolver is still there."""
        if self.health.probing and self._probe_task is not None:
            await asyncio.shield(self._probe_task)
        if self.health.down.is_set():
            raise _ResolverDown

    def _make_query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        if self.config.use_edns:
            return dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
        return dns.message.make_query(name, rdtype)

    async def ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """A NOERROR or NXDOMAIN response; raises ``_Unknown`` after the last try."""
        start = next(self._rotation)
        reasons: list[str] = []
        for attempt in range(self.config.tries):
            await self._wait_for_probe()
            where = self.nameservers[(start + attempt) % len(self.nameservers)]
            query = self._make_query(name, rdtype)
            try:
                response = await self.send(query, where)
            except dns.exception.Timeout:
                reasons.append("timeout")
                self._note_silence()
                continue
            except OSError as exc:
                reasons.append(f"network error: {exc.strerror or exc}")
                self._note_silence()
                continue
            except dns.exception.DNSException as exc:
                reasons.append(f"bad response: {exc}")
                self.health.answered()
                continue
            self.health.answered()
            rcode = response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            reasons.append(dns.rcode.to_text(rcode))
        raise _Unknown(_failure_text(reasons))


def _failure_text(reasons: list[str]) -> str:
    if reasons and all(reason == "timeout" for reason in reasons):
        tries = len(reasons)
        return f"timeout after {tries} {'try' if tries == 1 else 'tries'}"
    return reasons[-1] if reasons else "no answer"


def _has_soa(response: dns.message.Message) -> bool:
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


async def _lookup(client: _Client, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Outcome:
    """Answer for ``name``/``rdtype``, asking again for a CNAME target left unanswered."""
    ttl = 2**31 - 1
    for _ in range(MAX_CNAME_QUERIES):
        response = await client.ask(name, rdtype)
        try:
            chain = response.resolve_chaining()
        except dns.message.ChainTooLong:
            raise _Unknown("CNAME chain too long") from None
        except (dns.message.AnswerForNXDOMAIN, dns.exception.FormError):
            raise _Unknown("inconsistent answer") from None
        if chain.answer is None and chain.cnames and not _has_soa(response):
            # The resolver did not follow the CNAME: ask for its target.
            ttl = min(ttl, *(cname.ttl for cname in chain.cnames))
            name = chain.canonical_name
            continue
        ttl = min(ttl, chain.minimum_ttl)
        if chain.answer is not None:
            return _Outcome("answer", chain.answer, ttl)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return _Outcome("nxdomain", None, ttl)
        return _Outcome("nodata", None, ttl)
    raise _Unknown("CNAME chain too long")


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def _check_domain(client: _Client, domain: str) -> DomainResult:
    config = client.config
    name = dns.name.from_text(domain)
    try:
        mx = await _lookup(client, name, dns.rdatatype.MX)
        if mx.kind == "answer":
            return _mx_result(domain, mx, config)
        if mx.kind == "nxdomain":
            return DomainResult(domain, "nxdomain", (), config.clamp_ttl(mx.ttl), "NXDOMAIN")
        ttl = mx.ttl
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            address = await _lookup(client, name, rdtype)
            ttl = min(ttl, address.ttl)
            if address.kind == "answer":
                return DomainResult(domain, "a_fallback", (domain,), config.clamp_ttl(ttl))
            if address.kind == "nxdomain":
                return DomainResult(domain, "nxdomain", (), config.clamp_ttl(ttl), "NXDOMAIN")
        return DomainResult(domain, "no_mail", (), config.clamp_ttl(ttl), "no MX, A or AAAA record")
    except _Unknown as exc:
        return DomainResult(domain, "unknown", (), config.unknown_ttl_s, str(exc))


def _mx_result(domain: str, mx: _Outcome, config: ResolverConfig) -> DomainResult:
    assert mx.rrset is not None
    ttl = config.clamp_ttl(mx.ttl)
    exchanges = sorted({(r.preference, _host(r.exchange)) for r in mx.rrset if r.exchange != dns.name.root})
    if not exchanges:
        return DomainResult(domain, "null_mx", (), ttl, "null MX (RFC 7505): the domain accepts no mail")
    hosts = tuple(dict.fromkeys(host for _, host in exchanges))
    return DomainResult(domain, "mx", hosts, ttl)


def system_nameservers() -> tuple[str, ...]:
    """Nameservers from the system resolver configuration (empty when there is none)."""
    try:
        configured = dns.resolver.Resolver(configure=True).nameservers
    except dns.resolver.NoResolverConfiguration:
        return ()
    return tuple(ns for ns in configured if isinstance(ns, str) and dns.inet.is_address(ns))


def _unknown(domain: str, detail: str, config: ResolverConfig) -> DomainResult:
    return DomainResult(domain, "unknown", (), config.unknown_ttl_s, detail)


async def _run_all(
    client: _Client,
    names: list[str],
    results: dict[str, _R],
    check: Callable[[_Client, str], Awaitable[_R]],
) -> None:
    """Fill ``results`` with ``concurrency`` workers; stop early when the resolver is down."""
    pending = iter(names)

    async def worker() -> None:
        try:
            for name in pending:
                results[name] = await check(client, name)
        except _ResolverDown:
            client.health.down.set()

    count = min(client.config.concurrency, len(names))
    workers = [asyncio.ensure_future(worker()) for _ in range(count)]
    all_done = asyncio.gather(*workers)
    down = asyncio.ensure_future(client.health.down.wait())
    try:
        done, _ = await asyncio.wait([all_done, down], return_when=asyncio.FIRST_COMPLETED)
        if all_done in done:
            all_done.result()  # a failure inside a worker is a bug: let it surface
    finally:
        for task in (*workers, down):
            task.cancel()
        await asyncio.gather(*workers, down, return_exceptions=True)


async def check_domains_async(domains: Iterable[str], config: ResolverConfig) -> dict[str, DomainResult]:
    """Check every distinct domain once; the result maps each input text to its result.

    Inputs are normalised (trimmed, lower case, IDNA 2008 to punycode), so ``"Bücher.test"``
    and ``"xn--bcher-kva.test"`` share one lookup. Text that cannot be a DNS name (for
    example a 300-character label) is not sent: it gets ``no_mail`` with the reason.
    """
    ascii_of: dict[str, str | InvalidDomainName] = {}
    for raw in domains:
        if raw not in ascii_of:
            try:
                ascii_of[raw] = normalize_domain(raw)
            except InvalidDomainName as exc:
                ascii_of[raw] = exc
    distinct = list(dict.fromkeys(name for name in ascii_of.values() if isinstance(name, str)))
    by_ascii = await _resolve_distinct(distinct, config) if distinct else {}
    return {
        raw: by_ascii[name] if isinstance(name, str) else _not_a_name(raw, name, config)
        for raw, name in ascii_of.items()
    }


def _not_a_name(raw: str, error: InvalidDomainName, config: ResolverConfig) -> DomainResult:
    """A text that cannot be a DNS name: no query, and the verdict never changes."""
    text = raw.strip().lower() if isinstance(raw, str) else repr(raw)
    return DomainResult(text, "no_mail", (), config.max_ttl_s, f"not a DNS name: {error}")


async def _resolve_all(
    names: list[str],
    config: ResolverConfig,
    check: Callable[[_Client, str], Awaitable[_R]],
    failed: Callable[[str, str], _R],
) -> dict[str, _R]:
    """``check`` every name; ``failed(name, reason)`` for those left without an answer."""
    nameservers = config.nameservers or system_nameservers()
    if not nameservers:
        return {name: failed(name, "no nameserver configured") for name in names}
    client = _Client(config, nameservers)
    alive = await client.probe()
    results: dict[str, _R] = {}
    if alive:
        client.nameservers = alive
        await _run_all(client, names, results, check)
    for name in names:
        if name not in results:
            results[name] = failed(name, RESOLVER_UNREACHABLE)
    return results


async def _resolve_distinct(domains: list[str], config: ResolverConfig) -> dict[str, DomainResult]:
    return await _resolve_all(domains, config, _check_domain, lambda d, why: _unknown(d, why, config))


def _blocking(run: Callable[[], Awaitable[_R]]) -> _R:
    """Run a coroutine to completion; in its own thread when an event loop is already running."""
    async def main() -> _R:
        return await run()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def check_domains(domains: Iterable[str], config: ResolverConfig) -> dict[str, DomainResult]:
    """Blocking form of ``check_domains_async``; safe inside a running event loop (own thread)."""
    items = list(domains)
    return _blocking(lambda: check_domains_async(items, config))


# --- addresses of mail hosts --------------------------------------------------------------------


@dataclass(frozen=True)
class HostAddresses:
    """The IP addresses of one host name (A first, then AAAA); ``detail`` says why there are none."""

    host: str
    addresses: tuple[str, ...] = ()
    detail: str | None = None


async def _host_addresses(client: _Client, host: str) -> HostAddresses:
    try:
        name = dns.name.from_text(normalize_domain(host))
    except (InvalidDomainName, dns.exception.DNSException) as exc:
        return HostAddresses(host, (), f"not a host name: {exc}")
    found: list[str] = []
    try:
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            outcome = await _lookup(client, name, rdtype)
            if outcome.kind == "nxdomain":
                return HostAddresses(host, (), "NXDOMAIN")
            if outcome.rrset is not None:
                found += [rdata.address for rdata in outcome.rrset]
    except _Unknown as exc:
        if not found:
            return HostAddresses(host, (), str(exc))
    return HostAddresses(host, tuple(dict.fromkeys(found)), None if found else "no A or AAAA record")


async def resolve_hosts_async(hosts: Iterable[str], config: ResolverConfig) -> dict[str, HostAddresses]:
    """A and AAAA addresses of every distinct host; an IP address given as a host is its own answer."""
    names = list(dict.fromkeys(hosts))
    literal = {h: HostAddresses(h, (h,)) for h in names if dns.inet.is_address(h)}
    asked = [h for h in names if h not in literal]
    found = await _resolve_all(asked, config, _host_addresses, lambda h, why: HostAddresses(h, (), why)) if asked else {}
    return {**literal, **found}


def resolve_hosts(hosts: Iterable[str], config: ResolverConfig) -> dict[str, HostAddresses]:
    """Blocking form of :func:`resolve_hosts_async`."""
    items = list(hosts)
    return _blocking(lambda: resolve_hosts_async(items, config))
