"""The main job as the CLI runs it: real Dagster runs, recorded in the instance (visible in the UI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.audiences.assets import tag_assignments
from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.contacts.importer import file_digest
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    place_file,
    real_source_folder,
)
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.quality.assets import contact_enrichment, email_validations
from email_engine_assets.quality.verdict import VERDICTS
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.partitions import (
    import_key,
    source_partitions,
    tenant_partitions,
)
from email_engine_resources.email_domain import email_domain
from email_engine_resources.postgres import get_engine
from email_engine_resources.workspace import WorkspaceResource

TENANT_ASSETS = [contacts, email_validations, contact_enrichment, tag_assignments]


@dataclass
class MainJobOutcome:
    failures: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _resources() -> dict:
    from email_engine_assets.definitions import default_resources

    return default_resources()


def _register(instance: dg.DagsterInstance, ws) -> None:
    for definition, keys in (
        (tenant_partitions, sorted(ws.tenants)),
        (source_partitions, sorted({s.id for t in ws.tenants.values() for s in t.sources})),
    ):
        missing = [k for k in keys if not instance.has_dynamic_partition(definition.name, k)]
        if missing:
            instance.add_dynamic_partitions(definition.name, missing)
    with get_engine().begin() as conn:
        register_workspace(conn, ws)


def _materialize(assets, partition_key, instance, failures: list[str], label: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets,
        partition_key=partition_key,
        instance=instance,
        resources=_resources(),
        raise_on_error=False,
        tags={"email_engine/cli": "run"},
        # the full event log is in the instance (Dagster UI); the terminal gets warnings and the summary
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                err = event.step_failure_data.error
                failures.append(f"{label}: {err.message.strip() if err else 'step failed'}")
        if not any(f.startswith(label) for f in failures):
            failures.append(f"{label}: run failed")
    return result


def run_main_job(tenant_assets=None) -> MainJobOutcome:
    """Import every (tenant, source) partition, then materialize each tenant's assets."""
    outcome = MainJobOutcome()
    ws = load_workspace(WorkspaceResource().root())
    outcome.failures += [f"tenant {t} not run, invalid tenant file: {e}" for t, e in ws.errors.items()]
    with dg.DagsterInstance.get() as instance:
        _register(instance, ws)
        for tenant in ws.tenants.values():
            for source in tenant.sources:
                _materialize([contact_imports], import_key(tenant.id, source.id), instance, outcome.failures, f"{tenant.id}/{source.id}")
            _materialize(tenant_assets or TENANT_ASSETS, tenant.id, instance, outcome.failures, tenant.id)
    outcome.summary = summary_rows(list(ws.tenants))
    outcome.quality = quality_rows(list(ws.tenants))
    return outcome


def import_one_file(path: Path, tenant_id: str, source_id: str) -> dict:
    """Place ``path`` in the tenant/source inbox, import that partition and merge the tenant's contacts."""
    ws = load_workspace(WorkspaceResource().root())
    if tenant_id in ws.errors:
        raise SystemExit(f"tenant {tenant_id!r} has an invalid tenant file:\n{ws.errors[tenant_id]}")
    tenant = ws.tenants.get(tenant_id)
    if tenant is None:
        raise SystemExit(f"unknown tenant {tenant_id!r}; known: {', '.join(sorted(ws.tenants))}")
    if tenant.source(source_id) is None:
        raise SystemExit(f"unknown source {source_id!r} for tenant {tenant_id}; known: {', '.join(s.id for s in tenant.sources)}")
    if not path.is_file():
        raise SystemExit(f"no such file: {path}")
    folder = ws.source_dir(tenant_id, source_id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = place_file(path, real_source_folder(folder))
    except RefusedFile as exc:
        raise SystemExit(f"cannot place {path.name!r} in inbox/{tenant_id}/{source_id}: {exc.why}") from None
    digest = file_digest(target)
    failures: list[str] = []
    with dg.DagsterInstance.get() as instance:
        _register(instance, ws)
        _materialize([contact_imports], import_key(tenant_id, source_id), instance, failures, f"{tenant_id}/{source_id}")
        _materialize(TENANT_ASSETS, tenant_id, instance, failures, tenant_id)
    with get_engine().connect() as conn:
        row = conn.execute(
            sa.text(
                """SELECT status, rows_total, new, merged, duplicates, rejected, error FROM import_files
                   WHERE tenant_id = :t AND source_id = :s AND content_sha256 = :h"""
            ),
            {"t": tenant_id, "s": source_id, "h": digest},
        ).one()
        total = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one()
    result = {"file": str(target), "status": row.status, **{k: int(getattr(row, k)) for k in ("rows_total", "new", "merged", "duplicates", "rejected")}, "contacts_total": int(total)}
    if row.error:
        result["error"] = row.error
    return result


def summary_rows(tenant_ids: list[str]) -> list[dict]:
    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                """SELECT s.tenant_id, s.source_id,
                          count(f.file_id) FILTER (WHERE f.status = 'imported') AS files,
                          count(f.file_id) FILTER (WHERE f.status = 'failed') AS failed,
                          coalesce(sum(f.rows_total), 0)::bigint AS rows, coalesce(sum(f.new), 0)::bigint AS new,
                          coalesce(sum(f.merged), 0)::bigint AS merged, coalesce(sum(f.duplicates), 0)::bigint AS duplicates,
                          coalesce(sum(f.rejected), 0)::bigint AS rejected,
                          (SELECT count(*) FROM contacts c WHERE c.tenant_id = s.tenant_id) AS contacts
                   FROM data_sources s LEFT JOIN import_files f ON f.tenant_id = s.tenant_id AND f.source_id = s.source_id
                   WHERE s.tenant_id = ANY(:ts)
                   GROUP BY s.tenant_id, s.source_id ORDER BY s.tenant_id, s.source_id"""
            ),
            {"ts": tenant_ids},
        )
        return [dict(r._mapping) for r in rows]


def quality_rows(tenant_ids: list[str]) -> list[dict]:
    """Per tenant: verdict counts, languages and the most used tags."""
    out = []
    with get_engine().connect() as conn:
        for tenant_id in tenant_ids:
            verdicts = dict(conn.execute(sa.text("SELECT verdict, count(*) FROM email_validations WHERE tenant_id = :t GROUP BY 1"), {"t": tenant_id}).all())
            languages = conn.execute(sa.text("SELECT language, count(*) FROM contact_enrichment WHERE tenant_id = :t GROUP BY 1 ORDER BY 2 DESC, 1"), {"t": tenant_id}).all()
            tags = conn.execute(
                sa.text("SELECT tag, count(DISTINCT contact_id) FROM tag_assignments WHERE tenant_id = :t GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"), {"t": tenant_id}
            ).all()
            out.append(
                {
                    "tenant": tenant_id,
                    **{v: int(verdicts.get(v, 0)) for v in VERDICTS},
                    "languages": " ".join(f"{lang}:{n}" for lang, n in languages),
                    "top tags": " ".join(f"{tag}:{n}" for tag, n in tags),
                }
            )
    return out


def _print_table(rows: list[dict], columns: list[str], heads: list[str]) -> None:
    """Plain text table; numbers right-aligned."""
    table = [heads] + [[str(r[c]) for c in columns] for r in rows]
    numeric = [all(isinstance(r[c], int) for r in rows) for c in columns]
    widths = [max(len(row[i]) for row in table) for i in range(len(heads))]
    for i, row in enumerate(table):
        print("  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_summary(outcome: MainJobOutcome) -> None:
    cols = ["tenant_id", "source_id", "files", "failed", "rows", "new", "merged", "duplicates", "rejected", "contacts"]
    heads = ["tenant", "source", "files", "failed", "rows", "new", "merged", "dupes", "rejected", "contacts"]
    _print_table(outcome.summary, cols, heads)
    if outcome.quality:
        print()
        cols = ["tenant", *VERDICTS, "languages", "top tags"]
        _print_table(outcome.quality, cols, cols)
    for failure in outcome.failures:
        print(f"FAILED {failure}")


def check_addresses_now(addresses: list[str], *, smtp: bool = False) -> list[dict]:
    """``email-engine check``: the asset's validation path (same code, same DNS cache) on given addresses."""
    import polars as pl

    from email_engine_assets.quality.syntax import check_addresses
    from email_engine_assets.quality.validation_run import validate_batch

    resources = _resources()
    keys = check_addresses(pl.Series(addresses, dtype=pl.String))["email_key"]
    frame = pl.DataFrame({"contact_id": range(len(addresses)), "email": [k or a for k, a in zip(keys, addresses)]},
                         schema={"contact_id": pl.Int64, "email": pl.String})
    batch = validate_batch(get_engine(), frame, resources["dns"], resources["smtp_probe"] if smtp else None)
    return [
        {"input": given, **row, "dns_cached": email_domain(row["email"]) in batch.cached_domains}
        for given, row in zip(addresses, batch.frame.drop("contact_id").iter_rows(named=True))
    ]
