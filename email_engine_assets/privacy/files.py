"""The files that hold one person: the outbox messages and pushed contacts files the engine wrote,
and the files operators dropped into the tenant's inbox.

* Outbox: ``$EMAIL_ENGINE_HOME/outbox/<tenant>/<campaign>/<row id>.eml`` of the person's send rows
  (:class:`email_engine_resources.outbox.Outbox`), with a temporary ``.<row id>.<pid>.tmp`` a crash
  left. ``forget`` deletes them.
* Pushed contacts: ``inbox/<tenant>/<source>/webhook-<row id>.json|.ndjson`` whose row id is a
  contacts push of that source in ``webhook_inbox`` (``feedback.webhook_apply`` wrote it).
  ``forget`` rewrites it without the person's records (:func:`.matching.without_person`), or
  removes it when it held only theirs.
* Everything else under ``inbox/<tenant>/`` is the operator's: never changed, only listed with the
  lines that hold the person (:func:`.matching.record_lines`), so that the operator can act.

Folders and files are read without following symbolic links (``contacts.inbox``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from email_engine_assets.contacts.inbox import RefusedFile, open_regular_file
from email_engine_assets.contacts.sniffing import FileReadError, sniff_format
from email_engine_assets.feedback.webhook_apply import write_inbox_file
from email_engine_assets.privacy.matching import Person, record_lines, without_person
from email_engine_assets.tenancy.config import TenantConfig

PUSHED_NAME = re.compile(r"^webhook-([0-9]{1,18})\.(?:json|ndjson)\Z")


@dataclass
class InboxHit:
    """A file under the tenant's inbox that holds the person, and the lines that do."""

    path: Path
    source_id: str | None  # the source folder it sits in (None: elsewhere under the tenant's inbox)
    lines: list[int]
    pushed_row: int | None = None  # the webhook_inbox row when the engine wrote it from a push

    @property
    def written_by(self) -> str:
        return "webhook push" if self.pushed_row is not None else "operator"


@dataclass
class FileChanges:
    """What ``forget`` did on disk."""

    outbox_removed: int = 0
    pushed_rewritten: int = 0
    pushed_removed: int = 0
    records_dropped: int = 0
    operator_files: list[InboxHit] = field(default_factory=list)


def outbox_files(root: Path, tenant_id: str, sends: list[tuple[str, int]]) -> list[Path]:
    """The outbox files (written or left half-written) of the given (campaign, row id) sends."""
    found = []
    for campaign, row_id in sends:
        folder = root / tenant_id / campaign
        try:
            names = os.listdir(folder) if not os.path.islink(folder) else []
        except (FileNotFoundError, NotADirectoryError):
            continue
        wanted = f"{int(row_id)}.eml"
        temporary = f".{int(row_id)}."
        for name in names:
            if name == wanted or (name.startswith(temporary) and name.endswith(".tmp")):
                path = folder / name
                if stat.S_ISREG(os.lstat(path).st_mode):
                    found.append(path)
    return sorted(found)


def remove_outbox_files(paths: list[Path]) -> tuple[int, list[tuple[Path, str]]]:
    """Delete the files (each folder flushed after): how many went, and those that could not, with why."""
    removed, failed = 0, []
    for path in paths:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((path, exc.strerror or type(exc).__name__))
    for folder in {p.parent for p in paths}:
        _sync_folder(folder)
    return removed, failed


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _walk(folder: Path):
    """Regular files under ``folder``, never through a symbolic link."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def _hints(tenant: TenantConfig, source_id: str | None) -> dict:
    source = tenant.source(source_id) if source_id else None
    if source is None:
        return {}
    return {"kind": {"tsv": "csv"}.get(source.format or "", source.format), "encoding": source.encoding,
            "delimiter": "\t" if source.format == "tsv" else source.delimiter}


def _lines_of(path: Path, person: Person, hints: dict) -> list[int]:
    try:
        fmt = sniff_format(path, **hints)
        kind, encoding, delimiter = fmt.kind, fmt.encoding, fmt.delimiter
    except (FileReadError, OSError, ValueError, LookupError):
        kind, encoding, delimiter = "text", "utf-8", None  # read as plain text: lines still found
    with open_regular_file(path) as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="" if kind == "csv" else None)
        return record_lines(person, text, kind, delimiter)


def inbox_hits(inbox: Path, tenant: TenantConfig, person: Person) -> list[InboxHit]:
    """Every file under ``inbox/<tenant>/`` holding the person (``pushed_row`` not yet known)."""
    root = inbox / tenant.id
    if os.path.islink(root) or not root.is_dir():
        return []
    hits = []
    for path in _walk(root):
        relative = path.relative_to(root).parts
        source_id = relative[0] if len(relative) == 2 else None
        try:
            lines = _lines_of(path, person, _hints(tenant, source_id))
        except (RefusedFile, OSError):
            continue  # swapped for a link or gone meanwhile
        if lines:
            hits.append(InboxHit(path, source_id, lines))
    return hits


def pushed_row_of(hit: InboxHit) -> int | None:
    """The webhook row id a ``webhook-<id>.json|ndjson`` name claims (the caller checks the row)."""
    m = PUSHED_NAME.match(hit.path.name)
    return int(m.group(1)) if m and hit.source_id else None


@dataclass
class Rewrite:
    """A pushed file's new content (``data`` None: the file goes) and the digests for the ledger."""

    hit: InboxHit
    data: bytes | None
    dropped: int
    old_sha256: str
    new_sha256: str | None


def plan_rewrite(hit: InboxHit, person: Person) -> Rewrite:
    """What the pushed file becomes without the person (nothing written yet)."""
    with open_regular_file(hit.path) as raw:
        data = raw.read()
    new, dropped = without_person(person, data)
    return Rewrite(hit, new, dropped, hashlib.sha256(data).hexdigest(),
                   hashlib.sha256(new).hexdigest() if new is not None else None)


def apply_rewrite(plan: Rewrite) -> None:
    """Write the pushed file's new content atomically (temporary file, fsync, rename), or remove it."""
    if plan.data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(plan.hit.path)
        _sync_folder(plan.hit.path.parent)
    else:
        write_inbox_file(plan.hit.path.parent, plan.hit.path.name, plan.data)
