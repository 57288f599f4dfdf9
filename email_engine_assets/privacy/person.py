"""The operator's commands about one person: ``contact explain|export|forget <tenant> <email>``.

``forget`` erases the person from the database in one transaction (:func:`.store.erase`), then
from disk (their outbox messages, the pushed contacts files that hold them: :mod:`.files`), then
deletes their subscribers from each MailWizz instance of the tenant. Files an operator dropped into
the inbox are not changed: they are reported (path and lines) as left to do. MailWizz may be down: the
database erasure stands, what is left is reported (the CLI exits non-zero), and running ``forget``
again finishes it (the database part then finds nothing more; the MailWizz sync also deletes the
subscribers of erased contacts it pushed). Nothing here logs the address.

MailWizz and the outbox are reached through the ``mailwizz`` and ``outbox`` resources the caller
passes (the CLI builds the code location's).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from email_engine_assets.audiences.suppressions import suppression_key
from email_engine_assets.contacts.inbox import RefusedFile
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.privacy import files, store
from email_engine_assets.privacy.dossier import build_dossier
from email_engine_assets.privacy.matching import Person, person_of
from email_engine_assets.tenancy.config import TenantConfig, Workspace, one_tenant
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import get_engine
from email_engine_resources.settings import workspace_dir
from email_engine_resources.transports import MailwizzResource, OutboxResource


class PersonRefused(Exception):
    """The command cannot start (unknown tenant, not an address); ``str()`` says why, without the address."""


@dataclass
class ForgetOutcome:
    erased: dict[str, int]  # rows touched per table
    disk: files.FileChanges = field(default_factory=files.FileChanges)  # outbox and pushed files erased, operator files found
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


def _inbox_hits(conn, ws: Workspace, tenant: TenantConfig, person: Person) -> list[files.InboxHit]:
    """The tenant's inbox files holding the person, each marked when a webhook push of its source wrote it."""
    hits = files.inbox_hits(ws.root / "inbox", tenant, person)
    claimed: dict[str, list[int]] = {}
    for hit in hits:
        if (row := files.pushed_row_of(hit)) is not None:
            claimed.setdefault(hit.source_id, []).append(row)
    pushed = {(source, row) for source, rows in claimed.items() for row in store.pushed_rows(conn, tenant.id, source, rows)}
    for hit in hits:
        row = files.pushed_row_of(hit)
        hit.pushed_row = row if (hit.source_id, row) in pushed else None
    return hits


def _disk(outbox: list, hits: list[files.InboxHit]) -> dict:
    return {
        "outbox": [str(p) for p in outbox],
        "inbox": [{"path": str(h.path), "lines": h.lines, "written_by": h.written_by} for h in hits],
    }


def dossier(tenant_id: str, address: str, *, outbox: OutboxResource) -> dict:
    """Everything the tenant holds about the address (:func:`.dossier.build_dossier`), files on disk
    included (the messages under the ``outbox`` resource's folder)."""
    tenant, ws, key = _target(tenant_id, address)
    person = person_of(key)
    with get_engine().connect() as conn:
        rows = store.dossier_rows(conn, tenant_id, key, person)
        hits = _inbox_hits(conn, ws, tenant, person)
    found = files.outbox_files(outbox.outbox().root, tenant_id, [(s["campaign"], s["row_id"]) for s in rows["sends"]])
    rows["files_on_disk"] = _disk(found, hits)
    return build_dossier(tenant_id, key, rows)


def mailwizz_transports(tenant: TenantConfig) -> list[MailwizzTransport]:
    return [t for t in tenant.transports if isinstance(t, MailwizzTransport)]


def forget(tenant_id: str, address: str, *, mailwizz: MailwizzResource, outbox: OutboxResource) -> ForgetOutcome:
    """Erase the person from the tenant everywhere: the database, the ``outbox`` resource's messages,
    the pushed inbox files, and each MailWizz instance of the tenant (through the ``mailwizz`` resource)."""
    tenant, ws, key = _target(tenant_id, address)
    person = person_of(key)
    engine = get_engine()
    # Pushed contacts and MailWizz hits still waiting in the webhook inbox are applied first, so that
    # the erasure reaches what they hold and only their bodies need emptying.
    apply_webhook_rows(engine, ws.root, tenant)
    with engine.connect() as conn:
        hits = _inbox_hits(conn, ws, tenant, person)
    rewrites = []
    for hit in hits:
        if hit.pushed_row is not None:
            with contextlib.suppress(FileNotFoundError, RefusedFile):  # gone (or swapped for a link) meanwhile
                rewrites.append(files.plan_rewrite(hit, person))
    with engine.begin() as conn:
        register_workspace(conn, ws)
        erased, sends = store.erase(conn, tenant_id, person)
        # The ledger row of a rewritten pushed file names its new content: the importer does not
        # take it as a new file (it would only merge the same others again, counted twice).
        for plan in rewrites:
            if plan.new_sha256 is not None:
                store.rename_digest(conn, tenant_id, plan.hit.source_id, plan.old_sha256, plan.new_sha256, len(plan.data))
    outcome = ForgetOutcome(erased=erased)
    done = outcome.disk
    # A file that cannot be written now (a full disk) is reported; forget again finishes it (the
    # ledger already names the new content, the old one is imported as the erased person's rejects).
    for plan in rewrites:
        try:
            files.apply_rewrite(plan)
        except OSError as exc:
            outcome.left.append(f"inbox file {plan.hit.path} (a webhook push): not rewritten ({exc.strerror or exc}); run forget again")
            continue
        done.records_dropped += plan.dropped
        if plan.data is None:
            done.pushed_removed += 1
        else:
            done.pushed_rewritten += 1
    written = files.outbox_files(outbox.outbox().root, tenant_id, sends)
    done.outbox_removed, failed = files.remove_outbox_files(written)
    for path, why in failed:
        outcome.left.append(f"outbox file {path}: not deleted ({why}); run forget again")
    done.operator_files = [h for h in hits if h.pushed_row is None]
    for hit in done.operator_files:
        outcome.left.append(f"inbox file {hit.path} (the operator's, not changed): line(s) "
                            f"{', '.join(map(str, hit.lines))} hold the address; edit or remove them")
    for transport in mailwizz_transports(tenant):
        try:
            with mailwizz.instance(transport) as mw:
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
