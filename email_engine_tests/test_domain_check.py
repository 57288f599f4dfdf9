"""Domain (DNS) checks against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.dns_client import (
    RESOLVER_UNREACHABLE,
    DomainResult,
    ResolverConfig,
    check_domains,
    check_domains_async,
    normalize_domain,
    resolve_hosts,
)
from email_engine_tests.dns_server import (
    LoopbackDnsServer,
    long_mx_hosts,
    running_dns_server,
    standard_zone,
)


@pytest.fixture()
def server() -> Iterator[LoopbackDnsServer]:
    with running_dns_server(standard_zone()) as dns_server:
        yield dns_server


def config_for(server: LoopbackDnsServer, **overrides: object) -> ResolverConfig:
    settings: dict = {"nameservers": (server.host,), "port": server.port, "timeout_s": 0.3}
    settings.update(overrides)
    return ResolverConfig(**settings)


def check_one(server: LoopbackDnsServer, domain: str, **overrides: object) -> DomainResult:
    return check_domains([domain], config_for(server, **overrides))[domain]


@pytest.mark.parametrize(
    ("domain", "status", "hosts", "detail", "accepts"),
    [
        ("mx-ok.test", "mx", ("mx1.mx-ok.test", "mx2.mx-ok.test"), None, True),
        ("a-only.test", "a_fallback", ("a-only.test",), None, True),
        ("aaaa-only.test", "a_fallback", ("aaaa-only.test",), None, True),
        ("null-mx.test", "null_mx", (), "null MX (RFC 7505): the domain accepts no mail", False),
        ("missing.test", "nxdomain", (), "NXDOMAIN", False),
        ("empty.test", "no_mail", (), "no MX, A or AAAA record", False),
        ("servfail.test", "unknown", (), "SERVFAIL", None),
        ("silent.test", "unknown", (), "timeout after 2 tries", None),
    ],
)
def test_each_status_with_its_detail(server, domain, status, hosts, detail, accepts):
    result = check_one(server, domain)
    assert (result.domain, result.status, result.mx_hosts, result.detail) == (domain, status, hosts, detail)
    assert result.accepts_mail is accepts


def test_mx_hosts_are_sorted_by_preference_not_by_answer_order(server):
    assert server.zone.mx["mx-ok.test"][0] == (20, "mx2.mx-ok.test")
    assert check_one(server, "mx-ok.test").mx_hosts == ("mx1.mx-ok.test", "mx2.mx-ok.test")


def test_a_fallback_asks_a_before_aaaa_and_only_when_mx_is_missing(server):
    check_domains(["a-only.test", "aaaa-only.test", "mx-ok.test"], config_for(server))
    counts = server.stats.by_query
    assert counts[("a-only.test", "A")] == 1 and counts[("a-only.test", "AAAA")] == 0
    assert counts[("aaaa-only.test", "A")] == 1 and counts[("aaaa-only.test", "AAAA")] == 1
    assert counts[("mx-ok.test", "A")] == 0


@pytest.mark.parametrize("alias", ["alias.test", "alias2.test"])
def test_cname_chain_resolves_to_the_target_mx(server, alias):
    result = check_one(server, alias)
    assert (result.domain, result.status, result.mx_hosts) == (alias, "mx", ("mx1.mx-ok.test", "mx2.mx-ok.test"))


def test_cname_not_followed_by_the_resolver_is_asked_again_for_its_target(server):
    result = check_one(server, "bare-alias.test")
    assert (result.status, result.mx_hosts) == ("mx", ("mx1.mx-ok.test", "mx2.mx-ok.test"))
    assert server.stats.count("bare-alias.test", "MX") == 1
    assert server.stats.count("mx-ok.test", "MX") == 1


def test_truncated_udp_answer_is_fetched_again_over_tcp(server):
    result = check_one(server, "big-mx.test")
    assert result.status == "mx"
    assert result.mx_hosts == tuple(host for _, host in long_mx_hosts())
    assert server.stats.truncated == 1
    assert server.stats.tcp == 1
    assert server.stats.count("big-mx.test", "MX") == 2  # once over UDP, once over TCP


def test_with_edns_a_larger_udp_answer_fits_and_the_biggest_still_goes_to_tcp(server):
    results = check_domains(["mx-ok.test", "big-mx.test"], config_for(server, use_edns=True))
    assert results["mx-ok.test"].mx_hosts == ("mx1.mx-ok.test", "mx2.mx-ok.test")
    assert len(results["big-mx.test"].mx_hosts) == 40
    assert (server.stats.udp, server.stats.tcp, server.stats.truncated) == (3, 1, 1)


def test_failures_are_retried_a_bounded_number_of_times(server):
    check_domains(["servfail.test", "silent.test"], config_for(server, retries=2, timeout_s=0.1))
    assert server.stats.count("servfail.test", "MX") == 3
    assert server.stats.count("silent.test", "MX") == 3
    assert server.stats.dropped == 3


def test_each_distinct_domain_costs_one_query_plus_one_probe(server):
    domains = [f"d{i}.gen.test" for i in range(50)]
    results = check_domains(domains + [d.upper() for d in domains], config_for(server))
    assert len(results) == 100
    assert {r.status for r in results.values()} == {"mx"}
    assert server.stats.total == 50 + 1
    assert server.stats.count(".", "NS") == 1


def test_every_query_leaves_from_its_own_random_source_port(server):
    domains = [f"d{i}.gen.test" for i in range(200)]
    check_domains(domains, config_for(server, concurrency=4))  # 4 workers, 50 queries each
    server.sync()
    ports = server.stats.source_ports
    assert sum(ports.values()) == 200 + 1
    assert len(ports) >= 195  # a reused socket would show 4 ports; the kernel may reuse one now and then
    assert max(ports) - min(ports) > 1000  # spread over the ephemeral range, not counting up from one


def test_mail_hosts_resolve_to_their_addresses_through_the_same_nameservers():
    zone = standard_zone()
    zone.a.update({"mx1.mx-ok.test": ["192.0.2.1", "192.0.2.2"], "v6.mx-ok.test": []})
    zone.aaaa.update({"mx1.mx-ok.test": ["2001:db8::1"], "v6.mx-ok.test": ["2001:db8::6"]})
    with running_dns_server(zone) as server:
        found = resolve_hosts(["mx1.mx-ok.test", "v6.mx-ok.test", "nowhere.test", "servfail.test", "10.0.0.1"], config_for(server))

    addresses = found["mx1.mx-ok.test"].addresses
    assert set(addresses[:2]) == {"192.0.2.1", "192.0.2.2"} and addresses[2:] == ("2001:db8::1",)  # A first
    assert found["v6.mx-ok.test"].addresses == ("2001:db8::6",)
    assert (found["nowhere.test"].addresses, found["nowhere.test"].detail) == ((), "NXDOMAIN")
    assert (found["servfail.test"].addresses, found["servfail.test"].detail) == ((), "SERVFAIL")
    assert found["10.0.0.1"].addresses == ("10.0.0.1",)  # an address is its own answer, no query
    assert server.stats.count("10.0.0.1", "A") == 0


def test_concurrency_is_bounded_and_used():
    domains = [f"d{i}.gen.test" for i in range(160)]
    with running_dns_server(standard_zone(), delay_s=0.03) as server:
        results = check_domains(domains, config_for(server, concurrency=8, timeout_s=2.0))
        assert {r.status for r in results.values()} == {"mx"}
        assert 1 < server.stats.max_outstanding <= 8
        server.reset_stats()
        check_domains(domains[:5], config_for(server, concurrency=1, timeout_s=2.0))
        assert server.stats.max_outstanding == 1


def test_ttl_is_taken_from_the_answer_and_clamped(server):
    domains = ["short-ttl.test", "long-ttl.test", "mx-ok.test", "missing.test", "a-only.test", "servfail.test"]
    default = check_domains(domains, config_for(server))
    assert {d: r.ttl for d, r in default.items()} == {
        "short-ttl.test": 300,  # 5 s raised to the minimum
        "long-ttl.test": 86_400,  # 1,000,000 s lowered to the maximum
        "mx-ok.test": 3600,
        "missing.test": 900,  # the SOA minimum of the negative answer
        "a-only.test": 900,  # min(no-MX negative TTL, A TTL 3600)
        "servfail.test": 300,  # unknown_ttl_s
    }
    narrow = check_domains(domains, config_for(server, min_ttl_s=60, max_ttl_s=1000, unknown_ttl_s=30))
    assert {d: r.ttl for d, r in narrow.items()} == {
        "short-ttl.test": 60,
        "long-ttl.test": 1000,
        "mx-ok.test": 1000,
        "missing.test": 900,
        "a-only.test": 900,
        "servfail.test": 30,
    }


def test_a_300_character_label_is_no_mail_without_any_query(server):
    domain = "x" * 300 + ".test"
    result = check_domains([domain], config_for(server))[domain]
    assert (result.status, result.accepts_mail, result.mx_hosts) == ("no_mail", False, ())
    assert result.detail == "not a DNS name: label 1 is 300 octets (max 63)"
    assert server.stats.total == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty domain"),
        ("a..test", "label 2 '' is not a DNS label"),
        ("-a.test", "label 1 '-a' is not a DNS label"),
        ("a b.test", "label 1 'a b' is not a DNS label"),
        ("a." * 127 + "test", "name is 258 octets (max 253)"),
    ],
)
def test_texts_that_cannot_be_dns_names_get_a_named_reason(server, text, reason):
    result = check_domains([text], config_for(server))[text]
    assert (result.status, result.detail) == ("no_mail", f"not a DNS name: {reason}")


def test_idn_input_is_looked_up_once_in_punycode(server):
    results = check_domains(["Bücher.test", "xn--bcher-kva.test", "BÜCHER.test."], config_for(server))
    assert {r.domain for r in results.values()} == {"xn--bcher-kva.test"}
    assert {r.mx_hosts for r in results.values()} == {("mx.xn--bcher-kva.test",)}
    assert server.stats.count("xn--bcher-kva.test", "MX") == 1
    assert normalize_domain("Bücher.test") == "xn--bcher-kva.test"


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_refusing_resolver_makes_every_domain_unknown_at_once():
    domains = [f"d{i}.gen.test" for i in range(1000)]
    config = ResolverConfig(nameservers=("127.0.0.1",), port=_closed_udp_port(), timeout_s=2.0)
    started = time.monotonic()
    results = check_domains(domains, config)
    elapsed = time.monotonic() - started
    assert {(r.status, r.detail, r.ttl) for r in results.values()} == {("unknown", RESOLVER_UNREACHABLE, 300)}
    assert len(results) == 1000
    assert elapsed < 1.0


def test_silent_resolver_is_detected_by_one_probe_not_per_domain():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        config = ResolverConfig(nameservers=("127.0.0.1",), port=black_hole.getsockname()[1], timeout_s=0.2)
        started = time.monotonic()
        results = check_domains([f"d{i}.gen.test" for i in range(1000)], config)
        elapsed = time.monotonic() - started
    assert {(r.status, r.detail) for r in results.values()} == {("unknown", RESOLVER_UNREACHABLE)}
    assert elapsed < 1.5  # the probe's two tries of 0.2 s, not 1,000 timeouts


def test_resolver_lost_during_the_run_stops_the_run_quickly():
    domains = [f"d{i}.gen.test" for i in range(3000)]
    server = LoopbackDnsServer(standard_zone(), delay_s=0.02).start()
    config = config_for(server, concurrency=16, timeout_s=0.5)

    async def run_and_cut() -> tuple[dict[str, DomainResult], float]:
        task = asyncio.ensure_future(check_domains_async(domains, config))
        await asyncio.sleep(0.5)
        server.stop()
        cut_at = time.monotonic()
        results = await task
        return results, time.monotonic() - cut_at

    results, after_cut = asyncio.run(run_and_cut())
    statuses = [r.status for r in results.values()]
    details = {r.detail for r in results.values() if r.status == "unknown"}
    assert len(results) == 3000
    assert 0 < statuses.count("mx") < 3000
    assert RESOLVER_UNREACHABLE in details
    assert [r.detail for r in results.values()].count(RESOLVER_UNREACHABLE) > 2000
    # Queries in flight at the cut wait out one timeout; everything after that is refused,
    # the breaker re-probes, and the remaining domains are settled at once.
    assert after_cut < 0.5 + 1.0


def test_only_nameservers_that_answer_are_used(server):
    config = ResolverConfig(nameservers=("127.0.0.1", "127.0.0.1"), port=server.port, timeout_s=0.3)
    assert check_domains(["mx-ok.test"], config)["mx-ok.test"].status == "mx"
    dead_first = ResolverConfig(nameservers=("127.0.0.2",), port=_closed_udp_port(), timeout_s=0.3)
    assert check_domains(["mx-ok.test"], dead_first)["mx-ok.test"].detail == RESOLVER_UNREACHABLE


def test_blocking_call_works_inside_a_running_event_loop(server):
    async def from_a_coroutine() -> dict[str, DomainResult]:
        return check_domains(["mx-ok.test"], config_for(server))

    assert asyncio.run(from_a_coroutine())["mx-ok.test"].status == "mx"


def test_result_keys_are_the_texts_given(server):
    results = check_domains(["MX-OK.test.", " mx-ok.test "], config_for(server))
    assert set(results) == {"MX-OK.test.", " mx-ok.test "}
    assert {r.domain for r in results.values()} == {"mx-ok.test"}
    assert server.stats.count("mx-ok.test", "MX") == 1


def test_nothing_to_check_sends_nothing(server):
    assert check_domains([], config_for(server)) == {}
    assert server.stats.total == 0


def test_bad_config_is_refused_with_every_problem_named():
    with pytest.raises(ValueError) as error:
        ResolverConfig(nameservers=("dns.example",), timeout_s=0, concurrency=0, min_ttl_s=10, max_ttl_s=5)
    message = str(error.value)
    for problem in (
        "nameserver 'dns.example' is not an IP address",
        "timeout_s must be > 0",
        "concurrency must be >= 1",
        "max_ttl_s must be >= min_ttl_s",
    ):
        assert problem in message


def test_resource_builds_the_config_and_checks_domains(server):
    resource = DnsResolverResource(nameservers=[server.host], port=server.port, timeout_s=0.5, concurrency=4)
    config = resource.config()
    assert (config.nameservers, config.port, config.concurrency) == ((server.host,), server.port, 4)
    results = resource.check_domains(["mx-ok.test", "missing.test"])
    assert {d: r.status for d, r in results.items()} == {"mx-ok.test": "mx", "missing.test": "nxdomain"}
    with pytest.raises(ValueError, match="retries must be >= 0"):
        DnsResolverResource(retries=-1).config()
