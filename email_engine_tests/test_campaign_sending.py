"""Campaigns with their real parts: segment snapshots, template files, the outbox.

segment -> campaign_audiences -> campaign_sends -> .eml files, as Dagster materializations on the
real database; ``campaign send --json`` and ``preview`` through the CLI; settings that cannot work
block the send with a reason naming the file.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs, cli
from email_engine_assets.audiences import store as segment_store
from email_engine_assets.audiences.assets import segments
from email_engine_assets.campaigns import store as campaign_store
from email_engine_assets.campaigns.assets import (
    campaign_audiences,
    campaign_partitions,
    campaign_sends,
)
from email_engine_assets.campaigns.definitions import campaign_resources
from email_engine_assets.campaigns.files import parse_campaign
from email_engine_assets.campaigns.ledger import SEND_STATES, skipped_state
from email_engine_assets.campaigns.wiring import (
    PartMissing,
    SegmentAudience,
    TemplateComposers,
)
from email_engine_assets.content.composer import SKIP_REASONS as COMPOSE_SKIP_REASONS
from email_engine_assets.content.tracking_tokens import verify_tracking_token
from email_engine_assets.content.unsubscribe import verify_unsubscribe_token
from email_engine_assets.tenancy.config import load_tenants
from email_engine_assets.tenancy.partitions import tenant_partitions
from email_engine_resources import postgres as database
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.signing_key import signing_key
from email_engine_resources.transports import MailwizzResource, OutboxResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.campaign_parts import write_campaign
from email_engine_tests.content_helpers import simple, write_template

SEND_NOW = {"ops": {"campaign_audiences": {"config": {"send_now": True}}}}  # as `campaign send`: a draft starts
DKIM_BLOCK = "dkim:\n  domain: acme.example\n  selector: s1\n  private_key: {env: ACME_DKIM_KEY_FOR_TEST}\n"

TENANT = """\
id: acme
name: Acme Industrie
default_language: fr
sources:
  - id: crm
    priority: 10
unsubscribe:
  base_url: https://unsubscribe.acme.example/
  mailto: unsubscribe@acme.example
segments:
  - name: readers
    all:
      - {field: category, equals: news}
    verdicts: [valid, unknown]
"""

# email -> (language, tags, verdict); the category is news for all
PEOPLE = {
    "ann@example.com": ("fr", ["vip"], "valid"),  # the vip variant
    "bob@example.com": ("fr", [], "valid"),  # category_language
    "cy@example.com": ("de", [], "unknown"),  # category_language (de)
    "dan@example.com": ("es", [], "valid"),  # no news template in es nor en: skipped no_template
    "eve@example.com": ("fr", [], "valid"),  # suppressed after the freeze, before the send
    "fay@example.com": ("fr", [], "invalid"),  # not in the segment
    "gil@example.com": ("fr", [], "valid"),  # suppressed before the segment was built
}


def _add_people(engine) -> dict[str, int]:
    ids = {}
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        for address, (language, tags, verdict) in PEOPLE.items():
            ids[address] = conn.execute(
                sa.text("""INSERT INTO contacts (tenant_id, email, first_name, language, category, tags)
                           VALUES ('acme', :e, :n, :l, 'news', :tags) RETURNING contact_id"""),
                {"e": address, "n": address.split("@")[0].title(), "l": language, "tags": tags},
            ).scalar_one()
            conn.execute(
                sa.text("""INSERT INTO email_validations (tenant_id, contact_id, email, verdict, syntax_ok, disposable,
                                                          role_account, free_mail)
                           VALUES ('acme', :c, :e, :v, true, false, false, false)"""),
                {"c": ids[address], "e": address, "v": verdict},
            )
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', 'gil@example.com', 'bounced')"))
    return ids


def _suppress(engine, address: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', :e, 'unsubscribed')"), {"e": address})


@pytest.fixture
def shop(engine, workspace, tmp_path, monkeypatch):
    """A tenant with a segment, templates for news in fr (and a vip variant) and de, a draft campaign."""
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    workspace.tenant("acme", TENANT)
    write_template(workspace.root, "acme", "news_fr.yaml", simple("news", "fr", subject="Bonjour {{ first_name }}"))
    write_template(workspace.root, "acme", "news_fr_vip.yaml", simple("news", "fr", tags=("vip",), subject="Cher {{ first_name }}"))
    write_template(workspace.root, "acme", "news_de.yaml", simple("news", "de", subject="Hallo {{ first_name }}"))
    write_campaign(workspace.root, "acme", "news", segment="readers", category="news", reply_to="help@acme.example")
    ids = _add_people(engine)
    return SimpleNamespace(engine=engine, root=workspace.root, ids=ids, outbox=tmp_path / "home" / "outbox")


def _ledger(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, state, template, rule, message_id, contact_id FROM campaign_sends "
                                    "WHERE tenant_id = 'acme' AND campaign = 'news'")).all()
    return {r.email: tuple(r[1:]) for r in rows}


def test_segment_to_outbox_through_the_real_assets(shop):
    resources = {**campaign_resources(), "outbox": OutboxResource(root=str(shop.outbox)), "powermta": PowerMtaResource(),
                 "mailwizz": MailwizzResource(), "db": PostgresResource(), "workspace": WorkspaceResource()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])
        instance.add_dynamic_partitions(campaign_partitions.name, ["acme.news"])
        assert dg.materialize([segments], partition_key="acme", instance=instance, resources=resources).success
        frozen = dg.materialize([campaign_audiences], partition_key="acme.news", instance=instance, resources=resources,
                                run_config=SEND_NOW)
        assert frozen.success
        assert all(e.passed for e in frozen.get_asset_check_evaluations())
        _suppress(shop.engine, "eve@example.com")  # after the freeze: the claim skips it
        sent = dg.materialize([campaign_sends], partition_key="acme.news", instance=instance, resources=resources)
        assert sent.success
    ledger = _ledger(shop.engine)
    assert {e: row[:3] for e, row in ledger.items()} == {
        "ann@example.com": ("sent", "news_fr_vip", "variant"),
        "bob@example.com": ("sent", "news_fr", "category_language"),
        "cy@example.com": ("sent", "news_de", "category_language"),
        "dan@example.com": ("skipped_no_template", None, None),
        "eve@example.com": ("skipped_suppressed", None, None),
    }
    counts = campaign_runs.counts_of("acme.news")
    assert counts["skipped"] == {"suppressed": 1, "no_template": 1, "render_error": 0, "bad_address": 0, "cancelled": 0}
    assert (counts["state"], counts["sent"], counts["audience"]) == ("completed", 3, 5)
    files = sorted(shop.outbox.rglob("*.eml"))
    assert len(files) == 3
    key = signing_key()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        status, template, rule, message_id, contact_id = ledger[address]
        assert message["Message-ID"] == message_id and message_id.endswith("@acme.example>")
        assert message["From"] == "Acme <news@acme.example>" and message["Reply-To"] == "help@acme.example"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", message["List-Unsubscribe"]).groups()
        assert mailto == "mailto:unsubscribe@acme.example" and url.startswith("https://unsubscribe.acme.example/u/")
        assert verify_unsubscribe_token(key, url.rsplit("/", 1)[1]) == ("acme", "news", contact_id)
        first = address.split("@")[0].title()
        assert message["Subject"] == {"news_fr_vip": f"Cher {first}", "news_fr": f"Bonjour {first}", "news_de": f"Hallo {first}"}[template]
        assert url in message.get_body(("plain",)).get_content()


def test_with_the_tenants_tracking_on_the_outbox_messages_carry_tracked_links_and_the_pixel(shop):
    tracking = "tracking:\n  opens: true\n  clicks: true\n  base_url: https://t.acme.example\n  exclude_tag: vip\n"
    (shop.root / "tenants" / "acme.yaml").write_text(TENANT + tracking, encoding="utf-8")
    link = '<a href="https://shop.acme.example/news?c=1&amp;d=2">La boutique</a>'
    for name, tags in (("news_fr", ()), ("news_fr_vip", ("vip",)), ("news_de", ())):
        language = name.split("_")[1]
        write_template(shop.root, "acme", f"{name}.yaml", simple(
            "news", language, tags=tags, body=f'<p>Hi {{{{ first_name }}}}</p>{link}<a href="{{{{ unsubscribe_url }}}}">unsubscribe</a>'))
    resources = {**campaign_resources(), "outbox": OutboxResource(root=str(shop.outbox)), "powermta": PowerMtaResource(),
                 "mailwizz": MailwizzResource(), "db": PostgresResource(), "workspace": WorkspaceResource()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["acme"])
        instance.add_dynamic_partitions(campaign_partitions.name, ["acme.news"])
        assert dg.materialize([segments], partition_key="acme", instance=instance, resources=resources).success
        assert dg.materialize([campaign_audiences], partition_key="acme.news", instance=instance, resources=resources,
                              run_config=SEND_NOW).success
        assert dg.materialize([campaign_sends], partition_key="acme.news", instance=instance, resources=resources).success
    with shop.engine.connect() as conn:
        tokens = dict(conn.execute(sa.text("SELECT email, token FROM campaign_sends WHERE tenant_id = 'acme' AND state = 'sent'")).all())
    key = signing_key()
    seen = {}
    for path in shop.outbox.rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        address = message["To"].addresses[0].addr_spec
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        unsubscribe = re.match(r"<([^>]+)>", message["List-Unsubscribe"]).group(1)
        assert f'href="{unsubscribe}"' in html and unsubscribe.startswith("https://unsubscribe.acme.example/u/")
        clicks = re.findall(r"https://t\.acme\.example/c/([\w.-]+)", html + text)
        opens = re.findall(r'<img src="https://t\.acme\.example/o/([\w.-]+)"', html)
        hits = [verify_tracking_token(key, t, "click") for t in clicks] + [verify_tracking_token(key, t, "open") for t in opens]
        assert all((h.tenant_id, h.row_token) == ("acme", tokens[address]) for h in hits)
        seen[address] = sorted({(h.kind, h.link_index, h.url) for h in hits}, key=str)
    tracked = [("click", 0, "https://shop.acme.example/news?c=1&d=2"), ("open", None, None)]
    assert seen == {"ann@example.com": [], "bob@example.com": tracked, "cy@example.com": tracked, "eve@example.com": tracked}


@pytest.fixture
def cli_env(shop, scratch_database, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with shop.engine.begin() as conn:
        tenant = load_tenants(shop.root, ["acme"]).tenants["acme"]
        segment_store.build_segment(conn, "acme", tenant.segment("readers"))
    yield shop
    os.environ.pop("DAGSTER_HOME", None)


def test_campaign_send_json_adds_up_and_preview_shows_the_message(cli_env, capsys):
    assert cli.main(["preview", "acme.news", "--email", "Ann@Example.com"]) == 0
    out = capsys.readouterr().out
    assert "template: news_fr_vip (rule: variant)" in out
    assert "Subject: Cher Ann" in out and "List-Unsubscribe: <https://unsubscribe.acme.example/u/" in out
    assert "Hello Ann" in out  # the text part, converted from the HTML
    assert cli.main(["preview", "acme.news", "--email", "dan@example.com"]) == 0
    assert "skipped (no_template)" in capsys.readouterr().out
    assert cli.main(["preview", "acme.news", "--email", "nobody@example.com"]) == 1
    assert "tenant acme has no contact 'nobody@example.com'" in capsys.readouterr().err
    assert cli.main(["preview", "acme.nope", "--email", "ann@example.com"]) == 1
    capsys.readouterr()

    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["audience"] == 5 == sum(data[k] for k in ("queued", "sent", "handed_off", "failed", "unknown")) + sum(data["skipped"].values())
    assert (data["sent"], data["skipped"]["no_template"]) == (4, 1)
    # the preview shows the Message-ID the ledger row got
    assert cli.main(["preview", "acme.news", "--email", "ann@example.com", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert dict(shown["headers"])["Message-ID"] == _ledger(cli_env.engine)["ann@example.com"][3]


def test_a_tenant_without_unsubscribe_blocks_with_the_file_named(cli_env, capsys):
    (cli_env.root / "tenants" / "acme.yaml").write_text(TENANT.replace("unsubscribe:\n  base_url: https://unsubscribe.acme.example/\n"
                                                                        "  mailto: unsubscribe@acme.example\n", ""))
    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert [b["check"] for b in data["blocked"]] == ["preflight_renders"]
    assert data["blocked"][0]["reason"].startswith("tenants/acme.yaml: no unsubscribe: block")
    assert data["sent"] == 0 and not list(cli_env.outbox.rglob("*.eml"))


def test_a_broken_template_file_blocks_naming_the_file_and_line(cli_env, capsys):
    write_template(cli_env.root, "acme", "news_de.yaml", simple("news", "de", body="<p>Hallo {{ vorname }}</p>{{ unsubscribe_url }}"))
    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 3
    [blocked] = json.loads(capsys.readouterr().out)["blocked"]
    assert blocked["check"] == "preflight_renders"
    assert "templates/acme/news_de.yaml:5" in blocked["reason"] and "vorname" in blocked["reason"]
    assert not list(cli_env.outbox.rglob("*.eml"))


def test_a_template_that_builds_a_huge_string_fails_preview_and_blocks_the_send(cli_env, capsys):
    doubling = ("{% set ns = namespace(s=first_name) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                "<p>{{ ns.s|length }}</p>{{ unsubscribe_url }}")
    write_template(cli_env.root, "acme", "news_de.yaml", simple("news", "de", body=doubling))
    assert cli.main(["preview", "acme.news", "--email", "cy@example.com", "--json"]) == 1
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["skipped"] == "render_error" and shown["template"] is None
    assert "templates/acme/news_de.yaml, line 5 (html): refused by the sandbox: '~' would make a string of" in shown["detail"]
    assert captured.err.startswith("error: templates/acme/news_de.yaml, line 5 (html): refused by the sandbox")
    assert cli.main(["preview", "acme.news", "--email", "cy@example.com"]) == 1
    assert "would be skipped (render_error)" in capsys.readouterr().out
    assert cli.main(["preview", "acme.news", "--email", "bob@example.com", "--json"]) == 0  # another template renders
    rendered = json.loads(capsys.readouterr().out)
    assert rendered["template"] == "news_fr" and rendered["skipped"] is None
    assert list(rendered) == list(shown)  # the same keys, rendered or skipped

    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 3
    [blocked] = json.loads(capsys.readouterr().out)["blocked"]
    assert blocked["check"] == "preflight_renders"
    assert "templates/acme/news_de.yaml:5" in blocked["reason"] and "would make a string of" in blocked["reason"]
    assert not list(cli_env.outbox.rglob("*.eml"))


def test_a_segment_rebuilt_under_another_definition_while_frozen_stops_the_run(shop):
    tenant = load_tenants(shop.root, ["acme"]).tenants["acme"]
    with shop.engine.begin() as conn:
        segment_store.build_segment(conn, "acme", tenant.segment("readers"))
    narrower = tenant.segment("readers").model_copy(update={"verdicts": ["valid"]})
    assert narrower.definition_hash != tenant.segment("readers").definition_hash

    class RebuiltMeanwhile(SegmentAudience):
        def current_snapshot(self, conn, tenant_id, segment):
            snapshot = super().current_snapshot(conn, tenant_id, segment)
            with shop.engine.begin() as other:  # another run rebuilds the segment right after it was read
                segment_store.build_segment(other, "acme", narrower)
            return snapshot

    resources = {**campaign_resources(), "audience_source": dg.ResourceDefinition.hardcoded_resource(RebuiltMeanwhile()),
                 "db": PostgresResource(), "workspace": WorkspaceResource()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(campaign_partitions.name, ["acme.news"])
        result = dg.materialize([campaign_audiences], partition_key="acme.news", instance=instance, resources=resources,
                                run_config=SEND_NOW, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "audience not frozen" in failure.step_failure_data.error.message
    assert "was rebuilt with another definition" in failure.step_failure_data.error.message
    assert _ledger(shop.engine) == {}  # nothing frozen, nothing claimed
    assert campaign_runs.counts_of("acme.news")["state"] == "draft"


def test_list_content_is_the_template_in_mailwizz_tag_mode(shop):
    tenant = load_tenants(shop.root, ["acme"]).tenants["acme"]
    campaign = parse_campaign(shop.root / "campaigns" / "acme" / "news.yaml", tenant)
    composer = TemplateComposers(key=b"k" * 32).composer(tenant, campaign)
    content = composer.list_content("news_fr")
    assert content.subject == "Bonjour [FNAME]" and "[UNSUBSCRIBE_URL]" in content.html and content.custom_fields == {}
    assert composer.list_mode is False and composer.preflight([]) == []


def test_every_composer_skip_reason_is_a_ledger_state_and_nothing_else_is():
    assert {skipped_state(r) for r in COMPOSE_SKIP_REASONS} <= set(SEND_STATES)
    with pytest.raises(ValueError, match="'render_failed' is not one of"):
        skipped_state("render_failed")


def test_send_at_now_is_scheduled_when_first_seen_and_due_at_once(shop):
    tenant = load_tenants(shop.root, ["acme"]).tenants["acme"]
    path = write_campaign(shop.root, "acme", "now", segment="readers", send_at="now")
    first = datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)
    with shop.engine.begin() as conn:
        assert campaign_store.sync_campaign(conn, parse_campaign(path, tenant), first) is None
        assert campaign_store.due_campaigns(conn, first) == ["acme.now"]
    path.write_text(path.read_text().replace("from_name: Acme", "from_name: Acme News"))  # edited while scheduled
    with shop.engine.begin() as conn:
        assert campaign_store.sync_campaign(conn, parse_campaign(path, tenant), first + timedelta(hours=1)) is None
        row = campaign_store.campaign_row(conn, "acme", "now")
    assert (row["state"], row["send_at"]) == ("scheduled", first)  # keeps the moment it was first seen
    past = write_campaign(shop.root, "acme", "past", segment="readers", send_at="2020-01-01T00:00:00+00:00")
    with shop.engine.begin() as conn:
        assert "must lie in the future" in campaign_store.sync_campaign(conn, parse_campaign(past, tenant), first)
        assert campaign_store.campaign_row(conn, "acme", "past")["state"] == "draft"


def test_a_dkim_key_missing_from_the_environment_is_a_part_missing_naming_the_file(workspace, monkeypatch):
    monkeypatch.delenv("ACME_DKIM_KEY_FOR_TEST", raising=False)
    workspace.tenant("acme", TENANT + "dkim:\n  domain: acme.example\n  selector: s1\n  private_key: {env: ACME_DKIM_KEY_FOR_TEST}\n")
    path = write_campaign(workspace.root, "acme", "news", segment="readers", category="news")
    tenant = load_tenants(workspace.root, ["acme"]).tenants["acme"]
    with pytest.raises(PartMissing, match=r"^tenants/acme.yaml: dkim.private_key: environment variable ACME_DKIM_KEY_FOR_TEST is not set"):
        TemplateComposers(key=b"k" * 32).composer(tenant, parse_campaign(path, tenant))


@pytest.mark.parametrize("case", ["broken PEM", "EC key", "512-bit RSA key"])
def test_a_dkim_key_that_cannot_sign_is_a_part_missing_naming_the_file_and_why(workspace, monkeypatch, case):
    import shutil
    import subprocess

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if case == "512-bit RSA key" and not shutil.which("openssl"):
        pytest.skip("openssl makes the 512-bit key")
    pem, reason = {
        "broken PEM": (lambda: "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n",
                       "not a valid PEM private key"),
        "EC key": (lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
                   r"an EC \(elliptic-curve\) key; DKIM signing here is rsa-sha256 and needs an RSA key"),
        "512-bit RSA key": (lambda: subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True).stdout.decode(),
                            "an RSA key of 512 bits; DKIM needs at least 1024"),
    }[case]
    monkeypatch.setenv("ACME_DKIM_KEY_FOR_TEST", pem())
    workspace.tenant("acme", TENANT + DKIM_BLOCK)
    path = write_campaign(workspace.root, "acme", "news", segment="readers", category="news")
    tenant = load_tenants(workspace.root, ["acme"]).tenants["acme"]
    with pytest.raises(PartMissing, match=rf"^tenants/acme.yaml: dkim.private_key: {reason}"):
        TemplateComposers(key=b"k" * 32).composer(tenant, parse_campaign(path, tenant))


def test_a_due_campaign_whose_file_broke_is_a_failure_of_its_own(shop):
    path = write_campaign(shop.root, "acme", "now", segment="readers", category="news", send_at="now")
    tenant = load_tenants(shop.root, ["acme"]).tenants["acme"]
    with shop.engine.begin() as conn:
        campaign_store.sync_campaign(conn, parse_campaign(path, tenant), datetime.now(timezone.utc))
    path.write_text(path.read_text() + "colour: blue\n")  # an unknown key: the file no longer loads
    with dg.instance_for_test() as instance:
        [outcome] = campaign_runs.send_due_campaigns(instance)
    assert outcome.counts["state"] == "scheduled" and outcome.counts["sent"] == 0
    assert outcome.failures[0].startswith("acme.now: ") and "colour" in outcome.failures[0]



def test_a_dkim_key_that_cannot_sign_stops_every_send_even_overridden_before_any_row_is_claimed(cli_env, capsys, monkeypatch):
    """A 512-bit key: blocked at the checks, and a run that overrides them fails when the composer is
    built, before the claim; with a good key the next run sends, every message verifying through the
    public key published in (loopback) DNS."""
    import base64
    import shutil
    import subprocess

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from email_engine_tests.dns_server import LoopbackDnsServer, TestZone, txt_lookup

    if not shutil.which("openssl"):
        pytest.skip("openssl makes the 512-bit key (cryptography generates no key that short)")
    weak = subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True).stdout.decode("ascii")
    monkeypatch.setenv("ACME_DKIM_KEY_FOR_TEST", weak)
    (cli_env.root / "tenants" / "acme.yaml").write_text(TENANT + DKIM_BLOCK)
    reason = "tenants/acme.yaml: dkim.private_key: an RSA key of 512 bits; DKIM needs at least 1024"
    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert [(b["check"], b["reason"][:len(reason)]) for b in data["blocked"]] == [("preflight_renders", reason)]
    assert cli.main(["campaign", "send", "acme.news", "--json", "--override", "preflight_renders"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["sent"] == 0 and any(reason in f and "campaign_sends" in f for f in data["failures"]), data["failures"]
    assert {row[0] for row in _ledger(cli_env.engine).values()} == {"queued"}  # no row claimed
    assert not list(cli_env.outbox.rglob("*.eml"))
    assert weak.split("\n")[1][:20] not in json.dumps(data)

    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    monkeypatch.setenv("ACME_DKIM_KEY_FOR_TEST", good.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode("ascii"))
    assert cli.main(["campaign", "send", "acme.news", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sent"] == 4
    der = good.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    zone = TestZone(txt={"s1._domainkey.acme.example": ["v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")]})
    files = sorted(cli_env.outbox.rglob("*.eml"))
    with LoopbackDnsServer(zone) as server:
        lookup = txt_lookup(server)
        assert len(files) == 4 and all(dkim.verify(path.read_bytes(), dnsfunc=lookup) for path in files)


def test_a_sends_progress_is_logged_at_most_every_ten_seconds_and_the_last_batch_always():
    from email_engine_assets.campaigns.assets import _Progress

    lines, now = [], [0.0]
    progress = _Progress(lines.append, clock=lambda: now[0])
    for batch in range(1, 31):  # a window every second
        progress(batch, {"sent": batch * 200})
        now[0] += 1.0
    progress.last()
    assert lines == ["batch 1: {'sent': 200}", "batch 11: {'sent': 2200}", "batch 21: {'sent': 4200}", "batch 30: {'sent': 6000}"]
    progress.last()  # nothing new: nothing logged twice
    assert len(lines) == 4
