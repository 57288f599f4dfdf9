"""tenant_files[tenant]: the tenant's own files read -- its tenant file, campaign files and template files.

Each run of the asset reads ``tenants/<tenant>.yaml``, records the valid ``campaigns/<tenant>/*.yaml``
in the ``campaigns`` table (as the due-campaign sensor does) and loads ``templates/<tenant>/*.yaml``;
each file it could not read is the tenant's input problem (``tenant_file``, ``campaign_file``,
``template_file``) until a later read succeeds or the file is gone, and fails the ``inputs_read`` check.
A tenant whose own file is broken is still a partition: its check names that file.
"""

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.campaigns.registry import register_campaigns
from email_engine_assets.content.templates import TEMPLATES_DIR, load_templates
from email_engine_assets.feedback.mailwizz_poll import forget_removed_transports
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.input_checks import inputs_read_result, inputs_read_spec
from email_engine_assets.tenancy.input_problems import (
    CAMPAIGN_FILE,
    INBOX_FILE,
    TEMPLATE_FILE,
    TENANT_FILE,
    TENANT_FILE_KINDS,
    InputProblem,
)
from email_engine_assets.tenancy.input_problems_store import (
    forget_other_scopes,
    replace_problems,
)
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_assets.tenancy.tenant_runs import SINGLE_RUN, TENANT_WORKERS, each_tenant, run_tenants
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource


def read_tenant_files(engine: sa.Engine, root: Path, tenant_id: str) -> dict[str, int]:
    """Read the tenant's files, record its campaigns and what could not be read; counts of what was read."""
    ws = load_tenants(root, [tenant_id])
    tenant = ws.tenants.get(tenant_id)
    if tenant is None:
        problems = [InputProblem(TENANT_FILE, f"tenants/{tenant_id}.yaml", ws.errors.get(tenant_id) or "no such file")]
        with engine.begin() as conn:  # its campaign and template files wait for a tenant file that reads
            replace_problems(conn, tenant_id, [TENANT_FILE], problems)
        return {"tenant_file": 0, "campaigns": 0, "templates": 0, "unread": len(problems)}
    registered = register_campaigns(engine, ws)
    templates = load_templates(root, tenant_id)
    problems = [InputProblem(CAMPAIGN_FILE, key, why) for key, why in sorted(registered.problems.items())]
    problems += [InputProblem(TEMPLATE_FILE, f"{TEMPLATES_DIR}/{tenant_id}/{name}" if name else f"{TEMPLATES_DIR}/{tenant_id}", why)
                 for name, why in sorted(templates.errors.items())]
    with engine.begin() as conn:
        replace_problems(conn, tenant_id, TENANT_FILE_KINDS, problems)
        # what no pass will read again: the inbox files of a source, the polls of a transport, removed from the file
        forget_other_scopes(conn, tenant_id, INBOX_FILE, ["", *(s.id for s in tenant.sources)])
        forget_removed_transports(conn, tenant)
    return {"tenant_file": 1, "campaigns": len(registered.files.campaigns), "templates": len(templates.templates),
            "unread": len(problems)}


@dg.asset(
    partitions_def=tenant_partitions,
    group_name="campaigns",
    kinds={"yaml"},
    check_specs=[inputs_read_spec("tenant_files", TENANT_FILE_KINDS)],
    backfill_policy=SINGLE_RUN,
    description="The tenant's own files read: its tenant file, its campaign files (recorded in the campaigns table) "
                "and its template files; the inputs_read check names each file that could not be read and why.",
)
def tenant_files(context: dg.AssetExecutionContext, db: PostgresResource, workspace: WorkspaceResource):
    engine = db.engine()

    def one(tenant_id: str) -> dg.MaterializeResult:
        counts = read_tenant_files(engine, workspace.root(), tenant_id)
        return dg.MaterializeResult(
            metadata=counts,
            check_results=[inputs_read_result(engine, tenant_id, TENANT_FILE_KINDS, "tenant, campaign and template files")],
        )

    yield from each_tenant(context, run_tenants(context), one, workers=TENANT_WORKERS)
