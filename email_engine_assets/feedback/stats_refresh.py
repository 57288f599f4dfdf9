"""Computing a campaign's stats: pending feedback applied, counts read, MailWizz's figures merged, stored.

Shared by the ``campaign_stats`` asset, ``email-engine campaign stats`` and the ``sender_reputation``
check that runs before a send. The check never calls MailWizz (a PowerMTA send must not depend on
another product's API): it merges MailWizz's figures as ``campaign_stats`` last fetched them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.content.templates import load_templates
from email_engine_assets.feedback import stats_store
from email_engine_assets.feedback.accounting_apply import apply_accounting
from email_engine_assets.feedback.mailwizz_poll import forget_removed_transports
from email_engine_assets.feedback.stats import campaign_stats, mailwizz_counts
from email_engine_assets.feedback.suppression_apply import apply_policy
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.tenancy.config import TenantConfig, excerpt
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_resources.mailwizz_client import MailwizzError


def apply_pending_feedback(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig) -> dict:
    """The tenant's new webhook rows and accounting lines into events, then its suppression policy.

    Under the same work locks as ``delivery_events`` / ``suppressions``, so a run of those assets
    and this never apply the same rows at once.
    """
    with tenant_work_lock(engine, "delivery_events", tenant.id):
        webhooks = apply_webhook_rows(engine, workspace_root, tenant)
        accounting = apply_accounting(engine, tenant)
    with engine.begin() as conn:
        forget_removed_transports(conn, tenant)
    with tenant_work_lock(engine, "suppressions", tenant.id):
        suppressions = apply_policy(engine, tenant)
    return {"webhooks": webhooks, "accounting": accounting, "suppressions": suppressions}


def fetch_mailwizz(config, campaign_key: str, **tuning) -> dict:
    """MailWizz's figures for each of the campaign's MailWizz campaigns (``<campaign_key>.<template>``):
    ``{"templates": {template: counts on our keys}, "statuses": {name: MailWizz status}}``.

    ``LookupError`` when the API key's variable is unset, ``MailwizzError`` / ``ValueError`` when
    MailWizz cannot be read or answers something that is not a count; none carries a secret.
    """
    from email_engine_assets.sync.instances import mailwizz_instance  # noqa: PLC0415 (the sync domain, reached at run time)

    prefix = f"{campaign_key}."
    out: dict = {"templates": {}, "statuses": {}}
    with mailwizz_instance(config, **tuning) as instance:
        for name in instance.campaigns_named(prefix):
            template = name[len(prefix):]
            if not template or "." in template:
                continue
            figures = instance.campaign_stats(name)
            out["templates"][template] = mailwizz_counts(figures, f"MailWizz campaign {excerpt(name, 80)}")
            out["statuses"][name] = excerpt(str(figures.get("campaign_status") or ""), 40)
    return out


def refresh_stats(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig, name: str, *,
                  reach_mailwizz: bool = True, mailwizz_tuning: dict | None = None) -> tuple[dict, list[str]]:
    """Compute, store and return the campaign's stats object, and notes for the operator.

    For a campaign sent through MailWizz, rates are over ``handed_off`` and MailWizz's figures are
    fetched (``reach_mailwizz``) or, when it cannot be reached, the last fetched ones are used (a
    note says so). ``LookupError`` for an unknown campaign.
    """
    key = f"{tenant.id}.{name}"
    with engine.connect() as conn:
        info = stats_store.campaign_info(conn, tenant.id, name)
        stored, fetched_at = stats_store.stored_mailwizz(conn, tenant.id, name)
    if info is None:
        raise LookupError(f"no campaign {excerpt(key, 140)!r} (a campaign is known once it has been listed, sent or due)")
    transport = tenant.transport(info["transport"])
    is_mailwizz = transport is not None and transport.kind == "mailwizz"
    notes: list[str] = []
    mailwizz = stored
    if is_mailwizz and reach_mailwizz:
        try:
            mailwizz = fetch_mailwizz(transport, key, **(mailwizz_tuning or {}))
            fetched_at = datetime.now(timezone.utc)
        except (MailwizzError, LookupError, ValueError) as exc:
            when = f"those of {fetched_at.isoformat()}" if fetched_at else "none yet"
            notes.append(f"campaign {key}: MailWizz figures not refreshed ({excerpt(str(exc), 200)}); using {when}")
    templates_set = load_templates(workspace_root, tenant.id)
    languages = {t.name: t.language for t in templates_set.templates.values()}
    with engine.begin() as conn:
        totals, templates = stats_store.local_counts(conn, tenant.id, name)
        stats = campaign_stats(key, totals, templates, languages, rates_over="handed_off" if is_mailwizz else "sent",
                               mailwizz=(mailwizz or {}).get("templates"))
        stats["computed_at"] = datetime.now(timezone.utc).isoformat()
        # always there (null without MailWizz figures): the stats object has one shape
        stats["mailwizz"] = {"campaigns": mailwizz.get("statuses", {}),
                             "fetched_at": fetched_at.isoformat() if fetched_at else None} if mailwizz else None
        stats_store.save_stats(conn, tenant.id, name, stats, mailwizz, fetched_at)
    return stats, notes


def refresh_before_send(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig, campaign: str) -> str | None:
    """What the ``sender_reputation`` check reads, made current: pending feedback applied, then the
    stats of the tenant's last completed campaign (other than ``campaign``) recomputed without
    calling MailWizz. Returns that campaign's name (None: the tenant has none)."""
    apply_pending_feedback(engine, workspace_root, tenant)
    with engine.connect() as conn:
        last = stats_store.last_completed_campaign(conn, tenant.id, campaign)
    if last is not None:
        refresh_stats(engine, workspace_root, tenant, last, reach_mailwizz=False)
    return last
