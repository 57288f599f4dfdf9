"""SQL of the per-tenant schedules' cursor: the last evaluated tick of each schedule and its window."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa


def last_tick(conn: sa.Connection, schedule_name: str) -> tuple[datetime, datetime] | None:
    """``(tick_at, window_start)`` of the schedule's last evaluated tick, locked until the transaction ends
    (two evaluations of one schedule never read the same cursor)."""
    row = conn.execute(
        sa.text("SELECT tick_at, window_start FROM tenant_schedule_ticks WHERE schedule_name = :s FOR UPDATE"),
        {"s": schedule_name},
    ).one_or_none()
    return None if row is None else (row.tick_at, row.window_start)


def save_tick(conn: sa.Connection, schedule_name: str, tick_at: datetime, window_start: datetime) -> None:
    conn.execute(
        sa.text(
            """INSERT INTO tenant_schedule_ticks (schedule_name, tick_at, window_start) VALUES (:s, :t, :w)
               ON CONFLICT (schedule_name) DO UPDATE SET tick_at = EXCLUDED.tick_at, window_start = EXCLUDED.window_start"""
        ),
        {"s": schedule_name, "t": tick_at, "w": window_start},
    )
