"""contact_imports and contacts materialized by Dagster on a real PostgreSQL."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.assets import tag_assignments
from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.contacts.merge_store import field_sources
from email_engine_assets.tenancy.partitions import import_key
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

CRM = (
    "email,first_name,last_name,company,tags\n"
    "a@example.com,Ann,Lee,Acme,vip\n"
    "B@Example.com ,Bob,,,\n"
    "not-an-address,X,Y,,\n"
    "a@example.com,Ann2,,,dup\n"
    ",Nobody,,,\n"
)
EVENTS = "email;first_name;company;tags\nb@example.com;Robert;Bobco;Salon Été\nc@example.com;Cy;;\n"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(instance, assets, partition_key, raise_on_error=True, **run_config):
    return dg.materialize(
        assets,
        partition_key=partition_key,
        instance=instance,
        resources={"db": PostgresResource(), "workspace": WorkspaceResource()},
        raise_on_error=raise_on_error,
        run_config={"ops": {"contacts": {"config": run_config}}} if run_config else None,
    )


def import_and_merge(instance, tenant, *sources, raise_on_error=True):
    instance.add_dynamic_partitions("tenant", [tenant])
    instance.add_dynamic_partitions("source", list(sources))
    results = [materialize(instance, [contact_imports], import_key(tenant, s), raise_on_error) for s in sources]
    results.append(materialize(instance, [contacts], tenant))
    return results


def retag(instance, tenant):
    """Run the one writer of ``contacts.tags``: the tag_assignments asset."""
    dg.materialize([tag_assignments], partition_key=tenant, instance=instance,
                   resources={"db": PostgresResource(), "workspace": WorkspaceResource()})


def ledger(engine, tenant):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM import_files WHERE tenant_id = :t ORDER BY file_id"), {"t": tenant})]


def contact(engine, tenant, email):
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM contacts WHERE tenant_id = :t AND email = :e"), {"t": tenant, "e": email}).first()
        return dict(row._mapping) if row else None


def test_import_accounts_for_every_row_and_keeps_rejects(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", "crm.csv", CRM)
    result = import_and_merge(instance, "acme", "crm")[0]
    meta = result.asset_materializations_for_node("contact_imports")[0].metadata
    assert meta["rows_total"].value == 5
    assert (meta["new"].value, meta["merged"].value, meta["duplicates"].value, meta["rejected"].value) == (2, 0, 1, 2)
    with engine.connect() as conn:
        rejects = conn.execute(sa.text("SELECT line_no, reason, raw_text FROM rejected_rows ORDER BY line_no")).all()
    assert [(r.line_no, r.reason.split(":")[0]) for r in rejects] == [(4, "invalid email address"), (6, "no email address")]
    assert rejects[0].raw_text.startswith("not-an-address")
    ann = contact(engine, "acme", "a@example.com")
    assert ann["first_name"] == "Ann"  # the in-file duplicate did not win
    retag(instance, "acme")
    assert contact(engine, "acme", "a@example.com")["tags"] == ["vip"]  # nor did its tag
    assert contact(engine, "acme", "b@example.com")["first_name"] == "Bob"


def test_survivorship_follows_priority_then_newest_and_unions_sources(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm", "events"))  # crm priority 20, events 10
    workspace.file("acme", "crm", "crm.csv", CRM)
    workspace.file("acme", "events", "ev.csv", EVENTS)
    import_and_merge(instance, "acme", "crm", "events")
    bob = contact(engine, "acme", "b@example.com")
    assert bob["first_name"] == "Bob"  # crm outranks events
    assert bob["company"] == "Bobco"  # crm had no company: the next source fills it
    with engine.connect() as conn:
        assert field_sources(conn, "acme")["b@example.com"]["company"]["source"] == "events"
    assert bob["sources"] == ["crm", "events"]
    retag(instance, "acme")
    assert contact(engine, "acme", "b@example.com")["tags"] == ["salon_ete"]
    # a newer file of the same source wins ties
    workspace.file("acme", "crm", "crm2.csv", "email,first_name\nb@example.com,Bobby\n")
    results = import_and_merge(instance, "acme", "crm")
    meta = results[0].asset_materializations_for_node("contact_imports")[0].metadata
    assert (meta["new"].value, meta["merged"].value, meta["files_skipped"].value) == (0, 1, 1)
    assert contact(engine, "acme", "b@example.com")["first_name"] == "Bobby"


def test_reimport_and_renamed_file_change_nothing(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", "crm.csv", CRM)
    import_and_merge(instance, "acme", "crm")
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT email, first_name, tags, updated_at FROM contacts ORDER BY email")).all()
    workspace.file("acme", "crm", "crm-copy-renamed.csv", CRM)
    results = import_and_merge(instance, "acme", "crm")
    meta = results[0].asset_materializations_for_node("contact_imports")[0].metadata
    assert meta["files_imported"].value == 0 and meta["files_skipped"].value == 2
    assert len(ledger(engine, "acme")) == 1
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT email, first_name, tags, updated_at FROM contacts ORDER BY email")).all()
    assert after == before


def test_unreadable_file_fails_alone_and_is_recorded(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", "a-good.csv", CRM)
    workspace.file("acme", "crm", "b-binary.csv", bytes(range(256)) * 64)
    workspace.file("acme", "crm", "c-no-email.csv", "name,phone\nAnn,123\n")
    instance.add_dynamic_partitions("tenant", ["acme"])
    instance.add_dynamic_partitions("source", ["crm"])
    result = materialize(instance, [contact_imports], import_key("acme", "crm"), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "b-binary.csv" in failure and "c-no-email.csv" in failure
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in ledger(engine, "acme")}
    assert rows["a-good.csv"]["status"] == "imported" and rows["a-good.csv"]["rows_total"] == 5
    assert rows["b-binary.csv"]["status"] == "failed" and rows["b-binary.csv"]["error"]
    assert rows["c-no-email.csv"]["status"] == "failed"
    assert "name" in rows["c-no-email.csv"]["error"] and "phone" in rows["c-no-email.csv"]["error"]
    with engine.connect() as conn:
        staged = conn.execute(sa.text("SELECT file_id, count(*) FROM staged_rows GROUP BY file_id")).all()
    assert [s.file_id for s in staged] == [rows["a-good.csv"]["file_id"]]


def test_rebuild_gives_the_same_golden_records(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm", "events"))
    workspace.file("acme", "crm", "crm.csv", CRM)
    workspace.file("acme", "events", "ev.csv", EVENTS)
    import_and_merge(instance, "acme", "events")
    import_and_merge(instance, "acme", "crm")
    cols = "email, first_name, last_name, company, tags, sources, field_sources, primary_priority, primary_file_id, primary_line_no"
    with engine.connect() as conn:
        incremental = conn.execute(sa.text(f"SELECT {cols} FROM contacts ORDER BY email")).all()
    result = materialize(instance, [contacts], "acme", rebuild=True)
    meta = result.asset_materializations_for_node("contacts")[0].metadata
    assert (meta["files_merged"].value, meta["updated"].value) == (2, 3)  # the config reached the merge
    with engine.connect() as conn:
        rebuilt = conn.execute(sa.text(f"SELECT {cols} FROM contacts ORDER BY email")).all()
    assert rebuilt == incremental and len(rebuilt) == 3


def test_tenants_are_isolated(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.tenant("globex", sources=("crm",))
    workspace.file("acme", "crm", "a.csv", "email,first_name\nshared@example.com,Acme\n")
    workspace.file("globex", "crm", "g.csv", "email,first_name\nshared@example.com,Globex\n")
    import_and_merge(instance, "acme", "crm")
    results = import_and_merge(instance, "globex", "crm")
    meta = results[0].asset_materializations_for_node("contact_imports")[0].metadata
    assert meta["new"].value == 1  # another tenant's contact does not make it "merged"
    assert contact(engine, "acme", "shared@example.com")["first_name"] == "Acme"
    assert contact(engine, "globex", "shared@example.com")["first_name"] == "Globex"


def test_contacts_checks_pass_and_report_the_tenant(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", "crm.csv", CRM)
    result = import_and_merge(instance, "acme", "crm")[-1]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["imports_balanced"].passed and checks["contacts_have_provenance"].passed
    assert checks["imports_balanced"].metadata["tenant"].value == "acme"
    # break the accounting on purpose: the check must notice
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE import_files SET new = new + 1"))
        conn.execute(sa.text("INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'ghost@example.com')"))
    result = materialize(instance, [contacts], "acme")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["imports_balanced"].passed and not checks["contacts_have_provenance"].passed


def test_source_not_of_this_tenant_is_a_no_op(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm",))
    workspace.tenant("globex", sources=("scraper",))
    instance.add_dynamic_partitions("tenant", ["acme"])
    instance.add_dynamic_partitions("source", ["scraper"])
    result = materialize(instance, [contact_imports], import_key("acme", "scraper"))
    assert result.asset_materializations_for_node("contact_imports")[0].metadata["files_imported"].value == 0
    assert ledger(engine, "acme") == []


BIG = "x" * 2_000_000
BAD_FILES = {
    # name: (bytes, expected (rows_total, accepted (new), rejected), reason fragment of the first reject or None)
    "empty.csv": (b"", (0, 0, 0), None),
    "header-only.csv": (b"email,first_name\r\n", (0, 0, 0), None),
    "utf16.csv": ("email,first_name\nzoé@example.com,Zoé\n".encode("utf-16"), (1, 1, 0), None),
    "bom.csv": ("\ufeffemail,first_name\nbom@example.com,Bom\n".encode("utf-8"), (1, 1, 0), None),
    "dup-header.csv": (b"email,email,first_name\na@example.com,b@example.com,Ann\n", (1, 1, 0), None),
    "ragged.csv": (b"email,first_name\na@example.com,Ann,extra\nb@example.com\nc@example.com,Cy\n", (3, 1, 2), "expected 2 fields"),
    "nul.csv": (b"email,first_name\na@exam\x00ple.com,Ann\nb@example.com,Bo\n", (2, 1, 1), "NUL"),
    "big-field.csv": (f"email,first_name\na@example.com,{BIG}\nb@example.com,Bo\n".encode(), (2, 1, 1), "over the limit"),
    "injection.csv": (b'email,first_name\nx@example.com,"=HYPERLINK(""http://evil.example"",""click"")"\n', (1, 1, 0), None),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_awkward_files_are_accounted_row_by_row(engine, workspace, instance, name):
    content, (rows_total, new, rejected), reason = BAD_FILES[name]
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", name, content)
    import_and_merge(instance, "acme", "crm")
    (entry,) = ledger(engine, "acme")
    assert entry["status"] == "imported", entry["error"]
    assert (entry["rows_total"], entry["new"], entry["rejected"]) == (rows_total, new, rejected)
    assert entry["rows_total"] == entry["new"] + entry["merged"] + entry["duplicates"] + entry["rejected"]
    if reason:
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT reason, length(raw_text) AS n FROM rejected_rows ORDER BY line_no")).first()
        assert reason in first.reason and first.n <= 1000
    if name == "injection.csv":
        assert contact(engine, "acme", "x@example.com")["first_name"] == '=HYPERLINK("http://evil.example","click")'
    if name == "utf16.csv":
        assert contact(engine, "acme", "zoé@example.com")["first_name"] == "Zoé"
        assert entry["encoding"].startswith("utf-16")
