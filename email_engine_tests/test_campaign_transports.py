"""Campaigns end to end through PowerMTA and MailWizz: real Dagster runs (``campaign_runs.send``), real
templates (``content.composer.Composer``), PostgreSQL, and the loopback stand-ins of both products."""

from __future__ import annotations

import textwrap
from datetime import datetime
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets as campaign_assets
from email_engine_assets.campaigns import store, wiring
from email_engine_resources.mailwizz import MailwizzInstance, send_at_text
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_tests.campaign_parts import Late, StaticAudience, campaign_defs, write_campaign
from email_engine_tests.content_helpers import simple, write_template
from email_engine_tests.mailwizz_server import running_mailwizz
from email_engine_tests.powermta_server import DROP, PowerMtaStandIn

SIGNING_KEY = b"a-signing-key-for-the-transport-tests"
MW_KEY_ENV = "ACME_MAILWIZZ_TEST_KEY"
TENANT = """\
id: acme
name: Acme
default_language: en
sources:
  - id: crm
    priority: 10
unsubscribe:
  base_url: https://unsubscribe.acme.example/
transports:
{transport}
"""


class TemplateComposers(wiring.TemplateComposers):
    """The code location's composer factory on the test workspace; ``on_compose(contact)`` is called
    before each message is composed, so a test can look at MailWizz between batches."""

    def __init__(self, root):
        super().__init__(root, SIGNING_KEY)
        self.on_compose = None

    def composer(self, tenant, campaign):
        made = super().composer(tenant, campaign)
        if self.on_compose is not None:
            inner, watch = made.compose, self.on_compose

            def compose(contact, **kwargs):
                watch(contact)
                return inner(contact, **kwargs)

            made.compose = compose
        return made


def add_people(engine, people: list[tuple[str, str, str]]) -> list[int]:
    """(email, first name, language) contacts of tenant acme, category news, company Initech."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        return list(conn.execute(
            sa.text("""INSERT INTO contacts (tenant_id, email, first_name, language, category, company)
                       SELECT 'acme', e, f, l, 'news', 'Initech' FROM unnest(CAST(:e AS text[]), CAST(:f AS text[]), CAST(:l AS text[])) AS p(e, f, l)
                       RETURNING contact_id"""),
            {"e": [p[0] for p in people], "f": [p[1] for p in people], "l": [p[2] for p in people]},
        ).scalars())


def ledger(engine) -> dict[str, tuple[str, str | None, str]]:
    with engine.connect() as conn:
        return {r.email: (r.state, r.detail, r.token) for r in conn.execute(
            sa.text("SELECT email, state, detail, token FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = 'spring'"))}


def setup(workspace, engine, monkeypatch, transport_yaml: str, people, transports: dict, **campaign_fields):
    """The tenant, its templates and people, and ``env.defs``: the code location with the test's audience,
    the real composer and ``transports`` (``powermta`` / ``mailwizz`` / ``outbox`` resources) in place."""
    workspace.tenant("acme", TENANT.format(transport=textwrap.indent(textwrap.dedent(transport_yaml), "  ")))
    write_template(workspace.root, "acme", "news_en.yaml", simple("news", "en", body='<p>Hello {{ first_name }} of {{ company }}</p>'
                                                                   '<a href="{{ unsubscribe_url }}">unsubscribe</a>'))
    write_template(workspace.root, "acme", "news_fr.yaml", simple("news", "fr", subject="Bonjour {{ first_name }}"))
    ids = add_people(engine, people)
    env = SimpleNamespace(root=workspace.root, ids=ids, audience=StaticAudience({"vip": ids}), composers=TemplateComposers(workspace.root),
                          transports=transports)
    env.defs = campaign_defs(Late(env, "audience"), Late(env, "composers"), **transports)
    write_campaign(workspace.root, "acme", "spring", **campaign_fields)
    return env


# -- PowerMTA ---------------------------------------------------------------------------------

PEOPLE = [("ann@example.com", "Ann", "en"), ("bad@example.com", "Bad", "en"), ("cy@example.com", "Cy", "fr"),
          ("drop@example.com", "Dee", "en"), ("eve@example.com", "Eve", "fr")]


@pytest.fixture
def powermta():
    with PowerMtaStandIn() as mta:
        yield mta


def pmta_yaml(mta) -> str:
    return f"""\
        - name: pmta
          kind: powermta
          host: {mta.host}
          port: {mta.port}
          virtual_mta: vmta-acme
          bounce_address: bounces@bounce.acme.example
          connections: 2
          timeout_seconds: 5
          retries: 1
          allow_private: true
        """


def test_powermta_each_member_once_with_job_vmta_and_envid_failures_and_unknown_resend(engine, workspace, monkeypatch, powermta):
    env = setup(workspace, engine, monkeypatch, pmta_yaml(powermta), PEOPLE,
          {"powermta": PowerMtaResource(retry_backoff_seconds=0.01, helo_name="sender.acme.example")}, transport="pmta")
    powermta.fail("rcpt", "550 5.1.1 <bad@example.com>: no such user", recipient="bad@example.com", times=None)
    powermta.fail("data", DROP, recipient="drop@example.com", times=1)
    with dg.instance_for_test() as instance:
        first = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert first.failures == [] and first.blocked == []
        report = first.as_json()
        assert (report["sent"], report["failed"], report["unknown"], report["state"]) == (3, 1, 1, "completed")
        rows = ledger(engine)
        assert rows["bad@example.com"][0] == "failed" and "550 5.1.1" in rows["bad@example.com"][1]
        assert rows["drop@example.com"][0] == "unknown"
        got = {m.recipients[0]: m for m in powermta.received}
        assert sorted(got) == ["ann@example.com", "cy@example.com", "eve@example.com"]
        for address, m in got.items():
            assert m.header("x-job") == ["acme.spring"] and m.header("x-virtual-mta") == ["vmta-acme"]
            assert m.mail_parameters["ENVID"] == rows[address][2]  # the ledger token, case kept
            assert m.mail_from == "bounces@bounce.acme.example"
        assert "Bonjour Cy" in got["cy@example.com"].header("Subject")[0]  # the contact's own template

        again = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)  # a rerun sends nothing twice
        assert len(powermta.received) == 3 and again.counts["unknown"] == 1
        resent = campaign_runs.send("acme.spring", resend_unknown=True, instance=instance, definitions=env.defs)  # only the unknown row
        assert resent.failures == [] and (resent.counts["sent"], resent.counts["unknown"], resent.counts["failed"]) == (4, 0, 1)
        recipients = [m.recipients[0] for m in powermta.received]
        assert len(recipients) == 4 and recipients[-1] == "drop@example.com"
        assert powermta.received[-1].mail_parameters["ENVID"] == rows["drop@example.com"][2]


def test_powermta_setting_the_client_refuses_fails_the_run_before_any_claim(engine, workspace, monkeypatch, powermta):
    env = setup(workspace, engine, monkeypatch, pmta_yaml(powermta), PEOPLE[:2],
          {"powermta": PowerMtaResource(helo_name="bad name with spaces")}, transport="pmta")
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert len(outcome.failures) == 1 and "transport 'pmta'" in outcome.failures[0] and "helo_name" in outcome.failures[0]
    assert outcome.counts["queued"] == 2 and powermta.sessions == []  # nothing claimed, nothing connected


# -- MailWizz ---------------------------------------------------------------------------------

MW_PEOPLE = [("ann@example.com", "Ann", "en"), ("bob@example.com", "Bob", "en"), ("cy@example.com", "Cy", "fr")]
SEND_AT = "2030-01-15T09:30:00+01:00"


@pytest.fixture
def mailwizz():
    with running_mailwizz() as (url, state):
        yield url, state


def mw_yaml(url: str) -> str:
    return f"""\
        - name: mw
          kind: mailwizz
          base_url: {url}
          api_key: {{env: {MW_KEY_ENV}}}
          timezone: Europe/Paris
          retries: 2
          allow_private: true
        """


def mw_setup(workspace, engine, monkeypatch, url, state, people=MW_PEOPLE):
    monkeypatch.setenv(MW_KEY_ENV, state.api_key)
    return setup(workspace, engine, monkeypatch, mw_yaml(url), people, {"mailwizz": MailwizzResource(backoff_initial=0.01)},
                 transport="mw", send_at=SEND_AT)


def statuses(state) -> dict[str, str]:
    return {c["name"]: c["status"] for c in state.campaigns.values()}


def test_mailwizz_rows_handed_off_once_per_template_and_a_rerun_creates_nothing_twice(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    state.fail_next(1, only=("POST", "/api/campaigns"))  # the first template's campaign create is never answered
    with dg.instance_for_test() as instance:
        first = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert first.failures == [] and first.counts["state"] == "completed"
        assert (first.counts["handed_off"], first.counts["unknown"]) == (1, 2)  # en: create unconfirmed; fr: handed off
        assert statuses(state) == {"acme.spring.news_fr": "pending-sending"}
        state.fail_next(1, only=("GET", "/api/lists"))  # a 500, then the retry succeeds
        again = campaign_runs.send("acme.spring", resend_unknown=True, instance=instance, definitions=env.defs)
    assert again.failures == [] and (again.counts["handed_off"], again.counts["unknown"]) == (3, 0)
    assert {s for s, _, _ in ledger(engine).values()} == {"handed_off"}
    assert state.calls.count(("GET", "/api/lists")) >= 2
    assert sorted(v["name"] for v in state.lists.values()) == ["acme.spring.news_en", "acme.spring.news_fr"]
    en = state.list_by_name("acme.spring.news_en")
    assert sorted(s["EMAIL"] for s in en["subscribers"].values()) == ["ann@example.com", "bob@example.com"]  # each once
    assert state.list_by_name("acme.spring.news_fr")["subscribers"].__len__() == 1
    assert statuses(state) == {"acme.spring.news_en": "pending-sending", "acme.spring.news_fr": "pending-sending"}
    created = state.campaign_by_name("acme.spring.news_en")
    assert created["fields"]["send_at"] == send_at_text(datetime.fromisoformat(SEND_AT), "Europe/Paris") == "2030-01-15 09:30:00"
    assert "[FNAME]" in created["html"] and "[COMPANY]" in created["html"] and "[UNSUBSCRIBE_URL]" in created["html"]
    assert {s.get("COMPANY") for s in en["subscribers"].values()} == {"Initech"}  # the custom list field filled


def test_mailwizz_held_out_addresses_become_suppressions_and_bad_addresses_are_skipped(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state, people=[*MW_PEOPLE, ("jos\u00e9@example.com", "Jose", "en")])
    with MailwizzInstance(url, state.api_key, allow_private=True) as mw:  # the list of an earlier, interrupted run
        list_uid = mw.ensure_list("acme.spring.news_en", from_name="Acme", from_email="news@acme.example", reply_to="")
        mw.client.post(f"lists/{list_uid}/subscribers", {"EMAIL": "bob@example.com"})
    [bob] = state.subscribers(list_uid).values()
    bob["status"] = "unsubscribed"  # bob left through MailWizz
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert outcome.failures == [] and (outcome.counts["handed_off"], outcome.counts["failed"]) == (2, 1)
    assert outcome.counts["skipped"]["bad_address"] == 1
    rows = ledger(engine)
    assert rows["bob@example.com"][0] == "failed" and "holds the address as unsubscribed" in rows["bob@example.com"][1]
    assert rows["jos\u00e9@example.com"][0] == "skipped_bad_address"
    assert bob["status"] == "unsubscribed"  # not subscribed again
    with engine.connect() as conn:
        made = conn.execute(sa.text("SELECT email, reason, detail FROM suppressions WHERE tenant_id = 'acme'")).all()
    assert [(e, r) for e, r, _ in made] == [("bob@example.com", "unsubscribed")] and "campaign spring" in made[0][2]


def test_mailwizz_pause_resume_and_cancel_follow_the_campaign(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    with dg.instance_for_test() as instance:
        assert campaign_runs.send("acme.spring", instance=instance, definitions=env.defs).counts["handed_off"] == 3
        assert set(statuses(state).values()) == {"pending-sending"}  # released once every row was on its list
        state.campaigns["other"] = {"campaign_uid": "other", "name": "acme.spring2.news_en", "status": "sending", "list_uid": "x"}
        paused = campaign_runs.change_state("acme.spring", "pause", env.defs)
        assert paused["mailwizz"] == {"acme.spring.news_en": "paused", "acme.spring.news_fr": "paused"}
        assert statuses(state)["acme.spring2.news_en"] == "sending"  # another campaign's: untouched
        del state.campaigns["other"]
        assert set(statuses(state).values()) == {"paused"}
        campaign_runs.change_state("acme.spring", "pause", env.defs)  # pause-unpause toggles: a second pause must not undo the first
        assert set(statuses(state).values()) == {"paused"}
        resumed = campaign_runs.resume("acme.spring", instance=instance, definitions=env.defs)
        assert set(statuses(state).values()) == {"pending-sending"} and resumed.counts["state"] == "completed"
        resumed = campaign_runs.resume("acme.spring", instance=instance, definitions=env.defs)  # already unpaused: left alone
        assert set(statuses(state).values()) == {"pending-sending"}
    toggles = [c for c in state.calls if c[1].endswith("/pause-unpause")]
    assert len(toggles) == 6  # two campaigns, each released once, paused once and resumed once


ANN_BOB_CY = ["ann@example.com", "bob@example.com", "cy@example.com"]


def toggles(state) -> int:
    return sum(1 for c in state.calls if c[1].endswith("/pause-unpause"))


def test_mailwizz_sends_nobody_until_the_last_batch_is_on_its_list(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 1)  # three batches; ann and bob share a template
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    state.cron_on_every_call = True  # MailWizz's send cron running all along
    seen = []
    env.composers.on_compose = lambda contact: seen.append((contact["email"], list(state.delivered)))
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert outcome.failures == [] and (outcome.counts["handed_off"], outcome.counts["state"]) == (3, "completed")
    assert sorted(e for e, _ in seen) == ANN_BOB_CY
    assert [d for _, d in seen] == [[], [], []]  # batches 2 and 3 joined while MailWizz had mailed nobody
    assert sorted(e for _, e in state.delivered) == ANN_BOB_CY  # each once, once released
    assert set(statuses(state).values()) == {"sent"} and toggles(state) == 2


class _KilledAtRelease(MailwizzInstance):
    def release(self, prefix):
        raise RuntimeError("killed after the last hand-off, before the release")


class KilledBeforeRelease(MailwizzResource):
    """The ``mailwizz`` resource of a run that dies after its last hand-off, before the release."""

    def instance(self, config, *, bulk_size=None):
        made = super().instance(config, bulk_size=bulk_size)
        made.__class__ = _KilledAtRelease
        return made


def test_a_run_killed_before_the_release_is_released_once_by_the_next_send(engine, workspace, monkeypatch, mailwizz):
    from email_engine_assets.definitions import with_resources

    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    killed = with_resources({**env.defs.resources, "mailwizz": KilledBeforeRelease(backoff_initial=0.01)})
    with dg.instance_for_test() as instance:
        [failure] = campaign_runs.send("acme.spring", instance=instance, definitions=killed).failures
        assert "campaign_sends" in failure
        assert campaign_runs.counts_of("acme.spring")["state"] == "running"  # not completed: the release is owed
        assert {s for s, _, _ in ledger(engine).values()} == {"handed_off"}
        assert set(statuses(state).values()) == {"paused"} and state.run_cron() == 0
        again = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert again.failures == [] and again.counts["state"] == "completed" and again.counts["handed_off"] == 3
        assert set(statuses(state).values()) == {"pending-sending"} and toggles(state) == 2
        assert state.run_cron() == 3 and sorted(e for _, e in state.delivered) == ANN_BOB_CY
        campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)  # completed: nothing toggled again
    assert toggles(state) == 2 and set(statuses(state).values()) == {"sent"}


def test_an_operator_pause_holds_until_resume_and_resume_releases_only_after_the_last_batch(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 1)
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    composed = []

    def operator_pauses_during_the_third_batch(contact):
        composed.append(contact["email"])
        if len(composed) == 3:  # what `campaign pause` commits first; its MailWizz part waits for the send
            with engine.begin() as conn:
                store.transition(conn, "acme", "spring", "pause")
        if len(composed) == 4:  # resumed, last batch (composed again: the pause kept it queued): MailWizz still holds every campaign paused
            assert set(statuses(state).values()) == {"paused"}

    env.composers.on_compose = operator_pauses_during_the_third_batch
    with dg.instance_for_test() as instance:
        first = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert (first.counts["state"], first.counts["handed_off"], first.counts["queued"]) == ("paused", 2, 1)
        paused = campaign_runs.change_state("acme.spring", "pause", env.defs)  # the command's MailWizz part
        assert set(paused["mailwizz"].values()) == {"paused"} and toggles(state) == 0  # created paused, left paused
        assert state.run_cron() == 0
        with pytest.raises(campaign_runs.CampaignRefused, match="paused"):
            campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        assert set(statuses(state).values()) == {"paused"} and state.run_cron() == 0
        resumed = campaign_runs.resume("acme.spring", instance=instance, definitions=env.defs)
    assert resumed.failures == [] and (resumed.counts["state"], resumed.counts["handed_off"]) == ("completed", 3)
    assert len(composed) == 4 and set(statuses(state).values()) == {"pending-sending"} and toggles(state) == 2
    assert state.run_cron() == 3 and sorted(e for _, e in state.delivered) == ANN_BOB_CY


def test_mailwizz_cancel_of_a_paused_campaign_leaves_its_mailwizz_campaigns_paused(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    with dg.instance_for_test() as instance:
        campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    with engine.begin() as conn:  # a send interrupted after the first template: the rest still queued
        conn.execute(sa.text("UPDATE campaign_sends SET state = 'queued', template = NULL, settled_at = NULL WHERE email = 'bob@example.com'"))
        conn.execute(sa.text("UPDATE campaigns SET state = 'paused', completed_at = NULL WHERE campaign = 'spring'"))
    cancelled = campaign_runs.change_state("acme.spring", "cancel", env.defs)
    assert cancelled["state"] == "cancelled" and cancelled["skipped"]["cancelled"] == 1
    assert statuses(state) == {"acme.spring.news_en": "paused", "acme.spring.news_fr": "paused"}


def test_a_template_mailwizz_cannot_carry_blocks_the_send_naming_file_line_and_construct(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    write_template(workspace.root, "acme", "news_fr.yaml", """\
        category: news
        language: fr
        subject: "Bonjour"
        html: |
          <p>Bonjour</p>
          {% if first_name %}<p>{{ first_name }}</p>{% endif %}
          <a href="{{ unsubscribe_url }}">désinscription</a>
        """)
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    [blocked] = outcome.blocked
    assert blocked["check"] == "preflight_renders"
    assert "templates/acme/news_fr.yaml:6" in blocked["reason"] and "a conditional ({% if %})" in blocked["reason"]
    assert outcome.counts["queued"] == 3 and state.lists == {} and state.campaigns == {}
    with dg.instance_for_test() as instance:  # overridden: that template's rows fail, nothing of it reaches MailWizz
        outcome = campaign_runs.send("acme.spring", overrides=["preflight_renders"], instance=instance, definitions=env.defs)
    assert (outcome.counts["handed_off"], outcome.counts["failed"]) == (2, 1)
    state_, detail, _ = ledger(engine)["cy@example.com"]
    assert state_ == "failed" and "no list content" in detail and "news_fr.yaml" in detail
    assert statuses(state) == {"acme.spring.news_en": "pending-sending"}


def test_fields_mailwizz_cannot_create_block_the_send_naming_them_until_made_in_mailwizz(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    state.fields_create_answer = 404  # this MailWizz has GET lists/{uid}/fields only
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        [blocked] = outcome.blocked
        assert blocked["check"] == "preflight_renders" and "transport 'mw'" in blocked["reason"]
        assert "create the list field(s) COMPANY (type text) on list acme.spring.news_en in MailWizz" in blocked["reason"]
        assert outcome.counts["queued"] == 3 and state.campaigns == {}
        en = state.list_by_name("acme.spring.news_en")  # the list is there for the operator to add the field to
        assert en["subscribers"] == {}
        en["fields"].append({"tag": "COMPANY", "label": "Company", "required": "no", "type": {"identifier": "text"}})
        again = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert again.blocked == [] and again.counts["handed_off"] == 3
    assert {s.get("COMPANY") for s in en["subscribers"].values()} == {"Initech"}


def test_a_customer_without_company_details_blocks_the_send_naming_what_to_fill_in(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    state.company_complete = False
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        [blocked] = outcome.blocked
        assert blocked["check"] == "preflight_renders"
        assert "fill in the customer's company details in MailWizz (company name, country, address, city, zip code)" in blocked["reason"]
        assert outcome.counts["queued"] == 3 and state.lists == {}
        state.company_complete = True  # filled in
        assert campaign_runs.send("acme.spring", instance=instance, definitions=env.defs).counts["handed_off"] == 3


def test_a_refused_key_or_an_unset_variable_fails_the_run_clearly_and_claims_nothing(engine, workspace, monkeypatch, mailwizz):
    url, state = mailwizz
    env = mw_setup(workspace, engine, monkeypatch, url, state)
    wrong = "wrong-key-9f8e7d6c5b4a"
    monkeypatch.setenv(MW_KEY_ENV, wrong)
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
        [failure] = outcome.failures
        assert "transport 'mw'" in failure and "MailWizz answered 400" in failure
        logs = " ".join(str(e.dagster_event or "") + (e.user_message or "") for r in instance.get_runs() for e in instance.all_logs(r.run_id))
        assert wrong not in failure and wrong not in logs
        assert outcome.counts["queued"] == 3 and state.lists == {}

        monkeypatch.delenv(MW_KEY_ENV)
        [failure] = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs).failures
        assert f"environment variable {MW_KEY_ENV} is not set" in failure

        monkeypatch.setenv(MW_KEY_ENV, state.api_key)  # fixed: the queued rows go now
        assert campaign_runs.send("acme.spring", instance=instance, definitions=env.defs).counts["handed_off"] == 3


def test_the_longest_campaign_key_and_a_ledger_token_are_accepted_as_job_and_envid(engine, powermta):
    from email_engine_assets.campaigns.files import split_key
    from email_engine_resources.delivery import OutgoingMessage
    from email_engine_resources.powermta import PowerMtaSmtpTransport

    with engine.connect() as conn:  # the token as the ledger makes it
        token = conn.execute(sa.text("SELECT replace(gen_random_uuid()::text, '-', '')")).scalar()
    key = f"{'t' * 64}.{'c-' * 32}"
    assert split_key(key) and len(key) == 129
    pmta = PowerMtaSmtpTransport(name="pmta", host=powermta.host, port=powermta.port, bounce_address="b@bounce.acme.example",
                                 allow_private=True, helo_name="sender.acme.example")
    message = OutgoingMessage(row_id=1, tenant_id="t" * 64, campaign="c-" * 32, job=key, envelope_id=token, mail_from="news@acme.example",
                              recipient="ann@example.com", message=b"From: news@acme.example\r\nTo: ann@example.com\r\nSubject: x\r\n\r\nx\r\n")
    [result] = pmta.deliver([message])
    assert result.status == "sent"
    [got] = powermta.received
    assert got.header("x-job") == [key] and got.mail_parameters["ENVID"] == token
