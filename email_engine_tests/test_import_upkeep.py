"""A small file's import reads its own rows, not every staged row, whether autovacuum runs or not."""

from __future__ import annotations

import json

import sqlalchemy as sa

from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import import_sources
from email_engine_assets.tenancy.config import SourceConfig, TenantConfig, Workspace

FILES, ROWS_PER_FILE = 400, 100
FIRST_ID = 1_000_000  # ids no ledger row of the test takes


def _stage_many_files(engine: sa.Engine) -> None:
    """40,000 staged rows of 400 files, appended file after file as imports append them."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """INSERT INTO staged_rows (tenant_id, file_id, line_no, email, email_raw)
                   SELECT 'acme', f, l, 'u' || f || '.' || l || '@example.com', 'u' || f || '.' || l || '@example.com'
                   FROM generate_series(:first, :first + :files - 1) f, generate_series(2, :rows + 1) l ORDER BY f, l"""
            ),
            {"first": FIRST_ID, "files": FILES, "rows": ROWS_PER_FILE},
        )


def _rows_read(engine: sa.Engine, file_ids: list[int]) -> int:
    """Rows of staged_rows the server looks at to find the rows of ``file_ids``."""
    with engine.connect() as conn:
        plan = conn.execute(
            sa.text("EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM staged_rows WHERE file_id = ANY(:f)"), {"f": file_ids}
        ).scalar_one()
    plan = plan if isinstance(plan, list) else json.loads(plan)

    def walk(node: dict) -> int:
        own = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
        if node.get("Relation Name") != "staged_rows":
            own = 0
        return own + sum(walk(child) for child in node.get("Plans", []))

    return walk(plan[0]["Plan"])


def test_upkeep_bounds_a_files_lookup_by_its_own_block_ranges(engine):
    _stage_many_files(engine)
    with engine.connect() as conn:
        ledger.keep_staging_searchable(conn)
    # Early, middle and last files: each read within a few BRIN ranges (32 pages, ~5k rows), never the table.
    for file_id in (FIRST_ID, FIRST_ID + FILES // 2, FIRST_ID + FILES - 1):
        assert ROWS_PER_FILE <= _rows_read(engine, [file_id]) < FILES * ROWS_PER_FILE // 4


def test_upkeep_gives_way_to_a_session_holding_the_table_and_the_import_goes_on(engine, tmp_path):
    """Another session holding staged_rows as ANALYZE or VACUUM do delays no file: upkeep is skipped."""
    source = SourceConfig(id="crm", priority=10)
    tenant = TenantConfig(id="acme", name="Acme", sources=[source])
    with engine.begin() as conn:
        ledger.register_workspace(conn, Workspace(root=tmp_path, tenants={"acme": tenant}, digests={"acme": "x"}))
    folder = tmp_path / "crm"
    folder.mkdir()
    (folder / "a.csv").write_text("email\na@example.com\nb@example.com\na@example.com\n")
    _stage_many_files(engine)  # enough change for upkeep to want to analyze
    with engine.connect() as other:
        other.execute(sa.text("LOCK TABLE staged_rows IN SHARE UPDATE EXCLUSIVE MODE"))
        with engine.connect() as conn:
            assert ledger.keep_staging_searchable(conn) == []
        [report] = import_sources(engine, tenant, [(source, folder)])
        other.rollback()
    assert report.status == "imported", report.error
    assert report.counts == {"rows_total": 3, "new": 2, "merged": 0, "duplicates": 1, "rejected": 0}
