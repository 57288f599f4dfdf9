"""Partitions: tenants and sources are dynamic; imports are tenant × source."""

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from email_engine_assets.tenancy.config import load_tenants

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenant")
source_partitions = dg.DynamicPartitionsDefinition(name="source")

import_partitions = dg.MultiPartitionsDefinition({"tenant": tenant_partitions, "source": source_partitions})

# contacts[tenant] reads every source of that tenant.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    tenant_of_import = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="tenant")

# Between tenant partitions (``<tenant>``) and campaign partitions (``<tenant>.<campaign>``): every
# partition of one side depends on every partition of the other. Dagster has no built-in mapping of
# ``<tenant>.<campaign>`` to ``<tenant>`` (a custom PartitionMapping is deprecated: automation and
# the UI ignore it), and a tenant x campaign multi-partition would hold every tenant x every
# campaign name. So the edge is declared for lineage only: no automation condition follows it
# (``campaign_stats`` ignores it; campaign assets run only when a campaign's state asks for it).
across_tenants_and_campaigns = dg.AllPartitionMapping()


# Tags of a run over a range of partitions (what a single-run backfill carries); Dagster does not export them.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def import_key(tenant_id: str, source_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"tenant": tenant_id, "source": source_id})


def tenant_and_source(key: str) -> tuple[str, str]:
    """(tenant, source) of an import partition key (a ``MultiPartitionKey`` or its ``"<source>|<tenant>"`` string)."""
    dims = import_partitions.get_partition_key_from_str(str(key)).keys_by_dimension
    return dims["tenant"], dims["source"]


def partition_requests(instance: dg.DagsterInstance, tenants: Iterable[str], sources: Iterable[str]) -> list:
    """``AddDynamicPartitionsRequest``s for the keys not registered yet, in the order given."""
    requests = []
    for definition, wanted in ((tenant_partitions, tenants), (source_partitions, sources)):
        existing = set(instance.get_dynamic_partitions(definition.name))
        missing = [k for k in dict.fromkeys(wanted) if k not in existing]
        if missing:
            requests.append(definition.build_add_request(missing))
    return requests


def broken_tenant_message(ws, tenant_id: str) -> str:
    return f"tenant {tenant_id!r} has an invalid tenant file:\n{ws.errors[tenant_id]}"


def fail_if_broken(ws, tenant_id: str) -> None:
    """A tenant whose file is invalid fails the step with that file's error; the other tenants run on."""
    if tenant_id in ws.errors:
        raise dg.Failure(description=broken_tenant_message(ws, tenant_id))


def sources_by_tenant(ws) -> list[str]:
    """Source ids tenant by tenant, each tenant's in its config order: registered in this order, the
    sources of a tenant sit side by side in the source dimension, so one run can import a range of them."""
    return list(dict.fromkeys(s.id for tenant_id in sorted(ws.tenants) for s in ws.tenants[tenant_id].sources))


def tenant_config(context: dg.AssetExecutionContext, workspace):
    """The tenant of the run's partition, from the workspace resource; a missing or invalid tenant file fails the step."""
    ws = load_tenants(workspace.root(), [context.partition_key])
    fail_if_broken(ws, context.partition_key)
    tenant = ws.tenants.get(context.partition_key)
    if tenant is None:
        raise dg.Failure(f"tenant {context.partition_key!r} has no tenants/{context.partition_key}.yaml in {ws.root}")
    return tenant


def source_ranges(tenant_sources: set[str], source_order: list[str], ready: set[str]) -> list[tuple[str, str]]:
    """(first, last) ranges of the source dimension covering ``ready``, each holding only the tenant's sources.

    A run over a range of a multi-partition covers tenant × [first..last] in the source dimension's
    order (the order the sources were registered), so a source of another tenant inside a range
    would be recorded as imported for this tenant: a range stops before it. Sources of the tenant
    that have nothing new may sit inside a range; their import finds no new file.
    """
    ranges: list[tuple[str, str]] = []
    current: tuple[str, str] | None = None
    for source in source_order:
        if source not in tenant_sources:
            if current:
                ranges.append(current)
            current = None
        elif source in ready:
            current = (current[0], source) if current else (source, source)
    if current:
        ranges.append(current)
    return ranges


@dataclass(frozen=True)
class ImportBlock:
    """A rectangle of the import partitions, run as one: tenants ``tenants[0]..tenants[-1]`` × sources ``first..last``."""

    tenants: tuple[str, ...]
    first: str
    last: str


def import_blocks(
    plans: dict[str, list[tuple[str, str]]], tenant_sources: dict[str, set[str]],
    tenant_order: list[str], source_order: list[str], *, max_partitions: int,
) -> list[ImportBlock]:
    """Group the tenants' source ranges into rectangles of the tenant × source space, one run each.

    A run over a range of a multi-partition covers every (tenant, source) between its two corners,
    in each dimension's registered order. So tenants share a run only when they sit next to each
    other in the tenant dimension (no tenant outside ``plans`` in between), each has a single range,
    and the union of their ranges holds only sources of every one of them: a run never covers a pair
    that is not a source of its tenant, and no tenant without ready files. At most
    ``max_partitions`` pairs per run; ``plans`` maps a tenant to its ``source_ranges``.
    """
    t_pos = {t: i for i, t in enumerate(tenant_order)}
    s_pos = {s: i for i, s in enumerate(source_order)}
    blocks: list[ImportBlock] = []
    current: list[str] = []
    lo = hi = 0

    def close() -> None:
        if current:
            blocks.append(ImportBlock(tuple(current), source_order[lo], source_order[hi]))

    for tenant_id in sorted(plans, key=lambda t: t_pos.get(t, len(t_pos))):
        ranges = plans[tenant_id]
        if len(ranges) != 1 or tenant_id not in t_pos:
            close()
            current = []
            blocks += [ImportBlock((tenant_id,), first, last) for first, last in ranges]
            continue
        first, last = s_pos[ranges[0][0]], s_pos[ranges[0][1]]
        if current:
            new_lo, new_hi = min(lo, first), max(hi, last)
            span = source_order[new_lo : new_hi + 1]
            fits = (
                t_pos[tenant_id] == t_pos[current[-1]] + 1
                and (len(current) + 1) * len(span) <= max_partitions
                and all(set(span) <= tenant_sources[t] for t in [*current, tenant_id])
            )
            if fits:
                current.append(tenant_id)
                lo, hi = new_lo, new_hi
                continue
            close()
        current, lo, hi = [tenant_id], first, last
    close()
    return blocks


def import_run_request(tenant_id: str, first: str, last: str, *, run_key: str, tags: dict[str, str]) -> dg.RunRequest:
    """One run importing the sources ``first``..``last`` of a tenant (one partition, or a range in one run)."""
    if first == last:
        return dg.RunRequest(run_key=run_key, partition_key=import_key(tenant_id, first), tags={**tags, "source": first})
    return dg.RunRequest(
        run_key=run_key,
        tags={**tags, RANGE_START_TAG: import_key(tenant_id, first), RANGE_END_TAG: import_key(tenant_id, last)},
    )


# Tag of a run that imports several tenants: "<first>..<last>" in the tenant dimension's order.
TENANTS_TAG = "tenants"


def import_block_request(block: ImportBlock, *, run_key: str) -> dg.RunRequest:
    """One run over a block: a run of one tenant carries ``tenant`` (the queue's per-tenant limit keys
    on it); a run of many carries ``tenants`` and the corners of its rectangle."""
    if len(block.tenants) == 1:
        return import_run_request(block.tenants[0], block.first, block.last, run_key=run_key, tags={"tenant": block.tenants[0]})
    first_tenant, last_tenant = block.tenants[0], block.tenants[-1]
    return dg.RunRequest(
        run_key=run_key,
        tags={
            TENANTS_TAG: f"{first_tenant}..{last_tenant}",
            RANGE_START_TAG: import_key(first_tenant, block.first),
            RANGE_END_TAG: import_key(last_tenant, block.last),
        },
    )


def tenant_ranges(order: list[str], wanted: Iterable[str], *, max_tenants: int) -> list[list[str]]:
    """``wanted`` as runs of tenants side by side in the tenant dimension (``order``, as registered),
    at most ``max_tenants`` each: a run over a range covers every tenant between its two ends, so a
    range stops before a tenant not wanted. Wanted tenants not in ``order`` come last, one each."""
    wanted = set(wanted)
    ranges: list[list[str]] = []
    current: list[str] = []
    for tenant_id in order:
        if tenant_id in wanted and len(current) < max_tenants:
            current.append(tenant_id)
            continue
        if current:
            ranges.append(current)
        current = [tenant_id] if tenant_id in wanted else []
    if current:
        ranges.append(current)
    ranges += [[t] for t in sorted(wanted - set(order))]
    return ranges


def tenant_range_tags(tenants: list[str]) -> dict[str, str]:
    """Tags of one run over tenants ``tenants[0]..tenants[-1]`` of a tenant-partitioned job (``tenant`` when one)."""
    if len(tenants) == 1:
        return {"tenant": tenants[0]}
    return {TENANTS_TAG: f"{tenants[0]}..{tenants[-1]}", RANGE_START_TAG: tenants[0], RANGE_END_TAG: tenants[-1]}
