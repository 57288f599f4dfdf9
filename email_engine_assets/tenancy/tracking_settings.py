"""``tracking:`` of a tenant file: our own open and click tracking for the outbox and PowerMTA.

Off by default. ``base_url`` (https, or http to a loopback host) is where the webhook app answers
``/o/<token>`` and ``/c/<token>``; unset, the tenant's ``unsubscribe.base_url``. A contact whose
``exclude_field`` holds a true value (``true``, ``yes``, ``1``, ``y``, ``on``) or who carries
``exclude_tag`` gets no pixel and no rewritten link; a template keeps one link out of tracking with
a ``data-no-track`` attribute on its ``<a>`` (:mod:`email_engine_assets.content.tracking_links`
says which links are rewritten). ``machines`` holds the rules that tell
machines from people (README "Tracking"); every one has a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from pydantic import Field, field_validator

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.tenancy.sending import https_or_loopback_http
from email_engine_assets.tenancy.strict import Slug, Strict

TRUE_WORDS = frozenset({"true", "yes", "1", "y", "on"})


class MachineRules(Strict):
    """``tracking.machines:``: which hits count as machines (each event records the rule that classed it).

    Request rules, decided when the hit arrives (the IP address and user agent are used then and
    never stored): ``head_requests``, ``prefetch_headers`` (``Purpose`` / ``Sec-Purpose``),
    ``empty_user_agent``, ``gmail_prefetch`` (the fixed user agent Gmail prefetches with),
    ``apple_privacy_proxy`` (opens with the user agent exactly ``Mozilla/5.0``),
    ``bot_user_agents`` (scanner and crawler user agents, checked after the mail proxies, which are
    people), ``networks`` (scanner networks as CIDR blocks).
    Timing rules, decided when the hits are applied: ``too_soon_s`` after the hand-off (at most 10 s:
    a longer window takes people who open at once for machines); ``burst_links`` different links of
    one message within ``burst_window_s`` are all machines. ``too_soon_s: 0`` or ``burst_window_s: 0``
    turns that rule off.
    """

    head_requests: bool = True
    prefetch_headers: bool = True
    empty_user_agent: bool = True
    gmail_prefetch: bool = True
    apple_privacy_proxy: bool = True
    bot_user_agents: bool = True
    networks: list[IPv4Network | IPv6Network] = Field(default_factory=list, max_length=1000)
    too_soon_s: float = Field(default=2.0, ge=0, le=10)
    burst_links: int = Field(default=2, ge=2, le=100)
    burst_window_s: float = Field(default=5.0, ge=0, le=300)


class TrackingSettings(Strict):
    opens: bool = False
    clicks: bool = False
    base_url: str | None = None
    exclude_field: str | None = Field(default=None, max_length=64)
    exclude_tag: Slug | None = None
    machines: MachineRules = MachineRules()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback_http(value).rstrip("/")

    @field_validator("exclude_field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and value not in TEXT_FIELDS:
            raise ValueError(f"must be a contact field: one of {', '.join(TEXT_FIELDS)}")
        return value

    @property
    def on(self) -> bool:
        return self.opens or self.clicks

    def excludes(self, contact: Mapping[str, Any]) -> bool:
        """``contact`` (its fields and ``tags``) carries ``exclude_tag`` or holds a true word in
        ``exclude_field`` (:data:`TRUE_WORDS`, any case, spaces trimmed)."""
        if self.exclude_tag and self.exclude_tag in {str(t) for t in contact.get("tags") or ()}:
            return True
        value = contact.get(self.exclude_field) if self.exclude_field else None
        return value is not None and str(value).strip().lower() in TRUE_WORDS
