"""Email verdicts, the shared DNS cache, enrichment rows and tag assignments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl
import sqlalchemy as sa

from email_engine_assets.quality.verdict import VERDICTS
from email_engine_resources.dns_client import DomainResult
from email_engine_resources.frames import copy_frame, read_frame

CONTACTS_PER_CHUNK = 100_000

ContactRange = tuple[int, int]  # first and last contact id, inclusive

# The per-range reads repeat the range on every table they join (``v.contact_id BETWEEN …`` beside
# ``c.contact_id BETWEEN …``): PostgreSQL does not carry a range across a join, and without it a
# chunk reads (and sorts or hashes) the tenant's whole joined table, so a run grows with the square
# of the tenant. With it, each side is an index range scan on its (tenant_id, contact_id) key.

ANALYZE_MIN_ROWS = 50
ANALYZE_SHARE = 0.1


def analyze_after_bulk_write(conn: sa.Connection, table: str, written: int) -> bool:
    """ANALYZE ``table`` when ``written`` rows is large against what its statistics know.

    Autovacuum may be off (it is on these machines): without this, a table filled by a run keeps
    the statistics of its empty self and the next asset's plans treat it as empty. The rule is
    autovacuum's own (50 rows + 10 % of the table's last counted rows), so small writes on large
    tables cost nothing; ANALYZE samples a fixed number of rows, so it stays cheap at 10M.
    """
    known = conn.execute(sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}).scalar_one()
    if written < ANALYZE_MIN_ROWS + ANALYZE_SHARE * known:
        return False
    conn.exec_driver_sql(f"ANALYZE {table}")
    return True


def contact_ranges(conn: sa.Connection, tenant_id: str, size: int = CONTACTS_PER_CHUNK) -> list[ContactRange]:
    """The tenant's contacts cut into id ranges of ``size`` contacts each, in id order.

    One ordered pass over the tenant's ids; the tenant-level assets then read, compute and write
    one range at a time, so their memory follows ``size``, not the tenant. Contacts created after
    this call fall outside every range and wait for the next run.
    """
    rows = conn.execute(
        sa.text(
            """SELECT min(contact_id), max(contact_id) FROM (
                   SELECT contact_id, (row_number() OVER (ORDER BY contact_id) - 1) / :n AS chunk
                   FROM contacts WHERE tenant_id = :t) numbered
               GROUP BY chunk ORDER BY chunk"""
        ),
        {"t": tenant_id, "n": size},
    )
    return [(first, last) for first, last in rows]


def contacts_due_for_validation(
    conn: sa.Connection, tenant_id: str, max_age_days: int, unknown_age_hours: int, ids: ContactRange
) -> pl.DataFrame:
    """Contacts of the range with no verdict, one for another address, a verdict older than
    ``max_age_days``, or an ``unknown`` verdict (resolver down, timeouts, probe deferred) older than
    ``unknown_age_hours``."""
    return read_frame(
        conn,
        """SELECT c.contact_id, c.email FROM contacts c
           LEFT JOIN email_validations v ON v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id
                                            AND v.contact_id BETWEEN :first AND :last
           WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last
                 AND (v.contact_id IS NULL OR v.email <> c.email
                      OR v.checked_at < now() - make_interval(days => :d)
                      OR (v.verdict = 'unknown' AND v.checked_at < now() - make_interval(hours => :h)))
           ORDER BY c.contact_id""",
        {"t": tenant_id, "d": max_age_days, "h": unknown_age_hours, "first": ids[0], "last": ids[1]},
        {"contact_id": pl.Int64, "email": pl.String},
    )


def fresh_domains(conn: sa.Connection, domains: Iterable[str]) -> dict[str, DomainResult]:
    rows = conn.execute(
        sa.text(
            """SELECT domain, status, mx_hosts, detail, ttl_s FROM dns_cache
               WHERE domain = ANY(:d) AND expires_at > now()"""
        ),
        {"d": list(domains)},
    )
    return {r.domain: DomainResult(r.domain, r.status, tuple(r.mx_hosts), r.ttl_s, r.detail) for r in rows}


def store_domains(conn: sa.Connection, results: Mapping[str, DomainResult]) -> None:
    if not results:
        return
    frame = pl.DataFrame(
        {
            "domain": [r.domain for r in results.values()],
            "status": [r.status for r in results.values()],
            "mx_hosts": [list(r.mx_hosts) for r in results.values()],
            "detail": [r.detail for r in results.values()],
            "ttl_s": [r.ttl for r in results.values()],
        },
        schema={"domain": pl.String, "status": pl.String, "mx_hosts": pl.List(pl.String), "detail": pl.String, "ttl_s": pl.Int64},
    )
    conn.exec_driver_sql("CREATE TEMP TABLE dns_batch (LIKE dns_cache INCLUDING DEFAULTS) ON COMMIT DROP")
    conn.exec_driver_sql("ALTER TABLE dns_batch ALTER COLUMN expires_at DROP NOT NULL")
    copy_frame(conn, "dns_batch", frame, ["domain", "status", "mx_hosts", "detail", "ttl_s"])
    conn.exec_driver_sql(
        """INSERT INTO dns_cache (domain, status, mx_hosts, detail, ttl_s, checked_at, expires_at)
           SELECT domain, status, mx_hosts, detail, ttl_s, now(), now() + make_interval(secs => ttl_s) FROM dns_batch
           ON CONFLICT (domain) DO UPDATE SET status = EXCLUDED.status, mx_hosts = EXCLUDED.mx_hosts,
               detail = EXCLUDED.detail, ttl_s = EXCLUDED.ttl_s, checked_at = EXCLUDED.checked_at, expires_at = EXCLUDED.expires_at"""
    )


def write_validations(conn: sa.Connection, tenant_id: str, frame: pl.DataFrame) -> None:
    """Store the verdicts of ``frame`` (caller holds the tenant's ``email_validations`` lock)."""
    _write_per_contact(conn, "email_validations", "checked_at", tenant_id, frame)


def _write_per_contact(conn: sa.Connection, table: str, stamp: str, tenant_id: str, frame: pl.DataFrame) -> None:
    """Upsert ``frame`` (``contact_id`` and columns of ``table``) into ``table`` keyed on
    (tenant_id, contact_id), setting ``stamp`` to now().

    One ``INSERT … ON CONFLICT`` from a COPY-filled batch table: no join against ``table``, whose
    statistics may still say it is empty on a first run (a join then turns into a quadratic nested loop).
    """
    cols = list(frame.columns)
    batch = f"{table}_batch"
    conn.exec_driver_sql(f"CREATE TEMP TABLE {batch} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    copy_frame(conn, batch, frame.with_columns(tenant_id=pl.lit(tenant_id)), ["tenant_id", *cols])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "contact_id")
    conn.exec_driver_sql(
        f"""INSERT INTO {table} (tenant_id, {", ".join(cols)}, {stamp})
            SELECT tenant_id, {", ".join(cols)}, now() FROM {batch}
            ON CONFLICT (tenant_id, contact_id) DO UPDATE SET {updates}, {stamp} = now()"""
    )


def record_validation_run(conn: sa.Connection, tenant_id: str, *, checked: int, domains: int, dns_lookups: int) -> dict:
    """Store this run's verdict counts over the whole tenant; returns them with the previous invalid share."""
    previous = conn.execute(
        sa.text("SELECT invalid_share FROM validation_runs WHERE tenant_id = :t ORDER BY run_id DESC LIMIT 1"),
        {"t": tenant_id},
    ).scalar()
    counts = dict(
        conn.execute(
            sa.text("SELECT verdict, count(*) FROM email_validations WHERE tenant_id = :t GROUP BY verdict"), {"t": tenant_id}
        ).all()
    )
    total = sum(counts.values())
    stats = {v: int(counts.get(v, 0)) for v in VERDICTS}
    share = stats["invalid"] / total if total else 0.0
    conn.execute(
        sa.text(
            """INSERT INTO validation_runs (tenant_id, checked, domains, dns_lookups, valid, risky, invalid, unknown, invalid_share)
               VALUES (:t, :checked, :domains, :lookups, :valid, :risky, :invalid, :unknown, :share)"""
        ),
        {"t": tenant_id, "checked": checked, "domains": domains, "lookups": dns_lookups, "share": share, **stats},
    )
    return {**stats, "invalid_share": share, "previous_invalid_share": previous}


def contacts_without_verdict(conn: sa.Connection, tenant_id: str) -> int:
    return conn.execute(
        sa.text(
            """SELECT count(*) FROM contacts c WHERE c.tenant_id = :t AND NOT EXISTS (
                   SELECT 1 FROM email_validations v WHERE v.tenant_id = c.tenant_id AND v.contact_id = c.contact_id
                   AND (v.verdict <> 'unknown' OR cardinality(v.reasons) > 0))"""
        ),
        {"t": tenant_id},
    ).scalar_one()


# --- enrichment --------------------------------------------------------------------------------

_ENRICH_INPUTS = "encode(sha256(convert_to(concat_ws('|', c.email, c.language, c.country, c.phone, CAST(:lang AS text)), 'UTF8')), 'hex')"


def contacts_due_for_enrichment(conn: sa.Connection, tenant_id: str, default_language: str, ids: ContactRange) -> pl.DataFrame:
    """Contacts of the range never enriched or whose inputs (address, raw language/country/phone, tenant default) changed."""
    return read_frame(
        conn,
        f"""SELECT c.contact_id, c.email AS email_key, c.language AS language_raw, c.country AS country_raw,
                   c.phone AS phone_raw, {_ENRICH_INPUTS} AS inputs_sha256
            FROM contacts c LEFT JOIN contact_enrichment e ON e.tenant_id = c.tenant_id AND e.contact_id = c.contact_id
                                                        AND e.contact_id BETWEEN :first AND :last
            WHERE c.tenant_id = :t AND c.contact_id BETWEEN :first AND :last
                  AND (e.contact_id IS NULL OR e.inputs_sha256 <> {_ENRICH_INPUTS})
            ORDER BY c.contact_id""",
        {"t": tenant_id, "lang": default_language, "first": ids[0], "last": ids[1]},
        {"contact_id": pl.Int64, "email_key": pl.String, "language_raw": pl.String, "country_raw": pl.String,
         "phone_raw": pl.String, "inputs_sha256": pl.String},
    )


def write_enrichment(conn: sa.Connection, tenant_id: str, frame: pl.DataFrame) -> None:
    """Store the enrichment of ``frame`` (caller holds the tenant's ``contact_enrichment`` lock)."""
    _write_per_contact(conn, "contact_enrichment", "updated_at", tenant_id, frame)


# --- SMTP probe limits ---------------------------------------------------------------------------


def take_probe_slot(conn: sa.Connection, ip: str, *, max_sessions: int, window_s: int) -> bool:
    """Count one SMTP session towards ``ip`` in the current window; False when the window is full.

    Windows are fixed (``window_s`` seconds from the epoch) and shared by every process through
    ``probe_slots``; the conditional upsert is atomic, so concurrent callers never exceed
    ``max_sessions``. Older windows of the same IP are removed on the way.
    """
    window = conn.execute(
        sa.text("SELECT to_timestamp(floor(extract(epoch FROM clock_timestamp()) / :w) * :w)"), {"w": window_s}
    ).scalar_one()
    conn.execute(sa.text("DELETE FROM probe_slots WHERE ip = CAST(:ip AS inet) AND window_start < :win"), {"ip": ip, "win": window})
    taken = conn.execute(
        sa.text(
            """INSERT INTO probe_slots (ip, window_start, sessions) VALUES (CAST(:ip AS inet), :win, 1)
               ON CONFLICT (ip, window_start) DO UPDATE SET sessions = probe_slots.sessions + 1
               WHERE probe_slots.sessions < :max
               RETURNING sessions"""
        ),
        {"ip": ip, "win": window, "max": max_sessions},
    ).first()
    return taken is not None


def verdict_counts(conn: sa.Connection, tenant_id: str) -> dict[str, int]:
    rows = conn.execute(sa.text("SELECT verdict, count(*) FROM email_validations WHERE tenant_id = :t GROUP BY 1"), {"t": tenant_id})
    return {verdict: int(n) for verdict, n in rows}


def language_counts(conn: sa.Connection, tenant_id: str) -> list[tuple[str, int]]:
    """Contacts per language, most frequent first."""
    rows = conn.execute(
        sa.text("SELECT language, count(*) FROM contact_enrichment WHERE tenant_id = :t GROUP BY 1 ORDER BY 2 DESC, 1"),
        {"t": tenant_id},
    )
    return [(language, int(n)) for language, n in rows]
