"""A scratch database for a benchmark: created fresh and migrated on the given server (or the
embedded one), dropped at the end whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from email_engine_resources import postgres as database
from email_engine_resources.migrations import upgrade


@contextmanager
def scratch_database(name: str, server_url: str | None = None) -> Iterator[sa.Engine]:
    """An engine on a new database ``name`` with every migration applied; the database is dropped after."""
    url = database.with_database(server_url or database.embedded_server_url(), name)
    database.drop_database(url)
    database.ensure_database(url)
    try:
        engine = database.get_engine(url)
        upgrade(engine)
        yield engine
    finally:
        database.get_engine(url).dispose()
        database.drop_database(url)
