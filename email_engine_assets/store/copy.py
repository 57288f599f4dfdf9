"""Bulk load polars frames with PostgreSQL ``COPY`` (never row-by-row inserts)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import sqlalchemy as sa


def pg_text_array(expr: pl.Expr) -> pl.Expr:
    """Render a ``list[str]`` of slugs (``[a-z0-9_]`` only) as a PostgreSQL array literal."""
    return pl.lit("{") + expr.list.join(",") + pl.lit("}")


def copy_frame(conn: sa.Connection, table: str, frame: pl.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` inside the caller's transaction; returns the row count."""
    if frame.height == 0:
        return 0
    data = frame.select(columns).write_csv(include_header=False, null_value="").encode("utf-8")
    cols = ", ".join(columns)
    driver = conn.connection.driver_connection
    with driver.cursor() as cur:
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(data)
    return frame.height
