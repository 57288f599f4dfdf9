"""A real DNS server on loopback for tests and benchmarks.

``LoopbackDnsServer`` answers on UDP and TCP on the same random free port from a background
thread that runs its own asyncio loop, so hundreds of delayed answers can be pending at once
(each delay is a ``loop.call_later``, not a sleeping thread). It serves a ``TestZone``:

* fixed records (MX, A, AAAA, CNAME, TXT) given as dicts; a TXT value longer than 255 bytes goes
  out as several character-strings of one record, as real DNS carries a DKIM key of 2048 bits;
* generated domains: every ``<label>.<suffix>`` for a suffix in ``generated_mx_suffixes``
  has ``MX 10 mx.<label>.<suffix>`` (so a 50,000-domain zone costs no memory);
* names that exist with no record of any type asked (``NOERROR``, no data);
* behaviours: names answered ``SERVFAIL``, names whose queries are dropped (client timeout),
  CNAMEs the server does not follow (the client must ask again for the target);
* ``NXDOMAIN`` with an SOA for every other name, ``NOERROR``/no data with an SOA for a known
  name asked for a type it lacks.

Answers larger than the client's UDP limit (512 bytes, or the EDNS payload it offers) are sent
truncated with the TC bit, so the client has to ask again over TCP.

The server counts what it receives (total, UDP, TCP, per ``(name, type)``, per UDP source
port) and the largest number of queries received but not yet answered (``max_outstanding``),
which shows the client's concurrency bound from outside.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT

MAX_CNAME_HOPS = 8
TXT_STRING_MAX = 255  # bytes in one character-string (RFC 1035 §3.3)
BENCH_SUFFIX = "bench.example"
SOA_TEXT = "ns.{zone} hostmaster.{zone} 1 3600 600 86400 {minimum}"


@dataclass
class TestZone:
    """What the server knows; every name is lower-case ASCII without the trailing dot."""

    __test__ = False  # not a pytest test class

    mx: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    a: dict[str, list[str]] = field(default_factory=dict)
    aaaa: dict[str, list[str]] = field(default_factory=dict)
    cname: dict[str, str] = field(default_factory=dict)
    txt: dict[str, list[str]] = field(default_factory=dict)  # name -> the value of each TXT record
    bare_cname: dict[str, str] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)
    generated_mx_suffixes: tuple[str, ...] = ()
    ttl: dict[str, int] = field(default_factory=dict)
    default_ttl: int = 3600
    negative_ttl: int = 900

    def ttl_for(self, name: str) -> int:
        return self.ttl.get(name, self.default_ttl)

    def generated_mx(self, name: str) -> list[tuple[int, str]] | None:
        for suffix in self.generated_mx_suffixes:
            head, dot, tail = name.partition(".")
            if dot and tail == suffix and head:
                return [(10, f"mx.{name}")]
        return None

    def records(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        """Rdata texts of ``name``/``rdtype`` (empty when there are none)."""
        if rdtype == dns.rdatatype.MX:
            pairs = self.mx.get(name) or self.generated_mx(name) or []
            return [f"{pref} {host}." if host != "." else f"{pref} ." for pref, host in pairs]
        if rdtype == dns.rdatatype.A:
            return list(self.a.get(name, []))
        if rdtype == dns.rdatatype.AAAA:
            return list(self.aaaa.get(name, []))
        if rdtype == dns.rdatatype.TXT:
            return list(self.txt.get(name, []))  # whole values: _rrset splits them into character-strings
        return []

    def fixed(self, name: str) -> bool:
        """Whether ``name`` is listed explicitly (not only matched by a generated suffix)."""
        tables = (self.mx, self.a, self.aaaa, self.txt, self.cname, self.bare_cname)
        return (
            any(name in table for table in tables)
            or name in self.servfail
            or name in self.drop
            or name in self.empty
        )

    def exists(self, name: str) -> bool:
        return self.fixed(name) or self.generated_mx(name) is not None


@dataclass
class ServerStats:
    """Counters kept by the server loop; read them from the test thread."""

    total: int = 0
    udp: int = 0
    tcp: int = 0
    dropped: int = 0
    truncated: int = 0
    cpu_s: float = 0.0  # CPU time of the server's process, filled by DnsServerProcess
    outstanding: int = 0
    max_outstanding: int = 0
    by_query: Counter[tuple[str, str]] = field(default_factory=Counter)
    source_ports: Counter[int] = field(default_factory=Counter)  # UDP queries per client source port

    def count(self, name: str, rdtype: str) -> int:
        return self.by_query[(name, rdtype)]


def _rrset(name: str, ttl: int, rdtype: str, texts: list[str]) -> dns.rrset.RRset:
    if rdtype == "MX":  # built directly: parsing text costs more than the rest of an answer
        rdatas = [_mx(text) for text in texts]
        return dns.rrset.from_rdata_list(dns.name.from_text(name), ttl, rdatas)
    if rdtype == "TXT":  # built directly: the text form would need quoting and splitting
        return dns.rrset.from_rdata_list(dns.name.from_text(name), ttl, [txt_rdata(text) for text in texts])
    return dns.rrset.from_text_list(f"{name}.", ttl, "IN", rdtype, texts)


def _mx(text: str) -> MX:
    preference, exchange = text.split(" ", 1)
    return MX(dns.rdataclass.IN, dns.rdatatype.MX, int(preference), dns.name.from_text(exchange))


def txt_rdata(value: str) -> TXT:
    """One TXT record holding ``value`` (UTF-8) in character-strings of at most 255 bytes."""
    data = value.encode("utf-8")
    strings = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)


def txt_lookup(server: LoopbackDnsServer | DnsServerProcess, timeout_s: float = 2.0) -> Callable[..., bytes | None]:
    """A ``dnsfunc`` for dkimpy (``dkim.verify(message, dnsfunc=...)``) that asks ``server`` for TXT
    records with dnspython: the first record's character-strings joined, as dkimpy's own lookup does;
    None when there is none."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes | str, timeout: float = timeout_s) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(qname, "TXT", lifetime=min(timeout, timeout_s))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(next(iter(answer.rrset)).strings)

    return lookup


def _soa(zone: TestZone, qname: str) -> dns.rrset.RRset:
    apex = qname.rsplit(".", 1)[-1] if qname else "test"
    text = SOA_TEXT.format(zone=f"{apex}.", minimum=zone.negative_ttl)
    return _rrset(apex, zone.negative_ttl, "SOA", [text])


def build_response(zone: TestZone, query: dns.message.Message) -> dns.message.Message | None:
    """The answer to ``query``, or ``None`` when the query must be dropped."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    if question.name == dns.name.root:
        return response  # the root: an empty NOERROR is enough for a reachability probe
    name = question.name.to_text(omit_final_dot=True).lower()
    if name in zone.drop:
        return None
    if name in zone.servfail:
        response.set_rcode(dns.rcode.SERVFAIL)
        return response
    _answer_chain(zone, response, name, question.rdtype)
    return response


def _answer_chain(
    zone: TestZone, response: dns.message.Message, name: str, rdtype: dns.rdatatype.RdataType
) -> None:
    for _ in range(MAX_CNAME_HOPS):
        target = zone.cname.get(name) or zone.bare_cname.get(name)
        if target is not None and rdtype != dns.rdatatype.CNAME:
            response.answer.append(_rrset(name, zone.ttl_for(name), "CNAME", [f"{target}."]))
            if name in zone.bare_cname:
                return
            name = target
            continue
        break
    if name in zone.servfail or name in zone.drop:
        response.set_rcode(dns.rcode.SERVFAIL)
        return
    texts = zone.records(name, rdtype)
    if texts:
        response.answer.append(_rrset(name, zone.ttl_for(name), rdtype.name, texts))
        return
    if not zone.exists(name):
        response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(_soa(zone, name))


_HEADER = struct.Struct("!HHHHHH")
_MX_RR = struct.Struct("!HHIHH")
_GENERATED_MX_RDATA = b"\x02mx\xc0\x0c"  # "mx." + a pointer to the question name


def generated_mx_reply(zone: TestZone, wire: bytes) -> tuple[bytes, str] | None:
    """Answer for a plain ``MX`` question about a generated domain, built from the query bytes.

    Lets the benchmark's server answer tens of thousands of names for a few microseconds
    each; anything else (EDNS, other types, fixed names) returns ``None`` and takes the
    general dnspython path.
    """
    if len(wire) < 17:
        return None
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if flags & 0xF800 or qdcount != 1 or ancount or nscount or arcount:
        return None  # a response, an opcode other than QUERY, or extra records (EDNS)
    labels, position = [], 12
    while (length := wire[position]) != 0:
        if length > 63 or position + 1 + length >= len(wire):
            return None
        labels.append(wire[position + 1 : position + 1 + length])
        position += 1 + length
    end = position + 5
    if wire[position + 1 : end] != b"\x00\x0f\x00\x01" or len(wire) != end:
        return None  # not MX/IN
    try:
        name = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    if zone.fixed(name) or zone.generated_mx(name) is None:
        return None
    header = _HEADER.pack(ident, 0x8080 | (flags & 0x0100), 1, 1, 0, 0)
    answer = b"\xc0\x0c" + _MX_RR.pack(15, 1, zone.ttl_for(name), 2 + len(_GENERATED_MX_RDATA), 10)
    return header + wire[12:end] + answer + _GENERATED_MX_RDATA, name


def to_wire_limited(response: dns.message.Message, limit: int) -> tuple[bytes, bool]:
    """Wire form within ``limit`` bytes; a too-big answer is emptied and gets the TC bit."""
    try:
        return response.to_wire(max_size=limit), False
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit), True


def udp_limit(query: dns.message.Message) -> int:
    return max(512, query.payload) if query.edns >= 0 else 512


class _Handler:
    """Parses queries, counts them and sends answers after the configured delay."""

    def __init__(self, zone: TestZone, delay_s: float, stats: ServerStats) -> None:
        self.zone = zone
        self.delay_s = delay_s
        self.stats = stats

    def receive(
        self, wire: bytes, transport: str, send: Callable[[bytes], None], limit: int | None
    ) -> None:
        fast = generated_mx_reply(self.zone, wire) if self.zone.generated_mx_suffixes else None
        if fast is not None:
            wire_out, name = fast
            self._count(transport, name, "MX")
        else:
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                return
            question = query.question[0] if query.question else None
            if question is not None:
                self._count(transport, question.name.to_text(omit_final_dot=True).lower(), question.rdtype.name)
            response = build_response(self.zone, query)
            if response is None:
                self.stats.dropped += 1
                return
            wire_out, truncated = to_wire_limited(response, limit or udp_limit(query))
            self.stats.truncated += truncated
        self._schedule(send, wire_out)

    def _count(self, transport: str, name: str, rdtype: str) -> None:
        stats = self.stats
        stats.total += 1
        if transport == "udp":
            stats.udp += 1
        else:
            stats.tcp += 1
        stats.by_query[(name, rdtype)] += 1

    def _schedule(self, send: Callable[[bytes], None], wire_out: bytes) -> None:
        stats = self.stats
        stats.outstanding += 1
        stats.max_outstanding = max(stats.max_outstanding, stats.outstanding)
        if self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, self._send, send, wire_out)
        else:
            self._send(send, wire_out)

    def _send(self, send: Callable[[bytes], None], wire: bytes) -> None:
        self.stats.outstanding -= 1
        try:
            send(wire)
        except (OSError, RuntimeError):
            pass  # the client went away; nothing to answer


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: _Handler) -> None:
        self.handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        transport = self.transport
        assert transport is not None
        self.handler.stats.source_ports[addr[1]] += 1

        def send(wire: bytes) -> None:
            if not transport.is_closing():
                transport.sendto(wire, addr)

        self.handler.receive(data, "udp", send, None)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from clients that already left


def _tcp_handler(handler: _Handler) -> Callable:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(wire: bytes) -> None:
            if not writer.is_closing():
                writer.write(struct.pack("!H", len(wire)) + wire)

        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                handler.receive(await reader.readexactly(size), "tcp", send, 65535)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await asyncio.sleep(handler.delay_s)  # let delayed answers go out before closing
            writer.close()

    return serve


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """A TCP and a UDP socket bound to the same free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
        except OSError:
            tcp.close()
            udp.close()
            continue
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        return tcp, udp
    raise RuntimeError(f"no free port with both UDP and TCP on {host}")


class LoopbackDnsServer:
    """DNS server on ``host`` (loopback) in a background thread; use ``with`` or start/stop."""

    def __init__(self, zone: TestZone, delay_s: float = 0.0, host: str = "127.0.0.1") -> None:
        self.zone = zone
        self.host = host
        self.stats = ServerStats()
        self._handler = _Handler(zone, delay_s, self.stats)
        self._tcp_sock, self._udp_sock = _bind_pair(host)
        self.port: int = self._udp_sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="loopback-dns", daemon=True)
        self._ready = threading.Event()

    @property
    def delay_s(self) -> float:
        return self._handler.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._handler.delay_s = value

    def reset_stats(self) -> None:
        self._loop.call_soon_threadsafe(self._reset_stats)
        self.sync()

    def _reset_stats(self) -> None:
        outstanding = self.stats.outstanding
        fresh = ServerStats(outstanding=outstanding, max_outstanding=outstanding)
        self.stats.__dict__.update(fresh.__dict__)

    def sync(self) -> None:
        """Wait until the server loop has handled everything queued before this call."""
        done = threading.Event()
        self._loop.call_soon_threadsafe(done.set)
        done.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._open())
        self._ready.set()
        self._loop.run_forever()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._handler), sock=self._udp_sock
        )
        self._server = await asyncio.start_server(_tcp_handler(self._handler), sock=self._tcp_sock)

    async def _close(self) -> None:
        self._udp_transport.close()
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    def start(self) -> LoopbackDnsServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("loopback DNS server did not start")
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> LoopbackDnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_dns_server(zone: TestZone, delay_s: float = 0.0) -> Iterator[LoopbackDnsServer]:
    """``with running_dns_server(zone) as server:``; a pytest fixture can ``yield`` inside it."""
    with LoopbackDnsServer(zone, delay_s) as server:
        yield server


def _serve_until_told(
    zone: TestZone, delay_s: float, conn: multiprocessing.connection.Connection
) -> None:
    with LoopbackDnsServer(zone, delay_s) as server:
        conn.send(server.port)
        while (command := conn.recv()) != "stop":
            if command == "stats":
                server.sync()
                server.stats.cpu_s = time.process_time()
                conn.send(server.stats)
            elif command == "reset":
                server.reset_stats()
                conn.send(None)
        server.sync()
        server.stats.cpu_s = time.process_time()
        conn.send(server.stats)


class DnsServerProcess:
    """The same server in its own process, so that a benchmark's client keeps its core.

    In one process the server thread and the client share the GIL, and every blocking
    system call then waits for the other side: fine for tests, misleading for timings.
    """

    def __init__(self, zone: TestZone, delay_s: float = 0.0) -> None:
        self.zone = zone
        self.delay_s = delay_s
        self.host = "127.0.0.1"
        self.port = 0
        self.final_stats: ServerStats | None = None
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_until_told, args=(zone, delay_s, child), name="loopback-dns", daemon=True
        )

    def start(self) -> DnsServerProcess:
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("DNS server process did not start")
        self.port = self._conn.recv()
        return self

    @property
    def stats(self) -> ServerStats:
        if self.final_stats is not None:
            return self.final_stats
        self._conn.send("stats")
        return self._conn.recv()

    def reset_stats(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        if self.final_stats is None and self._process.is_alive():
            self._conn.send("stop")
            self.final_stats = self._conn.recv()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def __enter__(self) -> DnsServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def long_mx_hosts(count: int = 40) -> list[tuple[int, str]]:
    """``count`` MX records with long names: well over 512 (and 1232) bytes on the wire."""
    label = "very-long-mail-exchanger-host-name-for-truncation"
    return [(10 + i, f"{label}-{i:02d}.big-answer-provider.test") for i in range(count)]


def standard_zone() -> TestZone:
    """One name for every case the domain check distinguishes (all under ``.test``)."""
    return TestZone(
        mx={
            "mx-ok.test": [(20, "mx2.mx-ok.test"), (10, "mx1.mx-ok.test")],
            "null-mx.test": [(0, ".")],
            "big-mx.test": long_mx_hosts(),
            "short-ttl.test": [(10, "mx.short-ttl.test")],
            "long-ttl.test": [(10, "mx.long-ttl.test")],
            "xn--bcher-kva.test": [(10, "mx.xn--bcher-kva.test")],
        },
        a={"a-only.test": ["192.0.2.10"]},
        aaaa={"aaaa-only.test": ["2001:db8::10"]},
        cname={"alias.test": "mx-ok.test", "alias2.test": "alias.test"},
        bare_cname={"bare-alias.test": "mx-ok.test"},
        servfail={"servfail.test"},
        drop={"silent.test"},
        empty={"empty.test"},
        ttl={"short-ttl.test": 5, "long-ttl.test": 1_000_000},
        generated_mx_suffixes=("gen.test",),
    )


def bench_zone(suffix: str = BENCH_SUFFIX) -> TestZone:
    """Only generated domains: ``d<n>.<suffix>`` -> ``MX 10 mx.d<n>.<suffix>``.

    The default suffix is under ``example`` (RFC 2606), which email-validator accepts with
    deliverability checks on, unlike ``test``.
    """
    return TestZone(generated_mx_suffixes=(suffix,))
