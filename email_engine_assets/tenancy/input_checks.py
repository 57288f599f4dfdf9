"""The ``inputs_read`` asset check: red (severity ERROR) while an input of the asset's kinds is unread.

Each asset that reads inputs declares :func:`inputs_read_spec` and returns :func:`inputs_read_result`
after its read pass recorded what it met (:mod:`email_engine_assets.tenancy.input_problems_store`).
The check is not blocking: what was read still flows downstream (the suppressions of the feedback
that was read); a send is held back by the ``sender_reputation`` check instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.tenancy.input_problems import INPUTS_READ, described
from email_engine_assets.tenancy.input_problems_store import unread_inputs


def inputs_read_spec(asset: str, kinds: Sequence[str]) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(INPUTS_READ, asset=asset,
                             description=f"every input read ({', '.join(kinds)}); fails naming each one that was not")


def inputs_read_result(engine: sa.Engine, tenant_id: str, kinds: Sequence[str], what: str) -> dg.AssetCheckResult:
    with engine.connect() as conn:
        problems = unread_inputs(conn, [tenant_id], kinds).get(tenant_id, [])
    return dg.AssetCheckResult(
        check_name=INPUTS_READ, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
        description=described(problems, what),
        metadata={"tenant": tenant_id, "unread": len(problems),
                  "inputs": dg.MetadataValue.json([{"kind": p.kind, "name": p.name, "reason": p.reason} for p in problems[:50]])},
    )
