"""Tenant isolation held by the schema: rows naming a contact name it by (tenant_id, contact_id)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

# One minimal row per table that describes a contact; {tenant} and {contact} are filled in.
CHILD_ROWS = {
    "email_validations": "INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok)"
                         " VALUES (:tenant, :contact, 'ann@example.com', 'valid', true)",
    "contact_enrichment": "INSERT INTO contact_enrichment (tenant_id, contact_id, language, language_rule, inputs_sha256)"
                          " VALUES (:tenant, :contact, 'en', 'default', 'x')",
    "tag_assignments": "INSERT INTO tag_assignments (tenant_id, contact_id, tag, provenance)"
                       " VALUES (:tenant, :contact, 'vip', 'manual')",
}

# Every foreign key from a table holding contact_id to contacts, with its columns and delete rule.
_CONTACT_KEYS = """
    SELECT rel.relname AS table_name,
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS columns,
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS referenced,
           con.confdeltype AS on_delete,
           ARRAY(SELECT a.attname::text FROM unnest(con.confdelsetcols) k(n)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS set_null_columns
    FROM pg_constraint con
    JOIN pg_class rel ON rel.oid = con.conrelid
    WHERE con.contype = 'f' AND con.confrelid = 'contacts'::regclass
"""


@pytest.fixture
def two_tenants(engine) -> dict[str, int]:
    """Tenants acme and globex with one contact each: {tenant: contact_id}."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'A', 'x'), ('globex', 'G', 'x')"))
        return dict(
            conn.execute(
                sa.text("INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'ann@example.com'), ('globex', 'gus@example.com')"
                        " RETURNING tenant_id, contact_id")
            ).all()
        )


def _tables_with_contact_id(conn: sa.Connection) -> set[str]:
    return set(
        conn.execute(
            sa.text(
                """SELECT c.table_name FROM information_schema.columns c
                   JOIN information_schema.tables t USING (table_schema, table_name)
                   WHERE c.table_schema = current_schema() AND c.column_name = 'contact_id'
                     AND t.table_type = 'BASE TABLE' AND c.table_name <> 'contacts'"""
            )
        ).scalars()
    )


@pytest.mark.parametrize("table", sorted(CHILD_ROWS))
def test_a_row_of_one_tenant_cannot_point_at_another_tenants_contact(engine, two_tenants, table):
    acme_contact = two_tenants["acme"]
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError, match=f"{table}_contact_fkey"):
        conn.execute(sa.text(CHILD_ROWS[table]), {"tenant": "globex", "contact": acme_contact})
    # the same row under the contact's own tenant is accepted: the tenant mismatch alone was refused
    with engine.begin() as conn:
        conn.execute(sa.text(CHILD_ROWS[table]), {"tenant": "acme", "contact": acme_contact})
        assert conn.execute(sa.text(f"SELECT tenant_id FROM {table}")).scalars().all() == ["acme"]


def test_every_table_with_a_contact_id_references_the_tenant_and_the_contact(engine):
    """Held for tables added later too: the list comes from the migrated schema, not from this file."""
    with engine.connect() as conn:
        tables = _tables_with_contact_id(conn)
        keys = conn.execute(sa.text(_CONTACT_KEYS)).all()
    assert set(CHILD_ROWS) <= tables  # the query sees the tables it should
    problems = []
    for table in sorted(tables):
        own = [k for k in keys if k.table_name == table]
        composite = [k for k in own if k.columns == ["tenant_id", "contact_id"] and k.referenced == ["tenant_id", "contact_id"]]
        if not composite:
            problems.append(f"{table}: no FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id)")
        elif len(own) != len(composite):
            problems.append(f"{table}: also references contacts by another key: {[k.columns for k in own]}")
        for k in composite:
            cascade = k.on_delete == "c"
            set_null_contact = k.on_delete == "n" and k.set_null_columns == ["contact_id"]
            if not (cascade or set_null_contact):
                problems.append(f"{table}: ON DELETE must be CASCADE or SET NULL (contact_id), got {k.on_delete!r} {k.set_null_columns}")
    assert problems == []


def test_primary_keys_of_contact_rows_start_with_tenant_and_contact(engine):
    with engine.connect() as conn:
        keys = dict(
            conn.execute(
                sa.text(
                    """SELECT rel.relname, ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i)
                       FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
                       WHERE con.contype = 'p' AND rel.relname = ANY(:tables)"""
                ),
                {"tables": list(CHILD_ROWS)},
            ).all()
        )
    assert {table: columns[:2] for table, columns in keys.items()} == {t: ["tenant_id", "contact_id"] for t in CHILD_ROWS}


def test_erasing_a_contact_removes_what_describes_it_and_nothing_of_the_other_tenant(engine, two_tenants):
    with engine.begin() as conn:
        for tenant, contact in two_tenants.items():
            for insert in CHILD_ROWS.values():
                conn.execute(sa.text(insert), {"tenant": tenant, "contact": contact})
        conn.execute(sa.text("DELETE FROM contacts WHERE contact_id = :c"), {"c": two_tenants["acme"]})
        left = {t: conn.execute(sa.text(f"SELECT array_agg(tenant_id) FROM {t}")).scalar_one() for t in CHILD_ROWS}
    assert left == {t: ["globex"] for t in CHILD_ROWS}


def test_a_row_that_outlives_its_contact_keeps_the_tenant_and_loses_the_person(engine, two_tenants):
    """The rule written in sql/003 for sends and events, on this server (PostgreSQL 15+).

    The table lives in a transaction that is rolled back: the schema is left as migrated.
    """
    with engine.connect() as conn:
        conn.exec_driver_sql(
            """CREATE TABLE outliving (
                   tenant_id  text NOT NULL,
                   contact_id bigint,
                   FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, contact_id) ON DELETE SET NULL (contact_id)
               )"""
        )
        conn.execute(sa.text("INSERT INTO outliving VALUES ('acme', :c)"), {"c": two_tenants["acme"]})
        conn.execute(sa.text("DELETE FROM contacts WHERE contact_id = :c"), {"c": two_tenants["acme"]})
        assert conn.execute(sa.text("SELECT tenant_id, contact_id FROM outliving")).all() == [("acme", None)]
        with pytest.raises(sa.exc.IntegrityError, match="outliving_tenant_id_contact_id_fkey"):
            with conn.begin_nested():
                conn.execute(sa.text("INSERT INTO outliving VALUES ('acme', :c)"), {"c": two_tenants["globex"]})
        conn.rollback()
