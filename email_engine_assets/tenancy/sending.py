"""Sending settings of a tenant file: transports, the unsubscribe endpoint, DKIM.

Secrets are never written in a tenant file: a key is named as ``{env: VARIABLE}`` and read from
the environment only when a transport is built (:meth:`EnvSecret.read`); the model holds the
variable's name, never the value, so a config printed in an error, a log or the UI shows no secret.

Every network transport refuses non-public destination addresses
(:mod:`email_engine_resources.network_policy`) unless it says ``allow_private: true`` (loopback
tests, an on-premise MTA).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from email_engine_assets.tenancy.strict import Slug, Strict

OUTBOX = "outbox"
TRANSPORT_KINDS: tuple[str, ...] = ("outbox", "powermta", "mailwizz")


class EnvSecret(Strict):
    """``{env: NAME}``: a secret taken from the environment variable ``NAME`` when needed."""

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]

    def read(self) -> str:
        value = os.environ.get(self.env)
        if not value:
            raise LookupError(f"environment variable {self.env} is not set (it holds a secret this tenant file names)")
        return value


def _loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_or_loopback_http(value: str) -> str:
    """An https URL; plain http only towards a loopback host (tests, a local reverse proxy)."""
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and _loopback_host(parts.hostname):
        return value
    raise ValueError("must be an https:// URL (http:// only for a loopback host such as 127.0.0.1)")


class OutboxTransport(Strict):
    """RFC 5322 files under ``$EMAIL_ENGINE_HOME/outbox/<tenant>/<campaign>/``: the embedded default."""

    name: Slug = OUTBOX
    kind: Literal["outbox"] = "outbox"


class PowerMtaTransport(Strict):
    """SMTP injection into PowerMTA (``x-job``, ``x-virtual-mta``, ENVID)."""

    name: Slug
    kind: Literal["powermta"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    virtual_mta: str | None = None
    bounce_address: str
    connections: int = Field(default=4, ge=1, le=64)
    pipeline_depth: int | None = Field(default=None, ge=1, le=64, description=(
        "messages each connection takes from the ledger at a time (default: the powermta resource's, 4); "
        "more is faster, and a crash leaves up to connections x this many rows unknown"))
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=10, description="4xx replies retried this often, with backoff")
    allow_private: bool = False
    config_file: str | None = Field(default=None, description="PowerMTA's config file (virtual MTAs, <source> header "
                                                              "settings, accounting); its include lines are followed")
    source_address: str | None = Field(default=None, description="the address PowerMTA sees the engine connect from, "
                                                                 "matched against the config's <source> blocks (default: "
                                                                 "the local address of a connection to host:port)")
    accounting_dir: str | None = Field(default=None, description="where PowerMTA writes acct.csv / acct-*.csv (default: "
                                                                 "each <acct-file> of the config file: its base and "
                                                                 "rotation names, in its directory and its move-to)")
    management_url: str | None = Field(default=None, description="PowerMTA's HTTP management API, e.g. http://pmta:8080")
    management_api_key: EnvSecret | None = None

    @field_validator("source_address")
    @classmethod
    def _source_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError("must be an IP address (the one PowerMTA sees the engine connect from)") from None

    @field_validator("management_url")
    @classmethod
    def _management_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http:// or https:// URL of the management port, without query")
        return value.rstrip("/")


class MailwizzSyncSettings(Strict):
    """``sync:`` on a mailwizz transport: ``mailwizz_subscribers`` keeps the instance's standing lists.

    One list per (category, language) of the tenant's sendable contacts; a list is created with
    these sender defaults (MailWizz requires them on every list).
    """

    from_name: Annotated[str, Field(min_length=1, max_length=200)]
    from_email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    reply_to: str | None = None
    list_prefix: Annotated[str, Field(max_length=60)] = ""


class MailwizzTransport(Strict):
    """A MailWizz instance's REST API; MailWizz does the sending.

    With ``sync`` set, the instance also receives the tenant's sendable contacts
    (``mailwizz_subscribers``); without it the instance only gets campaign lists.
    """

    name: Slug
    kind: Literal["mailwizz"]
    base_url: str
    api_key: EnvSecret
    api_version: Literal["2", "1"] = "2"
    private_key: EnvSecret | None = Field(default=None, description="1.x signed auth: the private key")
    timezone: str = Field(default="UTC", description="the MailWizz customer's time zone (send_at is local to it)")
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=4, ge=0, le=10)
    allow_private: bool = False
    sync: MailwizzSyncSettings | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; expected an IANA name such as UTC or Europe/Paris") from None
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return https_or_loopback_http(value)


TransportConfig = Annotated[OutboxTransport | PowerMtaTransport | MailwizzTransport, Field(discriminator="kind")]


class UnsubscribeSettings(Strict):
    """Where a message's ``List-Unsubscribe`` points: ``<base_url>/u/<token>`` and an optional mailto."""

    base_url: str
    mailto: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return https_or_loopback_http(value).rstrip("/")


class DkimSettings(Strict):
    """DKIM signing of outbox and SMTP messages (rsa-sha256, relaxed/relaxed; an RSA key of at least
    1024 bits, 2048 recommended); the PEM key comes from the environment."""

    domain: str
    selector: str
    private_key: EnvSecret
