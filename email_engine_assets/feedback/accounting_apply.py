"""Applying new PowerMTA accounting lines of a tenant: files -> chunks -> delivery events.

For each ``powermta`` transport of the tenant, where its accounting files are
(:func:`accounting_sources`): with ``accounting_dir``, the ``acct.csv`` and ``acct-*.csv`` files
there; else, for each ``<acct-file>`` of its ``config_file`` (includes followed), the files under
its base name and rotation names (``acct-2026-11-29-0000.csv`` for ``acct.csv``) in its directory
and in its ``move-to`` directory. Regular files only, a symlink is never followed; a name is read
once, from the first directory that has it (a file moved by ``move-to`` keeps its name and its
offset); at most :data:`MAX_FILES_PER_RUN` with new bytes per run, oldest name first. They are
read from their stored offset in chunks of
:data:`CHUNK_BYTES`. Each chunk's complete lines are parsed
(:mod:`email_engine_assets.feedback.accounting`), recorded (``record_events``), the unusable
lines kept, and the offset advanced -- all in ONE transaction: a crash at any point leaves the
offset where the recorded events end.

A file found replaced under its name (another inode, a different first line, or shorter than
the offset: rotated or truncated) is read again from its start; lines already applied count once
(per-line dedupe keys).
"""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from email_engine_assets.feedback import accounting_store as store
from email_engine_assets.feedback.accounting import (
    MAX_LINE_BYTES,
    HeaderError,
    complete_length,
    event_columns,
    header_columns,
    kept_frame,
    line_digest,
    parse_lines,
)
from email_engine_assets.feedback.store import record_events
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.input_problems import ACCOUNTING_FILE, InputProblem
from email_engine_assets.tenancy.input_problems_store import replace_problems
from email_engine_resources.powermta_config import PowerMtaConfigError
from email_engine_resources.transports import PowerMtaResource

ACCOUNTING_NAMES = re.compile(r"acct(?:-.*)?\.csv")  # with accounting_dir: acct.csv, acct-*.csv
CHUNK_BYTES = 50 * 1024 * 1024
MAX_FILES_PER_RUN = 100
IDENTITY_BYTES = 4096
JOIN_WORK_MEM = "64MB"
COUNT_KEYS = ("files", "lines", "delivered", "bounced", "deferred", "complained", "ignored", "linked", "unmatched",
              "kept_with_reason", "duplicates", "other_tenants", "restarted_files")


@dataclass(frozen=True)
class AccountingSource:
    """Where a transport's accounting files are: (directory, names) pairs, searched in order
    (``dir_problem`` says why there are none)."""

    transport: str
    locations: tuple[tuple[str, re.Pattern[str]], ...] = ()
    dir_problem: str | None = None

    @property
    def directory(self) -> str | None:
        """The first directory (where PowerMTA writes); ``None`` when there is none."""
        return self.locations[0][0] if self.locations else None


def accounting_sources(tenant: TenantConfig, powermta: PowerMtaResource) -> list[AccountingSource]:
    """The tenant's powermta transports that have (or should have) accounting files; without
    ``accounting_dir``, PowerMTA's config file is read through the ``powermta`` resource."""
    out = []
    for transport in tenant.transports:
        if transport.kind != "powermta":
            continue
        if transport.accounting_dir:
            out.append(AccountingSource(transport.name, ((transport.accounting_dir, ACCOUNTING_NAMES),)))
        elif transport.config_file:
            try:
                acct_files = powermta.config_file(transport).acct_files
            except PowerMtaConfigError as exc:
                out.append(AccountingSource(transport.name, (), f"transport {transport.name!r}: {exc}"))
                continue
            locations = tuple(dict.fromkeys((d, a.names()) for a in acct_files for d in a.locations()))
            if locations:
                out.append(AccountingSource(transport.name, locations))
    return out


def accounting_files(source: AccountingSource) -> list[tuple[str, str, os.stat_result]]:
    """(name, path, stat) of the source's accounting files (regular files, symlinks skipped), by name.

    A name found in several directories is taken from the first (PowerMTA's own before ``move-to``).
    A ``move-to`` directory that does not exist yet is no error (nothing was moved); the first
    directory must be listable (``OSError`` otherwise).
    """
    found: dict[str, tuple[str, os.stat_result]] = {}
    for i, (directory, names) in enumerate(source.locations):
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            if i == 0:
                raise
            continue
        for entry in entries:
            if entry.name in found or not names.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                found[entry.name] = (entry.path, entry.stat(follow_symlinks=False))
            except OSError:
                continue  # gone since the listing (moved away by PowerMTA)
    return [(name, path, st) for name, (path, st) in sorted(found.items())]


def apply_accounting(engine: sa.Engine, tenant: TenantConfig, powermta: PowerMtaResource, *,
                     chunk_bytes: int = CHUNK_BYTES) -> dict[str, int]:
    """Read new lines of the tenant's powermta transports' accounting files into delivery events.

    What could not be read (a directory, a file refused, a file left with an incomplete last line
    although a newer file exists, files left for the next run) is recorded as the tenant's
    ``accounting_file`` input problems, replacing those of the last pass, and listed in ``problems``.
    """
    totals = dict.fromkeys(COUNT_KEYS, 0)
    problems: list[InputProblem] = []
    for source in accounting_sources(tenant, powermta):
        if source.directory is None:
            problems.append(InputProblem(ACCOUNTING_FILE, f"transport {source.transport}",
                                         source.dir_problem or "no accounting directory"))
            continue
        try:
            files = accounting_files(source)
        except OSError as exc:
            problems.append(InputProblem(ACCOUNTING_FILE, source.directory, f"cannot be listed: {exc.strerror or exc}"))
            continue
        with engine.connect() as conn:
            known = store.positions(conn, tenant.id, source.transport)
        pending = [(name, path, st) for name, path, st in files if name not in known or _changed(known[name], st)]
        refused: set[str] = set()
        for name, path, _st in pending[:MAX_FILES_PER_RUN]:
            try:
                _apply_file(engine, tenant.id, source.transport, path, name, known.get(name), totals, chunk_bytes)
            except (OSError, HeaderError) as exc:
                refused.add(name)
                problems.append(InputProblem(ACCOUNTING_FILE, path, str(getattr(exc, "strerror", None) or exc)))
        waiting = {name for name, _path, _st in pending[MAX_FILES_PER_RUN:]}
        if waiting:
            problems.append(InputProblem(ACCOUNTING_FILE, source.directory,
                                         f"{len(waiting)} more files wait for the next run (at most {MAX_FILES_PER_RUN} a run)"))
        with engine.connect() as conn:
            read = store.positions(conn, tenant.id, source.transport)
        problems += _stopped_part_way(files, read, refused | waiting)
    with engine.begin() as conn:
        replace_problems(conn, tenant.id, [ACCOUNTING_FILE], problems)
    out: dict = dict(totals)
    if problems:
        out["problems"] = [p.line() for p in problems[:20]]
    return out


def _stopped_part_way(files: list[tuple[str, str, os.stat_result]], read: dict[str, store.FilePosition],
                      skip: set[str]) -> list[InputProblem]:
    """Files whose last line is incomplete although a newer file exists: they will not grow any more.

    Only the newest file of the directory (last modified) may still be written; its incomplete last
    line waits for the next run and is no problem.
    """
    if len(files) < 2:
        return []
    newest = max(files, key=lambda f: (f[2].st_mtime_ns, f[0]))[0]
    out = []
    for name, path, st in files:
        if name == newest or name in skip or st.st_size == 0:
            continue
        position = read.get(name)
        if position is None:
            why = "no complete header line, and a newer file exists: it will not be completed"
        elif position.byte_offset < st.st_size:
            why = (f"read up to byte {position.byte_offset} of {st.st_size}: its last line is incomplete, "
                   "and a newer file exists: it will not be completed")
        else:
            continue
        out.append(InputProblem(ACCOUNTING_FILE, path, why))
    return out


def _changed(position: store.FilePosition, st: os.stat_result) -> bool:
    return st.st_size != position.file_size or (position.inode is not None and st.st_ino != position.inode)


def _identity(fd: int, length: int) -> str:
    """``<length>:<digest>`` of the file's first ``length`` bytes (complete lines: they never change)."""
    return f"{length}:{line_digest(os.pread(fd, length, 0))}"


def _apply_file(engine: sa.Engine, tenant_id: str, transport: str, path: str, name: str,
                position: store.FilePosition | None, totals: dict[str, int], chunk_bytes: int) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        size = st.st_size
        head = os.pread(fd, MAX_LINE_BYTES + 1, 0)
        header_end = head.find(b"\n")
        if header_end < 0:
            if len(head) > MAX_LINE_BYTES:
                raise HeaderError(f"no header line in the first {MAX_LINE_BYTES} bytes")
            return  # the header is still being written
        header = head[:header_end].rstrip(b"\r")
        columns = header_columns(header)
        restart = position is not None and _replaced(fd, position, st)
        if position is None or restart:
            identity_len = min(IDENTITY_BYTES, header_end + 1 + complete_length(os.pread(fd, IDENTITY_BYTES, header_end + 1)))
            with engine.begin() as conn:
                store.start_file(conn, tenant_id, transport, name, header=header.decode("utf-8", "replace").lstrip("\ufeff"),
                                 offset=header_end + 1, size=header_end + 1, inode=st.st_ino,
                                 first_line_digest=_identity(fd, identity_len), restart=restart)
            totals["restarted_files"] += int(restart)
            offset = header_end + 1
        else:
            offset = position.byte_offset
        totals["files"] += 1
        # The next chunk is read and parsed (polars and hashing, mostly outside the GIL) while
        # PostgreSQL records the current one: two chunks are in memory at most.
        with ThreadPoolExecutor(1, thread_name_prefix="accounting-parse") as pool:
            following = pool.submit(_read_chunk, fd, offset, size, columns, tenant_id, chunk_bytes) if offset < size else None
            while following is not None:
                chunk = following.result()
                if chunk is None:
                    break  # a partial last line: it waits for the next run
                n, parsed_events, kept, counts = chunk
                following = (pool.submit(_read_chunk, fd, offset + n, size, columns, tenant_id, chunk_bytes)
                             if offset + n < size else None)
                if not _record_chunk(engine, tenant_id, transport, name, offset, offset + n, size, parsed_events, kept,
                                     counts, totals):
                    if following is not None:
                        following.cancel()
                    return  # another run moved this file on; it goes on from there
                offset += n
        with engine.begin() as conn:
            store.note_size(conn, tenant_id, transport, name, size)
    finally:
        os.close(fd)


def _read_chunk(fd: int, offset: int, size: int, columns: list[str], tenant_id: str,
                chunk_bytes: int) -> tuple[int, pl.DataFrame | None, pl.DataFrame, dict[str, int]] | None:
    """The complete lines from ``offset`` (at most a chunk), parsed: (their length, events, kept lines,
    counts); ``None`` when no complete line is there yet. A line over the cap is kept whole as
    ``line_too_long``, however long it is."""
    chunk = os.pread(fd, min(max(chunk_bytes, MAX_LINE_BYTES + 1), size - offset), offset)
    if not chunk:
        return None
    n = complete_length(chunk)
    if n == 0:
        if len(chunk) < MAX_LINE_BYTES:
            return None
        n = _overlong_line(fd, offset, size)
        if n == 0:
            return None
        return n, None, kept_frame([(offset, chunk[:MAX_LINE_BYTES + 1], "line_too_long")]), {"lines": 1, "kept_with_reason": 1}
    parsed = parse_lines(columns, chunk[:n], base_offset=offset, tenant_id=tenant_id)
    return n, parsed.events, parsed.kept, dict(parsed.counts)


def _replaced(fd: int, position: store.FilePosition, st: os.stat_result) -> bool:
    if position.inode is not None and st.st_ino != position.inode:
        return True
    if st.st_size < position.byte_offset:
        return True
    length_text, _, _ = position.first_line_digest.partition(":")
    length = int(length_text) if length_text.isdigit() else 0
    return _identity(fd, length) != position.first_line_digest


def _overlong_line(fd: int, offset: int, size: int) -> int:
    """Length of a line longer than the cap that starts at ``offset`` (to its ``\\n``); 0 if not complete yet."""
    at = offset
    while at < size:
        block = os.pread(fd, 1 << 20, at)
        if not block:
            return 0
        nl = block.find(b"\n")
        if nl >= 0:
            return at + nl + 1 - offset
        at += len(block)
    return 0


def _record_chunk(engine: sa.Engine, tenant_id: str, transport: str, name: str, start: int, end: int, size: int,
                  events: pl.DataFrame | None, kept: pl.DataFrame, counts: dict[str, int], totals: dict[str, int]) -> bool:
    """Record one chunk and move the offset, in one transaction; ``False`` if the offset was not ``start``."""
    with engine.begin() as conn:
        # The chunk's events are joined to the ledger by hash; let the join stay in memory.
        conn.execute(sa.text(f"SET LOCAL work_mem = '{JOIN_WORK_MEM}'"))
        current = conn.execute(
            sa.text("""SELECT byte_offset FROM accounting_files
                       WHERE tenant_id = :t AND transport = :tr AND file_name = :f FOR UPDATE"""),
            {"t": tenant_id, "tr": transport, "f": name},
        ).scalar()
        if current != start:
            return False
        recorded = {"inserted": 0, "linked": 0, "duplicates": 0}
        if events is not None and events.height:
            without_job = events.filter(~pl.col("has_job"))
            if without_job.height:
                mine = store.ledger_tokens(conn, tenant_id, without_job["token"].drop_nulls().unique().to_list())
                belongs = pl.col("has_job") | pl.col("token").is_in(list(mine))
                strays = events.filter(~belongs)
                kept = pl.concat([kept, pl.DataFrame({
                    "byte_offset": strays["byte_offset"], "line_digest": strays["dedupe_key"],
                    "raw_line": pl.Series([r.decode("utf-8", "replace") for r in strays["raw_line"].to_list()], dtype=pl.String),
                    "reason": pl.Series(["no_job_not_in_ledger"] * strays.height, dtype=pl.String),
                }).select(kept.columns).cast(kept.schema)])
                counts["kept_with_reason"] = counts.get("kept_with_reason", 0) + strays.height
                events = events.filter(belongs)
            recorded = record_events(conn, tenant_id, event_columns(events))
            for event_type, n in events.group_by("event_type").len().iter_rows():
                totals[event_type] = totals.get(event_type, 0) + n
        store.keep_lines(conn, tenant_id, transport, name, kept)
        counts.update(recorded)
        store.advance(conn, tenant_id, transport, name, from_offset=start, to_offset=end, size=size, counts=counts)
    totals["lines"] += counts.get("lines", 0)
    totals["ignored"] += counts.get("ignored", 0)
    totals["other_tenants"] += counts.get("other_tenants", 0)
    totals["kept_with_reason"] += counts.get("kept_with_reason", 0)
    totals["linked"] += recorded["linked"]
    totals["unmatched"] += recorded["inserted"] - recorded["linked"]
    totals["duplicates"] += recorded["duplicates"]
    return True
