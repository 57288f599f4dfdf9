"""SQL of ``alert_incidents`` (``sql/034_alert_incidents.sql``): the open incidents, opened, seen, cleared."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from email_engine_assets.feedback.incidents import Condition, OpenIncident

# Arbitrary constant: one evaluation of incidents at a time, across processes ("ALRT").
EVALUATION_LOCK_ID = 0x414C5254


def lock_evaluation(conn: sa.Connection) -> None:
    """Serialise evaluations (two watchers, a watcher and a sensor) for the caller's transaction."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVALUATION_LOCK_ID})


def open_incidents(conn: sa.Connection, kinds: Sequence[str], keys: Sequence[str] | None = None) -> list[OpenIncident]:
    """Open incidents of ``kinds`` (only those of ``keys`` when given), oldest first."""
    rows = conn.execute(sa.text(
        """SELECT incident_key, kind, tenant_id, detail,
                  to_char(opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS opened_at
           FROM alert_incidents WHERE cleared_at IS NULL AND kind = ANY(:kinds)
           AND (:all_keys OR incident_key = ANY(:keys)) ORDER BY opened_at, id"""
    ), {"kinds": list(kinds), "all_keys": keys is None, "keys": list(keys or [])}).all()
    return [OpenIncident(r.incident_key, r.kind, r.tenant_id, r.detail, r.opened_at) for r in rows]


def open_new(conn: sa.Connection, conditions: Sequence[Condition]) -> None:
    if conditions:
        conn.execute(sa.text(
            """INSERT INTO alert_incidents (incident_key, kind, tenant_id, detail) VALUES (:k, :kind, :t, :d)
               ON CONFLICT (incident_key) WHERE cleared_at IS NULL DO NOTHING"""
        ), [{"k": c.key, "kind": c.kind, "t": c.tenant, "d": c.detail} for c in conditions])


def touch(conn: sa.Connection, keys: Sequence[str]) -> None:
    """The conditions of ``keys`` still hold: their open incidents are seen now."""
    if keys:
        conn.execute(sa.text("UPDATE alert_incidents SET last_seen = now() WHERE cleared_at IS NULL AND incident_key = ANY(:keys)"),
                     {"keys": list(keys)})


def clear(conn: sa.Connection, keys: Sequence[str]) -> None:
    if keys:
        conn.execute(sa.text("UPDATE alert_incidents SET cleared_at = now() WHERE cleared_at IS NULL AND incident_key = ANY(:keys)"),
                     {"keys": list(keys)})


def incidents(conn: sa.Connection) -> list[sa.Row]:
    """Every incident, open and cleared, oldest first (for ``email-engine`` output and tests)."""
    return conn.execute(sa.text(
        "SELECT incident_key, kind, tenant_id, opened_at, last_seen, cleared_at, detail FROM alert_incidents ORDER BY id"
    )).all()
