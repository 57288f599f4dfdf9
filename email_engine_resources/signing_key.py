"""The project's signing key (unsubscribe tokens and other signed links).

``EMAIL_ENGINE_SECRET_KEY`` when set (at least 32 characters; in a deployment with several hosts
every host must share it); otherwise a random 32-byte key generated once into
``$EMAIL_ENGINE_HOME/secret_key``: created atomically (written to a temporary file, then linked
into place, so two processes starting at once agree on one key and a reader never sees a partial
file), mode 0600, never read through a symbolic link. The key never appears in an error.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from email_engine_resources.settings import engine_home, make_private_dir

SECRET_KEY_ENV = "EMAIL_ENGINE_SECRET_KEY"
KEY_FILE_NAME = "secret_key"
_KEY_BYTES = 32
_ENV_MIN_CHARS = 32
_FILE_MAX_BYTES = 1024
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class SigningKeyError(RuntimeError):
    """The key cannot be had; the message says which setting or file, never the key."""


def signing_key() -> bytes:
    """The key from the environment, else from (or newly into) ``$EMAIL_ENGINE_HOME/secret_key``."""
    given = os.environ.get(SECRET_KEY_ENV)
    if given:
        if len(given) < _ENV_MIN_CHARS:
            raise SigningKeyError(f"{SECRET_KEY_ENV} must hold at least {_ENV_MIN_CHARS} characters")
        return given.encode("utf-8")
    return key_from_file(engine_home() / KEY_FILE_NAME)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SigningKeyError(f"{path} is a symbolic link; refused") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            raise SigningKeyError(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it")
        data = fh.read(_FILE_MAX_BYTES + 1)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise SigningKeyError(f"{path} does not hold a hex key") from None
    if len(data) > _FILE_MAX_BYTES or len(key) < 16:
        raise SigningKeyError(f"{path} does not hold a key of 16 to {_FILE_MAX_BYTES // 2} bytes")
    return key


def key_from_file(path: Path) -> bytes:
    """The key in ``path``; a new random one written there first if there is none."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    make_private_dir(path.parent)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(_KEY_BYTES).hex().encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)  # fails if another process put its key first: then that one is the key
        except FileExistsError:
            pass
    finally:
        os.unlink(temp)
    _sync_folder(path.parent)
    return _read_key(path)


def _sync_folder(folder: Path) -> None:
    """The new name survives a power cut too: tokens signed with the key must stay verifiable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
