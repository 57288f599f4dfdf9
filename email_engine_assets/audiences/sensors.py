"""The segment definitions sensor: observes each tenant's ``segments:`` when they change.

An observation of ``segment_definitions[tenant]`` (its data version: the digest of the tenant's
segment definitions) counts as an update of a dependency of ``segments[tenant]``, so declarative
automation rebuilds that tenant's segments. The cursor holds the digest last observed per tenant;
a tenant whose file is broken keeps its last digest (its error is the inbox sensor's to report),
and a tenant not registered as a partition yet is observed once it is.
"""

from __future__ import annotations

import json

import dagster as dg

from email_engine_assets.audiences.assets import segment_definitions
from email_engine_assets.audiences.segments import segments_digest
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.workspace import WorkspaceResource

DATA_VERSION_TAG = "dagster/data_version"
CURSOR_MAX_TENANTS = 100_000


def decode_cursor(cursor: str | None) -> dict[str, str]:
    """``{tenant: digest}`` of the last observations; an unreadable cursor starts afresh (all observed again)."""
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    if not isinstance(state, dict) or len(state) > CURSOR_MAX_TENANTS:
        return {}
    return {str(k): str(v) for k, v in state.items()}


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes segment_definitions[tenant] when the tenant file's segments change (automation then rebuilds segments).",
)
def segment_definitions_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource) -> dg.SensorResult:
    previous = decode_cursor(context.cursor)
    ws = load_workspace(workspace.root())
    registered = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    observed = dict(previous)
    events = []
    for tenant_id, tenant in sorted(ws.tenants.items()):
        if tenant_id not in registered:
            continue
        digest = segments_digest(tenant.segments)
        if previous.get(tenant_id) == digest:
            continue
        observed[tenant_id] = digest
        events.append(
            dg.AssetObservation(
                asset_key=segment_definitions.key,
                partition=tenant_id,
                tags={DATA_VERSION_TAG: digest},
                metadata={"segments": len(tenant.segments), "names": dg.MetadataValue.json([s.name for s in tenant.segments])},
            )
        )
    # Tenants whose file is gone are forgotten; their snapshots are dropped by the next build of the tenant.
    observed = {tenant_id: digest for tenant_id, digest in observed.items() if tenant_id in ws.tenants or tenant_id in ws.errors}
    return dg.SensorResult(asset_events=events, cursor=json.dumps(observed, sort_keys=True))
