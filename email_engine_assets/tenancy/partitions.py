"""Partitions: tenants and sources are dynamic; imports are tenant × source."""

import warnings

import dagster as dg

from email_engine_assets.tenancy.config import load_workspace

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenant")
source_partitions = dg.DynamicPartitionsDefinition(name="source")

import_partitions = dg.MultiPartitionsDefinition({"tenant": tenant_partitions, "source": source_partitions})

# contacts[tenant] reads every source of that tenant.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    tenant_of_import = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="tenant")


def import_key(tenant_id: str, source_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"tenant": tenant_id, "source": source_id})


def partition_requests(instance: dg.DagsterInstance, tenants: set[str], sources: set[str]) -> list:
    """``AddDynamicPartitionsRequest``s for the keys not registered yet."""
    requests = []
    for definition, wanted in ((tenant_partitions, tenants), (source_partitions, sources)):
        missing = sorted(wanted - set(instance.get_dynamic_partitions(definition.name)))
        if missing:
            requests.append(definition.build_add_request(missing))
    return requests


def fail_if_broken(ws, tenant_id: str) -> None:
    """A tenant whose file is invalid fails the step with that file's error; the other tenants run on."""
    if tenant_id in ws.errors:
        raise dg.Failure(description=f"tenant {tenant_id!r} has an invalid tenant file:\n{ws.errors[tenant_id]}")


def tenant_config(context: dg.AssetExecutionContext, workspace):
    """The tenant of the run's partition, from the workspace resource; a missing or invalid tenant file fails the step."""
    ws = load_workspace(workspace.root())
    fail_if_broken(ws, context.partition_key)
    tenant = ws.tenants.get(context.partition_key)
    if tenant is None:
        raise dg.Failure(f"tenant {context.partition_key!r} has no tenants/{context.partition_key}.yaml in {ws.root}")
    return tenant
