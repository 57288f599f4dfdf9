"""Which addresses an outbound connection may go to.

Every client that connects to a host named by outside data (an MX record, a tenant's transport
setting) asks :func:`target_refusal` about the IP address it is about to connect to, after
resolving the name itself, and connects to that same address: a name is never resolved again
between the check and the connect, so a DNS answer cannot change in between (DNS rebinding).

Only public unicast addresses are allowed unless the caller's configuration allows private
targets explicitly (tests on loopback, a relay on the operator's own network). Refused:
unspecified, loopback, link-local (cloud metadata at 169.254.169.254 included), private
(RFC 1918, IPv6 unique local fc00::/7), shared address space (CGNAT 100.64.0.0/10), multicast,
reserved and every other range that is not globally routable (documentation, benchmarking,
Teredo, …). An IPv6 address that carries an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged by the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` non-public, or ``None`` for a public unicast address."""
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.version == 4 and ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_reserved, "a reserved address"),
        (any(ip in net for net in _PRIVATE_NETWORKS), "a private network address"),
        (not ip.is_global, "a special-purpose address, not globally routable"),
    )
    return next((kind for failed, kind in checks if failed), None)


def target_refusal(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why a connection to ``address`` is refused (``None``: it may go ahead).

    ``address`` is an IP address (text or ``ipaddress`` object), never a host name: the caller
    resolves names first and connects to the address it checked. Raises ``ValueError`` for text
    that is not an IP address.
    """
    ip = ipaddress.ip_address(address.strip() if isinstance(address, str) else address)
    if allow_private:
        return None
    carried = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    kind = _kind(carried) if carried is not None else _kind(ip)
    if kind is None:
        return None
    via = f" (carries {carried})" if carried is not None else ""
    return f"{ip}{via} is {kind}; private targets are not allowed"
