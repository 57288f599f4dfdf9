"""Throughput of the domain (DNS) check: many contacts, fewer domains, a slow resolver.

    python benchmarks/validate_dns.py --contacts 1000000 --domains 50000 --delay-ms 20

Builds ``contacts`` addresses spread over ``domains`` distinct domains, starts the loopback
DNS server (in its own process, so it does not share a core with the client) adding
``delay_ms`` to every answer, then runs the product's path: extract the domains, keep the
distinct ones, ``check_domains`` them, join the verdicts back onto the contacts. Prints wall
time, queries the server received (target: distinct domains + one probe + retries), and
contacts per second.

Reference: ``email_validator.validate_email(..., check_deliverability=True)`` on a sample of
addresses with distinct domains, its resolver pointed at the same server, extrapolated to the
full contact count (one lookup per address) and to one lookup per distinct domain (what its
``caching_resolver`` would save at best).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import dns.resolver
import email_validator
import polars as pl

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources.dns_client import (  # noqa: E402
    DomainResult,
    ResolverConfig,
    check_domains,
)
from email_engine_resources.email_domain import email_domain_expr  # noqa: E402
from email_engine_tests.dns_server import BENCH_SUFFIX, DnsServerProcess, bench_zone  # noqa: E402


def build_contacts(contacts: int, domains: int) -> pl.DataFrame:
    """``user<i>@d<i mod domains>.bench.example``: every domain gets its share of contacts."""
    ids = pl.int_range(0, contacts, eager=True, dtype=pl.Int64).alias("contact_id")
    return pl.DataFrame(ids).with_columns(
        pl.format("user{}@d{}.{}", "contact_id", pl.col("contact_id") % domains, pl.lit(BENCH_SUFFIX)).alias(
            "email"
        )
    )


def distinct_domains(contacts: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Contacts with their ``domain`` column, and the distinct domains to look up."""
    with_domain = contacts.with_columns(email_domain_expr(pl.col("email")).alias("domain"))
    return with_domain, with_domain.get_column("domain").unique(maintain_order=True).to_list()


def attach_results(contacts: pl.DataFrame, results: dict[str, DomainResult]) -> pl.DataFrame:
    verdicts = pl.DataFrame(
        {
            "domain": list(results),
            "domain_status": [r.status for r in results.values()],
            "accepts_mail": [r.accepts_mail for r in results.values()],
        }
    )
    return contacts.join(verdicts, on="domain", how="left")


def reference_email_validator(port: int, sample: int, contacts: int, domains: int) -> dict:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 2.0
    resolver.lifetime = 4.0
    addresses = [f"ref{i}@r{i}.{BENCH_SUFFIX}" for i in range(sample)]
    started = time.perf_counter()
    for address in addresses:
        email_validator.validate_email(address, check_deliverability=True, dns_resolver=resolver)
    elapsed = time.perf_counter() - started
    per_address = elapsed / sample
    return {
        "sample": sample,
        "sample_s": round(elapsed, 3),
        "per_address_ms": round(per_address * 1000, 2),
        "extrapolated_s_one_lookup_per_contact": round(per_address * contacts, 1),
        "extrapolated_s_one_lookup_per_domain": round(per_address * domains, 1),
    }


def run_dns_benchmark(
    contacts: int = 1_000_000,
    domains: int = 50_000,
    delay_ms: float = 20,
    concurrency: int = 256,
    reference_sample: int = 200,
) -> dict:
    """Run the product path and the reference against one server; return the numbers."""
    if not 1 <= domains <= contacts:
        raise ValueError(f"need 1 <= domains <= contacts, got domains={domains}, contacts={contacts}")
    frame = build_contacts(contacts, domains)
    with DnsServerProcess(bench_zone(), delay_s=delay_ms / 1000) as server:
        config = ResolverConfig(nameservers=(server.host,), port=server.port, concurrency=concurrency)
        cpu_before, server_cpu_before = time.process_time(), server.stats.cpu_s
        started = time.perf_counter()
        with_domain, unique = distinct_domains(frame)
        deduped = time.perf_counter()
        results = check_domains(unique, config)
        checked = time.perf_counter()
        verdicts = attach_results(with_domain, results)
        finished = time.perf_counter()
        client_cpu = time.process_time() - cpu_before
        stats = server.stats
        server.reset_stats()
        reference = None
        if reference_sample:
            reference = reference_email_validator(server.port, reference_sample, contacts, domains)
    wall = finished - started
    return {
        "contacts": contacts,
        "domains": len(unique),
        "delay_ms": delay_ms,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "dedupe_s": round(deduped - started, 2),
        "dns_s": round(checked - deduped, 2),
        "join_s": round(finished - checked, 2),
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu_s": round(stats.cpu_s - server_cpu_before, 2),
        "contacts_per_s": round(contacts / wall),
        "domains_per_s": round(len(unique) / (checked - deduped)),
        "queries": {
            "total": stats.total,
            "udp": stats.udp,
            "tcp": stats.tcp,
            "expected": len(unique) + 1,  # one MX query per distinct domain + the probe
            "max_in_flight": stats.max_outstanding,
        },
        "statuses": dict(Counter(verdicts.get_column("domain_status").to_list())),
        "email_validator_reference": reference,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=50_000)
    parser.add_argument("--delay-ms", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--reference-sample", type=int, default=200, help="0 skips email-validator")
    args = parser.parse_args(argv)
    report = run_dns_benchmark(args.contacts, args.domains, args.delay_ms, args.concurrency, args.reference_sample)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
