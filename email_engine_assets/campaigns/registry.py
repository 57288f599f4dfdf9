"""Campaign files -> the ``campaigns`` table: what the sensor, the CLI and the runs read first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.files import (
    Campaign,
    CampaignFiles,
    campaign_path,
    load_campaigns,
    parse_campaign,
    split_key,
)
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.tenancy.config import (
    ConfigError,
    TenantConfig,
    Workspace,
    load_tenants,
)


@dataclass
class Registered:
    files: CampaignFiles
    problems: dict[str, str] = field(default_factory=dict)  # key -> why it was not (re)recorded


def register_campaigns(engine: sa.Engine, ws: Workspace, now: datetime | None = None) -> Registered:
    """Record every valid campaign file of the workspace's tenants; file errors and past schedules are returned."""
    now = now or datetime.now(timezone.utc)
    files = load_campaigns(ws.root, ws.tenants)
    out = Registered(files, dict(files.errors))
    with engine.begin() as conn:
        register_workspace(conn, ws)
        for key, campaign in files.campaigns.items():
            problem = store.sync_campaign(conn, campaign, now)
            if problem:
                out.problems[key] = problem
    return out


def load_one(root: Path, key: str) -> tuple[TenantConfig, Campaign]:
    """The tenant and the campaign of ``<tenant>.<name>``; ``LookupError`` / ``ConfigError`` say what is missing or wrong."""
    tenant_id, name = split_key(key)
    ws = load_tenants(root, [tenant_id])
    if tenant_id in ws.errors:
        raise ConfigError(Path(root) / "tenants" / f"{tenant_id}.yaml", [ws.errors[tenant_id]])
    tenant = ws.tenants.get(tenant_id)
    if tenant is None:
        raise LookupError(f"no tenant {tenant_id!r} (no tenants/{tenant_id}.yaml in {root})")
    path = campaign_path(root, tenant_id, name)
    if path is None:
        raise LookupError(f"no campaign file campaigns/{tenant_id}/{name}.yaml in {root}")
    return tenant, parse_campaign(path, tenant)


def register_one(engine: sa.Engine, root: Path, key: str, now: datetime | None = None) -> tuple[TenantConfig, Campaign, str | None]:
    """Load and record one campaign: (tenant, campaign, the schedule problem if any)."""
    tenant, campaign = load_one(root, key)
    ws = load_tenants(root, [tenant.id])
    with engine.begin() as conn:
        register_workspace(conn, ws)
        problem = store.sync_campaign(conn, campaign, now or datetime.now(timezone.utc))
    return tenant, campaign, problem
