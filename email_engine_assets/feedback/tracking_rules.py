"""Telling machines from people on our own tracking hits (``/o/<token>``, ``/c/<token>``).

Request rules, decided when the hit arrives, in this order (the first that matches decides; each
machine rule is turned off by its flag in the tenant's ``tracking.machines``,
:class:`~email_engine_assets.tenancy.tracking_settings.MachineRules`):

- ``head_request`` (machine): the method is ``HEAD`` (flag ``head_requests``);
- ``prefetch`` (machine): ``Purpose`` / ``Sec-Purpose`` names prefetch or prerender (``prefetch_headers``);
- ``empty_user_agent`` (machine): no ``User-Agent``, or only blanks (``empty_user_agent``);
- ``gmail_prefetch`` (machine): the fixed old Edge user agent Gmail prefetches with, matched exactly
  as Keila does (pentacent/keila#164; Mautic PR #10245 cites the same agent) (``gmail_prefetch``);
- ``gmail_proxy`` (person): ``GoogleImageProxy`` in the agent: Gmail fetching for a person who opens;
- ``yahoo_proxy`` (person): ``YahooMailProxy``, likewise;
- ``apple_privacy_proxy`` (machine): an open whose agent is exactly ``Mozilla/5.0``: Apple Mail
  Privacy Protection fetches every image when the message is downloaded (``apple_privacy_proxy``);
- ``scanner_network`` (machine): the client address is in ``networks``;
- ``bot_user_agent`` (machine): Crawler-Detect's patterns (the ``crawlerdetect`` package) match the
  agent (``bot_user_agents``);
- ``person``: none of the above.

The mail proxies are checked before the bot list: every generic list flags them as bots, and that
would wipe out real Gmail and Yahoo opens (matomo/device-detector#5359). Apple's proxy is
recognised by its user agent alone (its egress address list is not fetched here), and for opens
only: the same addresses and a bare ``Mozilla/5.0`` carry people's browsing too.

Timing rules, decided when the hits are applied (:mod:`email_engine_assets.feedback.store`):
``too_soon`` and ``scanner_burst``. They only turn people into machines, never the reverse.

The client address is the peer's, or taken from ``X-Forwarded-For`` when the peer is one of the
trusted proxies (``EMAIL_ENGINE_TRUSTED_PROXIES``, comma-separated CIDR blocks): the header is
walked from the right, through trusted proxies, to the first address that is not one. The
address and the user agent are used here and dropped: only the verdict is stored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from crawlerdetect import CrawlerDetect

from email_engine_assets.tenancy.tracking_settings import MachineRules

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

TRUSTED_PROXIES_ENV = "EMAIL_ENGINE_TRUSTED_PROXIES"

HEAD_REQUEST = "head_request"
PREFETCH = "prefetch"
EMPTY_USER_AGENT = "empty_user_agent"
GMAIL_PREFETCH = "gmail_prefetch"
GMAIL_PROXY = "gmail_proxy"
YAHOO_PROXY = "yahoo_proxy"
APPLE_PRIVACY_PROXY = "apple_privacy_proxy"
SCANNER_NETWORK = "scanner_network"
BOT_USER_AGENT = "bot_user_agent"
PERSON = "person"
TOO_SOON = "too_soon"
SCANNER_BURST = "scanner_burst"
REQUEST_RULES: tuple[str, ...] = (HEAD_REQUEST, PREFETCH, EMPTY_USER_AGENT, GMAIL_PREFETCH, GMAIL_PROXY, YAHOO_PROXY,
                                  APPLE_PRIVACY_PROXY, SCANNER_NETWORK, BOT_USER_AGENT, PERSON)
TIMING_RULES: tuple[str, ...] = (TOO_SOON, SCANNER_BURST)
RULES: tuple[str, ...] = REQUEST_RULES + TIMING_RULES
HUMAN_RULES = frozenset({GMAIL_PROXY, YAHOO_PROXY, PERSON})

GMAIL_PREFETCH_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246 Mozilla/5.0")
APPLE_PROXY_UA = "Mozilla/5.0"
MAX_USER_AGENT_CHARS = 1024  # a longer one is cut before the pattern list reads it
_PURPOSE_WORDS = re.compile(r"[\s,;]+")
_DETECTOR = CrawlerDetect()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a machine made a hit, and the rule that decided."""

    machine: bool
    rule: str


def _verdict(rule: str) -> Verdict:
    return Verdict(rule not in HUMAN_RULES, rule)


def is_prefetch(headers: Mapping[str, str]) -> bool:
    """``Purpose: prefetch`` / ``Sec-Purpose: prefetch;prerender`` and the like (``headers`` keyed in lower case)."""
    for name in ("purpose", "sec-purpose"):
        words = {w.lower() for w in _PURPOSE_WORDS.split(headers.get(name) or "") if w}
        if words & {"prefetch", "prerender"}:
            return True
    return False


def is_bot_user_agent(user_agent: str) -> bool:
    """Crawler-Detect's verdict on a user agent (cached per distinct agent)."""
    return _DETECTOR.is_crawler(user_agent[:MAX_USER_AGENT_CHARS])


def classify(kind: str, method: str, headers: Mapping[str, str], client: str | None, rules: MachineRules) -> Verdict:
    """The request-time class of a hit of ``kind`` (``open`` / ``click``); ``headers`` keyed in
    lower case (Starlette's ``request.headers``), ``client`` the address :func:`client_address` gave."""
    if rules.head_requests and method.upper() == "HEAD":
        return _verdict(HEAD_REQUEST)
    if rules.prefetch_headers and is_prefetch(headers):
        return _verdict(PREFETCH)
    agent = (headers.get("user-agent") or "").strip()
    if rules.empty_user_agent and not agent:
        return _verdict(EMPTY_USER_AGENT)
    if rules.gmail_prefetch and agent == GMAIL_PREFETCH_UA:
        return _verdict(GMAIL_PREFETCH)
    if "GoogleImageProxy" in agent:
        return _verdict(GMAIL_PROXY)
    if "YahooMailProxy" in agent:
        return _verdict(YAHOO_PROXY)
    if rules.apple_privacy_proxy and kind == "open" and agent == APPLE_PROXY_UA:
        return _verdict(APPLE_PRIVACY_PROXY)
    if rules.networks and in_networks(parse_address(client), rules.networks):
        return _verdict(SCANNER_NETWORK)
    if rules.bot_user_agents and agent and is_bot_user_agent(agent):
        return _verdict(BOT_USER_AGENT)
    return _verdict(PERSON)


def parse_address(text: str | None) -> Address | None:
    """An IP address (an IPv4-mapped IPv6 address as its IPv4 one; ``[v6]`` brackets and a zone
    dropped); None for anything else."""
    text = (text or "").strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def in_networks(address: Address | None, networks: Iterable[Network]) -> bool:
    return address is not None and any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The client's address: the ``peer``'s, or, when the peer is a trusted proxy, the first address
    of ``X-Forwarded-For`` (all its header values, in order) from the right that is not a trusted
    proxy. A hop that is no IP address stops the walk at the last good one."""
    address = parse_address(peer)
    if address is None:
        return None
    if not in_networks(address, trusted):
        return str(address)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        previous = parse_address(hop)
        if previous is None:
            break
        address = previous
        if not in_networks(address, trusted):
            break
    return str(address)


def trusted_networks(text: str | None) -> tuple[Network, ...]:
    """The networks of ``EMAIL_ENGINE_TRUSTED_PROXIES`` (comma-separated CIDR blocks or addresses);
    :class:`ValueError` naming the variable and the bad entry."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{TRUSTED_PROXIES_ENV}: {part[:60]!r} is not an IP network (CIDR such as 10.0.0.0/8)") from None
    return tuple(out)
