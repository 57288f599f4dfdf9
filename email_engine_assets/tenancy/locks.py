"""Per-tenant work locks: work on one tenant that must not overlap, whatever the run queue does.

The queue's per-tenant limit (``dagster.yaml``) only keeps runs apart when every run goes through
it; CLI runs, manual launches and retries do not. Each kind of work has its own lock, so an asset
never waits for a lock it holds on another connection: imports and the contacts merge take
``contacts.store.tenant_lock`` inside their transactions, each quality asset its own name here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from email_engine_resources.postgres import advisory_lock


def lock_name(work: str, tenant_id: str) -> str:
    return f"email_engine:{work}:{tenant_id}"


@contextmanager
def tenant_work_lock(engine: sa.Engine, work: str, tenant_id: str) -> Iterator[None]:
    """Run the block alone among the holders of ``work`` for ``tenant_id`` (e.g. two ``email_validations`` runs)."""
    with advisory_lock(engine, lock_name(work, tenant_id)):
        yield
