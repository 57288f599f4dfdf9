"""The operator's commands about one person: ``contact explain|export|forget <tenant> <email>``.

``forget`` erases the person from the database in one transaction (:func:`.store.erase`), then
deletes their subscribers from each MailWizz instance of the tenant. MailWizz may be down: the
database erasure stands, what is left is reported (the CLI exits non-zero), and running ``forget``
again finishes it (the database part then finds nothing more; the MailWizz sync also deletes the
subscribers of erased contacts it pushed). Nothing here logs the address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from email_engine_assets.audiences.suppressions import suppression_key
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.privacy import store
from email_engine_assets.privacy.dossier import build_dossier
from email_engine_assets.privacy.erasure import needles
from email_engine_assets.sync.instances import mailwizz_instance
from email_engine_assets.tenancy.config import TenantConfig, Workspace, one_tenant
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import get_engine
from email_engine_resources.settings import workspace_dir


class PersonRefused(Exception):
    """The command cannot start (unknown tenant, not an address); ``str()`` says why, without the address."""


@dataclass
class ForgetOutcome:
    erased: dict[str, int]  # rows touched per table
    mailwizz: dict[str, tuple[int, int]] = field(default_factory=dict)  # transport -> (subscribers deleted, sync rows dropped)
    left: list[str] = field(default_factory=list)  # what is not done yet, one line per part

    @property
    def ok(self) -> bool:
        return not self.left


def _target(tenant_id: str, address: str) -> tuple[TenantConfig, Workspace, str]:
    try:
        tenant, ws = one_tenant(workspace_dir(), tenant_id)
        key = suppression_key(address)
    except (LookupError, ValueError) as exc:
        raise PersonRefused(str(exc)) from None
    return tenant, ws, key


def dossier(tenant_id: str, address: str) -> dict:
    """Everything the tenant holds about the address (:func:`.dossier.build_dossier`)."""
    _, _, key = _target(tenant_id, address)
    with get_engine().connect() as conn:
        rows = store.dossier_rows(conn, tenant_id, key, needles(key, address))
    return build_dossier(tenant_id, key, rows)


def mailwizz_transports(tenant: TenantConfig) -> list[MailwizzTransport]:
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport)]


def forget(tenant_id: str, address: str, **tuning) -> ForgetOutcome:
    """Erase the person from the tenant everywhere; ``tuning`` goes to the MailWizz instances (tests)."""
    tenant, ws, key = _target(tenant_id, address)
    engine = get_engine()
    # Pushed contacts and MailWizz hits still waiting in the webhook inbox are applied first, so that
    # the erasure reaches what they hold and only their bodies need emptying.
    apply_webhook_rows(engine, ws.root, tenant)
    with engine.begin() as conn:
        register_workspace(conn, ws)
        outcome = ForgetOutcome(erased=store.erase(conn, tenant_id, key, needles(key, address)))
    for transport in mailwizz_transports(tenant):
        try:
            with mailwizz_instance(transport, **tuning) as mw:
                deleted = mw.delete_everywhere(key)
        except (MailwizzError, LookupError) as exc:
            with engine.connect() as conn:
                kept = store.mailwizz_rows(conn, tenant_id, transport.name, key)
            outcome.left.append(f"MailWizz {transport.name}: subscribers not deleted ({exc}); "
                                f"{kept} sync row(s) kept until they are; run forget again")
            continue
        with engine.begin() as conn:
            outcome.mailwizz[transport.name] = (deleted, store.drop_mailwizz_rows(conn, tenant_id, transport.name, key))
    return outcome
