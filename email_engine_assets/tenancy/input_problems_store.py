"""SQL of ``input_problems``: the inputs each tenant's last read passes could not read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from email_engine_assets.tenancy.input_problems import InputProblem


def replace_problems(conn: sa.Connection, tenant_id: str, kinds: Sequence[str], problems: Iterable[InputProblem],
                     scopes: Sequence[str] | None = None) -> None:
    """What one read pass met: the tenant's earlier problems of ``kinds`` (only those of ``scopes``
    when given) are replaced by ``problems``; one still there keeps its ``first_seen``."""
    first: dict[str, InputProblem] = {}
    for problem in problems:  # one per name (two transports may share a directory): the first met
        first.setdefault(problem.name, problem)
    problems = list(first.values())
    names = list(first)
    params = {"t": tenant_id, "kinds": list(kinds), "names": names, "scopes": list(scopes or [])}
    conn.execute(
        sa.text("""DELETE FROM input_problems WHERE tenant_id = :t AND kind = ANY(:kinds) AND NOT (name = ANY(:names))
                   AND (:all_scopes OR scope = ANY(:scopes))"""),
        {**params, "all_scopes": scopes is None},
    )
    if problems:
        conn.execute(
            sa.text("""INSERT INTO input_problems (tenant_id, kind, name, scope, reason)
                       VALUES (:t, :kind, :name, :scope, :reason)
                       ON CONFLICT (tenant_id, kind, name) DO UPDATE
                       SET reason = EXCLUDED.reason, scope = EXCLUDED.scope, last_seen = now()"""),
            [{"t": tenant_id, "kind": p.kind, "name": p.name, "scope": p.scope, "reason": p.reason} for p in problems],
        )


def unread_inputs(conn: sa.Connection, tenant_ids: Sequence[str] | None = None,
                  kinds: Sequence[str] | None = None) -> dict[str, list[InputProblem]]:
    """The problems recorded now, by tenant (all tenants, or those named), oldest first."""
    rows = conn.execute(
        sa.text("""SELECT tenant_id, kind, name, scope, reason FROM input_problems
                   WHERE (:all_tenants OR tenant_id = ANY(:tenants)) AND (:all_kinds OR kind = ANY(:kinds))
                   ORDER BY tenant_id, first_seen, kind, name"""),
        {"all_tenants": tenant_ids is None, "tenants": list(tenant_ids or []),
         "all_kinds": kinds is None, "kinds": list(kinds or [])},
    ).all()
    out: dict[str, list[InputProblem]] = {}
    for r in rows:
        out.setdefault(r.tenant_id, []).append(InputProblem(r.kind, r.name, r.reason, r.scope))
    return out


def forget_tenants_except(conn: sa.Connection, kinds: Sequence[str], tenant_ids: Sequence[str]) -> None:
    """Problems of ``kinds`` of tenants that are gone from the workspace (their tenant file removed)."""
    conn.execute(sa.text("DELETE FROM input_problems WHERE kind = ANY(:kinds) AND NOT (tenant_id = ANY(:tenants))"),
                 {"kinds": list(kinds), "tenants": list(tenant_ids)})


def forget_other_scopes(conn: sa.Connection, tenant_id: str, kind: str, scopes: Sequence[str]) -> int:
    """The tenant's problems of ``kind`` outside ``scopes``: the inputs of a source or transport the
    tenant file no longer has, which no pass will read again."""
    return conn.execute(
        sa.text("DELETE FROM input_problems WHERE tenant_id = :t AND kind = :k AND NOT (scope = ANY(:scopes))"),
        {"t": tenant_id, "k": kind, "scopes": list(scopes)},
    ).rowcount
