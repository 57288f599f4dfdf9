"""Apply ``sql/NNN_*.sql`` in order under an advisory lock, recorded in ``schema_migrations``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa

from email_engine_resources.settings import SQL_DIR

# Arbitrary constant: every process that migrates takes the same lock.
MIGRATION_LOCK_ID = 0x454D41494C  # "EMAIL"


class MigrationError(RuntimeError):
    pass


class SchemaNotCurrent(MigrationError):
    """The database lacks migrations this code needs; ``email-engine db upgrade`` applies them."""


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    files = sorted(p for p in sql_dir.glob("*.sql") if p.name[:3].isdigit())
    versions = [p.name.split("_", 1)[0] for p in files]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{sql_dir}: two migrations share a version number: {versions}")
    return files


_UP_TO_DATE: set[tuple[str, Path]] = set()


def upgrade(engine: sa.Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied by this call.

    Idempotent and safe to call concurrently (advisory lock); a process checks each database once.
    """
    key = (engine.url.render_as_string(hide_password=True), sql_dir)
    if key in _UP_TO_DATE:
        return []
    applied = _apply(engine, sql_dir)
    _UP_TO_DATE.add(key)
    return applied


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()


def check_current(engine: sa.Engine, sql_dir: Path = SQL_DIR) -> None:
    """Raise :class:`SchemaNotCurrent` unless every migration file is applied, unchanged.

    Reads ``schema_migrations`` only: runs and sensors check, they never change the schema.
    """
    key = (engine.url.render_as_string(hide_password=True), sql_dir)
    if key in _UP_TO_DATE:
        return
    with engine.connect() as conn:
        has_table = conn.execute(sa.text("SELECT to_regclass('schema_migrations') IS NOT NULL")).scalar_one()
        done = dict(conn.execute(sa.text("SELECT version, sha256 FROM schema_migrations")).all()) if has_table else {}
    missing, changed = [], []
    for path in migration_files(sql_dir):
        version = path.name.split("_", 1)[0]
        if version not in done:
            missing.append(path.name)
        elif done[version] != _digest(path):
            changed.append(path.name)
    if changed:
        raise MigrationError(f"{', '.join(changed)} changed after it was applied; add a new migration instead")
    if missing:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaNotCurrent(
            f"database {where} lacks migration(s) {', '.join(missing)}: run `email-engine db upgrade`"
        )
    _UP_TO_DATE.add(key)


def _apply(engine: sa.Engine, sql_dir: Path) -> list[str]:
    applied: list[str] = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        conn.exec_driver_sql(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   sha256     text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = dict(conn.execute(sa.text("SELECT version, sha256 FROM schema_migrations")).all())
        for path in migration_files(sql_dir):
            version = path.name.split("_", 1)[0]
            body = path.read_text(encoding="utf-8")
            digest = _digest(path)
            if version in done:
                if done[version] != digest:
                    raise MigrationError(
                        f"{path.name} changed after it was applied; add a new migration instead"
                    )
                continue
            conn.exec_driver_sql(body)
            conn.execute(
                sa.text("INSERT INTO schema_migrations (version, name, sha256) VALUES (:v, :n, :s)"),
                {"v": version, "n": path.name, "s": digest},
            )
            applied.append(path.name)
    return applied
