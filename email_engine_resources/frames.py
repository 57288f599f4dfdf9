"""Bulk load polars frames with PostgreSQL ``COPY`` (never row-by-row inserts)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl
import sqlalchemy as sa

COPY_SLICE_ROWS = 20_000


def pg_text_array(expr: pl.Expr) -> pl.Expr:
    """Render a ``list[str]`` of slugs (``[a-z0-9_]`` only) as a PostgreSQL array literal."""
    return pl.lit("{") + expr.list.join(",") + pl.lit("}")


def copy_frame(conn: sa.Connection, table: str, frame: pl.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` inside the caller's transaction; returns the row count.

    One COPY statement, fed in slices: the CSV text of a whole chunk is never held at once.
    """
    if frame.height == 0:
        return 0
    cols = ", ".join(columns)
    driver = conn.connection.driver_connection
    with driver.cursor() as cur:
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            for part in frame.select(columns).iter_slices(COPY_SLICE_ROWS):
                buffer = io.BytesIO()
                part.write_csv(buffer, include_header=False, null_value="")
                copy.write(buffer.getbuffer())
    return frame.height


def read_frame(conn: sa.Connection, sql: str, params: dict, schema: dict) -> pl.DataFrame:
    """Run a query into a polars frame with a fixed schema (also when no row comes back)."""
    rows = conn.execute(sa.text(sql), params).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


# --- validations -------------------------------------------------------------------------------
