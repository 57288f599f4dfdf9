"""Environment-level settings: where the project keeps its state and which database it uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DATABASE_URL_ENV = "EMAIL_ENGINE_DATABASE_URL"
HOME_ENV = "EMAIL_ENGINE_HOME"
WORKSPACE_ENV = "EMAIL_ENGINE_WORKSPACE"
DAGSTER_URL_ENV = "EMAIL_ENGINE_DAGSTER_DATABASE_URL"

# Dagster settings read from the environment by the processes that create and execute runs. An
# import run covers thousands of (tenant, source) partitions: without these, Dagster writes two events
# per partition one at a time (a planned event when the run is created, a materialization at the end),
# which costs more than importing the small files themselves.
DAGSTER_ENV_DEFAULTS = {
    # materializations of a run over many partitions written in batches of this many
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    # one planned event for a run over a range of partitions, not one per partition (a failed run then
    # leaves its partitions "missing" rather than "failed" in the UI; the ledger holds each file's fate)
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
}

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"
DEFAULT_WORKSPACE = PROJECT_ROOT / "examples" / "workspace"


def engine_home() -> Path:
    """State folder (embedded PostgreSQL data, Dagster home); default ``./.email_engine``."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".email_engine").resolve()


def workspace_dir() -> Path:
    """Folder holding ``tenants/*.yaml`` and ``inbox/<tenant>/<source>/``."""
    return Path(os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE).resolve()


@contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created inside the block are for this user only (umask 077).

    The umask is per process: other threads creating files meanwhile get the stricter mode too.
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with umask 077 (mode 0700)."""
    with private_umask():
        path.mkdir(parents=True, exist_ok=True)
    return path
