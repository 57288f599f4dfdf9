"""The inbox on disk: ``inbox/<tenant>/<source>/<file>``, read without ever leaving it.

Files in the inbox are put there by other people and programs, so they are hostile until checked:
a symbolic link (``env.csv -> /proc/self/environ``, or a source folder linked to another tenant's),
a FIFO that blocks a reader forever, a device. Only regular files directly inside a real (not
linked) source folder of a real tenant folder are read, and every open goes through
:func:`open_regular_file`, which re-checks on the opened descriptor, so that a file swapped for
a link between listing and reading is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_FD_LINKS = Path("/proc/self/fd")


class RefusedFile(OSError):
    """An inbox entry that is not read: ``strerror`` says why (never anything of its content)."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(errno.EPERM, why, str(path))
        self.why = why


@dataclass
class FolderListing:
    """Files of a source folder that may be read, and the entries refused with why."""

    files: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: Path | str) -> BinaryIO:
    """Open ``path`` for reading in binary mode, only if it is a regular file reached without any
    symbolic link: the last component is opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO
    cannot block the open), the descriptor must be a regular file, and its real path must be
    ``path`` itself, so a linked parent folder is refused as well. Callers pass real paths
    (:func:`real_source_folder`). Raises :class:`RefusedFile` (an ``OSError``)."""
    name = os.path.abspath(path)
    try:
        fd = os.open(name, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFile(path, "is a symbolic link (not followed)") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedFile(path, f"is {_kind(mode)}, not a regular file")
        real = _real_path_of(fd, name)
        if real != name:
            raise RefusedFile(path, "is reached through a symbolic link (not followed)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _real_path_of(fd: int, name: str) -> str:
    """The path the kernel opened (Linux ``/proc/self/fd``), else the resolved name."""
    try:
        return os.readlink(_FD_LINKS / str(fd))
    except OSError:
        return os.path.realpath(name)


def real_source_folder(folder: Path) -> Path:
    """``inbox/<tenant>/<source>`` as a real path; refused (:class:`RefusedFile`) when the tenant or
    the source folder is a symbolic link or not a folder. The inbox folder itself is the
    operator's setting and may be reached through a link."""
    folder = Path(os.path.abspath(folder))
    real = Path(os.path.realpath(folder.parent.parent))
    for part in (folder.parent.name, folder.name):
        real = real / part
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            return real  # nothing to read yet
        if not stat.S_ISDIR(mode):
            raise RefusedFile(real, f"is {_kind(mode)}, not a folder of the inbox (not followed)")
    return real


def is_candidate_name(name: str) -> bool:
    """Hidden files and temporary files still being written are not inbox files."""
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def list_source_folder(folder: Path) -> FolderListing:
    """Regular files of ``folder`` (sorted) and the refused entries: links and special files.
    Sub-folders are not part of a source and are left alone."""
    listing = FolderListing()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return listing
    for entry in entries:
        if not is_candidate_name(entry.name) or entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if entry.is_file(follow_symlinks=False):
            listing.files.append(path)
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
            listing.refused.append((path, f"is {_kind(mode)}, not a regular file (not read)"))
    return listing


def place_file(source: Path, folder: Path) -> Path:
    """Copy ``source`` into the real source ``folder`` under its own name and return the new path.

    The copy is written to a new hidden ``.part`` file created exclusively (a planted link of the
    same name is never written through), then renamed over the name, which replaces a link there
    instead of following it. A file already at that place is left as it is.
    """
    target = folder / source.name
    if os.path.realpath(source) == str(target):
        return target
    fd, temporary = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as given:
            shutil.copyfileobj(given, out, 1 << 20)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target
