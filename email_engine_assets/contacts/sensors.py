"""Inbox sensor: new files under inbox/<tenant>/<source>/ -> import runs over blocks of tenants.

Bounded ticks, whatever the size of the inbox:

- a file is hashed once, when it has stopped changing (same size and mtime as the previous tick,
  or older than ``SETTLED_AFTER_S``); a file already handled is only ``stat``-ed;
- content the ledger already holds as imported (by ``email-engine import`` or ``run``, or an earlier
  run) is marked handled and requests nothing;
- tenants are taken in batches; a tick stops after ``MAX_RUNS_PER_TICK`` run requests or
  ``TICK_BUDGET_S`` seconds and the cursor says where the next tick goes on, so every tenant gets
  its turn;
- one run imports the ready sources of many tenants: a rectangle of the tenant × source space
  (``import_blocks``: tenants side by side in the tenant dimension whose ranges cover only their own
  sources), at most ``MAX_PARTITIONS_PER_RUN`` partitions; a tenant whose ready sources do not form
  one such range gets runs of its own. Dagster's fixed cost per run is paid per block, not per tenant;
- a file left ``processing`` by an importer that died (no live session holds its lock) gets a run
  of its (tenant, source), which claims it again.

The cursor holds, per tenant, source and file name, a short signature of (size, mtime): ``sig``
when the file is handled (imported or requested), ``~sig`` while it is still changing or waits
for its turn. Run keys are built from the content digests, so the same content never triggers twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import file_digest
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    list_source_folder,
    real_source_folder,
)
from email_engine_assets.contacts.jobs import import_job
from email_engine_assets.tenancy.config import ConfigError, load_workspace
from email_engine_assets.tenancy.partitions import (
    import_block_request,
    import_blocks,
    import_run_request,
    partition_requests,
    source_partitions,
    source_ranges,
    sources_by_tenant,
    tenant_partitions,
)
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

SETTLED_AFTER_S = 60.0
MAX_HASH_BYTES_PER_TICK = 1 << 30
MAX_RUNS_PER_TICK = 200
# A run imports up to this many (tenant, source) partitions: a tick's tenants share a few runs, not one each.
MAX_PARTITIONS_PER_RUN = 2000
TENANTS_PER_BATCH = 50
TICK_BUDGET_S = 6.0
WAITING = "~"
CURSOR_PREFIX = "z1:"


def encode_cursor(state: dict) -> str:
    """Compressed JSON: 20k file entries stay well under the size a cursor should have."""
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return CURSOR_PREFIX + base64.b64encode(zlib.compress(raw, 6)).decode()


def decode_cursor(cursor: str | None) -> dict:
    """The state of the previous tick; an unreadable or older cursor starts afresh (the ledger skips imported content)."""
    if not cursor or not cursor.startswith(CURSOR_PREFIX):
        return {}
    try:
        state = json.loads(zlib.decompress(base64.b64decode(cursor[len(CURSOR_PREFIX) :])))
    except (ValueError, zlib.error):
        return {}
    return state if isinstance(state, dict) else {}


def file_signature(path: Path) -> tuple[str | None, float, int, str | None]:
    """(signature, mtime, size, problem) of one inbox file; the per-file checks of a scan live here."""
    try:
        st = path.stat()
    except OSError as exc:
        return None, 0.0, 0, f"unreadable file: {exc.strerror or exc}"
    sig = hashlib.blake2b(f"{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=5).hexdigest()
    return sig, st.st_mtime, st.st_size, None


@dataclass
class TickBudget:
    deadline: float
    hash_bytes: int = MAX_HASH_BYTES_PER_TICK

    def can_hash(self, size: int) -> bool:
        return self.hash_bytes >= size and time.monotonic() < self.deadline


@dataclass
class TenantScan:
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> name -> cursor entry
    hashed: list[tuple[str, str, str]] = field(default_factory=list)  # (source, name, digest)
    notes: list[str] = field(default_factory=list)
    waiting: int = 0


def _scan_tenant(ws, tenant, previous: dict, now: float, budget: TickBudget) -> TenantScan:
    """Stat the tenant's inbox files; hash those settled and not handled yet, while the budget lasts."""
    scan = TenantScan()
    tenant_dir = ws.inbox / tenant.id
    for source_dir in sorted(p for p in tenant_dir.iterdir() if p.is_dir()):
        if tenant.source(source_dir.name) is None:
            scan.notes.append(f"unknown source folder inbox/{tenant.id}/{source_dir.name} (not in tenants/{tenant.id}.yaml)")
            continue
        try:
            listing = list_source_folder(real_source_folder(source_dir))
        except RefusedFile as exc:
            scan.notes.append(f"refused folder inbox/{tenant.id}/{source_dir.name}: {exc.why}")
            continue
        for path, why in listing.refused:
            scan.notes.append(f"refused inbox/{tenant.id}/{source_dir.name}/{path.name!r}: {why}")
        before = previous.get(source_dir.name, {})
        entries = scan.files.setdefault(source_dir.name, {})
        for path in listing.files:
            rel = f"{tenant.id}/{source_dir.name}/{path.name}"
            sig, mtime, size, problem = file_signature(path)
            if problem:
                scan.notes.append(f"inbox/{rel}: {problem}")
                continue
            old = before.get(path.name)
            if old == sig:
                entries[path.name] = sig
                continue
            settled = old == WAITING + sig or now - mtime > SETTLED_AFTER_S
            if not settled or not budget.can_hash(size):
                entries[path.name] = WAITING + sig
                scan.waiting += 1
                continue
            try:
                digest = file_digest(path)
            except OSError as exc:
                scan.notes.append(f"inbox/{rel}: unreadable file: {exc.strerror or exc}")
                continue
            budget.hash_bytes -= size
            entries[path.name] = sig
            scan.hashed.append((source_dir.name, path.name, digest))
    return scan


def _rotated(tenant_ids: list[str], start: str | None) -> list[str]:
    """Tenants in order, beginning where the previous tick stopped."""
    if start is None:
        return tenant_ids
    at = next((i for i, t in enumerate(tenant_ids) if t >= start), 0)
    return tenant_ids[at:] + tenant_ids[:at]


def _content_key(digests: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:32]


@dg.sensor(job=import_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource, db: PostgresResource) -> dg.SensorResult:
    try:
        ws = load_workspace(workspace.root())
    except ConfigError as exc:
        return dg.SensorResult(skip_reason=f"tenant configuration is invalid:\n{exc}")
    state = decode_cursor(context.cursor)
    previous: dict = state.get("files", {})
    now, budget = time.time(), TickBudget(deadline=time.monotonic() + TICK_BUDGET_S)
    sources = sources_by_tenant(ws)
    partitions = partition_requests(context.instance, sorted(ws.tenants), sources)
    known = list(context.instance.get_dynamic_partitions(source_partitions.name))
    registered = set(known)
    source_order = known + [s for s in sources if s not in registered]
    position = {s: i for i, s in enumerate(source_order)}

    notes: list[str] = []
    if not ws.inbox.is_dir():
        notes.append(f"no inbox folder at {ws.inbox}")
    folders = sorted(p.name for p in ws.inbox.iterdir() if p.is_dir()) if ws.inbox.is_dir() else []
    notes += [f"tenant file not loaded (its tenant is skipped): {e}" for e in ws.errors.values()]
    notes += [f"unknown tenant folder inbox/{name} (no valid tenants/{name}.yaml)" for name in folders if name not in ws.tenants]
    order = _rotated([name for name in folders if name in ws.tenants], state.get("next"))

    known_tenants = list(context.instance.get_dynamic_partitions(tenant_partitions.name))
    tenant_order = known_tenants + sorted(set(ws.tenants) - set(known_tenants))
    files: dict = {}
    run_requests: list[dg.RunRequest] = []
    plans: dict[str, list[tuple[str, str]]] = {}
    tenant_sources: dict[str, set[str]] = {}
    ready_digests: dict[str, dict[str, list[str]]] = {}
    waiting, next_tenant = 0, None
    engine = db.engine()
    for start in range(0, len(order), TENANTS_PER_BATCH):
        batch = order[start : start + TENANTS_PER_BATCH]
        # bounded as if each tenant had runs of its own: grouping only ever lowers the count
        planned = sum(len(r) for r in plans.values())
        if planned + len(batch) > MAX_RUNS_PER_TICK or time.monotonic() > budget.deadline:
            next_tenant = batch[0]
            for tenant_id in order[start:]:  # not looked at this tick: as they were
                if tenant_id in previous:
                    files[tenant_id] = previous[tenant_id]
            break
        scans = {t: _scan_tenant(ws, ws.tenants[t], previous.get(t, {}), now, budget) for t in batch}
        with engine.connect() as conn:
            imported = ledger.imported_contents(conn, [(t, s, h) for t, sc in scans.items() for s, _, h in sc.hashed])
        for tenant_id, scan in scans.items():
            files[tenant_id] = scan.files
            notes += scan.notes
            waiting += scan.waiting
            ready: dict[str, list[str]] = {}
            for source_id, _, digest in scan.hashed:
                if (tenant_id, source_id, digest) not in imported:
                    ready.setdefault(source_id, []).append(digest)
            tenant_sources[tenant_id] = {s.id for s in ws.tenants[tenant_id].sources}
            plans[tenant_id] = source_ranges(tenant_sources[tenant_id], source_order, set(ready))
            ready_digests[tenant_id] = ready
    for block in import_blocks(
        {t: r for t, r in plans.items() if r}, tenant_sources, tenant_order, source_order, max_partitions=MAX_PARTITIONS_PER_RUN
    ):
        span = source_order[position[block.first] : position[block.last] + 1]
        digests = [d for t in block.tenants for s in span for d in ready_digests[t].get(s, ())]
        tenants = block.tenants[0] if len(block.tenants) == 1 else f"{block.tenants[0]}..{block.tenants[-1]}"
        run_requests.append(
            import_block_request(block, run_key=f"import:{tenants}:{block.first}..{block.last}:{_content_key(digests)}")
        )

    with engine.connect() as conn:
        abandoned = ledger.abandoned_files(conn, limit=max(0, MAX_RUNS_PER_TICK - len(run_requests)))
    for row in abandoned:  # an importer died mid-file: its (tenant, source) is imported again
        if row["tenant_id"] in ws.tenants:
            notes.append(f"file {row['file_id']} of {row['tenant_id']}/{row['source_id']} was left processing; importing it again")
            run_requests.append(
                import_run_request(
                    row["tenant_id"], row["source_id"], row["source_id"],
                    run_key=f"reclaim:{row['file_id']}:{row['started']}", tags={"tenant": row["tenant_id"]},
                )
            )
    for note in notes:
        context.log.warning(note)
    skip_reason = None
    if not run_requests:
        pending = [f"{waiting} file(s) still changing or not yet hashed"] if waiting else []
        skip_reason = "; ".join(notes + pending) or "no new files"
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partitions,
        cursor=encode_cursor({"files": files, "next": next_tenant}),
        skip_reason=skip_reason,
    )
