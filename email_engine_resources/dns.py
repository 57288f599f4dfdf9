"""DNS resolver resource: where the domain checks send their queries.

The resource only asks the network (``check_domains``); the asset that owns the DNS cache
table reads fresh rows there first and writes the new results back with their TTL.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
from pydantic import Field

from email_engine_resources.dns_client import (
    DomainResult,
    HostAddresses,
    ResolverConfig,
    check_domains,
    resolve_hosts,
)


class DnsResolverResource(dg.ConfigurableResource):
    """Nameservers and limits for MX / A / AAAA lookups (empty list: system resolv.conf)."""

    nameservers: list[str] = Field(default_factory=list, description="IP addresses; empty = resolv.conf")
    port: int = Field(default=53, description="UDP/TCP port of the nameservers")
    timeout_s: float = Field(default=2.0, description="Seconds to wait for one answer")
    retries: int = Field(default=1, description="Extra tries after a timeout or SERVFAIL")
    concurrency: int = Field(default=256, description="Queries in flight at most")
    min_ttl_s: int = Field(default=300, description="Shortest time a result is cached")
    max_ttl_s: int = Field(default=86_400, description="Longest time a result is cached")
    unknown_ttl_s: int = Field(default=300, description="Cache time of an unknown result")

    def config(self) -> ResolverConfig:
        """The core's resolver settings; raises ``ValueError`` naming every bad field."""
        return ResolverConfig(
            nameservers=tuple(self.nameservers),
            port=self.port,
            timeout_s=self.timeout_s,
            retries=self.retries,
            concurrency=self.concurrency,
            min_ttl_s=self.min_ttl_s,
            max_ttl_s=self.max_ttl_s,
            unknown_ttl_s=self.unknown_ttl_s,
        )

    def check_domains(self, domains: Iterable[str]) -> dict[str, DomainResult]:
        """Ask DNS about every distinct domain; keys are the texts given."""
        return check_domains(domains, self.config())

    def resolve_hosts(self, hosts: Iterable[str]) -> dict[str, HostAddresses]:
        """A and AAAA addresses of mail hosts, from the same nameservers as the domain checks."""
        return resolve_hosts(hosts, self.config())
