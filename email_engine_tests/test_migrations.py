"""The schema changes only through ``db upgrade`` and the entry points; runs check it and say what to do."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from email_engine_resources import migrations
from email_engine_resources import postgres as database
from email_engine_resources.postgres import PostgresResource


@dg.asset
def contact_count(db: PostgresResource) -> int:
    with db.engine().connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM contacts")).scalar_one()


def _tables(url: str) -> set[str]:
    with database.get_engine(url).connect() as conn:
        return set(conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())


def _failure(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.is_failure]
    return "\n".join(str(e.event_specific_data.error) for e in failures if getattr(e.event_specific_data, "error", None))


def test_a_run_on_an_unmigrated_database_fails_naming_the_upgrade_command(scratch_database):
    result = dg.materialize([contact_count], resources={"db": PostgresResource(url=scratch_database)}, raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert "email-engine db upgrade" in message and "001_foundation.sql" in message
    assert _tables(scratch_database) == set()  # checking changed nothing: no table, not even the ledger

    migrations.upgrade(database.get_engine(scratch_database))
    result = dg.materialize([contact_count], resources={"db": PostgresResource(url=scratch_database)})
    assert result.output_for_node("contact_count") == 0


def test_the_code_locations_database_resource_checks_the_schema_too(scratch_database, monkeypatch):
    from email_engine_assets.definitions import fixed_at_launch

    monkeypatch.setenv(database.DATABASE_URL_ENV, scratch_database)
    resources = fixed_at_launch({"db": PostgresResource()})
    result = dg.materialize([contact_count], resources=resources, raise_on_error=False)
    assert not result.success and "email-engine db upgrade" in _failure(result)
    migrations.upgrade(database.get_engine(scratch_database))
    assert dg.materialize([contact_count], resources=resources).output_for_node("contact_count") == 0


def test_building_an_engine_does_not_migrate(scratch_database):
    PostgresResource(url=scratch_database).engine()
    assert "schema_migrations" not in _tables(scratch_database)
