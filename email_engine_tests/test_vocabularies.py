"""Each vocabulary is defined once in Python, and the schema's CHECK constraints list exactly it."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.selection import SCALAR_FIELDS
from email_engine_assets.audiences.suppressions import SUPPRESSION_REASONS
from email_engine_assets.campaigns import ledger
from email_engine_assets.campaigns.ledger import SEND_STATES
from email_engine_assets.campaigns.lifecycle import CAMPAIGN_STATES
from email_engine_assets.contacts.fields import CANONICAL_FIELDS, TEXT_FIELDS
from email_engine_assets.contacts.importer import LEDGER_STATUSES
from email_engine_assets.content.composer import SKIP_REASONS as COMPOSE_SKIP_REASONS
from email_engine_assets.feedback.accounting import (
    KEPT_REASONS as ACCOUNTING_KEPT_REASONS,
)
from email_engine_assets.quality.verdict import (
    DOMAIN_STATUSES,
    MAILBOX_STATUSES,
    VERDICTS,
)
from email_engine_assets.sync.diff import SYNC_STATES
from email_engine_resources import dns_client, smtp_probe_client

# (table, column) -> the Python vocabulary its CHECK constraint must list
CHECKED = {
    ("email_validations", "verdict"): VERDICTS,
    ("email_validations", "domain_status"): dns_client.STATUSES,
    ("email_validations", "mailbox_status"): smtp_probe_client.STATUSES,
    ("dns_cache", "status"): dns_client.STATUSES,
    ("import_files", "status"): LEDGER_STATUSES,
    ("suppressions", "reason"): SUPPRESSION_REASONS,
    ("mailwizz_subscribers", "state"): SYNC_STATES,
    ("campaigns", "state"): CAMPAIGN_STATES,
    ("campaign_sends", "state"): SEND_STATES,
    ("accounting_kept_lines", "reason"): ACCOUNTING_KEPT_REASONS,
}


def _check_values(conn: sa.Connection, table: str, column: str) -> list[list[str]]:
    """The quoted literals of each CHECK constraint on ``table.column`` alone."""
    definitions = conn.execute(
        sa.text(
            """SELECT pg_get_constraintdef(con.oid) FROM pg_constraint con
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
               WHERE con.contype = 'c' AND con.conrelid = CAST(:table AS regclass) AND a.attname = :column
                 AND cardinality(con.conkey) = 1"""
        ),
        {"table": table, "column": column},
    ).scalars()
    return [re.findall(r"'([^']*)'::text", d) for d in definitions]


@pytest.mark.parametrize(("table", "column"), sorted(CHECKED))
def test_check_constraint_lists_exactly_the_python_vocabulary(engine, table, column):
    with engine.connect() as conn:
        checks = _check_values(conn, table, column)
    assert len(checks) == 1, f"{table}.{column}: expected one CHECK constraint, found {checks}"
    assert sorted(checks[0]) == sorted(CHECKED[table, column])
    assert len(set(checks[0])) == len(checks[0])


def test_the_verdict_reuses_the_statuses_the_clients_return():
    assert DOMAIN_STATUSES is dns_client.STATUSES
    assert MAILBOX_STATUSES is smtp_probe_client.STATUSES
    assert set(VERDICTS) == {"valid", "risky", "invalid", "unknown"}


@pytest.mark.parametrize("table", ["contacts", "staged_rows"])
def test_contact_tables_have_a_column_per_contact_field(engine, table):
    with engine.connect() as conn:
        columns = set(
            conn.execute(
                sa.text("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = :t"),
                {"t": table},
            ).scalars()
        )
    assert set(CANONICAL_FIELDS) - columns == set()


def test_selection_fields_build_on_the_contact_fields():
    assert set(TEXT_FIELDS) <= set(SCALAR_FIELDS)
    assert {"email", "email_domain", "verdict"} <= set(SCALAR_FIELDS)


def test_the_ledger_skip_states_are_built_from_the_composer_reasons():
    assert ledger.SKIP_REASONS == ("suppressed", *COMPOSE_SKIP_REASONS, "cancelled")
    assert ledger.SKIPPED_STATES == tuple(f"skipped_{r}" for r in ledger.SKIP_REASONS)
    assert set(ledger.SKIPPED_STATES) <= set(SEND_STATES)


def test_an_erased_address_has_one_word_for_rejects_and_suppressions():
    from email_engine_assets.contacts.normalise import REASON_ERASED

    assert REASON_ERASED == "erased" and REASON_ERASED in SUPPRESSION_REASONS
