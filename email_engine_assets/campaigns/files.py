"""Campaign files: ``campaigns/<tenant>/<name>.yaml``, validated like tenant files.

A file is hostile input: the same size cap, the same YAML loader without anchors or aliases and
the same errors naming the file and the key as :mod:`email_engine_assets.tenancy.config`.
A campaign is named ``<tenant>.<name>`` (its partition key); both parts are slugs, so the key
never holds a ``.`` of its own, a ``|`` or a path separator.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, field_validator

from email_engine_assets.tenancy.config import (
    ConfigError,
    TenantConfig,
    parse_mapping,
    read_tenant_text,
    validate_file,
)
from email_engine_assets.tenancy.sending import OUTBOX
from email_engine_assets.tenancy.strict import SLUG_PATTERN, Slug, Strict, is_slug

MAX_CAMPAIGNS_PER_TENANT = 1000
_ADDRESS = re.compile(r"^[^@\s<>\"\\,;]{1,64}@[A-Za-z0-9.-]{1,253}\Z")


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError("must be a plain address such as news@example.com")
    return value


class CampaignFile(Strict):
    """What the operator writes; the lifecycle state is kept in PostgreSQL, not here."""

    segment: Slug
    category: str = Field(min_length=1, max_length=64)
    transport: Slug = OUTBOX
    from_name: str = Field(min_length=1, max_length=200)
    from_email: str
    reply_to: str | None = None
    send_at: AwareDatetime | Literal["now"] | None = Field(
        default=None, description="ISO 8601 with a zone, or now (due as soon as the file is first read); absent: a draft")
    rate_per_minute: int | None = Field(default=None, gt=0, le=1_000_000)

    @field_validator("from_email", "reply_to")
    @classmethod
    def _plain_address(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("from_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(not c.isprintable() for c in value):
            raise ValueError("must be one line of printable text (no control characters: they would forge headers)")
        return value


@dataclass(frozen=True)
class Campaign:
    tenant_id: str
    name: str
    file: CampaignFile
    path: Path
    sha256: str

    @property
    def key(self) -> str:
        return campaign_key(self.tenant_id, self.name)


def campaign_key(tenant_id: str, name: str) -> str:
    return f"{tenant_id}.{name}"


def split_key(key: str) -> tuple[str, str]:
    """(tenant, name) of ``<tenant>.<name>``; ``ValueError`` naming the key otherwise."""
    tenant_id, dot, name = key.partition(".")
    if not dot or not is_slug(tenant_id) or not is_slug(name):
        raise ValueError(f"{key[:140]!r}: a campaign is named <tenant>.<name>, both lower-case slugs")
    return tenant_id, name


def parse_campaign(path: Path, tenant: TenantConfig, text: str | None = None) -> Campaign:
    """One campaign file, checked against its tenant (the transport must be one of the tenant's)."""
    text = read_tenant_text(path) if text is None else text
    if not is_slug(path.stem):
        raise ConfigError(path, [f"file name {path.stem[:80]!r}: a campaign name must be a slug matching {SLUG_PATTERN}"])
    data, _ = parse_mapping(path, text)
    config = validate_file(path, data, CampaignFile)
    if tenant.transport(config.transport) is None:
        known = ", ".join([OUTBOX, *(t.name for t in tenant.transports if t.name != OUTBOX)])
        raise ConfigError(path, [f"transport = {config.transport!r}: not a transport of tenant {tenant.id} (known: {known})"])
    return Campaign(tenant.id, path.stem, config, path, hashlib.sha256(text.encode()).hexdigest())


@dataclass(frozen=True)
class CampaignFiles:
    """The valid campaigns by key, and the error of each file that could not be used (by key)."""

    campaigns: dict[str, Campaign] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def load_campaigns(root: Path, tenants: dict[str, TenantConfig]) -> CampaignFiles:
    """Every ``campaigns/<tenant>/<name>.yaml`` of the given tenants; a broken file stops only itself.

    Symlinked tenant folders are not followed (a folder must be the workspace's own).
    """
    out = CampaignFiles()
    base = Path(root) / "campaigns"
    for tenant_id in sorted(tenants):
        folder = base / tenant_id
        if folder.is_symlink() or not folder.is_dir():
            continue
        paths = sorted(folder.glob("*.y*ml"))
        if len(paths) > MAX_CAMPAIGNS_PER_TENANT:
            out.errors[f"{tenant_id}.*"] = f"{folder}: {len(paths)} campaign files; at most {MAX_CAMPAIGNS_PER_TENANT} per tenant"
            paths = paths[:MAX_CAMPAIGNS_PER_TENANT]
        for path in paths:
            key = campaign_key(tenant_id, path.stem)
            try:
                out.campaigns[key] = parse_campaign(path, tenants[tenant_id])
            except ConfigError as exc:
                out.errors[key] = str(exc)
    return out


SEND_NOW = "now"


def check_schedule(campaign: Campaign, now: datetime) -> str | None:
    """The problem with scheduling ``campaign`` now, if any (``send_at`` must lie in the future).

    ``send_at: now`` is scheduled for the moment the file is first read, so it is never in the past."""
    send_at = campaign.file.send_at
    if send_at is not None and send_at != SEND_NOW and send_at <= now:
        return f"{campaign.path}: send_at = {send_at.isoformat()}: must lie in the future when the campaign is scheduled"
    return None


def campaign_path(root: Path, tenant_id: str, name: str) -> Path | None:
    """The file of campaign ``name`` of ``tenant_id`` (``.yaml`` or ``.yml``), or None; never through a symlinked folder."""
    folder = Path(root) / "campaigns" / tenant_id
    if folder.is_symlink() or not folder.is_dir():
        return None
    return next((p for p in (folder / f"{name}{ext}" for ext in (".yaml", ".yml")) if p.is_file()), None)
