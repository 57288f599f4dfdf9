"""A tenant's segments built: the one way, for the ``segments`` asset and for a send whose snapshot is outdated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa

from email_engine_assets.audiences import store
from email_engine_assets.audiences.freshness import BuiltSnapshot, outdated_reasons
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.locks import tenant_work_lock


class Log(Protocol):
    def info(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


@dataclass
class SegmentsBuilt:
    """What one build of a tenant's segments did: counts per built segment, why others failed."""

    built: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # segment -> why (its previous snapshot is kept)
    dropped: list[str] = field(default_factory=list)  # snapshots of segments no longer declared
    profiles_written: int = 0


def build_tenant_segments(engine: sa.Engine, tenant: TenantConfig, log: Log) -> SegmentsBuilt:
    """Refresh the tenant's profiles, build each declared segment, drop the snapshots of the others.

    Each step commits on its own: a crash leaves the snapshots of the last build (or the new one of a
    segment whose transaction committed), never half of one; the next build rebuilds what differs. A
    segment PostgreSQL cannot evaluate fails alone: the others are built.
    """
    out = SegmentsBuilt()
    with tenant_work_lock(engine, "segments", tenant.id):
        with engine.begin() as conn:
            out.profiles_written = store.refresh_segment_profiles(conn, tenant.id)
        for segment in tenant.segments:
            try:
                with engine.begin() as conn:
                    out.built[segment.name] = store.build_segment(
                        conn, tenant.id, segment, refresh_profiles=False, timeout_seconds=tenant.segment_build.timeout_seconds
                    )
            except store.SegmentBuildFailed as exc:
                out.failed[segment.name] = str(exc)
                log.error(f"tenant {tenant.id}: {exc}")
                continue
            log.info(f"segment {segment.name}: {out.built[segment.name]['members']} members")
        with engine.begin() as conn:
            out.dropped = store.drop_segments_except(conn, tenant.id, [*out.built, *out.failed])
    return out


def outdated(engine: sa.Engine, tenant: TenantConfig, segment: str) -> list[str]:
    """Why the snapshot of ``segment`` is older than its inputs or its definition (``[]``: current, or not declared)."""
    declared = next((s.definition_hash for s in tenant.segments if s.name == segment), None)
    with engine.connect() as conn:
        info = store.current_snapshot(conn, tenant.id, segment)
        changed_at = store.segment_input_changes(conn, tenant.id)
    snapshot = None if info is None else BuiltSnapshot(info.definition_hash, info.built_at)
    return outdated_reasons(segment, declared, snapshot, changed_at)
