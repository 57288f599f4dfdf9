"""The webhook inbox sensor: new ``webhook_inbox`` rows -> a ``delivery_events`` run per tenant.

The cursor is the highest row id seen. A tick looks at no more than :data:`MAX_ROWS_PER_TICK` new
rows (one index range scan), and requests one run per tenant among them, keyed by the tenant and
its highest new id (the same rows never start two runs). Contacts pushes need nothing more: the
run writes them into the inbox, where the inbox sensor finds them like any dropped file.

Ids are drawn before a row commits, so a row can become visible after a higher id was seen; such
a row (and a row a failed run left) is found by a second, small query over the unapplied rows at
or below the cursor that are older than :data:`LATE_AFTER_S`.
"""

from __future__ import annotations

import dagster as dg

from email_engine_assets.feedback.assets import delivery_events
from email_engine_assets.feedback.inbox_store import (
    late_rows_by_tenant,
    new_rows_by_tenant,
)
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources.postgres import PostgresResource

MAX_ROWS_PER_TICK = 50_000
MAX_LATE_TENANTS = 200
LATE_AFTER_S = 120


def _cursor(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


@dg.sensor(
    asset_selection=[delivery_events],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New webhook inbox rows (MailWizz hits, contacts pushes): applies them, one delivery_events run per tenant.",
)
def webhook_inbox_sensor(context: dg.SensorEvaluationContext, db: PostgresResource) -> dg.SensorResult:
    after = _cursor(context.cursor)
    with db.engine().connect() as conn:
        new, last = new_rows_by_tenant(conn, after, MAX_ROWS_PER_TICK)
        late = late_rows_by_tenant(conn, after, LATE_AFTER_S, MAX_LATE_TENANTS) if after else {}
    requests = [dg.RunRequest(run_key=f"webhooks:{t}:{i}", partition_key=t) for t, i in sorted(new.items())]
    requests += [dg.RunRequest(run_key=f"webhooks:{t}:late:{i}", partition_key=t) for t, i in sorted(late.items()) if t not in new]
    tenants = sorted({r.partition_key for r in requests})
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name)) if tenants else set()
    missing = [t for t in tenants if t not in known]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[tenant_partitions.build_add_request(missing)] if missing else [],
        cursor=str(last),
        skip_reason=None if requests else "no new webhook rows",
    )
