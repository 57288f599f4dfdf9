"""PowerMTA accounting: parsing against csv.DictReader, and parse + apply into PostgreSQL.

    python benchmarks/accounting.py [--lines 1000000] [--database-url URL]

A generated accounting file of ``--lines`` lines in PowerMTA's column layout (28 columns, the union
of d / b / t / f records: 90% d, 6% b, 1% rb, 2% t, 1% f; quoted diagnostics with commas), every
line carrying the ENVID of a ledger row.

* **parse**: ours (``accounting.complete_length`` + ``parse_lines`` in 50 MB chunks: polars CSV,
  the record mapping, address keys, bounce classes and per-line digests) against ``csv.DictReader``
  only iterating the same bytes (no mapping at all). Target: >= 5x.
* **apply**: ``apply_accounting`` end to end on the file (read, parse, ``record_events`` linking
  each line to a ledger of ``--lines`` rows, offsets), in a scratch database
  ``email_engine_bench_accounting`` (dropped at the end). Target: < 20 s for 1M lines.

Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from benchmarks.scratch import scratch_database  # noqa: E402
from email_engine_assets.feedback.accounting import (  # noqa: E402
    complete_length,
    header_columns,
    parse_lines,
)
from email_engine_assets.feedback.accounting_apply import CHUNK_BYTES, apply_accounting  # noqa: E402
from email_engine_assets.tenancy.config import parse_tenant  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402
from email_engine_resources.transports import PowerMtaResource  # noqa: E402
from email_engine_tests.powermta_server import ACCOUNTING_COLUMNS  # noqa: E402

BENCH_DATABASE = "email_engine_bench_accounting"
TENANT = "bench"


def write_file(path: Path, lines: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(ACCOUNTING_COLUMNS) + "\n")
        writer = csv.writer(handle, lineterminator="\n")
        for i in range(lines):
            kind = ("d",) * 90 + ("b",) * 6 + ("rb",) + ("t",) * 2 + ("f",)
            kind = kind[i % 100]
            row = dict.fromkeys(ACCOUNTING_COLUMNS, "")
            row.update(type=kind, timeLogged=f"2026-11-29 12:{i // 60 % 60:02d}:{i % 60:02d}+0000",
                       timeQueued="2026-11-29 11:59:00+0000", orig="bounces@acme.example", rcpt=f"user{i}@example.com",
                       orcpt=f"rfc822;user{i}@example.com", srcType="smtp", srcMta="app.acme.example", dlvType="smtp",
                       dlvSourceIp="192.0.2.1", dlvDestinationIp="198.51.100.7", dlvEsmtpAvailable="PIPELINING,DSN",
                       dlvSize="4321", vmta="vmta1", jobId=f"{TENANT}.spring", envId=f"tok{i}",
                       queue="example.com/vmta1", vmtaPool="pool1")
            if kind == "d":
                row.update(dsnAction="relayed", dsnStatus="2.0.0 (success)", dsnDiag="smtp;250 2.0.0 ok, queued as 1A2B",
                           dsnMta="mx.example.com (198.51.100.7)")
            elif kind in ("b", "rb"):
                cat = ("bad-mailbox", "quota-issues", "spam-related")[i % 3]
                row.update(dsnAction="failed", dsnStatus="5.1.1 (bad destination mailbox address)",
                           dsnDiag="smtp;550 5.1.1 <x>: no such user, sorry", dsnMta="mx.example.com", bounceCat=cat)
            elif kind == "t":
                row.update(dsnAction="delayed", dsnStatus="4.2.2 (mailbox full)", dsnDiag="smtp;452 4.2.2 full, later")
            else:
                row.update(feedbackType="abuse", format="arf", userAgent="ExampleFBL/1.0", reportingMta="dns;fbl.example.com")
            writer.writerow(row.values())


def parse_ours(data: bytes) -> int:
    header_end = data.index(b"\n")
    columns = header_columns(data[:header_end])
    offset, n = header_end + 1, 0
    view = memoryview(data)
    while offset < len(data):
        chunk = bytes(view[offset:offset + CHUNK_BYTES])
        end = complete_length(chunk)
        parsed = parse_lines(columns, chunk[:end], base_offset=offset, tenant_id=TENANT)
        n += parsed.events.height + parsed.counts["ignored"] + parsed.counts["kept_with_reason"]
        offset += end
    return n


def parse_reference(data: bytes) -> int:
    return sum(1 for _row in csv.DictReader(io.StringIO(data.decode("utf-8"))))


def best_of(runs: int, fn, *args) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        acct_dir = Path(tmp) / "acct"
        acct_dir.mkdir()
        path = acct_dir / "acct-2026-11-29-0001.csv"
        write_file(path, args.lines)
        data = path.read_bytes()
        print(f"accounting file: {args.lines:,} lines, {len(data) / 1e6:.0f} MB")

        ours_s, ours_n = best_of(2, parse_ours, data)
        ref_s, ref_n = best_of(1, parse_reference, data)
        assert ours_n == ref_n == args.lines, (ours_n, ref_n)
        print(f"parse  ours (polars + mapping + digests): {ours_s:6.2f} s  {args.lines / ours_s:>12,.0f} lines/s")
        print(f"parse  csv.DictReader (iterate only):     {ref_s:6.2f} s  {args.lines / ref_s:>12,.0f} lines/s")
        print(f"parse  ratio: {ref_s / ours_s:.1f}x (target >= 5x)")

        with scratch_database(BENCH_DATABASE, args.database_url) as engine:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x')"), {"t": TENANT})
                conn.execute(sa.text("""INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                                        VALUES (:t, 'spring', 'completed', 'all', 'news', 'pmta', 'x')"""), {"t": TENANT})
                conn.execute(sa.text("""INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
                                        SELECT :t, 'spring', 'user' || i || '@example.com', 'sent', 'tok' || i
                                        FROM generate_series(0, :n - 1) AS i"""), {"t": TENANT, "n": args.lines})
                conn.execute(sa.text("ANALYZE campaign_sends"))
            text = textwrap.dedent(f"""\
                id: {TENANT}
                name: Bench
                sources:
                  - id: crm
                    priority: 10
                transports:
                  - name: pmta
                    kind: powermta
                    host: 127.0.0.1
                    bounce_address: bounces@acme.example
                    accounting_dir: {acct_dir}
                """)
            tenant = parse_tenant(Path(tmp) / f"{TENANT}.yaml", text)
            started = time.perf_counter()
            result = apply_accounting(engine, tenant, PowerMtaResource())
            apply_s = time.perf_counter() - started
            assert result["lines"] == args.lines and result["linked"] == args.lines - result["ignored"], result
            print(f"apply  parse + record_events + offsets: {apply_s:6.2f} s  {args.lines / apply_s:>12,.0f} lines/s "
                  f"(target < 20 s for 1M); linked {result['linked']:,}")
            print(f"apply  ratio against csv.DictReader alone: {ref_s / apply_s:.2f}x")
            started = time.perf_counter()
            again = apply_accounting(engine, tenant, PowerMtaResource())
            print(f"apply  again (nothing new): {time.perf_counter() - started:.3f} s, lines {again['lines']}")


if __name__ == "__main__":
    main()
