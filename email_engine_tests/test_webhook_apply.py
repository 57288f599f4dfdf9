"""Applying webhook inbox rows: MailWizz hits become linked events, a contacts push becomes an
inbox file that the ordinary importer takes; the sensor requests one run per tenant with new rows."""

from __future__ import annotations

import os

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.contacts.importer import import_source
from email_engine_assets.contacts.merge_store import merge_staged
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.feedback.inbox_store import store_body
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.feedback.webhook_sensor import webhook_inbox_sensor
from email_engine_assets.tenancy.config import load_workspace
from email_engine_resources.postgres import PostgresResource
from email_engine_tests.test_webhook_core import mailwizz_body
from email_engine_tests.webhook_helpers import TENANT_YAML


def _setup(engine, workspace):
    workspace.tenant("acme", TENANT_YAML.format(tenant="acme"), sources=("crm", "files"))
    ws = load_workspace(workspace.root)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
        register_workspace(conn, ws)
        conn.execute(sa.text(
            """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
               VALUES ('acme', 'spring', 'completed', 'all', 'news', 'mailwizz', 'x')"""))
        conn.execute(sa.text(
            """INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
               VALUES ('acme', 'spring', 'alice@example.com', 'handed_off', 'tok-alice')"""))
    return ws.tenants["acme"]


def _store(engine, kind, source, body):
    with engine.begin() as conn:
        return store_body(conn, "acme", kind, source, body, "application/json")[0]


def test_rows_are_applied_once_events_linked_and_pushes_imported(engine, workspace):
    tenant = _setup(engine, workspace)
    opened = _store(engine, "mailwizz", None, mailwizz_body())
    clicked = _store(engine, "mailwizz", None, mailwizz_body("click", name="acme.nosuch.tpl"))
    push = b'{"email": "Bob@Example.com", "first_name": "Bob"}\n{"email": "carol@example.com"}\n{"email": "not an address"}\n'
    pushed = _store(engine, "contacts", "crm", push)
    single = _store(engine, "contacts", "crm", b'{\n  "email": "dan@example.com"\n}')

    counts = apply_webhook_rows(engine, workspace.root, tenant)
    again = apply_webhook_rows(engine, workspace.root, tenant)

    assert counts == {"applied": 4, "events": 2, "linked": 1, "duplicates": 0, "files": 2, "failed": 0,
                      "too_soon": 0, "scanner_burst": 0}
    assert again == {"applied": 0, "events": 0, "linked": 0, "duplicates": 0, "files": 0, "failed": 0,
                     "too_soon": 0, "scanner_burst": 0}
    with engine.connect() as conn:
        events = conn.execute(sa.text(
            """SELECT e.event_type, e.email, e.campaign, e.url, s.token, e.dedupe_key FROM delivery_events e
               LEFT JOIN campaign_sends s ON s.row_id = e.send_row_id ORDER BY e.event_id""")).all()
        inbox = conn.execute(sa.text("SELECT id, outcome, detail, applied_at IS NOT NULL FROM webhook_inbox ORDER BY id")).all()
    assert [tuple(e) for e in events] == [
        ("opened", "alice@example.com", "spring", None, "tok-alice", f"webhook:{opened}"),
        ("clicked", "alice@example.com", "nosuch", "https://acme.example/offer", None, f"webhook:{clicked}"),
    ]
    assert [tuple(r) for r in inbox] == [
        (opened, "applied", None, True), (clicked, "applied", None, True),
        (pushed, "applied", f"file webhook-{pushed}.ndjson", True), (single, "applied", f"file webhook-{single}.json", True),
    ]
    folder = workspace.root / "inbox" / "acme" / "crm"
    assert sorted(p.name for p in folder.iterdir()) == [f"webhook-{pushed}.ndjson", f"webhook-{single}.json"]
    assert (folder / f"webhook-{pushed}.ndjson").read_bytes() == push

    reports = import_source(engine, tenant, tenant.source("crm"), folder)
    assert sorted((r.status, r.counts.get("rows_total"), r.counts.get("rejected")) for r in reports) == [
        ("imported", 1, 0), ("imported", 3, 1)]
    with engine.begin() as conn:
        merge_staged(conn, "acme")  # what the contacts asset does after the imports
        contacts = conn.execute(sa.text("SELECT email, first_name FROM contacts WHERE tenant_id = 'acme' ORDER BY email")).all()
        reject = conn.execute(sa.text("SELECT line_no FROM rejected_rows WHERE tenant_id = 'acme'")).scalar()
    assert [tuple(c) for c in contacts] == [("bob@example.com", "Bob"), ("carol@example.com", None), ("dan@example.com", None)]
    assert reject == 3  # the sender's own line number

    # A crash after the file was renamed but before the commit: the row is applied again, the same
    # file is written again, and the importer's digest ledger does not import it twice.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE webhook_inbox SET applied_at = NULL, outcome = NULL, detail = NULL WHERE id = :i"), {"i": pushed})
    assert apply_webhook_rows(engine, workspace.root, tenant)["files"] == 1
    assert [r.status for r in import_source(engine, tenant, tenant.source("crm"), folder)] == ["skipped", "skipped"]


def test_a_row_that_cannot_be_applied_is_marked_with_its_reason_and_kept(engine, workspace, tmp_path):
    tenant = _setup(engine, workspace)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inbox = workspace.root / "inbox" / "acme"
    (inbox / "files").rmdir()
    os.symlink(elsewhere, inbox / "files")  # a source folder linked out of the inbox
    linked = _store(engine, "contacts", "files", b'[{"email": "eve@example.com"}]')
    removed = _store(engine, "contacts", "gone", b'[{"email": "fay@example.com"}]')
    fine = _store(engine, "mailwizz", None, mailwizz_body())

    counts = apply_webhook_rows(engine, workspace.root, tenant)

    assert (counts["applied"], counts["failed"], counts["events"]) == (1, 2, 1)
    assert list(elsewhere.iterdir()) == []
    with engine.connect() as conn:
        rows = {r.id: (r.outcome, r.detail, bytes(r.body)) for r in conn.execute(sa.text("SELECT * FROM webhook_inbox"))}
    assert rows[linked][0] == "failed" and "inbox folder refused" in rows[linked][1] and "not followed" in rows[linked][1]
    assert rows[removed][:2] == ("failed", "source gone is not in the tenant file any more")
    assert rows[removed][2] == b'[{"email": "fay@example.com"}]'  # the body is kept
    assert rows[fine][0] == "applied"


def test_hits_for_a_tenant_no_import_has_registered_yet_are_recorded(engine, workspace):
    workspace.tenant("newco", TENANT_YAML.format(tenant="newco"), sources=("crm", "files"))
    tenant = load_workspace(workspace.root).tenants["newco"]
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
        store_body(conn, "newco", "mailwizz", None, mailwizz_body(name="newco.spring.tpl"), None)
    counts = apply_webhook_rows(engine, workspace.root, tenant)
    assert (counts["applied"], counts["events"], counts["linked"]) == (1, 1, 0)


def test_the_sensor_requests_one_run_per_tenant_with_new_rows(engine, db_url):
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
        ids = [store_body(conn, t, "mailwizz", None, f"{t}-{i}".encode(), None)[0]
               for t, i in (("acme", 1), ("globex", 1), ("acme", 2))]

    def tick(instance, cursor):
        return webhook_inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"db": PostgresResource(url=db_url)}))

    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        assert [(r.partition_key, r.run_key) for r in first.run_requests] == [
            ("acme", f"webhooks:acme:{ids[2]}"), ("globex", f"webhooks:globex:{ids[1]}")]
        assert first.cursor == str(ids[2])
        assert sorted(first.dynamic_partitions_requests[0].partition_keys) == ["acme", "globex"]
        idle = tick(instance, first.cursor)
        assert (idle.run_requests, idle.cursor) == ([], first.cursor)
        # A row committed late under a lower id (or left by a failed run) is requested once it is old enough.
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE webhook_inbox SET received_at = now() - interval '1 hour' WHERE id = :i"), {"i": ids[1]})
        late = tick(instance, first.cursor)
        assert [(r.partition_key, r.run_key) for r in late.run_requests] == [("globex", f"webhooks:globex:late:{ids[1]}")]


def test_the_inbox_vocabularies_match_the_check_constraints_and_the_sensor_is_registered(engine):
    from email_engine_assets.definitions import defs
    from email_engine_assets.feedback.inbox_store import INBOX_KINDS, OUTCOMES
    from email_engine_tests.test_vocabularies import _check_values

    with engine.connect() as conn:
        assert [sorted(v) for v in _check_values(conn, "webhook_inbox", "kind")] == [sorted(INBOX_KINDS)]
        assert [sorted(v) for v in _check_values(conn, "webhook_inbox", "outcome")] == [sorted(OUTCOMES)]
    sensor = defs.resolve_sensor_def("webhook_inbox_sensor")
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {dg.AssetKey("delivery_events")}


def test_bodies_stored_together_are_new_once(engine):
    from email_engine_assets.feedback.inbox_store import store_bodies

    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
        first = store_bodies(conn, [("acme", "mailwizz", None, b"a", "application/json\x01"), ("acme", "mailwizz", None, b"a", None),
                                    ("globex", "mailwizz", None, b"a", None), ("acme", "contacts", "crm", b"a", None)])
        again = store_bodies(conn, [("acme", "mailwizz", None, b"b", None), ("acme", "mailwizz", None, b"a", None)])
        rows = conn.execute(sa.text("SELECT tenant_id, kind, body, content_type FROM webhook_inbox ORDER BY id")).all()
    assert (first, again) == ([True, False, True, True], [True, False])
    assert [(r.tenant_id, r.kind, bytes(r.body), r.content_type) for r in rows] == [
        ("acme", "mailwizz", b"a", "application/json"), ("globex", "mailwizz", b"a", None),
        ("acme", "contacts", b"a", None), ("acme", "mailwizz", b"b", None)]


def test_failed_rows_are_shown_and_applied_again_once_their_cause_is_fixed(engine, workspace, tmp_path, monkeypatch, capsys):
    from email_engine_assets import cli

    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    tenant = _setup(engine, workspace)
    inbox = workspace.root / "inbox" / "acme"
    (inbox / "files").rmdir()
    os.symlink(tmp_path, inbox / "files")  # refused: a linked folder
    linked = _store(engine, "contacts", "files", b'[{"email": "eve@example.com"}]')
    removed = _store(engine, "contacts", "gone", b'[{"email": "fay@example.com"}]')
    assert apply_webhook_rows(engine, workspace.root, tenant)["failed"] == 2

    assert cli.main(["webhooks", "status", "acme"]) == 0
    shown = capsys.readouterr().out
    assert "pending=0 applied=0 failed=2" in shown
    assert f"failed #{linked} contacts/files" in shown and f"failed #{removed} contacts/gone" in shown

    (inbox / "files").unlink()  # the operator repairs the folder; the removed source stays removed
    (inbox / "files").mkdir()
    assert cli.main(["webhooks", "retry", "acme"]) == 1  # one row still fails
    out = capsys.readouterr().out
    assert "reopened 2 failed row(s)" in out and "pending=0 applied=1 failed=1" in out
    assert (inbox / "files" / f"webhook-{linked}.json").read_bytes() == b'[{"email": "eve@example.com"}]'
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT outcome FROM webhook_inbox WHERE id = :i"), {"i": removed}).scalar() == "failed"
