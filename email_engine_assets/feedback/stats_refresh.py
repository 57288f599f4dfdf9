"""Computing a campaign's stats: pending feedback applied, counts read, MailWizz's figures merged, stored.

Shared by the ``campaign_stats`` asset, ``email-engine campaign stats`` and the ``sender_reputation``
check that runs before a send; each passes the ``powermta`` / ``mailwizz`` resources it was given
(a run's, or the code location's built by the CLI). The check never calls MailWizz (a PowerMTA send must not depend on
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
from email_engine_resources.transports import MailwizzResource, PowerMtaResource


def apply_pending_feedback(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig, *,
                           powermta: PowerMtaResource, mailwizz: MailwizzResource) -> dict:
    """The tenant's new webhook rows and accounting lines into events, then its suppression policy.

    Under the same work locks as ``delivery_events`` / ``suppressions``, so a run of those assets
    and this never apply the same rows at once.
    """
    with tenant_work_lock(engine, "delivery_events", tenant.id):
        webhooks = apply_webhook_rows(engine, workspace_root, tenant)
        accounting = apply_accounting(engine, tenant, powermta)
    with engine.begin() as conn:
        forget_removed_transports(conn, tenant)
    with tenant_work_lock(engine, "suppressions", tenant.id):
        suppressions = apply_policy(engine, tenant, mailwizz=mailwizz)
    return {"webhooks": webhooks, "accounting": accounting, "suppressions": suppressions}


def fetch_mailwizz(mailwizz: MailwizzResource, config, campaign_key: str) -> dict:
    """MailWizz's figures for each of the campaign's MailWizz campaigns (``<campaign_key>.<template>``):
    ``{"templates": {template: counts on our keys}, "statuses": {name: MailWizz status}}``.

    ``LookupError`` when the API key's variable is unset, ``MailwizzError`` / ``ValueError`` when
    MailWizz cannot be read or answers something that is not a count; none carries a secret.
    """
    prefix = f"{campaign_key}."
    out: dict = {"templates": {}, "statuses": {}}
    with mailwizz.instance(config) as instance:
        for name in instance.campaigns_named(prefix):
            template = name[len(prefix):]
            if not template or "." in template:
                continue
            figures = instance.campaign_stats(name)
            out["templates"][template] = mailwizz_counts(figures, f"MailWizz campaign {excerpt(name, 80)}")
            out["statuses"][name] = excerpt(str(figures.get("campaign_status") or ""), 40)
    return out


def refresh_stats(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig, name: str, *,
                  mailwizz: MailwizzResource | None) -> tuple[dict, list[str]]:
    """Compute, store and return the campaign's stats object, and notes for the operator.

    For a campaign sent through MailWizz, rates are over ``handed_off`` and MailWizz's figures are
    fetched through the ``mailwizz`` resource; with ``None`` MailWizz is not called and the last
    fetched figures are used, as they are when it cannot be reached (a note then says so).
    ``LookupError`` for an unknown campaign.
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
    figures = stored
    if is_mailwizz and mailwizz is not None:
        try:
            figures = fetch_mailwizz(mailwizz, transport, key)
            fetched_at = datetime.now(timezone.utc)
        except (MailwizzError, LookupError, ValueError) as exc:
            when = f"those of {fetched_at.isoformat()}" if fetched_at else "none yet"
            notes.append(f"campaign {key}: MailWizz figures not refreshed ({excerpt(str(exc), 200)}); using {when}")
    templates_set = load_templates(workspace_root, tenant.id)
    languages = {t.name: t.language for t in templates_set.templates.values()}
    with engine.begin() as conn:
        totals, templates = stats_store.local_counts(conn, tenant.id, name)
        stats = campaign_stats(key, totals, templates, languages, rates_over="handed_off" if is_mailwizz else "sent",
                               mailwizz=(figures or {}).get("templates"), links=stats_store.link_counts(conn, tenant.id, name))
        stats["computed_at"] = datetime.now(timezone.utc).isoformat()
        # always there (null without MailWizz figures): the stats object has one shape
        stats["mailwizz"] = {"campaigns": figures.get("statuses", {}),
                             "fetched_at": fetched_at.isoformat() if fetched_at else None} if figures else None
        stats_store.save_stats(conn, tenant.id, name, stats, figures, fetched_at)
    return stats, notes


def refresh_before_send(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig, campaign: str, *,
                        powermta: PowerMtaResource, mailwizz: MailwizzResource) -> str | None:
    """What the ``sender_reputation`` check reads, made current: pending feedback applied (the send's
    ``powermta`` / ``mailwizz`` resources read the accounting files and take the suppressions), then the
    stats of the tenant's last completed campaign (other than ``campaign``) recomputed without
    calling MailWizz. Returns that campaign's name (None: the tenant has none)."""
    apply_pending_feedback(engine, workspace_root, tenant, powermta=powermta, mailwizz=mailwizz)
    with engine.connect() as conn:
        last = stats_store.last_completed_campaign(conn, tenant.id, campaign)
    if last is not None:
        refresh_stats(engine, workspace_root, tenant, last, mailwizz=None)
    return last
