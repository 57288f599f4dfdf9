"""SQL of the metrics: the maintained counts (``sql/033_metric_counts.sql``) and the small tables
counted at scrape time. Every query here is cheap at millions of ledger rows and events."""

from __future__ import annotations

import sqlalchemy as sa

# Arbitrary constant: one folding of the deltas at a time ("MTRC").
COMPACT_LOCK_ID = 0x4D545243


def compact_counts(conn: sa.Connection) -> bool:
    """Fold the committed deltas into ``metric_counts`` in the caller's transaction; False when
    another scrape is folding them now (the reads below count the deltas either way)."""
    if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": COMPACT_LOCK_ID}).scalar():
        return False
    conn.execute(sa.text(
        """WITH gone AS (DELETE FROM metric_count_deltas RETURNING family, tenant_id, k1, k2, n),
                summed AS (SELECT family, tenant_id, k1, k2, sum(n) AS n FROM gone GROUP BY 1, 2, 3, 4)
           INSERT INTO metric_counts AS c (family, tenant_id, k1, k2, n)
           SELECT * FROM summed ORDER BY 1, 2, 3, 4
           ON CONFLICT (family, tenant_id, k1, k2) DO UPDATE SET n = c.n + excluded.n"""
    ))
    conn.execute(sa.text("DELETE FROM metric_counts WHERE n = 0"))
    return True


_COUNTS = """SELECT tenant_id, k1, k2, sum(n)::bigint AS n FROM (
                 SELECT tenant_id, k1, k2, n FROM metric_counts WHERE family = :f
                 UNION ALL
                 SELECT tenant_id, k1, k2, n FROM metric_count_deltas WHERE family = :f
             ) c GROUP BY 1, 2, 3 HAVING sum(n) <> 0"""


def ledger_counts(conn: sa.Connection) -> list[tuple[str, str, str, int]]:
    """Ledger rows ``(tenant, transport, state, n)``; the transport is the campaign's (read now)."""
    rows = conn.execute(sa.text(
        f"""SELECT c.tenant_id, coalesce(k.transport, 'unknown') AS transport, c.k2 AS state, sum(c.n)::bigint AS n
            FROM ({_COUNTS}) c LEFT JOIN campaigns k ON k.tenant_id = c.tenant_id AND k.campaign = c.k1
            GROUP BY 1, 2, 3"""
    ), {"f": "ledger"}).all()
    return [(r.tenant_id, r.transport, r.state, int(r.n)) for r in rows]


def event_counts(conn: sa.Connection) -> list[tuple[str, str, str, int]]:
    """Delivery events ``(tenant, event type, key, n)``: the key is the bounce class of a bounce, who
    made an open or click ('machine', 'person', '' unclassified: :func:`.families.event_labels`), else ''."""
    return [(r.tenant_id, r.k1, r.k2, int(r.n)) for r in conn.execute(sa.text(_COUNTS), {"f": "events"})]


def suppression_counts(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """Suppressions ``(tenant, reason, n)``."""
    return [(r.tenant_id, r.k1, int(r.n)) for r in conn.execute(sa.text(_COUNTS), {"f": "suppressions"})]


def import_file_counts(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """Import files ``(tenant, status, n)`` (one row per file: a small table)."""
    rows = conn.execute(sa.text("SELECT tenant_id, status, count(*) AS n FROM import_files GROUP BY 1, 2")).all()
    return [(r.tenant_id, r.status, int(r.n)) for r in rows]


def inbox_backlog(conn: sa.Connection) -> list[tuple[str, int, float]]:
    """Webhook inbox rows not applied yet ``(tenant, rows, age of the oldest in seconds)``, read
    on the partial index of pending rows."""
    rows = conn.execute(sa.text(
        """SELECT p.tenant_id, p.n, extract(epoch FROM now() - w.received_at) AS age
           FROM (SELECT tenant_id, count(*) AS n, min(id) AS first FROM webhook_inbox
                 WHERE applied_at IS NULL GROUP BY 1) p
           JOIN webhook_inbox w ON w.id = p.first"""
    )).all()
    return [(r.tenant_id, int(r.n), max(float(r.age), 0.0)) for r in rows]
