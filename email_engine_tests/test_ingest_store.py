"""Staging, in-file duplicates and the two merge paths (single staged row / aggregated) on a real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.store import (
    import_tag_assignments,
    stage_import_tags,
    sync_tag_assignments,
)
from email_engine_assets.contacts import store as ledger
from email_engine_assets.contacts.importer import import_file, read_ahead
from email_engine_assets.contacts.merge_store import (
    field_sources,
    merge_staged,
    unbalanced_imports,
)
from email_engine_assets.contacts.normalise import FirstRows, normalise_chunk
from email_engine_assets.tenancy.config import SourceConfig, TenantConfig, Workspace

CRM = SourceConfig(id="crm", priority=20)
EVENTS = SourceConfig(id="events", priority=10)
TENANT = TenantConfig(id="acme", name="Acme", sources=[CRM, EVENTS])
COLUMNS = "email, first_name, last_name, company, phone, tags, sources, field_sources, primary_priority, primary_file_id, primary_line_no"

FILES = [
    (CRM, "crm1.csv", "email,first_name,last_name,company,tags\n"
                      "a@example.com,Ann,Lee,,vip;b2b\nb@example.com,Bob,,Bobco,\nc@example.com,,Cy,,lead\n"),
    (EVENTS, "ev1.csv", "email,first_name,company,phone,tags\n"
                        "b@example.com,Robert,Events Inc,+33 1,Salon Été\nd@example.com,Dee,,,\n"
                        "a@example.com,Anna,Annco,,vip\n"),
    (CRM, "crm2.csv", "email,first_name,company\nc@example.com,Cyril,\nb@example.com,,Bob Ltd\n"),
]


@pytest.fixture
def tenant(engine):
    with engine.begin() as conn:
        ledger.register_workspace(conn, Workspace(root=Path("."), tenants={"acme": TENANT}, digests={"acme": "x"}))
    return TENANT


def _import(engine, tmp_path: Path, source: SourceConfig, name: str, text: str) -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    report = import_file(engine, TENANT, source, path)
    assert report.status == "imported", report.error
    return report.counts


def _merge(engine, **kwargs) -> dict:
    with engine.begin() as conn:
        return merge_staged(conn, "acme", **kwargs)


def _contacts(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT {COLUMNS} FROM contacts WHERE tenant_id = 'acme' ORDER BY email")).all()


def _synced_tags(engine) -> dict[str, list[str]]:
    """``contacts.tags`` after its one writer, the tag-assignment sync, took the import tags."""
    with engine.begin() as conn:
        every_contact = (0, 2**62)
        stage_import_tags(conn, "acme")
        sync_tag_assignments(conn, "acme", import_tag_assignments(conn, every_contact), every_contact)
        return dict(conn.execute(sa.text("SELECT email, tags FROM contacts WHERE tenant_id = 'acme'")).all())


def _forget_imports(engine) -> None:
    """Back to a tenant with no import (ids restart, so provenance compares equal)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE import_files, staged_rows, rejected_rows, contacts RESTART IDENTITY CASCADE")


def test_read_ahead_yields_every_item_in_order_from_another_thread():
    producers: set[int] = set()

    def items():
        for i in range(5):
            producers.add(threading.get_ident())
            yield i

    assert list(read_ahead(items())) == [0, 1, 2, 3, 4]
    assert producers and threading.get_ident() not in producers


def test_read_ahead_raises_the_producers_error_in_the_caller():
    def items():
        yield 1
        raise ValueError("line 7: broken record")

    seen = []
    with pytest.raises(ValueError, match="line 7"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1]


@pytest.mark.parametrize("flag_while_staging", [True, False], ids=["flagged while staging", "flagged at the end"])
def test_repeats_across_chunks_keep_the_first_line_and_balance(engine, tenant, flag_while_staging):
    first_rows = FirstRows() if flag_while_staging else None
    with ledger.file_session(engine) as conn, conn.begin():
        file_id = ledger.claim_file(conn, tenant_id="acme", source_id="crm", path="x.csv", sha256="d1", size=1, priority=20, run_id=None)
        ledger.tenant_lock(conn, "acme")
        chunks = [
            ([2, 3, 4], ["a@example.com", "B@example.com", "a@example.com"]),
            ([5, 6, 7], ["b@example.com", "c@example.com", "not an address"]),
        ]
        for lines, emails in chunks:
            raw = pl.DataFrame({"__line": lines, "__raw": emails, "email": emails}, schema_overrides={"__line": pl.Int64})
            ledger.stage_chunk(conn, "acme", file_id, normalise_chunk(raw, {"email": "email"}), first_rows)
        counts = ledger.finish_file(
            conn, "acme", file_id, fmt="csv", encoding="utf-8", delimiter=",",
            staged=5 if first_rows else None, first_rows=first_rows,
        )
        flags = conn.execute(sa.text("SELECT line_no, is_duplicate FROM staged_rows WHERE file_id = :f ORDER BY line_no"), {"f": file_id}).all()
    assert counts == {"rows_total": 6, "new": 3, "merged": 0, "duplicates": 2, "rejected": 1}
    assert [tuple(f) for f in flags] == [(2, False), (3, False), (4, True), (5, True), (6, False)]


@pytest.mark.parametrize("flag_while_staging", [True, False], ids=["flagged while staging", "flagged at the end"])
def test_a_large_file_counts_its_repeats_and_the_addresses_the_tenant_knows(engine, tenant, flag_while_staging):
    def raw(lines, emails):
        return pl.DataFrame({"__line": lines, "__raw": emails, "email": emails}, schema_overrides={"__line": pl.Int64})

    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'u2@example.com')"))
    _stage_and_finish(engine, "pending", [(2, "u1@example.com"), (3, "zz@example.com")], staged=2)  # not merged yet
    first_rows = FirstRows() if flag_while_staging else None
    emails = [f"U{i % 9000}@Example.com" if i % 7 == 0 else f"u{i % 9000}@example.com" for i in range(12_000)]
    with ledger.file_session(engine) as conn, conn.begin():
        file_id = ledger.claim_file(conn, tenant_id="acme", source_id="crm", path="big.csv", sha256="big", size=1, priority=20, run_id=None)
        ledger.tenant_lock(conn, "acme")
        for start in (0, 6_000):
            chunk = raw(list(range(start + 2, start + 6_002)), emails[start : start + 6_000])
            ledger.stage_chunk(conn, "acme", file_id, normalise_chunk(chunk, {"email": "email"}), first_rows)
        ledger.stage_chunk(conn, "acme", file_id, normalise_chunk(raw([12_002], ["not an address"]), {"email": "email"}), first_rows)
        counts = ledger.finish_file(
            conn, "acme", file_id, fmt="csv", encoding="utf-8", delimiter=",", staged=12_000, first_rows=first_rows
        )
        right = conn.execute(
            sa.text("SELECT count(*) FROM staged_rows WHERE file_id = :f AND is_duplicate = (line_no - 2 >= 9000)"), {"f": file_id}
        ).scalar_one()
    assert counts == {"rows_total": 12_001, "new": 8_998, "merged": 2, "duplicates": 3_000, "rejected": 1}
    assert right == 12_000  # the first line of each address is kept, every later one is a duplicate


def test_rows_out_of_line_order_cannot_be_flagged():
    first_rows = FirstRows()
    first_rows.flag(pl.DataFrame({"line_no": [5, 6], "email": ["a@x.fr", "b@x.fr"]}))
    with pytest.raises(ValueError, match="line order"):
        first_rows.flag(pl.DataFrame({"line_no": [4], "email": ["c@x.fr"]}))


def _sources_as_stored(engine) -> dict[str, tuple]:
    """(priority, row version) per source: ``xmin`` changes whenever the row is written."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source_id, priority, xmin::text FROM data_sources WHERE tenant_id = 'acme'"))
        return {source_id: (priority, version) for source_id, priority, version in rows}


def test_registering_the_same_sources_again_writes_nothing_and_a_change_is_written(engine, tenant):
    before = _sources_as_stored(engine)
    assert {s: p for s, (p, _) in before.items()} == {"crm": 20, "events": 10}
    with engine.begin() as conn:
        ledger.register_workspace(conn, Workspace(root=Path("."), tenants={"acme": TENANT}, digests={"acme": "x"}))
    assert _sources_as_stored(engine) == before  # every import run registers its tenants: no rewrite each time
    changed = TenantConfig(id="acme", name="Acme", sources=[CRM, EVENTS.model_copy(update={"priority": 30})])
    with engine.begin() as conn:
        ledger.register_workspace(conn, Workspace(root=Path("."), tenants={"acme": changed}, digests={"acme": "y"}))
    after = _sources_as_stored(engine)
    assert after["crm"] == before["crm"] and after["events"][0] == 30


def _stage_and_finish(engine, sha256: str, lines_and_emails: list[tuple[int, str]], staged: int | None) -> tuple[dict, list]:
    """Claim a file, stage its rows, finish it telling ``staged`` (None: the caller does not know)."""
    with ledger.file_session(engine) as conn, conn.begin():
        file_id = ledger.claim_file(conn, tenant_id="acme", source_id="crm", path=f"{sha256}.csv", sha256=sha256, size=1, priority=20, run_id=None)
        ledger.tenant_lock(conn, "acme")
        lines, emails = zip(*lines_and_emails)
        raw = pl.DataFrame({"__line": lines, "__raw": emails, "email": emails}, schema_overrides={"__line": pl.Int64})
        ledger.stage_chunk(conn, "acme", file_id, normalise_chunk(raw, {"email": "email"}))
        counts = ledger.finish_file(conn, "acme", file_id, fmt="csv", encoding="utf-8", delimiter=",", staged=staged)
        flags = conn.execute(sa.text("SELECT line_no, is_duplicate FROM staged_rows WHERE file_id = :f ORDER BY line_no"), {"f": file_id}).all()
        ledger_row = conn.execute(
            sa.text("SELECT status, rows_total, new, merged, duplicates, rejected FROM import_files WHERE file_id = :f"), {"f": file_id}
        ).one()
    assert dict(ledger_row._mapping) == {"status": "imported", **counts}
    return counts, [tuple(f) for f in flags]


@pytest.mark.parametrize("staged", [5, None], ids=["one statement (small file)", "temporary table (large file)"])
def test_both_ways_of_finishing_a_file_flag_and_count_alike(engine, tenant, tmp_path, staged):
    _import(engine, tmp_path, CRM, "known.csv", "email\nin-contacts@example.com\n")
    _merge(engine)
    _import(engine, tmp_path, EVENTS, "pending.csv", "email\nstaged-elsewhere@example.com\n")  # not merged yet
    rows = [
        (2, "in-contacts@example.com"), (3, "staged-elsewhere@example.com"), (4, "fresh@example.com"),
        (5, "FRESH@example.com"), (6, "not an address"), (7, "in-contacts@example.com"), (8, "fresh@example.com"),
    ]
    counts, flags = _stage_and_finish(engine, "both-ways", rows, staged)
    assert counts == {"rows_total": 7, "new": 1, "merged": 2, "duplicates": 3, "rejected": 1}
    assert flags == [(2, False), (3, False), (4, False), (5, True), (7, True), (8, True)]


def test_known_addresses_count_as_merged_only_within_the_tenant(engine, tenant, tmp_path):
    _import(engine, tmp_path, CRM, "one.csv", "email\na@example.com\nb@example.com\n")
    pending = _import(engine, tmp_path, EVENTS, "two.csv", "email\nb@example.com\nc@example.com\n")
    assert (pending["new"], pending["merged"]) == (1, 1)  # b is staged by a file not merged yet
    _merge(engine)
    after = _import(engine, tmp_path, CRM, "three.csv", "email\nc@example.com\nd@example.com\nd@example.com\n")
    assert (after["new"], after["merged"], after["duplicates"]) == (1, 1, 1)  # c is now a contact


def test_a_contact_from_one_row_records_each_filled_field(engine, tenant, tmp_path):
    _import(engine, tmp_path, CRM, "crm.csv", "email,first_name,last_name,tags\nZed@Example.com,Zed,,zulu;alpha;mike\n")
    assert _merge(engine) == {"files": 1, "inserted": 1, "updated": 0, "removed": 0}
    (row,) = _contacts(engine)
    assert row.email == "zed@example.com" and row.first_name == "Zed" and row.last_name is None
    assert row.tags == [] and row.sources == ["crm"]  # the merge never writes tags
    assert _synced_tags(engine) == {"zed@example.com": ["alpha", "mike", "zulu"]}
    # one row provides everything: it is the primary row and no field needs an entry of its own
    assert (row.primary_priority, row.primary_file_id, row.primary_line_no) == (20, 1, 2) and row.field_sources == {}
    with engine.connect() as conn:
        assert field_sources(conn, "acme") == {"zed@example.com": {"first_name": {"source": "crm", "file_id": 1, "line": 2, "priority": 20}}}


def test_batch_merge_file_by_file_merge_and_rebuild_agree(engine, tenant, tmp_path):
    for source, name, text in FILES:
        _import(engine, tmp_path, source, name, text)
    batch = _merge(engine)
    assert batch["files"] == 3 and batch["inserted"] == 4
    together = _contacts(engine)

    _forget_imports(engine)
    for source, name, text in FILES:
        _import(engine, tmp_path, source, name, text)
        _merge(engine)
    one_by_one = _contacts(engine)
    _merge(engine, rebuild=True)
    rebuilt = _contacts(engine)

    assert together == one_by_one == rebuilt
    by_email = {r.email: r for r in together}
    bob = by_email["b@example.com"]
    assert bob.first_name == "Bob"  # crm (priority 20) outranks events
    assert bob.company == "Bob Ltd"  # the newer crm file wins the tie on priority
    with engine.connect() as conn:
        provenance = field_sources(conn, "acme")["b@example.com"]
    assert bob.phone == "+33 1" and provenance["phone"]["source"] == "events"
    assert provenance["company"] == {"source": "crm", "file_id": 3, "line": 3, "priority": 20}
    # the primary row is bob's highest-ranked row (crm2, line 3); only the fields it lacks have entries
    assert (bob.primary_file_id, bob.primary_line_no) == (3, 3)
    assert set(bob.field_sources) == {"first_name", "phone"}
    assert bob.sources == ["crm", "events"]
    tags = _synced_tags(engine)
    assert tags["b@example.com"] == ["salon_ete"] and tags["a@example.com"] == ["b2b", "vip"]
    assert by_email["c@example.com"].first_name == "Cyril" and by_email["c@example.com"].last_name == "Cy"
    with engine.connect() as conn:
        assert unbalanced_imports(conn, "acme") == []


def test_rebuild_removes_contacts_without_staged_rows_and_restores_overwritten_fields(engine, tenant, tmp_path):
    _import(engine, tmp_path, CRM, "crm.csv", "email,first_name\na@example.com,Ann\n")
    _merge(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE contacts SET first_name = 'Changed' WHERE email = 'a@example.com'"))
        conn.execute(sa.text("INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'ghost@example.com')"))
    result = _merge(engine, rebuild=True)
    assert (result["updated"], result["inserted"], result["removed"]) == (1, 0, 1)
    assert [(r.email, r.first_name) for r in _contacts(engine)] == [("a@example.com", "Ann")]


def test_merge_and_rebuild_leave_tags_to_their_one_writer(engine, tenant, tmp_path):
    _import(engine, tmp_path, CRM, "crm.csv", "email,tags\na@example.com,vip\n")
    _merge(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tag_assignments (tenant_id, contact_id, tag, provenance)"
                             " SELECT 'acme', contact_id, 'hand_picked', 'manual' FROM contacts"))
    assert _synced_tags(engine) == {"a@example.com": ["hand_picked", "vip"]}
    _import(engine, tmp_path, EVENTS, "ev.csv", "email,first_name,tags\na@example.com,Ann,lead\n")
    _merge(engine)
    _merge(engine, rebuild=True)
    assert [r.tags for r in _contacts(engine)] == [["hand_picked", "vip"]]  # neither merge touched them
    assert _synced_tags(engine) == {"a@example.com": ["hand_picked", "lead", "vip"]}


def test_deleting_a_ledger_row_deletes_its_staged_rows_and_rejects(engine, tenant, tmp_path):
    _import(engine, tmp_path, CRM, "one.csv", "email\na@example.com\nbad\n")
    _import(engine, tmp_path, EVENTS, "two.csv", "email\nb@example.com\n")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM import_files WHERE path LIKE '%one.csv'"))
        staged = conn.execute(sa.text("SELECT email FROM staged_rows")).scalars().all()
        rejects = conn.execute(sa.text("SELECT count(*) FROM rejected_rows")).scalar_one()
    assert staged == ["b@example.com"] and rejects == 0


def test_a_newer_row_becomes_primary_and_keeps_the_older_winners_as_entries(engine, tenant, tmp_path):
    _import(engine, tmp_path, EVENTS, "ev.csv", "email,first_name,company\na@example.com,Ann,Annco\n")
    _merge(engine)
    _import(engine, tmp_path, CRM, "crm.csv", "email,first_name,phone\na@example.com,Anna,+33 1\n")
    _merge(engine)
    (row,) = _contacts(engine)
    assert (row.first_name, row.company, row.phone) == ("Anna", "Annco", "+33 1")
    assert (row.primary_priority, row.primary_file_id, row.primary_line_no) == (20, 2, 2)
    assert row.field_sources == {"company": {"priority": 10, "file_id": 1, "line": 2}}
    _merge(engine, rebuild=True)
    assert _contacts(engine) == [row]
