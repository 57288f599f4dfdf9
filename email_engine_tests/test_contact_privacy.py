"""``contact explain|export|forget``: one person's dossier, and an erasure that leaves the address nowhere.

Real PostgreSQL, real imports (``import_file`` + ``merge_staged``), the real feedback recorder and
a MailWizz stand-in on loopback; rows the other domains would write through Dagster runs (tags,
verdicts, segments, the ledger) are inserted as those runs leave them.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from email_engine_assets import cli
from email_engine_assets.campaigns import store as campaigns_store
from email_engine_assets.contacts.importer import import_file
from email_engine_assets.contacts.merge_store import merge_staged, unbalanced_imports
from email_engine_assets.contacts.normalise import REASON_ERASED
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.feedback.events import FeedbackEvent, events_frame
from email_engine_assets.feedback.store import record_events
from email_engine_assets.privacy.erasure import ERASED_TABLES, erasure_hash
from email_engine_assets.privacy.store import email_sha256
from email_engine_assets.tenancy.config import load_tenants
from email_engine_resources.mailwizz import MailwizzInstance, Subscriber
from email_engine_resources.migrations import migration_files
from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz

KEY_ENV = "ACME_MAILWIZZ_KEY"
ANN = "ann@example.com"
CRM = "email,first_name,last_name,tags\nAnn@Example.com,Ann,Lee,vip\nbob@example.com,Bob,,\n"
EVENTS = ("email,first_name,company,phone\nann@example.com,Anna,Annco,+33 1 23 45 67 89\nann@example.com,Dup,,\n"
          "ann@example.com@@,Broken,,\ncid@example.com,Cid,,\n")


@pytest.fixture
def mailwizz(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-public-key")
    with running_mailwizz(MailwizzState()) as (url, state):
        yield url, state


@pytest.fixture
def cli_env(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", db_url)  # no Dagster run: never connected to
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def tenant_files(workspace, url: str) -> None:
    workspace.tenant("acme", f"""\
id: acme
name: Acme
sources:
  - id: crm
    priority: 20
  - id: events
    priority: 10
transports:
  - name: mw
    kind: mailwizz
    base_url: {url}
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    retries: 0
""", sources=("crm", "events"))
    workspace.tenant("other")


def _import(engine, tenant, source_id: str, path) -> dict:
    report = import_file(engine, tenant, tenant.source(source_id), path)
    assert report.status == "imported", report.error
    with engine.begin() as conn:
        merge_staged(conn, tenant.id)
    return report.counts


def seed(engine, workspace, tmp_path, url: str) -> dict:
    """Ann (and Bob, Cid) of tenant acme everywhere a person can be; Ann also in tenant other."""
    tenant_files(workspace, url)
    ws = load_tenants(workspace.root, ["acme", "other"])
    with engine.begin() as conn:
        register_workspace(conn, ws)
    acme = ws.tenants["acme"]
    (tmp_path / "crm.csv").write_text(CRM)
    (tmp_path / "events.csv").write_text(EVENTS)
    _import(engine, acme, "crm", tmp_path / "crm.csv")
    _import(engine, acme, "events", tmp_path / "events.csv")
    (tmp_path / "o.csv").write_text("email,first_name\nann@example.com,Ann of other\n")
    _import(engine, ws.tenants["other"], "crm", tmp_path / "o.csv")
    with engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT email, contact_id FROM contacts WHERE tenant_id = 'acme'")).all())
        ann, bob = ids[ANN], ids["bob@example.com"]
        for sql in (
            "INSERT INTO tag_assignments (tenant_id, contact_id, tag, provenance) VALUES ('acme', :a, 'vip', 'import:crm'), ('acme', :a, 'fan', 'rule:fans')",
            "INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok, domain_status, smtp_message)"
            " VALUES ('acme', :a, 'ann@example.com', 'valid', true, 'mx', '250 2.1.5 <ann@example.com> ok')",
            "INSERT INTO contact_enrichment (tenant_id, contact_id, language, language_rule, country, phone_e164, phone_raw, inputs_sha256)"
            " VALUES ('acme', :a, 'fr', 'field', 'FR', '+33123456789', '+33 1 23 45 67 89', 'x')",
            "INSERT INTO segment_profiles (tenant_id, contact_id, email) VALUES ('acme', :a, 'ann@example.com'), ('acme', :b, 'bob@example.com')",
            "INSERT INTO segment_snapshots (tenant_id, segment, definition_hash, definition, matched, suppressed_excluded, members)"
            " VALUES ('acme', 'vip', 'h1', '{}', 2, 0, 2)",
            "INSERT INTO segment_members (tenant_id, segment, contact_id, definition_hash) VALUES ('acme', 'vip', :a, 'h1'), ('acme', 'vip', :b, 'h1')",
            "INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)"
            " VALUES ('acme', 'spring', 'completed', 'vip', 'news', 'mw', 'x'), ('acme', 'summer', 'running', 'vip', 'news', 'mw', 'x')",
            "INSERT INTO campaign_sends (tenant_id, campaign, contact_id, email, state, token, template, detail) VALUES"
            " ('acme', 'spring', :a, 'ann@example.com', 'sent', 'tok-ann', 'welcome', '250 ok for <ANN@example.com>'),"
            " ('acme', 'spring', :b, 'bob@example.com', 'sent', 'tok-bob', 'welcome', NULL),"
            " ('acme', 'summer', :a, 'ann@example.com', 'queued', 'tok-ann-2', NULL, NULL)",
            "INSERT INTO suppressions (tenant_id, email, reason) VALUES ('other', 'ann@example.com', 'manual')",
        ):
            conn.execute(sa.text(sql), {"a": ann, "b": bob})
        campaigns_store.suppress(conn, "acme", ANN, "unsubscribed", "clicked the link in a mail to ann@example.com")
        at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
        record_events(conn, "acme", events_frame([
            FeedbackEvent("delivered", "powermta", at, "d-ann", token="tok-ann", detail="250 2.0.0 ok <ann@example.com>"),
            FeedbackEvent("clicked", "mailwizz", at, "c-ann", campaign="spring", email=ANN, url="https://acme.example/r?u=ann@example.com"),
            FeedbackEvent("delivered", "powermta", at, "d-bob", token="tok-bob"),
        ]))
    with MailwizzInstance(url, "test-public-key", allow_private=True, retries=0) as mw:
        lists = {}
        for name in ("acme-fr", "acme.spring.welcome"):
            lists[name] = mw.ensure_list(name, from_name="Acme", from_email="news@acme.example", reply_to="")
            pushed = mw.push_subscribers(lists[name], [Subscriber(ANN, {"FNAME": "Ann"}), Subscriber("bob@example.com", {})])
    with engine.begin() as conn:
        conn.execute(
            sa.text("""INSERT INTO mailwizz_subscribers (tenant_id, instance, list_name, email_sha256, contact_id, list_uid,
                           subscriber_uid, state, row_sha256) VALUES ('acme', 'mw', 'acme-fr', :h, :a, :l, :s, 'subscribed', 'r')"""),
            {"h": email_sha256(ANN), "a": ann, "l": lists["acme-fr"], "s": pushed[0].subscriber_uid},
        )
    return {"ann": ann, "bob": bob, "tenant": acme, "other": ws.tenants["other"]}


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_export_and_explain_show_each_field_with_its_file_and_line(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "export", "acme", "ANN@example.com"]) == 0
    data = _json_out(capsys)
    assert data["email"] == ANN and data["erased_at"] is None and data["contact"]["contact_id"] == people["ann"]
    fields = data["contact"]["fields"]
    # crm (priority 20) wins first and last name; company and phone come from the events file.
    assert {f: (v["value"], v["source"], v["file"].rsplit("/", 1)[-1], v["line"]) for f, v in fields.items()} == {
        "first_name": ("Ann", "crm", "crm.csv", 2), "last_name": ("Lee", "crm", "crm.csv", 2),
        "company": ("Annco", "events", "events.csv", 2), "phone": ("+33 1 23 45 67 89", "events", "events.csv", 2),
    }
    assert [(r["source"], r["line"], r["is_duplicate"]) for r in data["staged_rows"]] == [("crm", 2, False), ("events", 2, False), ("events", 3, True)]
    assert [(r["line"], r["raw_text"]) for r in data["rejected_rows"]] == [(4, "ann@example.com@@,Broken,,")]
    assert [(t["tag"], t["provenance"]) for t in data["tags"]] == [("fan", "rule:fans"), ("vip", "import:crm")]
    assert data["validation"]["verdict"] == "valid" and data["enrichment"]["country"] == "FR"
    assert [s["segment"] for s in data["segments"]] == ["vip"]
    assert [(s["campaign"], s["state"]) for s in data["sends"]] == [("spring", "sent"), ("summer", "queued")]
    assert sorted(e["event_type"] for e in data["events"]) == ["clicked", "delivered"]
    assert data["events"][0]["occurred_at"] == "2026-11-20T10:00:00+00:00"  # ISO dates
    assert data["suppression"]["reason"] == "unsubscribed"
    assert [(m["instance"], m["list_name"], m["state"]) for m in data["mailwizz"]] == [("mw", "acme-fr", "subscribed")]
    assert list(data) == sorted(data)  # stable keys

    assert cli.main(["contact", "explain", "acme", ANN]) == 0
    text = capsys.readouterr().out
    assert "first_name  Ann  <-  crm/crm.csv:2" in text and "company     Annco  <-  events/events.csv:2" in text
    assert "tag assignments: fan (rule:fans), vip (import:crm)" in text and "validation: valid" in text
    assert "spring: sent, template welcome" in text and "clicked via mailwizz, campaign spring" in text
    assert "suppression: unsubscribed" in text and "events/events.csv:3 (duplicate in its file)" in text


def test_explain_is_safe_for_a_terminal(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    tenant_files(workspace, url)
    ws = load_tenants(workspace.root, ["acme"])
    with engine.begin() as conn:
        register_workspace(conn, ws)
    (tmp_path / "evil.csv").write_text("email,first_name\nann@example.com,\x1b]0;owned\x07Ann\u202e\n")
    _import(engine, ws.tenants["acme"], "crm", tmp_path / "evil.csv")
    assert cli.main(["contact", "explain", "acme", ANN]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b]0;owned\\x07Ann\\u202e" in out
    assert cli.main(["contact", "explain", "acme", "not an address"]) == 2
    assert cli.main(["contact", "explain", "nobody", ANN]) == 2


def application_tables() -> list[str]:
    """The tables our migrations create (the database may also hold Dagster's storage)."""
    names = {m.lower() for path in migration_files() for m in re.findall(r"CREATE TABLE (\w+)", path.read_text(), re.IGNORECASE)}
    assert {"contacts", "campaign_sends", "erased_addresses"} <= names
    return sorted(names)


def _forms(address: str) -> list[str]:
    """The ways a file or a column may write the address: as is, JSON-escaped, percent-encoded."""
    return [address.lower(), address.lower().replace("@", "\\u0040"), address.lower().replace("@", "%40")]


def _pattern(address: str) -> str:
    """A PostgreSQL regex for any form of the address not glued to a longer local part (so ``joann@`` is not ``ann@``)."""
    literal = "|".join("".join(ch if ch.isalnum() else "\\" + ch for ch in form) for form in _forms(address))
    return f"(^|[^a-z0-9._+-])({literal})"


def _text_hits(conn, needle: str, skip_tenant: str) -> list[str]:
    """Every (table.column) of every application table whose text holds ``needle`` in any of its
    forms (rows of ``skip_tenant`` aside); bytes are read as text (escaped bytes for non-UTF-8)."""
    columns = conn.execute(sa.text(
        """SELECT c.table_name, c.column_name, c.data_type,
                  EXISTS (SELECT 1 FROM information_schema.columns t WHERE t.table_schema = 'public'
                          AND t.table_name = c.table_name AND t.column_name = 'tenant_id') AS has_tenant
           FROM information_schema.columns c JOIN information_schema.tables tb USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND tb.table_type = 'BASE TABLE' AND c.table_name = ANY(:tables)
             AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY', 'bytea')
           ORDER BY 1, 2"""), {"tables": application_tables()}).all()
    assert len(columns) > 40  # the scan sees the whole schema
    hits = []
    for table, column, data_type, has_tenant in columns:
        text = (f"""replace(encode("{column}", 'escape'), '\\\\', '\\')""" if data_type == "bytea"
                else f'CAST("{column}" AS text)')
        where = f"lower({text}) ~ :p"
        if has_tenant:
            where += " AND tenant_id <> :skip"
        if conn.execute(sa.text(f'SELECT count(*) FROM "{table}" WHERE {where}'), {"p": _pattern(needle), "skip": skip_tenant}).scalar_one():
            hits.append(f"{table}.{column}")
    return hits


def _table_counts(conn) -> dict:
    return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE tenant_id = 'acme'")).scalar_one()
            for t in ("campaign_sends", "delivery_events")}


def test_forget_leaves_the_address_in_no_table_and_every_count_survives(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, mw_state = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    with engine.begin() as conn:  # raw webhook bodies (bytes) that name Ann or Bob
        conn.execute(sa.text(
            """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key, applied_at, outcome)
               VALUES ('acme', 'mailwizz', convert_to(:ann, 'UTF8'), 'k-ann', now(), 'applied'),
                      ('acme', 'mailwizz', convert_to(:bob, 'UTF8'), 'k-bob', now(), 'applied')"""),
            {"ann": '{"subscriber": {"attributes": {"email": "ANN@example.com"}}}',
             "bob": '{"subscriber": {"attributes": {"email": "bob@example.com"}}}'})
        conn.execute(sa.text(  # an accounting line kept with a reason, naming Ann
            """INSERT INTO accounting_kept_lines (tenant_id, transport, file_name, byte_offset, line_digest, raw_line, reason)
               VALUES ('acme', 'pmta', 'acct-2026-11-29-0001.csv', 120, 'd1', 'zz,2026-11-29,x@bounce.acme.example,Ann@Example.com', 'unknown_type')"""))
    with engine.connect() as conn:
        before = _table_counts(conn)
        assert _text_hits(conn, ANN, "other")  # the scan finds the address before
        files_before = conn.execute(sa.text("SELECT file_id, rows_total FROM import_files ORDER BY file_id")).all()
    assert cli.main(["contact", "forget", "acme", "Ann@Example.com"]) == 0
    captured = capsys.readouterr()
    assert "ann@" not in captured.out.lower() and "ann@" not in captured.err.lower()
    counts = dict(line.strip().split(": ", 1) for line in captured.out.splitlines()[1:])
    assert counts["contacts"] == "1" and counts["campaign_sends"] == "2" and counts["delivery_events"] == "2"
    assert counts["staged_rows"] == "3" and counts["rejected_rows"] == "1" and counts["suppressions"] == "1"
    assert counts["webhook_inbox"] == "1" and counts["accounting_kept_lines"] == "1"
    assert counts["mailwizz mw"] == "2 subscriber(s) deleted, 1 sync row(s) dropped" and counts["mailwizz_subscribers"] == "1"

    with engine.connect() as conn:
        assert _text_hits(conn, ANN, "other") == []
        assert _table_counts(conn) == before
        bodies = dict(conn.execute(sa.text("SELECT dedupe_key, octet_length(body) FROM webhook_inbox")).all())
        assert bodies["k-ann"] == 0 and bodies["k-bob"] > 0
        sends = conn.execute(sa.text("SELECT campaign, contact_id, email, state FROM campaign_sends WHERE token LIKE 'tok-ann%' ORDER BY token")).all()
        assert [(s.campaign, s.contact_id, s.email.startswith("erased:"), s.state) for s in sends] == [
            ("spring", None, True, "sent"), ("summer", None, True, "skipped_suppressed")]  # the queued row is never sent
        assert conn.execute(sa.text("SELECT count(*) FROM delivery_events WHERE tenant_id = 'acme' AND email IS NULL AND contact_id IS NULL")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM delivery_events WHERE email IS NULL AND send_row_id IS NOT NULL")).scalar_one() == 2  # still linked
        # the files still add up: the person's lines are rejected rows 'erased' without raw text
        assert unbalanced_imports(conn, "acme") == []
        assert conn.execute(sa.text("SELECT file_id, rows_total FROM import_files ORDER BY file_id")).all() == files_before
        rejected = conn.execute(sa.text("SELECT raw_text, reason FROM rejected_rows WHERE tenant_id = 'acme'")).all()
        assert sorted(r.reason for r in rejected if r.reason == REASON_ERASED) == [REASON_ERASED] * 3
        assert all(r.raw_text == "" for r in rejected)
        assert conn.execute(sa.text("SELECT count(*) FROM mailwizz_subscribers")).scalar_one() == 0
        # Bob and the other tenant's Ann are untouched
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme'")).scalar_one() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'other' AND email = :e"), {"e": ANN}).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM suppressions WHERE tenant_id = 'other'")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM segment_members WHERE contact_id = :b"), {"b": people["bob"]}).scalar_one() == 1
    remaining = [s["EMAIL"] for lst in mw_state.lists.values() for s in lst["subscribers"].values()]
    assert sorted(remaining) == ["bob@example.com", "bob@example.com"]

    assert cli.main(["contact", "export", "acme", ANN]) == 0  # an erased person: nothing but the erasure
    data = _json_out(capsys)
    assert data["erased_at"] and data["contact"] is None and data["sends"] == [] and data["staged_rows"] == []
    assert cli.main(["contact", "forget", "acme", ANN]) == 0  # again: nothing left, still fine
    assert "contacts: 0" in capsys.readouterr().out


def test_a_later_import_rejects_the_erased_address_without_its_raw_text(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    (tmp_path / "again.csv").write_text("email,first_name\nANN@example.com,Ann again\ndee@example.com,Dee\nann@example.com,Twice\n")
    counts = _import(engine, people["tenant"], "crm", tmp_path / "again.csv")
    assert counts["rejected"] == 2 and counts["new"] == 1 and counts["rows_total"] == 3
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            """SELECT r.line_no, r.raw_text, r.reason FROM rejected_rows r JOIN import_files f USING (file_id)
               WHERE f.path LIKE '%again.csv' ORDER BY r.line_no""")).all()
        assert rows == [(2, "", REASON_ERASED), (4, "", REASON_ERASED)]
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme' AND email = :e"), {"e": ANN}).scalar_one() == 0
        assert unbalanced_imports(conn, "acme") == []
        assert _text_hits(conn, ANN, "other") == []
    # the other tenant erased nobody: the same address is imported there as usual
    (tmp_path / "o2.csv").write_text("email,first_name\nann@example.com,Ann\n")
    assert _import(engine, people["other"], "crm", tmp_path / "o2.csv")["merged"] == 1


def test_late_feedback_counts_but_brings_the_address_back_nowhere(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    seed(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    at = datetime(2026, 11, 21, tzinfo=UTC)
    with engine.begin() as conn:
        recorded = record_events(conn, "acme", events_frame([
            FeedbackEvent("bounced", "powermta", at, "b-ann", bounce_class="hard", campaign="spring", email=ANN,
                          detail="550 5.1.1 <Ann@Example.com>: no such user"),
            FeedbackEvent("unsubscribed", "mailwizz", at, "u-ann", email=ANN, url="https://acme.example/u?e=ann@example.com"),
            FeedbackEvent("bounced", "powermta", at, "b-bob", bounce_class="hard", campaign="spring", email="bob@example.com",
                          detail="550 <bob@example.com> gone"),
        ]))
        assert recorded["inserted"] == 3
        assert campaigns_store.suppress(conn, "acme", "bob@example.com", "bounced", None)
        campaigns_store.suppress(conn, "acme", ANN, "bounced", "late bounce")
    with engine.connect() as conn:
        assert _text_hits(conn, ANN, "other") == []
        late = conn.execute(sa.text("SELECT dedupe_key, email, detail FROM delivery_events WHERE occurred_at = :at ORDER BY dedupe_key"),
                            {"at": at}).all()
        assert late == [("b-ann", None, "[erased]"), ("b-bob", "bob@example.com", "550 <bob@example.com> gone"), ("u-ann", None, None)]
        assert conn.execute(sa.text("SELECT email FROM suppressions WHERE tenant_id = 'acme'")).scalars().all() == ["bob@example.com"]


# ---------------------------------------------------------------------------------------------
# Our own tracking: events classed machine / person, with a link index and a personalised url

SALE = "https://acme.example/sale?u="  # a personalised link: an id of the person, which no address matcher sees


def add_tracking(engine) -> None:
    """Tracking events as the /o/ and /c/ routes record them: Ann's spring row opened by Apple's proxy and
    clicked by her (link 1, her own ?u=); Bob's spring row clicked (link 1, his ?u=)."""
    at = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
    for token, kind, machine, rule, link, url, key in (
        ("tok-ann", "opened", True, "apple_privacy_proxy", None, None, "t-ann-o"),
        ("tok-ann", "clicked", False, "person", 1, SALE + "c0ffee", "t-ann-c"),
        ("tok-bob", "clicked", False, "person", 1, SALE + "b0b", "t-bob-c"),
    ):
        with engine.begin() as conn:
            conn.execute(sa.text(
                """INSERT INTO delivery_events (tenant_id, event_type, origin, occurred_at, campaign, send_row_id, contact_id, email,
                                               url, machine, classified_by, link_index, dedupe_key)
                   SELECT 'acme', :k, 'tracking', :at, s.campaign, s.row_id, s.contact_id, s.email, :u, :m, :r, :l, :d
                   FROM campaign_sends s WHERE s.tenant_id = 'acme' AND s.token = :tok"""),
                {"k": kind, "at": at, "u": url, "m": machine, "r": rule, "l": link, "d": key, "tok": token})


def tracking_hit(conn, key: str, token: str, *, applied: bool) -> None:
    """A tracking hit in the webhook inbox (body: JSON naming the ledger row by its token, and what the hit
    carried). The exact layout is the tracking routes' own: forget matches the token's bytes anywhere."""
    personal = "b0b" if token == "tok-bob" else "c0ffee"
    body = json.dumps({"row": token, "kind": "click", "link": 1, "url": SALE + personal, "ip": "203.0.113.7", "ua": "Mozilla/5.0"})
    conn.execute(sa.text(
        """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key, applied_at, outcome)
           VALUES ('acme', 'tracking', convert_to(:b, 'UTF8'), :k, CASE WHEN :a THEN now() END, CASE WHEN :a THEN 'applied' END)"""),
        {"b": body, "k": key, "a": applied})


def test_export_and_explain_list_tracking_events_with_their_class_link_and_url(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    seed(engine, workspace, tmp_path, url)
    add_tracking(engine)
    assert cli.main(["contact", "export", "acme", ANN]) == 0
    events = {e["event_type"] + ":" + e["origin"]: e for e in _json_out(capsys)["events"]}
    assert set(events) == {"delivered:powermta", "clicked:mailwizz", "opened:tracking", "clicked:tracking"}  # never Bob's
    opened, clicked = events["opened:tracking"], events["clicked:tracking"]
    assert (opened["machine"], opened["classified_by"], opened["link_index"], opened["url"]) == (True, "apple_privacy_proxy", None, None)
    assert (clicked["machine"], clicked["classified_by"], clicked["link_index"], clicked["url"]) == (False, "person", 1, SALE + "c0ffee")
    assert clicked["campaign"] == "spring" and clicked["send_row_id"] is not None
    assert events["clicked:mailwizz"]["machine"] is None  # nobody classed MailWizz's click
    assert cli.main(["contact", "explain", "acme", ANN]) == 0
    text = capsys.readouterr().out
    assert "opened via tracking, campaign spring (a machine by rule apple_privacy_proxy)" in text
    assert f"clicked via tracking, campaign spring, link 1 (a person by rule person) -> {SALE}c0ffee" in text
    assert "clicked via mailwizz, campaign spring (unclassified)" in text


def test_forget_clears_tracking_urls_and_hits_and_keeps_every_count(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    from email_engine_assets.feedback import stats_store
    from email_engine_assets.privacy import store as privacy_store
    from email_engine_assets.privacy.matching import person_of

    url, _ = mailwizz
    seed(engine, workspace, tmp_path, url)
    add_tracking(engine)
    with engine.begin() as conn:
        # hits that came in after forget applied the pending rows (or were applied before): Ann's two rows, and Bob's
        tracking_hit(conn, "h-ann-pending", "tok-ann", applied=False)
        tracking_hit(conn, "h-ann-applied", "tok-ann", applied=True)
        tracking_hit(conn, "h-ann2-pending", "tok-ann-2", applied=False)
        tracking_hit(conn, "h-bob-pending", "tok-bob", applied=False)
    with engine.connect() as conn:
        before = stats_store.local_counts(conn, "acme", "spring")
        links_before = stats_store.link_counts(conn, "acme", "spring")
        events_before = _table_counts(conn)
        assert set(_text_hits(conn, "c0ffee", "other")) == {"delivery_events.url", "webhook_inbox.body"}
    with engine.begin() as conn:
        counts, _ = privacy_store.erase(conn, "acme", person_of(ANN))
    assert counts["webhook_inbox"] == 3 and counts["delivery_events"] == 4  # delivered, MailWizz click, tracking open and click
    with engine.connect() as conn:
        ann_events = conn.execute(sa.text(
            """SELECT e.dedupe_key, e.email, e.contact_id, e.url, e.machine, e.link_index FROM delivery_events e
               JOIN campaign_sends s ON s.row_id = e.send_row_id WHERE s.token = 'tok-ann' ORDER BY e.dedupe_key""")).all()
        assert [tuple(r) for r in ann_events] == [
            ("c-ann", None, None, None, None, None), ("d-ann", None, None, None, None, None),
            ("t-ann-c", None, None, None, False, 1), ("t-ann-o", None, None, None, True, None)]  # class and link kept
        assert conn.execute(sa.text("SELECT url FROM delivery_events WHERE dedupe_key = 't-bob-c'")).scalar_one() == SALE + "b0b"
        inbox = {r.dedupe_key: r for r in conn.execute(sa.text(
            "SELECT dedupe_key, octet_length(body) AS size, outcome, detail FROM webhook_inbox WHERE kind = 'tracking'"))}
        assert {k: (r.size, r.outcome) for k, r in inbox.items()} == {
            "h-ann-pending": (0, "failed"), "h-ann-applied": (0, "applied"), "h-ann2-pending": (0, "failed"),
            "h-bob-pending": (inbox["h-bob-pending"].size, None)}
        assert inbox["h-bob-pending"].size > 0 and "erased person" in inbox["h-ann-pending"].detail
        assert _text_hits(conn, "c0ffee", "other") == [] and _text_hits(conn, ANN, "other") == []  # her link's id is nowhere
        # every count stays: the totals, per template, and per link (Ann's link url is gone, not her click)
        assert stats_store.local_counts(conn, "acme", "spring") == before and _table_counts(conn) == events_before
        after = {(ln.template, ln.link_index): ln for ln in stats_store.link_counts(conn, "acme", "spring")}
        assert {k: ln.counts for k, ln in after.items()} == {(ln.template, ln.link_index): ln.counts for ln in links_before}
        assert after[("welcome", 1)].counts["unique_clicked_human"] == 2 and after[("welcome", 1)].url_rows == 1


def test_late_tracking_events_of_an_erased_person_keep_no_url(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    seed(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    at = datetime(2026, 11, 22, tzinfo=UTC)
    with engine.begin() as conn:
        recorded = record_events(conn, "acme", events_frame([
            # a click on her link, linked by her ledger row's token only (a tracking hit names no address)
            FeedbackEvent("clicked", "tracking", at, "late-c", token="tok-ann", url=SALE + "c0ffee"),
            # a MailWizz click naming her address, its url an id of hers
            FeedbackEvent("clicked", "mailwizz", at, "late-m", campaign="spring", email=ANN, url=SALE + "c0ffee"),
            FeedbackEvent("clicked", "tracking", at, "late-b", token="tok-bob", url=SALE + "b0b"),
        ]))
    assert recorded == {"inserted": 3, "linked": 2, "duplicates": 0}  # her address links to no row any more
    with engine.connect() as conn:
        late = conn.execute(sa.text("SELECT dedupe_key, url, send_row_id IS NOT NULL FROM delivery_events WHERE occurred_at = :at ORDER BY 1"),
                            {"at": at}).all()
        assert [tuple(r) for r in late] == [("late-b", SALE + "b0b", True), ("late-c", None, True), ("late-m", None, False)]


def test_a_large_later_import_rejects_the_erased_address_and_still_adds_up(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    """Past the one-statement finish: the file's repeats were flagged while staging, then its erased rows left."""
    url, _ = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    filler = "".join(f"f{i}@example.com,F\n" for i in range(12_000))
    (tmp_path / "large.csv").write_text(f"email,first_name\nANN@example.com,Ann\n{filler}F7@example.com,Again\nann@example.com,Twice\n")
    counts = _import(engine, people["tenant"], "crm", tmp_path / "large.csv")
    assert counts == {"rows_total": 12_003, "new": 12_000, "merged": 0, "duplicates": 1, "rejected": 2}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme' AND email = :e"), {"e": ANN}).scalar_one() == 0
        assert unbalanced_imports(conn, "acme") == []


def test_mailwizz_down_the_database_is_erased_and_forget_again_finishes(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, mw_state = mailwizz
    seed(engine, workspace, tmp_path, url)
    mw_state.fail_next(1000)
    assert cli.main(["contact", "forget", "acme", ANN]) == 1
    captured = capsys.readouterr()
    assert "LEFT MailWizz mw: subscribers not deleted" in captured.err and "run forget again" in captured.err
    assert "ann@" not in captured.err.lower()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme' AND email = :e"), {"e": ANN}).scalar_one() == 0
        assert conn.execute(sa.text("SELECT contact_id FROM mailwizz_subscribers")).scalars().all() == [None]  # kept, unlinked
        assert _text_hits(conn, ANN, "other") == []
    assert sum(s["EMAIL"] == ANN for lst in mw_state.lists.values() for s in lst["subscribers"].values()) == 2
    mw_state.fail_next(0)
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    assert "mailwizz mw: 2 subscriber(s) deleted, 1 sync row(s) dropped" in capsys.readouterr().out
    assert sum(s["EMAIL"] == ANN for lst in mw_state.lists.values() for s in lst["subscribers"].values()) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM mailwizz_subscribers")).scalar_one() == 0


def test_contact_commands_reach_the_outbox_and_mailwizz_through_the_resources_they_are_given(
        engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    """The outbox folder and the MailWizz instances are the ``outbox`` / ``mailwizz`` resources of the
    definitions the command runs with (here another outbox folder), never clients built on the side."""
    from email_engine_assets.definitions import with_resources
    from email_engine_resources.outbox import Outbox
    from email_engine_resources.transports import MailwizzResource, OutboxResource

    url, mw_state = mailwizz
    seed(engine, workspace, tmp_path, url)
    elsewhere = tmp_path / "mounted-outbox"
    with engine.connect() as conn:
        row_id = conn.execute(sa.text("SELECT row_id FROM campaign_sends WHERE token = 'tok-ann'")).scalar_one()
    message = Outbox(elsewhere).path("acme", "spring", row_id)
    message.parent.mkdir(parents=True)
    message.write_bytes(b"To: <ann@example.com>\r\n\r\nHello\r\n")
    defs = with_resources({"outbox": OutboxResource(root=str(elsewhere)), "mailwizz": MailwizzResource(backoff_initial=0.01)})
    assert cli.main(["contact", "export", "acme", ANN]) == 0
    assert _json_out(capsys)["files_on_disk"]["outbox"] == []  # the default folder holds nothing of hers
    assert cli.main(["contact", "export", "acme", ANN], definitions=defs) == 0
    assert _json_out(capsys)["files_on_disk"]["outbox"] == [str(message)]
    assert cli.main(["contact", "forget", "acme", ANN], definitions=defs) == 0
    out = capsys.readouterr().out
    assert "outbox files: 1" in out and "mailwizz mw: 2 subscriber(s) deleted" in out
    assert not message.exists()
    assert sum(s["EMAIL"] == ANN for lst in mw_state.lists.values() for s in lst["subscribers"].values()) == 0


def test_every_table_naming_a_person_is_handled_by_forget(engine):
    """A new table with an email-like column, a contact_id or raw input text (a raw line, a payload, a body) must say
    what forget does to it (erasure.ERASED_TABLES)."""
    with engine.connect() as conn:
        tables = set(conn.execute(sa.text(
            """SELECT DISTINCT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.table_name = ANY(:tables)
                 AND (c.column_name ~ '(email|recipient|raw|payload|body)' OR c.column_name = 'contact_id')"""),
            {"tables": application_tables()}).scalars())
        existing = set(conn.execute(sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).scalars())
    assert tables - set(ERASED_TABLES) == set(), "tables holding a person that `contact forget` does not handle"
    assert set(ERASED_TABLES) - existing == set(), "ERASED_TABLES names a table that does not exist"


def test_the_salted_hash_is_the_same_in_python_and_sql(engine):
    salt = bytes(range(32))
    with engine.connect() as conn:
        in_sql = conn.execute(sa.text("SELECT sha256(:s || convert_to(:e, 'UTF8'))"), {"s": salt, "e": "zoë+1@exämple.com"}).scalar_one()
        assert bytes(in_sql) == erasure_hash(salt, "zoë+1@exämple.com")


# ---------------------------------------------------------------------------------------------
# Exactly one person (issue 13 §5): by the key of parsed values, in the tables and on disk

JOANN = "joann@example.com"
ESCAPED = "ann\\u0040example.com"  # how a JSON writer may put Ann's address (the six characters \u0040)


def test_ann_is_not_joann_for_export_and_forget(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    (tmp_path / "jo.csv").write_text(f"email,first_name\n{JOANN},Jo\n{JOANN}@@,Broken Jo\n")
    _import(engine, people["tenant"], "crm", tmp_path / "jo.csv")
    with engine.begin() as conn:
        jo = conn.execute(sa.text("SELECT contact_id FROM contacts WHERE tenant_id = 'acme' AND email = :e"), {"e": JOANN}).scalar_one()
        conn.execute(sa.text(
            """INSERT INTO campaign_sends (tenant_id, campaign, contact_id, email, state, token, detail)
               VALUES ('acme', 'spring', :j, :e, 'sent', 'tok-jo', '250 ok for <JoAnn@example.com>')"""), {"j": jo, "e": JOANN})
        conn.execute(sa.text(
            """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key, applied_at, outcome)
               VALUES ('acme', 'mailwizz', convert_to(:b, 'UTF8'), 'k-jo', now(), 'applied')"""),
            {"b": json.dumps({"subscriber": {"attributes": {"email": JOANN}}})})
        conn.execute(sa.text(
            """INSERT INTO accounting_kept_lines (tenant_id, transport, file_name, byte_offset, line_digest, raw_line, reason)
               VALUES ('acme', 'pmta', 'acct.csv', 1, 'd-jo', :l, 'unknown_type')"""), {"l": f"zz,2026-11-29,x@b.example,{JOANN}"})
        record_events(conn, "acme", events_frame([FeedbackEvent(
            "clicked", "mailwizz", datetime(2026, 11, 20, tzinfo=UTC), "c-jo", campaign="spring", email=JOANN,
            url=f"https://acme.example/r?u={JOANN}")]))

    def joann_rows(conn) -> dict:
        return {
            "rejected": conn.execute(sa.text("SELECT raw_text, reason FROM rejected_rows WHERE raw_text LIKE 'joann%'")).all(),
            "contact": conn.execute(sa.text("SELECT first_name FROM contacts WHERE email = :e"), {"e": JOANN}).all(),
            "send": conn.execute(sa.text("SELECT email, detail FROM campaign_sends WHERE token = 'tok-jo'")).all(),
            "body": conn.execute(sa.text("SELECT body FROM webhook_inbox WHERE dedupe_key = 'k-jo'")).all(),
            "kept": conn.execute(sa.text("SELECT raw_line FROM accounting_kept_lines WHERE line_digest = 'd-jo'")).all(),
            "event": conn.execute(sa.text("SELECT email, url FROM delivery_events WHERE dedupe_key = 'c-jo'")).all(),
        }

    with engine.connect() as conn:
        before = joann_rows(conn)
    assert before["rejected"] and before["body"] and before["kept"] and before["event"]

    assert cli.main(["contact", "export", "acme", ANN]) == 0
    data = _json_out(capsys)
    assert [(r["line"], r["raw_text"]) for r in data["rejected_rows"]] == [(4, "ann@example.com@@,Broken,,")]  # not Jo's line
    assert [s["token"] for s in data["sends"]] == ["tok-ann", "tok-ann-2"]

    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    counts = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert counts["rejected_rows"] == "1" and counts["webhook_inbox"] == "0" and counts["accounting_kept_lines"] == "0"
    with engine.connect() as conn:
        assert joann_rows(conn) == before  # JoAnn is untouched, to the byte
        assert _text_hits(conn, ANN, "other") == []
    assert cli.main(["contact", "export", "acme", JOANN]) == 0
    jo_data = _json_out(capsys)
    assert jo_data["erased_at"] is None and jo_data["contact"]["fields"]["first_name"]["value"] == "Jo"


def test_an_escaped_address_is_found_in_raw_json(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    people = seed(engine, workspace, tmp_path, url)
    escaped_line = '{"email": "' + ESCAPED + '@@", "first_name": "Esc"}'
    (tmp_path / "push.ndjson").write_text(escaped_line + '\n{"email": "dee@example.com", "first_name": "Dee"}\n')
    _import(engine, people["tenant"], "crm", tmp_path / "push.ndjson")
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key, applied_at, outcome)
               VALUES ('acme', 'mailwizz', convert_to(:b, 'UTF8'), 'k-esc', now(), 'applied')"""),
            {"b": '{"event": {"type": "open"}, "subscriber": {"attributes": {"email": "' + ESCAPED.upper().replace("\\U", "\\u") + '"}}}'})
    assert cli.main(["contact", "export", "acme", ANN]) == 0
    data = _json_out(capsys)
    assert [r["raw_text"] for r in data["rejected_rows"]] == ["ann@example.com@@,Broken,,", escaped_line]
    assert cli.main(["contact", "forget", "acme", ANN]) == 0
    counts = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert counts["rejected_rows"] == "2" and counts["webhook_inbox"] == "1"
    with engine.connect() as conn:
        assert _text_hits(conn, ANN, "other") == []
        assert conn.execute(sa.text("SELECT count(*) FROM contacts WHERE email = 'dee@example.com'")).scalar_one() == 1


PUSHES = {
    "mixed": ('{"email": "' + ESCAPED + '", "first_name": "Ann"}\n{"email": "bob@example.com", "first_name": "Bob"}\n'
              '{"email": "dee@example.com", "first_name": "Dee"}\n'),
    "only": '{"email": "Ann@Example.com", "first_name": "Ann"}',
    "array": '[{"email": "eve@example.com"}, {"email": "' + ESCAPED + '", "tags": ["x"]}]',
}
OPERATOR_CSV = 'email,first_name\njoann@example.com,Jo\n"Ann@Example.com","Ann\nLee"\nbob@example.com,Bob\n'
OPERATOR_JSON = '[\n  {"email": "joann@example.com"},\n  {"email": "' + ESCAPED + '"}\n]\n'


def seed_files(engine, workspace, tmp_path, url) -> dict:
    """seed(), plus what the engine writes to disk (pushed contacts files, outbox messages) and files
    an operator dropped into the inbox, all naming Ann somewhere."""
    from email_engine_assets.feedback.inbox_store import store_body
    from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
    from email_engine_resources.outbox import Outbox

    people = seed(engine, workspace, tmp_path, url)
    with engine.begin() as conn:
        ids = {name: store_body(conn, "acme", "contacts", "crm", body.encode(), "application/json")[0] for name, body in PUSHES.items()}
    assert apply_webhook_rows(engine, workspace.root, people["tenant"])["files"] == 3
    crm = workspace.root / "inbox" / "acme" / "crm"
    pushed = {name: crm / f"webhook-{row}.{'ndjson' if name == 'mixed' else 'json'}" for name, row in ids.items()}
    assert all(p.exists() for p in pushed.values())
    _import(engine, people["tenant"], "crm", pushed["mixed"])  # imported before forget: in the ledger
    outbox = Outbox()
    with engine.connect() as conn:
        sent = conn.execute(sa.text("SELECT token, row_id FROM campaign_sends WHERE state = 'sent'")).all()
    eml = {}
    for token, row_id in sent:
        eml[token] = outbox.path("acme", "spring", row_id)
        eml[token].parent.mkdir(parents=True, exist_ok=True)
        who = ANN if token == "tok-ann" else "bob@example.com"
        eml[token].write_bytes(f"To: <{who}>\r\nSubject: Spring\r\n\r\nHello {who}\r\n".encode())
    operator = {"csv": crm / "list.csv", "json": workspace.root / "inbox" / "acme" / "events" / "notes.json"}
    operator["json"].parent.mkdir(parents=True, exist_ok=True)
    operator["csv"].write_text(OPERATOR_CSV)
    operator["json"].write_text(OPERATOR_JSON)
    return {**people, "pushed": pushed, "eml": eml, "operator": operator}


def test_forget_erases_the_files_the_engine_wrote_and_lists_the_operators(engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    from email_engine_assets.contacts.importer import file_digest, import_file

    url, _ = mailwizz
    s = seed_files(engine, workspace, tmp_path, url)
    assert cli.main(["contact", "export", "acme", "ann@EXAMPLE.com"]) == 0
    disk = _json_out(capsys)["files_on_disk"]
    assert disk["outbox"] == [str(s["eml"]["tok-ann"])]
    assert {(e["path"], tuple(e["lines"]), e["written_by"]) for e in disk["inbox"]} == {
        (str(s["pushed"]["mixed"]), (1,), "webhook push"), (str(s["pushed"]["only"]), (1,), "webhook push"),
        (str(s["pushed"]["array"]), (1,), "webhook push"),
        (str(s["operator"]["csv"]), (3,), "operator"), (str(s["operator"]["json"]), (3,), "operator"),
    }
    assert cli.main(["contact", "explain", "acme", ANN]) == 0
    text = capsys.readouterr().out
    assert f"outbox message: {s['eml']['tok-ann']}" in text and f"inbox file (operator): {s['operator']['csv']}, line(s) 3" in text

    assert cli.main(["contact", "forget", "acme", ANN]) == 1  # the operator's files are left to do
    captured = capsys.readouterr()
    counts = dict(line.strip().split(": ", 1) for line in captured.out.splitlines()[1:])
    assert counts["outbox files"] == "1"
    assert counts["pushed inbox files"] == "2 rewritten, 1 removed, 3 record(s) dropped"
    left = [line for line in captured.err.splitlines() if line.startswith("LEFT inbox file")]
    assert len(left) == 2
    assert f"{s['operator']['csv']} (the operator's, not changed): line(s) 3 hold" in captured.err
    assert f"{s['operator']['json']} (the operator's, not changed): line(s) 3 hold" in captured.err

    # engine files: Ann's message gone, Bob's kept; pushed files without Ann (NDJSON keeps its line numbers)
    assert not s["eml"]["tok-ann"].exists() and s["eml"]["tok-bob"].exists()
    assert s["pushed"]["mixed"].read_text() == PUSHES["mixed"].split("\n", 1)[1].join(["\n", ""])
    assert not s["pushed"]["only"].exists()
    assert json.loads(s["pushed"]["array"].read_text()) == [{"email": "eve@example.com"}]
    # operator files: untouched
    assert s["operator"]["csv"].read_text() == OPERATOR_CSV and s["operator"]["json"].read_text() == OPERATOR_JSON
    # the ledger knows the rewritten file: importing it again brings nobody twice
    with engine.connect() as conn:
        digests = conn.execute(sa.text("SELECT content_sha256 FROM import_files WHERE path = :p"), {"p": str(s["pushed"]["mixed"])}).scalars().all()
    assert digests == [file_digest(s["pushed"]["mixed"])]
    again = import_file(engine, s["tenant"], s["tenant"].source("crm"), s["pushed"]["mixed"])
    assert again.status == "skipped"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM import_files WHERE path = :p"), {"p": str(s["pushed"]["mixed"])}).scalar_one() == 1
        assert unbalanced_imports(conn, "acme") == []


def _files_naming(root, address: str) -> list[str]:
    """Every file under ``root`` whose bytes hold the address in any form, case-insensitively."""
    forms = [f.encode() for f in _forms(address)]
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes().lower()
            if any(re.search(rb"(^|[^a-z0-9._+-])" + re.escape(form), data) for form in forms):
                hits.append(str(path))
    return hits


def test_after_forget_the_address_is_in_no_file_and_no_table_but_the_listed_operator_files(
        engine, workspace, tmp_path, mailwizz, cli_env, capsys):
    url, _ = mailwizz
    s = seed_files(engine, workspace, tmp_path, url)
    home = tmp_path / "home"
    everywhere = [*_files_naming(home, ANN), *_files_naming(workspace.root, ANN)]
    assert str(s["eml"]["tok-ann"]) in everywhere and len(everywhere) == 6  # the scan sees them before
    assert cli.main(["contact", "forget", "acme", ANN]) == 1
    err = capsys.readouterr().err
    left = [*_files_naming(home, ANN), *_files_naming(workspace.root, ANN)]
    assert sorted(left) == sorted(str(p) for p in s["operator"].values())
    assert all(f"LEFT inbox file {path} " in err for path in left)  # each one the report lists
    with engine.connect() as conn:
        assert _text_hits(conn, ANN, "other") == []


@pytest.mark.parametrize(("text", "kind", "named"), [
    ("Ann@Example.com,Ann", "csv", True),
    ("joann@example.com,Jo", "csv", False),
    ("jo;\"Ann Lee <ann@example.com>\";x", "csv", True),
    ("ann@example.com.au,Au", "csv", False),
    ("ann@example.com@@,Broken,,", "csv", True),
    ('{"email": "ann\\u0040example.com"}', "json", True),
    ('{"email": "joann\\u0040example.com"}', "json", False),
    ('{"email": "ann\\u0040exam', "json", False),  # cut short: not the whole address
    ('{"email": "ann\\u0040example.com", "first_na', "json", True),  # cut short after it
    ('{"ANN@EXAMPLE.COM": {"x": 1}}', "ndjson", True),
    ("https://acme.example/r?u=ann@example.com&v=1", "text", True),
    ("email=ann%40example.com&list=x", "text", True),
    ("mailto:Ann@Example.com?subject=hi", "text", True),
    ("jo=ann@example.com", "text", False),  # a valid address of its own
    ("o'ann@example.com|a|ann@example.com", "text", False),  # two valid addresses of their own
    ("invalid email address: 'Ann@example.com@@'", "text", True),
    ("250 2.1.5 <ann@example.com>: ok.", "text", True),
    ("250 2.1.5 <joann@example.com>: ok.", "text", False),
])
def test_a_text_names_the_person_by_the_key_of_its_values(text, kind, named):
    from email_engine_assets.privacy.matching import holds, person_of

    assert holds(person_of(ANN), text, kind, ";" if text.startswith("jo;") else ",") is named


def test_matching_redacting_and_rewriting_by_key():
    from email_engine_assets.privacy.matching import holds, person_of, record_lines, redact, without_person

    ann = person_of(ANN)
    assert redact(ann, "to <ANN@example.com>, cc joann@example.com.") == "to <[erased]>, cc joann@example.com."
    assert redact(ann, "https://x.example/r?u=ann@example.com&e=joann@example.com") == "https://x.example/r?u=[erased]&e=joann@example.com"
    assert redact(ann, "bad address 'ann@example.com@@'") == "bad address '[erased]@@'"
    zoe = person_of("zoë@xn--exmple-cua.com")  # an IDN domain: the key is punycode, a text may hold Unicode
    assert holds(zoe, "Zoë@Exämple.com,Zoë", "csv") and not holds(zoe, "bzoë@exämple.com", "text")
    lines = 'email,note\njoann@example.com,x\n"ann@example.com","two\nlines"\nbob@example.com,"ann@example.com"\n'
    assert record_lines(ann, lines.splitlines(keepends=True), "csv") == [3, 5]
    assert without_person(ann, b'{"email": "bob@example.com"}\n{"email": "ann\\u0040example.com"}\n') == (b'{"email": "bob@example.com"}\n\n', 1)
    assert without_person(ann, b'{"email": "joann@example.com"}') == (b'{"email": "joann@example.com"}', 0)
    assert without_person(ann, b'[{"email": "Ann@example.com"}]') == (None, 1)
