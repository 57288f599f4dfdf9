"""accounting_sensor: new or grown PowerMTA accounting files -> one ``delivery_events`` run per tenant.

A tick only lists directories and ``stat``s files, and reads the stored sizes of the tenant's
files (one query per tenant): it never opens an accounting file. A tenant whose files changed
(new file, another size or inode than when last read) gets one run; the run key holds the
files' (name, size, inode), so the same state never requests twice, and a partial last line that
waits does not request again until the file grows. Ticks stop after :data:`TICK_BUDGET_S`; the
cursor says which tenant the next tick starts from.
"""

from __future__ import annotations

import hashlib
import time

import dagster as dg

from email_engine_assets.feedback import accounting_store as store
from email_engine_assets.feedback.accounting_apply import (
    accounting_files,
    accounting_sources,
)
from email_engine_assets.feedback.assets import delivery_events
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource

TICK_BUDGET_S = 20.0


def changed_files(engine, tenant, powermta: PowerMtaResource) -> list[tuple[str, str, int, int]]:
    """(transport, file, size, inode) of the tenant's accounting files that are new or changed since last read."""
    sources = [s for s in accounting_sources(tenant, powermta) if s.directory]
    if not sources:
        return []
    with engine.connect() as conn:
        known = store.known_sizes(conn, tenant.id)
    changed = []
    for source in sources:
        try:
            files = accounting_files(source)
        except OSError:
            continue  # the run reports it; the sensor stays cheap
        for name, _path, st in files:
            size, inode = known.get((source.transport, name), (None, None))
            if size != st.st_size or (inode is not None and inode != st.st_ino):
                changed.append((source.transport, name, st.st_size, st.st_ino))
    return changed


def run_key(tenant_id: str, changed: list[tuple[str, str, int, int]]) -> str:
    state = "\n".join(f"{t}/{n}:{s}:{i}" for t, n, s, i in sorted(changed))
    return f"accounting:{tenant_id}:{hashlib.sha256(state.encode()).hexdigest()[:32]}"


@dg.sensor(asset_selection=[delivery_events], minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def accounting_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource, db: PostgresResource,
                      powermta: PowerMtaResource) -> dg.SensorResult:
    """Requests a ``delivery_events`` run for each tenant whose PowerMTA accounting files are new or grew."""
    tenant_ids = sorted(context.instance.get_dynamic_partitions(tenant_partitions.name))
    start = context.cursor or ""
    order = [t for t in tenant_ids if t > start] + [t for t in tenant_ids if t <= start]
    ws = load_tenants(workspace.root(), order)
    engine = db.engine()
    requests: list[dg.RunRequest] = []
    deadline = time.monotonic() + TICK_BUDGET_S
    cursor = start
    for tenant_id in order:
        if time.monotonic() > deadline:
            break
        cursor = tenant_id
        tenant = ws.tenants.get(tenant_id)
        if tenant is None:
            continue
        changed = changed_files(engine, tenant, powermta)
        if changed:
            requests.append(dg.RunRequest(run_key=run_key(tenant_id, changed), partition_key=tenant_id,
                                          tags={"email_engine/feedback": "accounting"}))
    else:
        cursor = ""
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           skip_reason=None if requests else "no new or grown accounting file")
