"""The outbox transport: each message becomes an RFC 5322 file, the embedded default.

``<root>/<tenant>/<campaign>/<row id>.eml``, where ``root`` is ``$EMAIL_ENGINE_HOME/outbox``. A
file is written under a temporary name that does not end in ``.eml``, flushed to disk, then
renamed, and the folder is flushed once per batch before the results are returned: a reader picking up ``*.eml`` never sees half a message, and a
crash leaves at most a temporary file, never a torn ``.eml``. Folders are opened without following
symlinks (``O_NOFOLLOW``): a symlink planted in the outbox makes the message ``failed``, never
written elsewhere. A row already written (its ``.eml`` exists) is not written again.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from email_engine_resources.delivery import DeliveryResult, OutgoingMessage
from email_engine_resources.settings import engine_home

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
_PART = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def default_root() -> Path:
    return engine_home() / "outbox"


class OutboxError(OSError):
    pass


class Outbox:
    """A :class:`~email_engine_resources.delivery.MessageTransport` writing ``.eml`` files."""

    name = "outbox"

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Outbox({str(self.root)!r})"

    def path(self, tenant_id: str, campaign: str, row_id: int) -> Path:
        return self.root / tenant_id / campaign / f"{int(row_id)}.eml"

    def deliver(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        folders: dict[tuple[str, str], int] = {}
        written: dict[tuple[str, str], list[int]] = {}
        try:
            for m in messages:
                try:
                    key = (m.tenant_id, m.campaign)
                    if key not in folders:
                        folders[key] = self._open_folder(*key)
                    result = self._write(folders[key], m)
                    results.append(result)
                    if result.status == "sent":
                        written.setdefault(key, []).append(len(results) - 1)
                except OutboxError as exc:
                    results.append(DeliveryResult(m.row_id, "failed", str(exc)))
            # One flush of each folder makes the batch's renames durable before the ledger records them.
            for key, positions in written.items():
                try:
                    os.fsync(folders[key])
                except OSError as exc:
                    for i in positions:
                        results[i] = DeliveryResult(results[i].row_id, "unknown", f"outbox folder flush failed: {exc.strerror}")
        finally:
            for fd in folders.values():
                os.close(fd)
        return results

    def _open_folder(self, tenant_id: str, campaign: str) -> int:
        for part in (tenant_id, campaign):
            if not _PART.match(part):
                raise OutboxError(f"{part[:70]!r} is not a slug: refusing it as an outbox folder name")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise OutboxError(f"cannot open the outbox {self.root}: {exc.strerror} (a symlink is refused)") from None
        try:
            for part in (tenant_id, campaign):
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise OutboxError(f"cannot open outbox folder {part!r}: {exc.strerror} (a symlink is refused)") from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _write(self, folder: int, m: OutgoingMessage) -> DeliveryResult:
        if len(m.message) > MAX_MESSAGE_BYTES:
            return DeliveryResult(m.row_id, "failed", f"message is {len(m.message)} bytes; the outbox takes at most {MAX_MESSAGE_BYTES}")
        final = f"{int(m.row_id)}.eml"
        try:
            existing = os.stat(final, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(existing.st_mode):
                return DeliveryResult(m.row_id, "sent", "already in the outbox")
            return DeliveryResult(m.row_id, "failed", f"{final} exists in the outbox and is not a regular file")
        temp = f".{int(m.row_id)}.{os.getpid()}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=folder)
            try:
                view = memoryview(m.message)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, final, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError as exc:
            try:
                os.unlink(temp, dir_fd=folder)
            except OSError:
                pass
            return DeliveryResult(m.row_id, "failed", f"outbox write failed: {exc.strerror or type(exc).__name__}")
        return DeliveryResult(m.row_id, "sent", "")
