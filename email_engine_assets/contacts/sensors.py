"""Inbox sensor: new files under inbox/<tenant>/<source>/ -> one import run per (tenant, source).

Cheap ticks: a file is hashed once, when it has stopped changing (same size and mtime as the
previous tick, or older than ``SETTLED_AFTER_S``); unchanged files are only ``stat``-ed. The run
key is built from the content digests, so the same content never triggers twice.
"""


import hashlib
import json
import time
from collections import defaultdict

import dagster as dg

from email_engine_assets.contacts.importer import file_digest
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    list_source_folder,
    real_source_folder,
)
from email_engine_assets.contacts.jobs import import_job
from email_engine_assets.tenancy.config import ConfigError, load_workspace
from email_engine_assets.tenancy.partitions import import_key, partition_requests
from email_engine_resources.workspace import WorkspaceResource

SETTLED_AFTER_S = 60.0
MAX_HASH_BYTES_PER_TICK = 2 << 30


def _scan(ws, previous: dict, now: float):
    """Walk the inbox; returns (new cursor entries, {(tenant, source): [digests]}, notes)."""
    state: dict[str, list] = {}
    ready: dict[tuple[str, str], list[str]] = defaultdict(list)
    notes: list[str] = []
    hashed_bytes = 0
    if not ws.inbox.is_dir():
        return state, ready, [f"no inbox folder at {ws.inbox}"]
    for tenant_dir in sorted(p for p in ws.inbox.iterdir() if p.is_dir()):
        tenant = ws.tenants.get(tenant_dir.name)
        if tenant is None:
            notes.append(f"unknown tenant folder inbox/{tenant_dir.name} (no valid tenants/{tenant_dir.name}.yaml)")
            continue
        for source_dir in sorted(p for p in tenant_dir.iterdir() if p.is_dir()):
            if tenant.source(source_dir.name) is None:
                notes.append(f"unknown source folder inbox/{tenant.id}/{source_dir.name} (not in tenants/{tenant.id}.yaml)")
                continue
            try:
                listing = list_source_folder(real_source_folder(source_dir))
            except RefusedFile as exc:
                notes.append(f"refused folder inbox/{tenant.id}/{source_dir.name}: {exc.why}")
                continue
            for path, why in listing.refused:
                notes.append(f"refused inbox/{tenant.id}/{source_dir.name}/{path.name!r}: {why}")
            for path in listing.files:
                rel = f"{tenant.id}/{source_dir.name}/{path.name}"
                try:
                    st = path.stat()
                except OSError as exc:
                    notes.append(f"unreadable file inbox/{rel}: {exc.strerror}")
                    continue
                sig = [st.st_size, st.st_mtime_ns]
                old = previous.get(rel)
                if old and old[:2] == sig and old[2]:
                    state[rel] = old
                    continue
                settled = (old is not None and old[:2] == sig) or now - st.st_mtime > SETTLED_AFTER_S
                if not settled or hashed_bytes > MAX_HASH_BYTES_PER_TICK:
                    state[rel] = [*sig, None]
                    continue
                try:
                    digest = file_digest(path)
                except OSError as exc:
                    notes.append(f"unreadable file inbox/{rel}: {exc.strerror or exc}")
                    state[rel] = [*sig, None]
                    continue
                hashed_bytes += st.st_size
                state[rel] = [*sig, digest]
                ready[(tenant.id, source_dir.name)].append(digest)
    return state, ready, notes


@dg.sensor(job=import_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource) -> dg.SensorResult:
    try:
        ws = load_workspace(workspace.root())
    except ConfigError as exc:
        return dg.SensorResult(skip_reason=f"tenant configuration is invalid:\n{exc}")
    previous = json.loads(context.cursor) if context.cursor else {}
    state, ready, notes = _scan(ws, previous, time.time())
    notes = [f"tenant file not loaded (its tenant is skipped): {e}" for e in ws.errors.values()] + notes
    tenants = set(ws.tenants)
    sources = {s.id for t in ws.tenants.values() for s in t.sources}
    run_requests = []
    for (tenant_id, source_id), digests in sorted(ready.items()):
        content_key = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:32]
        run_requests.append(
            dg.RunRequest(
                run_key=f"import:{tenant_id}:{source_id}:{content_key}",
                partition_key=import_key(tenant_id, source_id),
                tags={"tenant": tenant_id, "source": source_id},
            )
        )
    for note in notes:
        context.log.warning(note)
    waiting = sum(1 for v in state.values() if v[2] is None)
    skip_reason = None
    if not run_requests:
        skip_reason = "; ".join(notes + ([f"{waiting} file(s) still changing or not yet hashed"] if waiting else [])) or "no new files"
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests(context.instance, tenants, sources),
        cursor=json.dumps(state, separators=(",", ":")),
        skip_reason=skip_reason,
    )
