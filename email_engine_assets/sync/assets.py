"""mailwizz_subscribers[tenant]: the tenant's sendable contacts in the standing lists of its MailWizz instances."""

from collections import Counter

import dagster as dg
from pydantic import Field

from email_engine_assets.quality.assets import (
    CONTACTS,
    EAGER,
    contact_enrichment,
    email_validations,
)
from email_engine_assets.quality.store import contact_ranges
from email_engine_assets.sync.instances import synced_instances
from email_engine_assets.sync.push import sync_instance
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, each_tenant, tenant_configs
from email_engine_resources.mailwizz import BULK_SIZE
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource
from email_engine_resources.workspace import WorkspaceResource

SYNC = "sync"


class SyncConfig(dg.Config):
    contacts_per_chunk: int = Field(default=50_000, ge=1, description="Contacts compared with the pushed state at a time")
    bulk_size: int = Field(default=BULK_SIZE, ge=1, le=1000, description="Subscribers per bulk call")


@dg.asset(
    partitions_def=tenant_partitions,
    group_name=SYNC,
    kinds={"postgres", "mailwizz"},
    deps=[CONTACTS, email_validations, contact_enrichment],
    automation_condition=EAGER,
    backfill_policy=SINGLE_RUN,
    description="Sendable contacts (latest verdict valid, not suppressed) in standing MailWizz lists per (category, language), "
                "for each mailwizz transport with `sync:`; only changed rows are pushed, suppressed contacts unsubscribed.",
)
def mailwizz_subscribers(
    context: dg.AssetExecutionContext, config: SyncConfig, db: PostgresResource, workspace: WorkspaceResource,
    mailwizz: MailwizzResource,
):
    tenants, tenant_config = tenant_configs(context, workspace)
    engine = db.engine()
    yield from each_tenant(context, tenants, lambda tenant_id: _sync_tenant(tenant_config(tenant_id), engine, config, mailwizz))


def _sync_tenant(tenant, engine, config: SyncConfig, mailwizz: MailwizzResource) -> dg.MaterializeResult:
    transports = synced_instances(tenant)
    per_instance: dict[str, dict[str, int]] = {}
    with tenant_work_lock(engine, "mailwizz_subscribers", tenant.id):
        ranges = []
        if transports:
            with engine.connect() as conn:
                ranges = contact_ranges(conn, tenant.id, config.contacts_per_chunk)
        failures = []
        for transport in transports:  # one instance down does not hold the others back
            try:
                with mailwizz.instance(transport, bulk_size=config.bulk_size) as mw:
                    totals = sync_instance(engine, tenant, transport, mw, ranges)
                    totals["api_calls"] = mw.client.calls
            except (LookupError, MailwizzError) as exc:
                failures.append(f"mailwizz transport {transport.name!r}: {exc}")
                continue
            per_instance[transport.name] = dict(totals)
    if failures:
        # What was pushed before the error is in the state table: the next run goes on from there.
        raise dg.Failure("\n".join(failures), metadata={"synced": dg.MetadataValue.json(per_instance)})
    overall: Counter[str] = Counter()
    for totals in per_instance.values():
        overall.update({k: v for k, v in totals.items() if k != "sendable"})
    return dg.MaterializeResult(
        metadata={
            "instances": len(transports),
            **{k: overall[k] for k in ("added", "updated", "unsubscribed", "removed", "erased_removed", "refused",
                                            "held_out", "bad_address", "suppressed", "api_calls")},
            "per_instance": dg.MetadataValue.json(per_instance),
        }
    )
