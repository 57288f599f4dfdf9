"""A send never freezes a segment snapshot older than its inputs: the tenant's segments are rebuilt
in the send's run first when contacts, verdicts, tags, suppressions or the definition changed."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.audiences.segment_build import build_tenant_segments, outdated
from email_engine_assets.campaigns.parts import Problem
from email_engine_assets.campaigns.wiring import SegmentAudience
from email_engine_assets.tenancy.config import load_tenants
from email_engine_tests.campaign_parts import (
    SimpleComposers,
    add_contacts,
    campaign_defs,
    outbox_recipients,
    write_campaign,
)
from email_engine_tests.test_cli import cli_env, dagster_db, email_engine, example_workspace  # noqa: F401 (fixtures)

LEADS = 600


def _leads_file(tmp_path, count: int = LEADS, start: int = 0):
    drop = tmp_path / f"leads-{start}.csv"
    rows = "".join(f"lead{i}@leads.example,Lead{i}\n" for i in range(start, start + count))
    drop.write_text("email,first_name\n" + rows, encoding="utf-8")
    return drop


def test_import_then_campaign_send_sends_to_the_contacts_just_imported(cli_env, example_workspace, tmp_path, engine, monkeypatch):
    # Each command in its own process, as an operator types them (the code location reads the DNS
    # settings when it is imported: here no DNS answers, so every verdict is unknown, which the segment lists).
    ws = ["--workspace", str(example_workspace)]
    done = email_engine([*ws, "import", str(_leads_file(tmp_path)), "--tenant", "acme", "--source", "crm", "--json"], cli_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["new"] == LEADS
    done = email_engine([*ws, "campaign", "send", "acme.autumn_news", "--json"], cli_env)
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent["blocked"] == [] and done.returncode == 0, done.stdout + done.stderr
    with engine.connect() as conn:
        b2b = conn.execute(sa.text("SELECT count(*) FROM contacts WHERE tenant_id = 'acme' AND category = 'b2b'")).scalar_one()
    assert b2b >= LEADS and sent["audience"] == b2b and sent["sent"] == b2b
    monkeypatch.setenv("DAGSTER_HOME", str(Path(cli_env["EMAIL_ENGINE_HOME"]) / "dagster_home"))  # the commands' instance
    with dg.DagsterInstance.get() as instance:  # the rebuild is a materialization of segments[acme], in the send's run
        event = instance.get_latest_materialization_event(dg.AssetKey("segments"))
        run = instance.get_run_by_id(event.run_id)
    assert run.job_name == "campaign_send_job" and event.asset_materialization.partition == "acme"
    assert event.asset_materialization.metadata["per_segment"].value["b2b_newsletter"]["members"] == b2b


SEGMENTED = """\
id: acme
name: Acme
sources: [{id: crm}]
segments:
  - name: everyone
    verdicts: [valid, risky, unknown]
  - name: by_country
    all: [{field: country, equals: FR}]
"""


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)

    error = info


def _validate(engine, ids) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO email_validations (contact_id, tenant_id, email, verdict, syntax_ok)
                                SELECT c.contact_id, c.tenant_id, c.email, 'valid', true FROM contacts c
                                WHERE c.contact_id = ANY(CAST(:ids AS bigint[]))"""), {"ids": list(ids)})


def _acme(workspace, text: str = SEGMENTED):
    workspace.tenant("acme", text)
    return load_tenants(workspace.root, ["acme"]).tenants["acme"]


def _change(engine, sql: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_each_input_of_a_segment_outdates_its_snapshot_until_the_tenants_segments_are_rebuilt(engine, workspace):
    tenant = _acme(workspace)
    ids = add_contacts(engine, "acme", ["ann@example.com", "bob@example.com"])
    _validate(engine, ids)
    assert outdated(engine, tenant, "everyone") == ["segment 'everyone' has no snapshot yet"]
    assert outdated(engine, tenant, "undeclared") == []  # nothing to build it from
    changes = {
        "contacts": ("INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'cy@example.com')", {}),
        "verdicts": ("UPDATE email_validations SET checked_at = now() WHERE contact_id = :c", {"c": ids[0]}),
        "enrichment": ("""INSERT INTO contact_enrichment (contact_id, tenant_id, language, language_rule, inputs_sha256)
                          VALUES (:c, 'acme', 'fr', 'country', 'x')""", {"c": ids[0]}),
        "tags": ("INSERT INTO tag_assignments (contact_id, tenant_id, tag, provenance) VALUES (:c, 'acme', 'vip', 'manual')",
                 {"c": ids[1]}),
        "suppressions": ("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'bob@example.com', 'manual')", {}),
    }
    changes["suppressions (lifted)"] = ("DELETE FROM suppressions WHERE tenant_id = 'acme' AND email = 'bob@example.com'", {})
    for kind, (sql, params) in changes.items():
        build_tenant_segments(engine, tenant, _Log())
        assert outdated(engine, tenant, "everyone") == [], kind
        _change(engine, sql, **params)
        reasons = outdated(engine, tenant, "everyone")
        assert len(reasons) == 1 and reasons[0].startswith(f"{kind.split()[0]} changed at "), (kind, reasons)
    build_tenant_segments(engine, tenant, _Log())
    changed = _acme(workspace, SEGMENTED.replace("verdicts: [valid, risky, unknown]", "verdicts: [valid]"))
    assert outdated(engine, changed, "everyone") == [
        "segment 'everyone' is defined otherwise in the tenant file than when it was built"
    ]
    assert outdated(engine, changed, "by_country") == []


def test_a_blocked_send_sent_later_freezes_the_contacts_added_in_between(engine, workspace, tmp_path, monkeypatch):
    tenant = _acme(workspace)
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    ids = add_contacts(engine, "acme", ["ann@example.com", "bob@example.com"])
    _validate(engine, ids)
    build_tenant_segments(engine, tenant, _Log())
    composers = SimpleComposers(problems=[Problem("templates/acme/news.yaml", 3, "fname", "undefined variable")])
    defs = campaign_defs(SegmentAudience(), composers)
    write_campaign(workspace.root, "acme", "spring", segment="everyone")
    with dg.instance_for_test() as instance:
        blocked = campaign_runs.send("acme.spring", instance=instance, definitions=defs)
        assert [b["check"] for b in blocked.blocked] == ["preflight_renders"] and blocked.counts["audience"] == 2
        _validate(engine, add_contacts(engine, "acme", ["cy@example.com"]))  # imported and checked while it waits
        done = campaign_runs.send("acme.spring", overrides=["preflight_renders"], instance=instance, definitions=defs)
    assert done.failures == [] and (done.counts["audience"], done.counts["sent"]) == (3, 3)
    assert outbox_recipients(tmp_path / "home" / "outbox") == ["ann@example.com", "bob@example.com", "cy@example.com"]
