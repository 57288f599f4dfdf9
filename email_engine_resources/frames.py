"""Bulk load polars frames with PostgreSQL ``COPY`` (never row-by-row inserts)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl
import psycopg
import sqlalchemy as sa
from psycopg.adapt import PyFormat, Transformer

COPY_SLICE_ROWS = 20_000
# Above this share of distinct lists in a list column, rows are adapted one by one (binary COPY).
MANY_DISTINCT_LISTS = 0.25
_LITERAL = "__array_literal"


def copy_frame(conn: sa.Connection, table: str, frame: pl.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` inside the caller's transaction; returns the row count.

    One COPY statement, fed in slices: the CSV text of a whole chunk is never held at once.
    List columns become PostgreSQL arrays adapted by psycopg (a null list is NULL; an element
    ``"null"`` stays the text ``null``), see :func:`_with_array_literals`.
    """
    if frame.height == 0:
        return 0
    driver = conn.connection.driver_connection
    try:
        return _copy(driver, table, frame.select(columns))
    except psycopg.Error as exc:
        # The driver's own error, raised like any SQLAlchemy statement's (callers catch those).
        raise sa.exc.DBAPIError.instance(f"COPY {table}", None, exc, psycopg.Error, hide_parameters=True) from exc


def _copy(driver: psycopg.Connection, table: str, frame: pl.DataFrame) -> int:
    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    distinct = {name: frame.select(pl.col(name).unique().drop_nulls()) for name in lists}
    if any(d.height > frame.height * MANY_DISTINCT_LISTS for d in distinct.values()):
        return _copy_rows(driver, table, frame)
    frame = _with_array_literals(driver, frame, distinct)
    with driver.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)") as copy:
            for part in frame.iter_slices(COPY_SLICE_ROWS):
                buffer = io.BytesIO()
                part.write_csv(buffer, include_header=False, null_value="")
                copy.write(buffer.getbuffer())
    return frame.height


def _with_array_literals(driver: psycopg.Connection, frame: pl.DataFrame, distinct: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Each list column replaced by its array literals, as psycopg's own list dumper writes them.

    COPY's CSV path needs the text form of an array. The dumper runs once per distinct list (a
    tags column holds few distinct combinations) and a join spreads the literals over the rows.
    """
    transformer = Transformer(driver)
    for name, values in distinct.items():
        lists = values[name].to_list()
        # One dumper per column, chosen for its first non-empty list (an empty one gives no element type).
        dumper = transformer.get_dumper(next((v for v in lists if v), []), PyFormat.TEXT)
        literals = [bytes(dumper.dump(value)).decode() for value in lists]
        mapping = values.with_columns(pl.Series(_LITERAL, literals, pl.String))
        frame = (
            frame.join(mapping, on=name, how="left", maintain_order="left")
            .with_columns(pl.col(_LITERAL).alias(name))
            .drop(_LITERAL)
        )
    return frame


def _copy_rows(driver: psycopg.Connection, table: str, frame: pl.DataFrame) -> int:
    """Binary COPY with psycopg adapting every row: for frames whose lists are mostly distinct,
    where dumping each list to text costs more than this."""
    types = dict(
        driver.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        ).fetchall()
    )
    with driver.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types([types[name] for name in frame.columns])
            for part in frame.iter_slices(COPY_SLICE_ROWS):
                for row in part.iter_rows():
                    copy.write_row(row)
    return frame.height


def read_frame(conn: sa.Connection, sql: str, params: dict, schema: dict) -> pl.DataFrame:
    """Run a query (``:name`` parameters) into a polars frame with a fixed schema, inside the
    caller's transaction (also when no row comes back).

    The rows arrive as the CSV of ``COPY (query) TO STDOUT`` and polars parses them: no Python
    object per value, which is most of the cost of reading a chunk of contacts through rows. CSV
    keeps NULL (an empty field) apart from the empty string (``""``); list columns travel as JSON
    arrays, booleans as ``t`` / ``f``. ``schema`` names the query's columns in order, with a
    dtype among integers, floats, String, Boolean and List(String).
    """
    columns = [_copied_column(name, dtype) for name, dtype in schema.items()]
    compiled = sa.text(sql).compile(dialect=conn.dialect)
    statement = f"COPY (SELECT {', '.join(columns)} FROM ({compiled}) AS q) TO STDOUT (FORMAT csv)"
    if not conn.in_transaction():
        conn.begin()  # the COPY runs on the driver connection: open the transaction SQLAlchemy tracks
    buffer = io.BytesIO()
    try:
        with conn.connection.driver_connection.cursor() as cur:
            with cur.copy(statement, compiled.construct_params(params)) as copy:
                for data in copy:
                    buffer.write(data)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error, hide_parameters=True) from exc
    if buffer.tell() == 0:
        return pl.DataFrame(schema=schema)
    buffer.seek(0)
    read = pl.read_csv(buffer, has_header=False, schema={name: _csv_dtype(dtype) for name, dtype in schema.items()})
    return read.with_columns(_from_csv(name, dtype) for name, dtype in schema.items() if _csv_dtype(dtype) != dtype)


def _copied_column(name: str, dtype: pl.DataType) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    return f"array_to_json(q.{quoted})" if isinstance(dtype, pl.List) else f"q.{quoted}"


def _csv_dtype(dtype: pl.DataType) -> pl.DataType:
    if dtype == pl.String or dtype.is_integer() or dtype.is_float():
        return dtype
    if dtype == pl.Boolean or dtype == pl.List(pl.String):
        return pl.String
    raise ValueError(f"read_frame: column type {dtype} is not read from CSV (integers, floats, String, Boolean, List(String))")


def _from_csv(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Boolean:
        return pl.col(name).replace_strict({"t": True, "f": False}, default=None, return_dtype=pl.Boolean)
    return pl.col(name).str.json_decode(dtype)


# --- validations -------------------------------------------------------------------------------
