"""The operator's state changes of a campaign: pause, resume, cancel.

The same logic whether the CLI (``campaign pause``) or a run of ``campaign_pause_job`` /
``campaign_resume_job`` / ``campaign_cancel_job`` (the UI's Launchpad) asks; the transports come
from the ``outbox`` / ``powermta`` / ``mailwizz`` resources of the caller.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.files import split_key
from email_engine_assets.campaigns.ledger import campaign_counts
from email_engine_assets.campaigns.lifecycle import LifecycleError
from email_engine_assets.campaigns.registry import register_one
from email_engine_assets.campaigns.sender import SEND_LOCK
from email_engine_assets.campaigns.wiring import PartMissing, Transports
from email_engine_assets.tenancy.locks import tenant_work_lock

ACTIONS = ("pause", "resume", "cancel")
# Ledger states in which pause / resume of a MailWizz campaign act on MailWizz only.
REMOTE_ONLY = {"pause": ("paused", "completed"), "resume": ("running", "completed")}


class CampaignRefused(Exception):
    """The command does not apply (unknown campaign, a state that refuses it); ``str()`` says why."""


def counts_of(engine: sa.Engine, key: str) -> dict:
    try:
        tenant_id, name = split_key(key)
    except ValueError as exc:
        raise CampaignRefused(str(exc)) from None
    with engine.connect() as conn:
        row = store.campaign_row(conn, tenant_id, name)
        if row is None:
            raise CampaignRefused(f"no campaign {key!r}")
        return campaign_counts(key, row["state"], store.state_counts(conn, tenant_id, name))


def change_state(engine: sa.Engine, root: Path, key: str, action: str, transports: Transports) -> dict:
    """``pause``, ``resume`` or ``cancel`` now; the running send sees it at its next batch. The
    campaign's counts afterwards; :class:`CampaignRefused` naming why when it does not apply
    (an unknown campaign, a state that does not allow the action).

    A MailWizz campaign's MailWizz campaigns (one per template handed off) are paused too, and
    resumed by ``resume``; ``cancel`` leaves them paused. ``pause`` / ``resume`` of a campaign whose
    every row is already handed off (``completed`` here, MailWizz possibly still sending) act on
    MailWizz only. The counts carry ``mailwizz``: each MailWizz campaign's status afterwards.
    For MailWizz the change waits until a send in progress has stopped (one batch at most).
    """
    if action not in ACTIONS:
        raise CampaignRefused(f"unknown action {action[:20]!r}; expected one of {', '.join(ACTIONS)}")
    try:
        tenant, campaign, _ = register_one(engine, root, key)
        return _change_state(engine, key, action, tenant, campaign, transports)
    except (LookupError, ValueError, LifecycleError, PartMissing) as exc:
        raise CampaignRefused(f"campaign {key}: {exc}") from None


def _change_state(engine: sa.Engine, key: str, action: str, tenant, campaign, parts: Transports) -> dict:
    tenant_id, name = split_key(key)
    with engine.begin() as conn:
        state = store.campaign_row(conn, tenant_id, name)["state"]
        # Already where asked (a retry after MailWizz did not answer), or settled here while MailWizz sends on.
        remote_only = parts.is_list(tenant, campaign) and state in REMOTE_ONLY.get(action, ())
        if not remote_only:
            store.transition(conn, tenant_id, name, action)
    if not parts.is_list(tenant, campaign):
        return counts_of(engine, key)
    if action == "resume":
        remote = parts.remote_campaigns(tenant, campaign, action)
    else:
        # A send in progress stops after its batch, whose hand-off may still create a MailWizz
        # campaign: MailWizz is reached once the send has let go of the campaign.
        with tenant_work_lock(engine, SEND_LOCK, key):
            remote = parts.remote_campaigns(tenant, campaign, action)
    counts = counts_of(engine, key)
    return {**counts, "mailwizz": remote} if remote else counts
