"""Tenant-partitioned assets over many tenants in one run.

A run of a tenant-partitioned asset covers one tenant (its partition key) or a range of tenants (a
single-run backfill, the backfill automation emits after a large import, ``email-engine run``).
Dagster's fixed cost is paid once per run, not once per tenant. Each tenant of a range is computed
as a run of its own would compute it -- same code, same per-tenant lock, same result -- and:

- its materialization carries its own metadata (``add_asset_metadata`` per partition);
- a tenant that fails does not stop the others of the step: their partitions are materialized, then
  the step fails naming each failed tenant and why (the steps after it in the run do not start:
  whoever launched the range runs those tenants again on their own, see ``main_job``);
- each asset check gives one result for the run: it passes when it passed for every tenant, and
  otherwise names the tenants it failed for, with their metadata (a check result carries no
  partition; one result per check and step is all Dagster takes).

A run of one tenant is unchanged: the asset's own result, checks and failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from pydantic import Field

from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.partitions import fail_if_broken

# backfill_policy is beta in Dagster 1.13; a single run over a range of tenants is what batching relies on.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

# Every tenant-partitioned asset that follows an import: one run may hold any range of tenants.
SINGLE_RUN = dg.BackfillPolicy.single_run()
# A failed check names at most this many tenants in its metadata (and counts the rest).
MAX_LISTED = 50


def run_tenants(context: dg.AssetExecutionContext) -> list[str]:
    """The tenants of the run: its partition, or every tenant of its range in the tenant dimension's order.

    A run of one partition does not ask ``partition_keys``: for dynamic partitions that loads the
    range from the instance (a few queries on new storage connections, per asset of the run).
    """
    if not context.has_partition_key_range:
        return [context.partition_key]
    return list(context.partition_keys)


def tenant_configs(context: dg.AssetExecutionContext, workspace) -> tuple[list[str], Callable[[str], object]]:
    """The run's tenants, and a function giving one tenant's config (read once for the run), which
    fails for that tenant alone when its file is invalid or missing."""
    keys = run_tenants(context)
    ws = load_tenants(workspace.root(), keys)

    def config(tenant_id: str):
        fail_if_broken(ws, tenant_id)
        tenant = ws.tenants.get(tenant_id)
        if tenant is None:
            raise dg.Failure(f"tenant {tenant_id!r} has no tenants/{tenant_id}.yaml in {ws.root}")
        return tenant

    return keys, config


def each_tenant(
    context: dg.AssetExecutionContext, tenants: list[str], work: Callable[[str], dg.MaterializeResult], *, workers: int = 1
) -> Iterator:
    """The events of a step that runs ``work`` for each tenant of the run (see the module's docstring).

    ``workers`` tenants at a time, each on its own database sessions: one tenant's Python work
    overlaps another's SQL. Their per-tenant locks keep any two runs of a tenant apart as before.
    """
    if len(tenants) == 1:
        yield work(tenants[0])
        return
    results: dict[str, dg.MaterializeResult] = {}
    failed: dict[str, str] = {}

    def one(tenant_id: str) -> tuple[str, dg.MaterializeResult | None, str | None]:
        try:
            return tenant_id, work(tenant_id), None
        except Exception as exc:  # noqa: BLE001 - the other tenants of the run go on
            return tenant_id, None, failure_text(exc)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(tenants)), thread_name_prefix="tenant") as pool:
            outcomes = list(pool.map(one, tenants))
    else:
        outcomes = [one(t) for t in tenants]
    for tenant_id, result, error in outcomes:
        if error is None:
            results[tenant_id] = result
        else:
            failed[tenant_id] = error
    checks = combined_checks(results)
    summary = {"run_tenants": len(tenants), "run_failed_tenants": len(failed)}
    if failed:
        for tenant_id, result in results.items():
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=tenant_id,
                                          metadata={**(result.metadata or {}), "tenant": tenant_id})
        yield from checks
        for tenant_id, error in failed.items():
            context.log.error(f"tenant {tenant_id}: {error}")
        listed = list(failed.items())[:MAX_LISTED]
        raise dg.Failure(
            description=f"{len(failed)} of {len(tenants)} tenants failed: "
            + "; ".join(f"tenant {t}: {e}" for t, e in listed) + (" ..." if len(failed) > MAX_LISTED else ""),
            metadata={**summary, "failed_tenants": ", ".join(failed)},
        )
    for tenant_id, result in results.items():
        partition_metadata(context, tenant_id, {**(result.metadata or {}), "tenant": tenant_id})
    yield dg.MaterializeResult(metadata=summary, check_results=checks)


def partition_metadata(context: dg.AssetExecutionContext, partition_key: str, metadata: dict) -> None:
    """``context.add_asset_metadata(metadata, partition_key=...)`` for a key of the run's range.

    Dagster's method first checks the key is in the range by loading the range from the instance:
    two queries and a new storage connection per call, 86 ms each here, minutes over a thousand
    tenants. The keys given here come from the range, so the metadata goes straight to the step's
    accumulator; on a Dagster without it, the public method.
    """
    step = getattr(context.op_execution_context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        context.add_asset_metadata(metadata, partition_key=partition_key)
        return
    step._metadata_accumulator = accumulator.with_additional_asset_metadata(
        asset_key=context.asset_key, metadata=metadata, partition_key=partition_key
    )


def failure_text(exc: BaseException) -> str:
    if isinstance(exc, dg.Failure):
        return exc.description or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _plain(value):
    return value.value if isinstance(value, dg.MetadataValue) else value


def combined_checks(results: dict[str, dg.MaterializeResult]) -> list[dg.AssetCheckResult]:
    """One result per check over the run's tenants: passed when every tenant passed; else the
    strongest severity among the failures, the failed tenants named with their own metadata."""
    by_check: dict[str, list[tuple[str, dg.AssetCheckResult]]] = {}
    for tenant_id, result in results.items():
        for check_result in result.check_results or ():
            by_check.setdefault(check_result.check_name, []).append((tenant_id, check_result))
    combined = []
    for name, per_tenant in by_check.items():
        failing = [(t, r) for t, r in per_tenant if not r.passed]
        severity = (dg.AssetCheckSeverity.ERROR if any(r.severity == dg.AssetCheckSeverity.ERROR for _, r in failing)
                    else failing[0][1].severity if failing else per_tenant[0][1].severity)
        metadata = {"tenants_checked": len(per_tenant), "tenants_failed": len(failing)}
        if failing:
            metadata["failed_tenants"] = ", ".join(t for t, _ in failing[:MAX_LISTED]) + (" ..." if len(failing) > MAX_LISTED else "")
            metadata["failed"] = dg.MetadataValue.json(
                {t: {k: _plain(v) for k, v in (r.metadata or {}).items()} for t, r in failing[:MAX_LISTED]}
            )
        descriptions = [f"tenant {t}: {r.description}" for t, r in failing[:MAX_LISTED] if r.description]
        combined.append(dg.AssetCheckResult(
            check_name=name, passed=not failing, severity=severity, metadata=metadata,
            description="\n".join(descriptions) or None,
        ))
    return combined


def tenants_of(keys: Iterable[str]) -> str:
    """How a run's tenants are named in a log line: ``a`` or ``a..z (n tenants)``."""
    keys = list(keys)
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]} ({len(keys)} tenants)"


# Tenants of a multi-tenant run computed at once (threads, each tenant on its own connections).
TENANT_WORKERS = 2


class TenantsConfig(dg.Config):
    tenant_workers: int = Field(
        default=TENANT_WORKERS, ge=1, le=8,
        description="Tenants of a run over many tenants computed at once, each on its own connections.",
    )
