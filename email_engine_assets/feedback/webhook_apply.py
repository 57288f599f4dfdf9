"""Applying stored webhook rows of a tenant: MailWizz and tracking hits become events, contacts
pushes inbox files.

Rows are taken in id order, in batches, ``FOR UPDATE SKIP LOCKED`` (two runs never apply the same
row). In each batch's transaction: the events of the MailWizz and tracking rows are recorded
(``feedback.store.record_events``, deduplicated by the row id), the timing rules class the tracking
hits (``feedback.store.apply_timing_rules``: too soon after the hand-off, bursts of links) and the
bodies of the applied tracking rows are emptied (nothing personal is kept in the inbox once the
event holds it), each contacts row is written as
``inbox/<tenant>/<source>/webhook-<id>.json|.ndjson`` (temporary name, fsync, rename, fsync of the
folder) so that the inbox sensor and the importer take it like any dropped file (ledger by
digest, accounting, rejects, provenance), and the rows are marked applied. The file is durable
before the commit: a crash in between writes the same file again on the next run, and the
importer's digest ledger imports it once.

A row that can never be applied (a body this code no longer reads, a source removed from the
tenant file, a linked folder in the inbox) is marked ``failed`` with its reason and keeps its
body. Any other error (a full disk) fails the run and leaves the batch pending.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import sqlalchemy as sa

from email_engine_assets.contacts.inbox import RefusedFile, real_source_folder
from email_engine_assets.feedback.events import events_frame
from email_engine_assets.feedback.inbox_store import (
    claim_pending,
    discard_failed,
    empty_bodies,
    ensure_tenant,
    mark_done,
    unread_failed_rows,
)
from email_engine_assets.feedback.store import apply_timing_rules, record_events
from email_engine_assets.feedback.tracking_hits import hit_event
from email_engine_assets.feedback.webhook_payloads import (
    MalformedPayload,
    contacts_file,
    parse_mailwizz,
)
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.input_problems import WEBHOOK_ROW, InputProblem
from email_engine_assets.tenancy.input_problems_store import replace_problems

BATCH_ROWS = 500
LISTED_FAILED_ROWS = 50


class CannotApply(ValueError):
    """A row that will never apply; the message is kept in ``webhook_inbox.detail``."""


def pushed_file_name(row_id: int, suffix: str) -> str:
    return f"webhook-{row_id}{suffix}"


def source_folder(inbox: Path, tenant_id: str, source_id: str) -> Path:
    """The real ``inbox/<tenant>/<source>`` folder, created when missing; :class:`RefusedFile` when
    the tenant or source entry is a symbolic link or no folder (the inbox itself may be a link: it
    is the operator's setting)."""
    inbox.mkdir(parents=True, exist_ok=True)
    real = Path(os.path.realpath(inbox))
    for part in (tenant_id, source_id):
        real = real / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(real)  # never follows: an existing link is left and refused below
        if not stat.S_ISDIR(os.lstat(real).st_mode):
            raise RefusedFile(real, "is a symbolic link or not a folder (not followed)")
    return real_source_folder(real)


def write_inbox_file(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` atomically and durably, never through a symbolic link.

    ``folder`` is a real source folder (:func:`source_folder`). The bytes go to a new hidden
    ``.part`` file (created exclusively, so a planted link is never written through, and ignored by
    the inbox sensor), are fsynced, and the file is renamed over ``name`` (a link there is replaced,
    not followed); the folder is fsynced so the name survives a power cut.
    """
    real = real_source_folder(folder)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=real)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        target = real / name
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder_fd = os.open(real, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return target


def _place_contacts(workspace_root: Path, tenant: TenantConfig, row) -> Path:
    if tenant.source(row.source_id) is None:
        raise CannotApply(f"source {row.source_id} is not in the tenant file any more")
    try:
        suffix, data = contacts_file(row.body)
    except MalformedPayload as exc:
        raise CannotApply(f"body not readable: {exc}") from None
    try:
        folder = source_folder(Path(workspace_root) / "inbox", tenant.id, row.source_id)
        return write_inbox_file(folder, pushed_file_name(row.id, suffix), data)
    except RefusedFile as exc:
        raise CannotApply(f"inbox folder refused: {exc.why}") from None


def apply_webhook_rows(engine: sa.Engine, workspace_root: Path, tenant: TenantConfig) -> dict[str, int]:
    """Apply the tenant's pending ``webhook_inbox`` rows; counts for the run's metadata:
    ``applied`` rows, ``events`` recorded (``linked`` to the ledger, ``duplicates``), ``files``
    written, ``failed`` rows, tracking hits turned into machines by a timing rule (``too_soon``,
    ``scanner_burst``)."""
    counts = {"applied": 0, "events": 0, "linked": 0, "duplicates": 0, "files": 0, "failed": 0,
              "too_soon": 0, "scanner_burst": 0}
    while True:
        with engine.begin() as conn:
            rows = claim_pending(conn, tenant.id, BATCH_ROWS)
            if not rows:
                break
            events, outcomes, tracked = [], [], []
            for row in rows:
                try:
                    if row.kind in ("mailwizz", "tracking"):
                        try:
                            if row.kind == "mailwizz":
                                events.append(parse_mailwizz(row.body, tenant.id).event(row.id))
                            else:
                                events.append(hit_event(row.body, row.id))
                                tracked.append((row.id, events[-1].dedupe_key))
                        except MalformedPayload as exc:
                            raise CannotApply(f"body not readable: {exc}") from None
                        outcomes.append((row.id, "applied", None))
                    else:
                        path = _place_contacts(workspace_root, tenant, row)
                        counts["files"] += 1
                        outcomes.append((row.id, "applied", f"file {path.name}"))
                except CannotApply as exc:
                    outcomes.append((row.id, "failed", str(exc)))
            if events:
                ensure_tenant(conn, tenant.id, tenant.name)
            recorded = record_events(conn, tenant.id, events_frame(events))
            if tracked:
                timing = apply_timing_rules(conn, tenant.id, [key for _, key in tracked], tenant.tracking.machines)
                empty_bodies(conn, [row_id for row_id, _ in tracked])
                for rule, n in timing.items():
                    counts[rule] += n
            mark_done(conn, outcomes)
        counts["events"] += recorded["inserted"]
        counts["linked"] += recorded["linked"]
        counts["duplicates"] += recorded["duplicates"]
        counts["applied"] += sum(1 for o in outcomes if o[1] == "applied")
        counts["failed"] += sum(1 for o in outcomes if o[1] == "failed")
    with engine.begin() as conn:
        replace_problems(conn, tenant.id, [WEBHOOK_ROW], failed_row_problems(conn, tenant.id))
    return counts


def discard_failed_rows(engine: sa.Engine, tenant_id: str, row_ids: list[int]) -> list[int]:
    """The operator gives up failed rows that can never apply: their bodies are emptied and they are
    no longer unread input. Returns the ids discarded (failed rows of the tenant with a body)."""
    with engine.begin() as conn:
        done = discard_failed(conn, tenant_id, row_ids)
        replace_problems(conn, tenant_id, [WEBHOOK_ROW], failed_row_problems(conn, tenant_id))
    return done


def failed_row_problems(conn: sa.Connection, tenant_id: str) -> list[InputProblem]:
    """The tenant's failed rows as input problems (until ``webhooks retry`` applies them, or an
    erasure empties them); past :data:`LISTED_FAILED_ROWS`, one more problem counts the rest."""
    rows, total = unread_failed_rows(conn, tenant_id, LISTED_FAILED_ROWS)
    out = [InputProblem(WEBHOOK_ROW, f"#{r['id']} {r['kind']}" + (f"/{r['source_id']}" if r["source_id"] else ""),
                        f"{r['detail'] or 'failed'} (fix it and run `email-engine webhooks retry {tenant_id}`, "
                        f"or give it up: `webhooks discard {tenant_id} {r['id']}`)") for r in rows]
    if total > len(rows):
        out.append(InputProblem(WEBHOOK_ROW, "more failed rows", f"{total - len(rows)} more (email-engine webhooks status {tenant_id})"))
    return out
