"""Peak memory of reading and importing very wide files (the chunk budgets of ReadLimits).

    python benchmarks/wide_file.py [--rows 10000] [--database-url URL]

Writes CSV files of ``--rows`` rows with 1,000 and 2,000 columns (about 80 and 160 MB at 10,000
rows) and runs each case in a child process of its own, reporting its time and peak RSS:

* **import 1,000 columns**: ``import_file`` of the widest file the column cap allows (the product path);
* **import 2,000 columns**: ``import_file`` refuses it at the header, whatever its size;
* **read 2,000 columns, budgets**: ``iter_chunks`` + ``normalise_chunk`` with the column cap raised
  to 2,000 and the default character / cell budgets;
* **read 2,000 columns, rows only**: the same with the budgets lifted (chunks of 100,000 rows,
  as before they existed), the reference.

Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server; a scratch
database is created and dropped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import peak_rss_bytes, server_url  # noqa: E402
from email_engine_resources import postgres as database  # noqa: E402
from email_engine_resources.migrations import upgrade  # noqa: E402

BENCH_DATABASE = "email_engine_bench_wide"  # not ingest.py's: both may run on one server
TENANT, SOURCE = "wide", "crm"
ROWS_ONLY = {"chunk_chars": 1 << 60, "chunk_cells": 1 << 60, "block_bytes": 1 << 60}


def write_wide(path: Path, rows: int, columns: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(["email", *(f"field_{i}" for i in range(1, columns))]) + "\n")
        cells = ",".join(f"v{i:05}" for i in range(1, columns))
        for row in range(rows):
            out.write(f"user{row}@example.com,{cells}\n")


def child_import(path: Path, url: str) -> dict:
    from email_engine_assets.contacts.importer import import_file
    from email_engine_assets.contacts.store import register_workspace
    from email_engine_assets.tenancy.config import SourceConfig, TenantConfig, Workspace

    engine = database.get_engine(url)
    source = SourceConfig(id=SOURCE, priority=10)
    tenant = TenantConfig(id=TENANT, name="Wide", sources=[source])
    with engine.begin() as conn:
        register_workspace(conn, Workspace(root=path.parent, tenants={TENANT: tenant}, digests={TENANT: "wide"}))
    report = import_file(engine, tenant, source, path)
    return {"status": report.status, "rows": report.counts.get("rows_total", 0), "error": report.error}


def child_read(path: Path, budgets: bool) -> dict:
    from email_engine_assets.contacts.columns import map_columns
    from email_engine_assets.contacts.importer import CHUNK_ROWS
    from email_engine_assets.contacts.normalise import normalise_chunk
    from email_engine_assets.contacts.readers import (
        ReadLimits,
        iter_chunks,
        read_header,
        sniff_format,
    )

    fmt = sniff_format(path)
    limits = ReadLimits(max_columns=2_000)
    mapping = map_columns(read_header(path, fmt, limits))
    rows = chunks = 0
    for raw in iter_chunks(path, fmt, limits=limits, chunk_rows=CHUNK_ROWS, **({} if budgets else ROWS_ONLY)):
        rows += normalise_chunk(raw.frame, mapping).accepted.height
        chunks += 1
    return {"status": "read", "rows": rows, "chunks": chunks}


def run_child(args: list[str]) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        started = time.perf_counter()
        mode, path, *rest = args.child
        result = child_import(Path(path), rest[0]) if mode == "import" else child_read(Path(path), mode == "read-budgets")
        print(json.dumps({**result, "seconds": time.perf_counter() - started, "peak_rss_bytes": peak_rss_bytes()}))
        return
    url = server_url(args.database_url)
    bench_url = database.with_database(url, BENCH_DATABASE)
    database.drop_database(bench_url)
    database.ensure_database(bench_url)
    try:
        upgrade(database.get_engine(bench_url))
        with tempfile.TemporaryDirectory(prefix="email_engine_wide_") as folder:
            cases = []
            for columns in (1_000, 2_000):
                path = Path(folder) / f"wide_{columns}.csv"
                write_wide(path, args.rows, columns)
                size = path.stat().st_size
                cases.append((f"import {columns:,} columns", size, ["import", str(path), bench_url]))
                if columns == 2_000:
                    cases.append((f"read {columns:,} columns, budgets", size, ["read-budgets", str(path)]))
                    cases.append((f"read {columns:,} columns, rows only", size, ["read-rows-only", str(path)]))
            print(f"{'case':34} {'file MB':>8} {'status':>9} {'rows':>7} {'seconds':>8} {'peak RSS MiB':>13}")
            for name, size, child in cases:
                r = run_child(child)
                print(f"{name:34} {size / 1e6:8.0f} {r['status']:>9} {r['rows']:7} {r['seconds']:8.1f} {r['peak_rss_bytes'] / 2**20:13.0f}")
                if r.get("error"):
                    print(f"{'':34} error: {r['error']}")
    finally:
        database.drop_database(bench_url)


if __name__ == "__main__":
    main()
