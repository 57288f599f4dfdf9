"""The operator's commands as real Dagster runs of the named jobs the UI shows, recorded in the instance."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from email_engine_assets.audiences import store as audiences_store
from email_engine_assets.contacts import merge_store
from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import file_digest
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    place_file,
    real_source_folder,
)
from email_engine_assets.execution import RunResult, run_job
from email_engine_assets.quality import store as quality_store
from email_engine_assets.quality.verdict import VERDICTS
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.input_problems import INPUT_KINDS, InputProblem
from email_engine_assets.tenancy.input_problems_store import (
    forget_tenants_except,
    unread_inputs,
)
from email_engine_assets.tenancy.partitions import (
    import_block_request,
    import_blocks,
    import_key,
    source_partitions,
    source_ranges,
    sources_by_tenant,
    tenant_partitions,
    tenant_range_tags,
    tenant_ranges,
)
from email_engine_assets.tenancy.strict import SLUG_PATTERN
from email_engine_resources.email_domain import email_domain
from email_engine_resources.postgres import get_engine
from email_engine_resources.workspace import WorkspaceResource

MERGE_ASSETS = [dg.AssetKey("contacts")]
TENANT_FILES_ASSETS = [dg.AssetKey("tenant_files")]
QUALITY_ASSETS = [dg.AssetKey(k) for k in ("email_validations", "contact_enrichment", "tag_assignments")]
# the full event log is in the instance (Dagster UI); the terminal gets warnings and the summary
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CLI_TAG = "email_engine/cli"
SLUG = re.compile(SLUG_PATTERN)


@dataclass
class MainJobOutcome:
    failures: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    campaigns: list[dict] = field(default_factory=list)  # per due campaign: counts, and "blocked" when a check stopped it
    refused: dict[str, list[InputProblem]] = field(default_factory=dict)  # per tenant: the inputs not read

    @property
    def ok(self) -> bool:
        return not self.failures and not self.refused


# ``import --json``: the same keys whatever the status (imported, already_imported, failed); what
# does not apply is null.
IMPORT_KEYS: tuple[str, ...] = ("file", "status", *ledger.COUNT_COLUMNS, "contacts_total", "error")


def import_counts(file: str, status: str, counts: dict | None = None, *, contacts_total: int | None = None,
                  error: str | None = None) -> dict:
    """The answer of ``import`` for one file, in the shape of :data:`IMPORT_KEYS`."""
    found = {"file": file, "status": status, **{k: int((counts or {}).get(k) or 0) for k in ledger.COUNT_COLUMNS},
             "contacts_total": contacts_total, "error": error or None}
    return {key: found[key] for key in IMPORT_KEYS}


@dataclass
class ImportOutcome:
    counts: dict
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.counts.get("status") in ("imported", "already_imported") and not self.failures


def _resources() -> dict:
    from email_engine_assets.definitions import default_resources

    return default_resources()


def _register(instance: dg.DagsterInstance, ws) -> None:
    # A tenant whose file is broken is a partition too: tenant_files[tenant] names the file and why.
    tenant_keys = sorted(set(ws.tenants) | {t for t in ws.errors if SLUG.fullmatch(t)})
    for definition, keys in ((tenant_partitions, tenant_keys), (source_partitions, sources_by_tenant(ws))):
        existing = set(instance.get_dynamic_partitions(definition.name))
        missing = [k for k in keys if k not in existing]
        if missing:
            instance.add_dynamic_partitions(definition.name, missing)
    with get_engine().begin() as conn:
        ledger.register_workspace(conn, ws)


def execute_job(
    job_name: str, instance: dg.DagsterInstance, failures: list[str], label: str, *,
    partition_key: str | None = None, tags: dict[str, str] | None = None, asset_selection: list[dg.AssetKey] | None = None,
) -> RunResult:
    """One run of a job of the code location, as the UI would launch it, with the configured executor
    (see ``executors``); failed steps are added to ``failures``."""
    result = run_job(job_name, instance, partition_key=partition_key, asset_selection=asset_selection,
                     tags={CLI_TAG: "true", **(tags or {})}, run_config=QUIET)
    if not result.success:
        failures += [f"{label}: {step_key}: {_error_text(err) if err else 'step failed'}" for step_key, err in result.step_failures]
        if not result.step_failures:
            failures.append(f"{label}: run {result.run_id} failed")
    return result


def _error_text(err) -> str:
    """The error's message without the qualified class name Dagster puts before it
    (``dagster._core.definitions.events.Failure: segment 'x': ...`` → ``segment 'x': ...``)."""
    message = err.message.strip()
    head, sep, rest = message.partition(": ")
    if sep and err.cls_name and head.split(".")[-1] == err.cls_name and " " not in head:
        return rest.strip()
    return message


# A run of ``feedback_job`` or ``tenant_job`` covers up to this many tenants side by side (see ``tenant_ranges``).
MAX_TENANTS_PER_RUN = 500
# An import run covers up to this many (tenant, source) partitions, as the inbox sensor's do.
MAX_IMPORT_PARTITIONS_PER_RUN = 2000


def run_main_job() -> MainJobOutcome:
    """``feedback_job`` (pending webhook rows and accounting lines, then the suppression policy),
    ``import_job`` over the tenants' sources, then ``tenant_job`` (tenant, campaign and template files,
    contacts, quality, tags, segments); last, every due campaign through its transport
    (``campaign_send_job``). Each stage runs over ranges of tenants, many tenants a run (Dagster's
    fixed cost per run is paid per range, not per tenant); each tenant still has its feedback before
    its import, and its import before its downstream. ``refused``: every input of the tenants that is
    not read now (the run is not ok while there is one)."""
    outcome = MainJobOutcome()
    ws = load_workspace(WorkspaceResource().root())
    outcome.failures += [f"tenant {t} not run: its tenant file is refused" + ("" if SLUG.fullmatch(t) else f": {e}")
                         for t, e in ws.errors.items()]
    with get_engine().begin() as conn:  # a tenant gone from the workspace has nothing left to report
        forget_tenants_except(conn, INPUT_KINDS, [*ws.tenants, *ws.errors])
    with dg.DagsterInstance.get() as instance:
        _register(instance, ws)
        for tenant_id in sorted(t for t in ws.errors if SLUG.fullmatch(t)):
            execute_job("tenant_job", instance, outcome.failures, f"{tenant_id} files", partition_key=tenant_id,
                        tags={"tenant": tenant_id}, asset_selection=TENANT_FILES_ASSETS)
        order = list(instance.get_dynamic_partitions(tenant_partitions.name))
        over_tenants("feedback_job", instance, order, ws.tenants, outcome.failures, " feedback")
        import_tenants(instance, ws, sorted(ws.tenants), outcome.failures)
        over_tenants("tenant_job", instance, order, ws.tenants, outcome.failures, "")
        send_due(instance, outcome)
    with get_engine().connect() as conn:
        outcome.refused = unread_inputs(conn, [*ws.tenants, *ws.errors])
    outcome.summary = summary_rows(list(ws.tenants))
    outcome.quality = quality_rows(list(ws.tenants))
    return outcome


def import_tenants(instance: dg.DagsterInstance, ws, tenant_ids: list[str], failures: list[str]) -> None:
    """``import_job`` over every source of ``tenant_ids``: runs over blocks of tenants × sources, as the
    inbox sensor requests them (``import_blocks``); a tenant whose sources do not form one range gets runs of its own."""
    source_order = list(instance.get_dynamic_partitions(source_partitions.name))
    tenant_order = list(instance.get_dynamic_partitions(tenant_partitions.name))
    tenant_sources = {t: {s.id for s in ws.tenants[t].sources} for t in tenant_ids}
    plans = {t: source_ranges(tenant_sources[t], source_order, tenant_sources[t]) for t in tenant_ids}
    blocks = import_blocks({t: r for t, r in plans.items() if r}, tenant_sources, tenant_order, source_order,
                           max_partitions=MAX_IMPORT_PARTITIONS_PER_RUN)
    for block in blocks:
        request = import_block_request(block, run_key="")
        tenants = block.tenants[0] if len(block.tenants) == 1 else f"{block.tenants[0]}..{block.tenants[-1]}"
        label = f"{tenants}/{block.first}" + (f"..{block.last}" if block.last != block.first else "")
        execute_job("import_job", instance, failures, label, partition_key=request.partition_key, tags=dict(request.tags))


def over_tenants(job_name: str, instance: dg.DagsterInstance, order: list[str], tenant_ids, failures: list[str],
                 what: str, *, asset_selection: list[dg.AssetKey] | None = None) -> None:
    """``job_name`` over ``tenant_ids``: one run per range of tenants side by side in the tenant dimension."""
    for block in tenant_ranges(order, tenant_ids, max_tenants=MAX_TENANTS_PER_RUN):
        _run_tenants(job_name, instance, order, block, failures, what, asset_selection, split=True)


def _run_tenants(job_name: str, instance: dg.DagsterInstance, order: list[str], block: list[str], failures: list[str],
                 what: str, asset_selection, *, split: bool) -> None:
    """One run over ``block``. When a step fails for some tenants, the steps after it did not run for
    any: the tenants it failed for are run again one by one (each failure reported as a run of that
    tenant alone reports it), the others together again (or one by one, the second time)."""
    if len(block) == 1:
        execute_job(job_name, instance, failures, f"{block[0]}{what}", partition_key=block[0],
                    tags=tenant_range_tags(block), asset_selection=asset_selection)
        return
    own: list[str] = []
    result = execute_job(job_name, instance, own, f"{block[0]}..{block[-1]}{what}", tags=tenant_range_tags(block),
                         asset_selection=asset_selection)
    if result.success:
        return
    stopped = stopped_tenants(result, block)
    rest = [t for t in block if t not in stopped]
    if split and rest:
        for sub in tenant_ranges(order, rest, max_tenants=len(block)):
            _run_tenants(job_name, instance, order, sub, failures, what, asset_selection, split=False)
    else:
        stopped |= set(rest)
    for tenant_id in (t for t in block if t in stopped):
        _run_tenants(job_name, instance, order, [tenant_id], failures, what, asset_selection, split=False)


def stopped_tenants(result: RunResult, block: list[str]) -> set[str]:
    """The tenants of ``block`` a failed step of the run did not materialize (all of them when the
    step failed before it materialized any, or is not an asset's)."""
    materialized: dict[str, set[str]] = {}
    for event in result.events:
        if event.is_step_materialization and event.asset_key and event.partition:
            materialized.setdefault(event.asset_key.to_user_string(), set()).add(event.partition)
    stopped: set[str] = set()
    for step_key, _ in result.step_failures:
        stopped |= set(block) - materialized.get(step_key, set())
    return stopped if result.step_failures else set(block)


def send_due(instance: dg.DagsterInstance, outcome: MainJobOutcome, definitions: dg.Definitions | None = None) -> None:
    """The due campaigns, each through its own transport (the resources of ``definitions``, default the
    code location's); a campaign blocked by a check is reported, not failed."""
    from email_engine_assets.campaign_runs import send_due_campaigns

    for sent in send_due_campaigns(instance, definitions):
        outcome.campaigns.append(sent.as_json())
        outcome.failures += sent.failures


@contextmanager
def storage_connections_kept(instance: dg.DagsterInstance) -> Iterator[None]:
    """One pooled connection per Dagster storage for the block, as the webserver keeps, closed after it.

    By default each storage opens a new PostgreSQL connection for every read and every event it
    writes: a run the CLI executes itself writes dozens of events, and a connection costs a server
    process each time. No statement timeout is set (0): the CLI waits for its own runs.
    """
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=5)
    try:
        yield
    finally:
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            engine = getattr(storage, "_engine", None)  # the pool optimize_for_webserver made
            if engine is not None:
                engine.dispose()


def import_one_file(
    path: Path, tenant_id: str, source_id: str, *, quality: bool = True,
    on_counts: Callable[[dict], None] = lambda counts: None, progress: Callable[[str], None] = lambda message: None,
) -> ImportOutcome:
    """Place ``path`` in the tenant/source inbox, import it and merge the tenant's contacts.

    ``on_counts`` gets the file's counts as soon as the merge has committed; the quality assets
    (verdicts, enrichment, tags) run after, unless ``quality`` is false. Content the ledger already
    holds as imported is neither copied nor imported again.
    """
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
    digest = file_digest(path)
    engine = get_engine()
    with engine.connect() as conn:
        known = ledger.file_outcome(conn, tenant_id, source_id, digest)
    if known and known["status"] == "imported":
        with engine.connect() as conn:
            total = merge_store.contact_counts(conn, tenant_id)
        counts = import_counts(known["path"], "already_imported", contacts_total=total)
        on_counts(counts)
        return ImportOutcome(counts)
    folder = ws.source_dir(tenant_id, source_id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        target = place_file(path, real_source_folder(folder))
    except RefusedFile as exc:
        raise SystemExit(f"cannot place {path.name!r} in inbox/{tenant_id}/{source_id}: {exc.why}") from None
    outcome = ImportOutcome(counts={})
    with dg.DagsterInstance.get() as instance, storage_connections_kept(instance):
        _register(instance, ws)
        progress(f"importing {target} ...")
        execute_job("import_job", instance, outcome.failures, f"{tenant_id}/{source_id}",
                    partition_key=import_key(tenant_id, source_id), tags={"tenant": tenant_id, "source": source_id})
        progress(f"merging into the contacts of {tenant_id} ...")
        merged = execute_job("tenant_job", instance, outcome.failures, tenant_id, partition_key=tenant_id,
                             tags={"tenant": tenant_id}, asset_selection=MERGE_ASSETS)
        with engine.connect() as conn:
            row = ledger.file_outcome(conn, tenant_id, source_id, digest)
            total = _contacts_total(merged)
            if total is None:
                total = merge_store.contact_counts(conn, tenant_id)
        if row is None:
            outcome.counts = import_counts(str(target), "failed", contacts_total=total, error="the import run left no ledger row")
        else:
            outcome.counts = import_counts(str(target), row["status"], row, contacts_total=total, error=row["error"])
        on_counts(outcome.counts)
        if quality and outcome.counts["status"] == "imported":
            progress(f"validating, enriching and tagging the contacts of {tenant_id} ...")
            execute_job("tenant_job", instance, outcome.failures, tenant_id, partition_key=tenant_id,
                        tags={"tenant": tenant_id}, asset_selection=QUALITY_ASSETS)
    return outcome


def _contacts_total(result: RunResult) -> int | None:
    """``contacts_total`` of the merge run's ``contacts`` materialization (counted once, by the asset)."""
    for event in result.events:
        if event.is_step_materialization and event.asset_key == MERGE_ASSETS[0]:
            total = event.step_materialization_data.materialization.metadata.get("contacts_total")
            return None if total is None else int(total.value)
    return None


def summary_rows(tenant_ids: list[str]) -> list[dict]:
    with get_engine().connect() as conn:
        return ledger.source_summaries(conn, tenant_ids)


def quality_rows(tenant_ids: list[str]) -> list[dict]:
    """Per tenant: verdict counts, languages and the most used tags."""
    out = []
    with get_engine().connect() as conn:
        for tenant_id in tenant_ids:
            verdicts = quality_store.verdict_counts(conn, tenant_id)
            languages = quality_store.language_counts(conn, tenant_id)
            tags = audiences_store.top_tags(conn, tenant_id, 5)
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
    for row in outcome.campaigns:
        blocked = "; ".join(f"blocked by {b['check']}: {b['reason']}" for b in row.get("blocked", []))
        skipped = sum(row["skipped"].values())
        reasons = " ".join(f"{r}:{n}" for r, n in row["skipped"].items() if n)
        print(f"campaign {row['campaign']}: {row['state']} audience={row['audience']} sent={row['sent']} "
              f"handed_off={row['handed_off']} failed={row['failed']} unknown={row['unknown']} skipped={skipped}"
              + (f" ({reasons})" if reasons else "") + (f" ({blocked})" if blocked else ""))
        for warning in row.get("warnings", []):
            print(f"warning: campaign {row['campaign']}: {warning}")
    for failure in outcome.failures:
        print(f"FAILED {failure}")


def check_addresses_now(addresses: list[str], *, smtp: bool = False, dns: bool = True) -> list[dict]:
    """``email-engine check``: the asset's validation path (same code, same DNS cache) on given addresses.

    Without ``dns``, the offline verdict: syntax and flags only, no network and no database
    (``dns_cached`` is then null: every row has the same keys).
    """
    import polars as pl

    from email_engine_assets.quality.syntax import check_addresses
    from email_engine_assets.quality.validation import syntax_and_flags, validate
    from email_engine_assets.quality.validation_run import validate_batch

    keys = check_addresses(pl.Series(addresses, dtype=pl.String))["email_key"]
    frame = pl.DataFrame({"contact_id": range(len(addresses)), "email": [k or a for k, a in zip(keys, addresses)]},
                         schema={"contact_id": pl.Int64, "email": pl.String})
    if not dns:
        rows = validate(syntax_and_flags(frame), {}).drop("contact_id").iter_rows(named=True)
        return [{"input": given, **row, "dns_cached": None} for given, row in zip(addresses, rows)]
    resources = _resources()
    batch = validate_batch(get_engine(), frame, resources["dns"], resources["smtp_probe"] if smtp else None)
    return [
        {"input": given, **row, "dns_cached": email_domain(row["email"]) in batch.cached_domains}
        for given, row in zip(addresses, batch.frame.drop("contact_id").iter_rows(named=True))
    ]
