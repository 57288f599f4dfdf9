"""Campaign stats: counts from the ledger and recorded events, rates, per language and template, the
MailWizz merge against the stand-in, the sender_reputation check reading them, ``campaign stats --json``."""

from __future__ import annotations

import json
import os
import textwrap
from datetime import datetime, timezone
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs, cli
from email_engine_assets.feedback import stats_refresh
from email_engine_assets.feedback.events import FeedbackEvent, events_frame
from email_engine_assets.feedback.stats import (
    COUNT_KEYS,
    RATE_KEYS,
    mailwizz_counts,
    shown_url,
    with_rates,
)
from email_engine_assets.feedback.store import record_events
from email_engine_assets.tenancy.config import load_tenants
from email_engine_resources import postgres as database
from email_engine_tests.campaign_parts import (
    SimpleComposers,
    StaticAudience,
    add_contacts,
    campaign_defs,
    write_campaign,
)
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_tests.mailwizz_server import running_mailwizz

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
MW_KEY_ENV = "ACME_MAILWIZZ_STATS_KEY"
_seq = iter(range(10**6))


def event(kind: str, *, token: str | None = None, email: str | None = None, campaign: str = "spring",
          bounce: str | None = None, origin: str = "powermta") -> FeedbackEvent:
    return FeedbackEvent(kind, origin, NOW, f"k{next(_seq)}", bounce_class=bounce, token=token,
                         campaign=None if token else campaign, email=email)


def record(engine, tenant_id: str, events: list[FeedbackEvent]) -> dict:
    with engine.begin() as conn:
        return record_events(conn, tenant_id, events_frame(events))


def ledger(engine, tenant_id: str, campaign: str, rows: list[tuple[str, str, str | None, str | None]], transport: str = "outbox") -> dict:
    """Ledger rows (email, state, template, rule) of a completed campaign; returns email -> token."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"),
                     {"t": tenant_id})
        conn.execute(sa.text(
            """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256, completed_at)
               VALUES (:t, :c, 'completed', 'vip', 'news', :tr, 'x', now())"""), {"t": tenant_id, "c": campaign, "tr": transport})
        for email, state, template, rule in rows:
            conn.execute(sa.text(
                """INSERT INTO campaign_sends (tenant_id, campaign, email, state, token, template, rule)
                   VALUES (:t, :c, :e, :s, :t || :c || :e, :tp, :r)"""),
                {"t": tenant_id, "c": campaign, "e": email, "s": state, "tp": template, "r": rule})
    return {email: f"{tenant_id}{campaign}{email}" for email, *_ in rows}


def write_template(root, name: str, language: str, tenant_id: str = "acme") -> None:
    folder = root / "templates" / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"category: news\nlanguage: {language}\nsubject: Hi\nhtml: <p>Hi</p><a href='{{{{ unsubscribe_url }}}}'>u</a>\n")


def tenant_of(root, tenant_id: str = "acme"):
    return load_tenants(root, [tenant_id]).tenants[tenant_id]


@pytest.fixture
def spring(engine, workspace):
    """acme.spring: six rows got news_en, three news_fr, one a template whose file is gone (picked by
    a fallback-language rule), one was skipped; events of every kind, some unmatched, and another tenant's."""
    workspace.tenant("acme")
    write_template(workspace.root, "news_en", "en")
    write_template(workspace.root, "news_fr", "fr")
    rows = [(f"a{i}@example.com", "sent", "news_en", "category_language") for i in range(6)]
    rows += [(f"f{i}@example.com", "sent", "news_fr", "category_language") for i in range(3)]
    rows += [("r0@example.com", "sent", "retired", "category_en"), ("s0@example.com", "skipped_suppressed", None, None)]
    tok = ledger(engine, "acme", "spring", rows)
    other = ledger(engine, "globex", "spring", [("a0@example.com", "sent", "news_en", "category_language")])
    record(engine, "globex", [event("opened", token=other["a0@example.com"]), event("complained", token=other["a0@example.com"])])
    evs = [event("delivered", token=tok[f"{p}@example.com"]) for p in ("a0", "a1", "a2", "a3", "a4", "f0", "f1", "r0")]
    evs += [event("deferred", token=tok["a5@example.com"]), event("deferred", token=tok["a5@example.com"])]  # one message, deferred twice
    evs += [event("bounced", token=tok["a5@example.com"], bounce="hard"), event("bounced", token=tok["f2@example.com"], bounce="soft")]
    evs += [event("bounced", email="nobody@example.com", bounce="reputation")]  # matches no row: counted, never dropped
    evs += [event("complained", token=tok["a0@example.com"])]
    evs += [event("opened", token=tok["a0@example.com"], origin="mailwizz") for _ in range(3)]
    evs += [event("opened", token=tok["a1@example.com"], origin="mailwizz")]
    evs += [event("opened", token=tok["f0@example.com"], origin="mailwizz") for _ in range(2)]
    evs += [event("opened", email="nobody@example.com", origin="mailwizz")]
    evs += [event("clicked", token=tok["a0@example.com"], origin="mailwizz") for _ in range(2)]
    evs += [event("unsubscribed", token=tok["a1@example.com"], origin="unsubscribe_link")]
    record(engine, "acme", evs)
    return SimpleNamespace(root=workspace.root, tokens=tok, tenant=tenant_of(workspace.root))


def test_stats_count_every_key_with_rates_per_language_and_template(engine, spring):
    stats, notes = stats_refresh.refresh_stats(engine, spring.root, spring.tenant, "spring", mailwizz=MailwizzResource())
    assert notes == [] and stats["campaign"] == "acme.spring" and stats["rates_over"] == "sent"
    assert {k: stats[k] for k in COUNT_KEYS} == {
        "sent": 10, "delivered": 8, "deferred": 1, "bounced_hard": 1, "bounced_soft": 1, "bounced_reputation": 1,
        "complained": 1, "opened": 7, "unique_opened": 3, "clicked": 2, "unique_clicked": 1, "unsubscribed": 1,
        # MailWizz's events are nobody's verdict (machine NULL): they count as people's
        "opened_human": 7, "unique_opened_human": 3, "clicked_human": 2, "unique_clicked_human": 1,
    }
    assert stats["delivered_rate"] == 0.8 and stats["opened_rate"] == 0.7 and stats["unique_opened_rate"] == 0.3
    assert stats["sent_rate"] == 1.0 and set(RATE_KEYS) <= set(stats)
    assert stats["by_link"] == {}  # MailWizz's clicks name no link
    assert stats["mailwizz"] is None  # the key is there for every transport: one shape
    en, fr = stats["by_template"]["news_en"], stats["by_template"]["news_fr"]
    assert (en["sent"], en["delivered"], en["deferred"], en["bounced_hard"], en["complained"]) == (6, 5, 1, 1, 1)
    assert (en["opened"], en["unique_opened"], en["clicked"], en["unique_clicked"], en["unsubscribed"]) == (4, 2, 2, 1, 1)
    assert en["bounced_hard_rate"] == round(1 / 6, 6)
    assert (fr["sent"], fr["delivered"], fr["bounced_soft"], fr["opened"], fr["unique_opened"]) == (3, 2, 1, 2, 1)
    assert set(stats["by_template"]) == {"news_en", "news_fr", "retired"}  # the skipped row chose no template and counts nothing
    # by language: the template file's language; a template whose file is gone, by its rule (category_en -> en)
    assert set(stats["by_language"]) == {"en", "fr"}
    assert stats["by_language"]["en"]["sent"] == 7 and stats["by_language"]["en"]["delivered"] == 6
    assert stats["by_language"]["fr"] == fr
    with engine.connect() as conn:  # stored, and the campaign's counts kept for the reputation check
        stored = conn.execute(sa.text("SELECT stats FROM campaign_stats WHERE tenant_id = 'acme' AND campaign = 'spring'")).scalar_one()
        counts = conn.execute(sa.text("SELECT hard_bounces, complaints FROM campaigns WHERE tenant_id = 'acme' AND campaign = 'spring'")).one()
        globex = conn.execute(sa.text("SELECT count(*) FROM campaign_stats WHERE tenant_id = 'globex'")).scalar_one()
    assert stored["by_template"] == stats["by_template"] and tuple(counts) == (1, 1) and globex == 0


def test_a_rate_over_nothing_is_null_and_mailwizz_figures_are_checked():
    assert all(v is None for k, v in with_rates({"sent": 0, "opened": 3}).items() if k.endswith("_rate"))
    assert mailwizz_counts({"opens_count": "1,234", "hard_bounces_count": 2, "campaign_status": "sent"})["opened"] == 1234
    with pytest.raises(ValueError, match="MailWizz stats: clicks_count"):
        mailwizz_counts({"clicks_count": "-3"})
    with pytest.raises(ValueError, match="not a plausible count"):
        mailwizz_counts({"opens_count": 10**15})


def test_the_stats_of_the_other_tenant_are_its_own(engine, spring, workspace):
    workspace.tenant("globex")
    stats, _ = stats_refresh.refresh_stats(engine, spring.root, tenant_of(spring.root, "globex"), "spring", mailwizz=MailwizzResource())
    assert (stats["sent"], stats["opened"], stats["complained"], stats["delivered"]) == (1, 1, 1, 0)
    with pytest.raises(LookupError, match="no campaign 'globex.autumn'"):
        stats_refresh.refresh_stats(engine, spring.root, tenant_of(spring.root, "globex"), "autumn", mailwizz=MailwizzResource())


# -- our own tracking: machines and people, per link ----------------------------------------------

def track(engine, tenant_id: str, token: str | None, kind: str, machine: bool | None, *, link: int | None = None,
          url: str | None = None, campaign: str = "summer", origin: str = "tracking") -> None:
    """One open / click as the tracking routes record it: linked to the ledger row of ``token``
    (None: unmatched), ``machine`` and the rule that decided, the link's index and target."""
    rule = {True: "burst", False: "person", None: None}[machine]
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO delivery_events (tenant_id, event_type, origin, occurred_at, campaign, send_row_id, contact_id,
                                           email, url, machine, classified_by, link_index, dedupe_key)
               SELECT :t, :k, :o, :at, :c, s.row_id, s.contact_id, s.email, :u, :m, :r, :l, :d
               FROM (SELECT 1) one LEFT JOIN campaign_sends s ON s.tenant_id = :t AND s.token = :tok"""),
            {"t": tenant_id, "k": kind, "o": origin, "at": NOW, "c": campaign, "u": url, "m": machine, "r": rule,
             "l": link, "d": f"trk{next(_seq)}", "tok": token})


@pytest.fixture
def summer(engine, workspace):
    """acme.summer through the outbox: four rows got news_en, two news_fr; opens and clicks by people,
    by machines and unclassified (MailWizz's), clicks on personalised links and shared ones."""
    workspace.tenant("acme")
    write_template(workspace.root, "news_en", "en")
    write_template(workspace.root, "news_fr", "fr")
    rows = [(f"a{i}@example.com", "sent", "news_en", "category_language") for i in range(4)]
    rows += [(f"f{i}@example.com", "sent", "news_fr", "category_language") for i in range(2)]
    tok = {e.split("@")[0]: t for e, t in ledger(engine, "acme", "summer", rows).items()}
    sale, offre = "https://shop.example/sale?u=", "https://boutique.example/offre?u="
    track(engine, "acme", tok["a0"], "opened", True)  # a mail proxy's prefetch
    track(engine, "acme", tok["a0"], "opened", False)
    track(engine, "acme", tok["a0"], "opened", False)
    track(engine, "acme", tok["a1"], "opened", True)  # only ever a machine
    track(engine, "acme", tok["a2"], "opened", None, origin="mailwizz")  # unclassified: counts as a person
    track(engine, "acme", tok["f0"], "opened", False)
    track(engine, "acme", None, "opened", None, origin="mailwizz")  # matches no row: counted, as a person's
    track(engine, "acme", tok["a0"], "clicked", True, link=0, url=sale + "a0")  # a scanner, then the person
    track(engine, "acme", tok["a0"], "clicked", False, link=0, url=sale + "a0")
    track(engine, "acme", tok["a0"], "clicked", False, link=1, url="https://shop.example/help")
    track(engine, "acme", tok["a1"], "clicked", True, link=0, url=sale + "a1")
    track(engine, "acme", tok["a2"], "clicked", None, url=sale + "a2", origin="mailwizz")  # no link index: not in by_link
    track(engine, "acme", tok["f0"], "clicked", False, link=0, url=offre + "f0")
    track(engine, "acme", tok["f0"], "clicked", False, link=1, url="https://boutique.example/faq")
    track(engine, "acme", tok["f1"], "clicked", False, link=0, url=offre + "f1")
    track(engine, "acme", tok["f1"], "clicked", False, link=1, url="https://boutique.example/faq")
    track(engine, "acme", tok["f1"], "clicked", False, link=2, url="https://f1:secret@boutique.example/p/f1?x=1")
    return SimpleNamespace(root=workspace.root, tokens=tok, tenant=tenant_of(workspace.root))


def test_opens_and_clicks_by_people_beside_the_totals(engine, summer):
    stats, _ = stats_refresh.refresh_stats(engine, summer.root, summer.tenant, "summer", mailwizz=MailwizzResource())
    opens_clicks = ("opened", "unique_opened", "opened_human", "unique_opened_human",
                    "clicked", "unique_clicked", "clicked_human", "unique_clicked_human")
    assert {k: stats[k] for k in opens_clicks} == {
        "opened": 7, "unique_opened": 4, "opened_human": 5, "unique_opened_human": 3,
        "clicked": 10, "unique_clicked": 5, "clicked_human": 8, "unique_clicked_human": 4}
    assert stats["sent"] == 6 and stats["opened_human_rate"] == round(5 / 6, 6) and stats["unique_clicked_human_rate"] == round(4 / 6, 6)
    en, fr = stats["by_template"]["news_en"], stats["by_template"]["news_fr"]
    assert [en[k] for k in opens_clicks] == [5, 3, 3, 2, 5, 3, 3, 2]  # the unmatched open is in the totals only
    assert [fr[k] for k in opens_clicks] == [1, 1, 1, 1, 5, 2, 5, 2]
    assert fr["clicked_human_rate"] == 2.5 and set(RATE_KEYS) <= set(fr)
    assert stats["by_language"]["en"] == en and stats["by_language"]["fr"] == fr


def test_clicks_per_link_never_show_a_personalised_url(engine, summer, capsys):
    stats, _ = stats_refresh.refresh_stats(engine, summer.root, summer.tenant, "summer", mailwizz=MailwizzResource())
    keys = ("clicked", "unique_clicked", "clicked_human", "unique_clicked_human")

    def row(link: int, url: str | None, *counts: int) -> dict:
        return {"link": link, "url": url, **dict(zip(keys, counts))}

    assert stats["by_link"] == {
        "news_en": [
            row(0, "https://shop.example/sale", 3, 2, 1, 1),  # ?u=a0 / ?u=a1: the page, never the query
            row(1, None, 1, 1, 1, 1),  # one recipient alone clicked it: it may be theirs
        ],
        "news_fr": [
            row(0, "https://boutique.example/offre", 2, 2, 2, 2),
            row(1, "https://boutique.example/faq", 2, 2, 2, 2),  # the same URL for everyone: shown whole
            row(2, None, 1, 1, 1, 1),
        ],
    }
    assert "?u=" not in json.dumps(stats) and "secret" not in json.dumps(stats)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT stats FROM campaign_stats WHERE tenant_id = 'acme' AND campaign = 'summer'")).scalar_one()
    assert stored["by_link"] == stats["by_link"]
    cli._print_stats(stats, as_json=False)  # the table of `campaign stats`
    table = capsys.readouterr().out.splitlines()
    assert "news_en 0 3 2 1 1 https://shop.example/sale" in [" ".join(line.split()) for line in table]
    assert "news_fr 2 1 1 1 1 -" in [" ".join(line.split()) for line in table] and "?u=" not in "".join(table)


def test_shown_url_needs_two_recipients_and_takes_the_whole_url_before_its_page():
    assert shown_url("https://x.example/a", "https://x.example/a", 1) is None
    assert shown_url("https://x.example/a?b=1", "https://x.example/a", 2) == "https://x.example/a?b=1"
    assert shown_url(None, "https://x.example/a", 3) == "https://x.example/a"
    assert shown_url(None, None, 9) is None


def test_rates_over_nothing_sent_are_null_for_people_too(engine, workspace):
    workspace.tenant("acme")
    tok = ledger(engine, "acme", "autumn", [("a0@example.com", "skipped_suppressed", None, None)])
    track(engine, "acme", tok["a0@example.com"], "opened", False, campaign="autumn")
    track(engine, "acme", None, "clicked", True, campaign="autumn", url="https://x.example/")
    stats, _ = stats_refresh.refresh_stats(engine, workspace.root, tenant_of(workspace.root), "autumn", mailwizz=MailwizzResource())
    assert stats["sent"] == 0 and (stats["opened_human"], stats["clicked"], stats["clicked_human"]) == (1, 1, 0)
    assert all(stats[k] is None for k in RATE_KEYS) and stats["by_link"] == {}
    assert stats["by_template"]["(none)"]["opened_human_rate"] is None


# -- MailWizz -------------------------------------------------------------------------------------

def mw_tenant(workspace, url: str) -> None:
    workspace.tenant("acme", textwrap.dedent(f"""\
        id: acme
        name: Acme
        sources:
          - id: crm
            priority: 10
        transports:
          - name: mw
            kind: mailwizz
            base_url: {url}
            api_key: {{env: {MW_KEY_ENV}}}
            retries: 0
            allow_private: true
        """))


def mw_campaign(state, uid: str, name: str, stats: dict) -> None:
    state.campaigns[uid] = {"campaign_uid": uid, "name": name, "status": "sent", "list_uid": "none", "stats": stats}


def test_mailwizz_figures_are_merged_per_template_and_kept_when_mailwizz_is_down(engine, workspace, monkeypatch):
    with running_mailwizz() as (url, state):
        monkeypatch.setenv(MW_KEY_ENV, state.api_key)
        mw_tenant(workspace, url)
        write_template(workspace.root, "news_en", "en")
        write_template(workspace.root, "news_fr", "fr")
        tok = ledger(engine, "acme", "spring", [("ann@example.com", "handed_off", "news_en", "category_language"),
                                                 ("bob@example.com", "handed_off", "news_en", "category_language"),
                                                 ("cy@example.com", "handed_off", "news_fr", "category_language")], transport="mw")
        # our own webhook saw one open of ann and one of bob; MailWizz counted five (the same ones among them)
        record(engine, "acme", [event("opened", token=tok["ann@example.com"], origin="mailwizz"),
                                event("opened", token=tok["bob@example.com"], origin="mailwizz")])
        mw_campaign(state, "c1", "acme.spring.news_en", {"delivery_success_count": 2, "opens_count": "5", "unique_opens_count": 2,
                                                          "complaints_count": 1, "internal_bounces_count": 1})
        mw_campaign(state, "c2", "acme.spring.news_fr", {"delivery_success_count": 1, "clicks_count": 3, "unique_clicks_count": 1,
                                                          "unsubscribes_count": 1, "hard_bounces_count": 0})
        mw_campaign(state, "c3", "acme.spring2.news_en", {"opens_count": 99})  # another campaign's: never merged
        tenant = tenant_of(workspace.root)
        stats, notes = stats_refresh.refresh_stats(engine, workspace.root, tenant, "spring", mailwizz=MailwizzResource())
        assert notes == [] and stats["rates_over"] == "handed_off" and stats["sent"] == 3
        assert {k: stats[k] for k in ("delivered", "opened", "unique_opened", "complained", "bounced_reputation", "clicked",
                                      "unique_clicked", "unsubscribed")} == {
            "delivered": 3, "opened": 5, "unique_opened": 2, "complained": 1, "bounced_reputation": 1, "clicked": 3,
            "unique_clicked": 1, "unsubscribed": 1}
        # MailWizz does not tell machines from people: its figures are people's too
        assert (stats["opened_human"], stats["unique_opened_human"], stats["clicked_human"], stats["unique_clicked_human"]) == (5, 2, 3, 1)
        assert stats["complained_rate"] == round(1 / 3, 6)
        assert stats["by_template"]["news_en"]["opened"] == 5 and stats["by_template"]["news_fr"]["clicked"] == 3
        assert stats["by_language"]["fr"]["unsubscribed"] == 1
        assert stats["mailwizz"]["campaigns"] == {"acme.spring.news_en": "sent", "acme.spring.news_fr": "sent"}
        assert ("GET", "/api/campaigns/c3/stats") not in state.calls

        state.fail_next(10)  # MailWizz down: the last figures fetched are kept, and a note says so
        again, notes = stats_refresh.refresh_stats(engine, workspace.root, tenant, "spring", mailwizz=MailwizzResource())
        assert len(notes) == 1 and "MailWizz figures not refreshed" in notes[0] and state.api_key not in notes[0]
        assert {k: again[k] for k in COUNT_KEYS} == {k: stats[k] for k in COUNT_KEYS}
        state.failures = 0
        state.campaigns["c1"]["stats"]["opens_count"] = "many"  # a reply that is not a count is refused, not counted
        _, notes = stats_refresh.refresh_stats(engine, workspace.root, tenant, "spring", mailwizz=MailwizzResource())
        assert "opens_count" in notes[0] and "expected a count" in notes[0]
        calls = len(state.calls)
        stats_refresh.refresh_before_send(engine, workspace.root, tenant, "summer", powermta=PowerMtaResource(),
                                          mailwizz=MailwizzResource())  # the check never calls MailWizz
        assert len(state.calls) == calls
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT complaints FROM campaigns WHERE campaign = 'spring'")).scalar_one() == 1


# -- the sender_reputation check ------------------------------------------------------------------

@pytest.fixture
def camp(engine, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    env = SimpleNamespace(engine=engine, root=workspace.root, workspace=workspace)
    env.ids = add_contacts(engine, "acme", [f"p{i:02d}@example.com" for i in range(6)])
    env.defs = campaign_defs(StaticAudience({"vip": env.ids}), SimpleComposers())
    write_campaign(workspace.root, "acme", "spring")
    write_campaign(workspace.root, "acme", "summer")
    with dg.instance_for_test() as instance:
        env.instance = instance
        yield env


def tokens(engine, campaign: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT token FROM campaign_sends WHERE campaign = :c ORDER BY row_id"), {"c": campaign}).scalars())


def test_hard_bounces_over_the_limit_block_the_next_send_until_overridden(camp):
    camp.workspace.tenant("acme")
    assert campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs).counts["sent"] == 6
    record(camp.engine, "acme", [event("bounced", token=tokens(camp.engine, "spring")[0], bounce="hard")])
    blocked = campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs)
    assert [b["check"] for b in blocked.blocked] == ["sender_reputation"]
    assert blocked.blocked[0]["reason"] == "last completed campaign acme.spring: hard bounces 1/6 = 16.67% > 2.0%"
    assert blocked.counts["sent"] == 0
    done = campaign_runs.send("acme.summer", overrides=["sender_reputation"], instance=camp.instance, definitions=camp.defs)
    # the policy, applied before the check, suppressed the hard-bounced address: it is skipped, the others sent
    assert done.blocked == [] and done.counts["sent"] == 5 and done.counts["skipped"]["suppressed"] == 1


def test_reputation_bounces_never_block_and_the_limits_are_the_tenants(camp):
    camp.workspace.tenant("acme", feedback="{max_hard_bounce_rate: 0.5, max_complaint_rate: 0.1}")
    campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    sent = tokens(camp.engine, "spring")
    record(camp.engine, "acme", [event("bounced", token=sent[0], bounce="hard"), event("bounced", token=sent[1], bounce="reputation"),
                                 event("bounced", token=sent[2], bounce="reputation"), event("complained", token=sent[3])])
    blocked = campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs)  # 1/6 hard is under 50%; 1/6 complaints over 10%
    assert [b["reason"] for b in blocked.blocked] == ["last completed campaign acme.spring: complaints 1/6 = 16.67% > 10.0%"]
    camp.workspace.tenant("acme", feedback="{max_hard_bounce_rate: 0.5, max_complaint_rate: 0.2}")
    assert campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs).blocked == []


def test_feedback_pending_when_the_check_runs_is_applied_first(camp, monkeypatch):
    camp.workspace.tenant("acme")
    campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    first = tokens(camp.engine, "spring")[0]
    applied = []

    def webhook_rows_arrive(engine, workspace_root, tenant):  # the webhook inbox held a complaint not yet applied
        applied.append(tenant.id)
        with engine.begin() as conn:
            return record_events(conn, tenant.id, events_frame([event("complained", token=first, origin="mailwizz")]))

    monkeypatch.setattr(stats_refresh, "apply_webhook_rows", webhook_rows_arrive)
    blocked = campaign_runs.send("acme.summer", instance=camp.instance, definitions=camp.defs)
    assert applied == ["acme"] and "complaints 1/6" in blocked.blocked[0]["reason"]


# -- the CLI --------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(spring, scratch_database, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    write_campaign(spring.root, "acme", "spring")
    yield spring
    os.environ.pop("DAGSTER_HOME", None)


def test_cli_stats_json_prints_every_key_and_a_table_without_it(cli_env, capsys):
    assert cli.main(["campaign", "stats", "acme.spring", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(COUNT_KEYS) | set(RATE_KEYS) | {"by_language", "by_template", "by_link"} <= set(data)
    assert data["sent"] == 10 and data["unique_opened"] == 3
    assert set(data["by_language"]["en"]) == set(COUNT_KEYS) | set(RATE_KEYS)
    assert set(data["by_template"]["news_fr"]) == set(COUNT_KEYS) | set(RATE_KEYS)
    assert cli.main(["campaign", "stats", "acme.spring"]) == 0
    table = capsys.readouterr().out
    assert "unique_opened" in table and "30.00%" in table and "by_template" in table and "news_fr" in table
    opened = next(line for line in table.splitlines() if line.startswith("opened "))
    assert "by people" in table and opened.split() == ["opened", "7", "70.00%", "7", "70.00%"]  # people's opens beside the total


def test_cli_stats_of_an_unknown_campaign_is_a_clear_error(cli_env, capsys):
    assert cli.main(["campaign", "stats", "acme.nothing"]) == 1
    assert "no campaign 'acme.nothing'" in capsys.readouterr().err
    assert cli.main(["campaign", "stats", "nobody.spring"]) == 1
    assert "no tenant 'nobody'" in capsys.readouterr().err



# -- the asset and its automation -------------------------------------------------------------------

def test_the_asset_applies_feedback_counts_and_reports_metadata(engine, spring):
    from email_engine_assets.feedback.stats_assets import campaign_stats
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.workspace import WorkspaceResource

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["acme.spring", "acme.nothing"])
        result = dg.materialize([campaign_stats], partition_key="acme.spring", instance=instance,
                                resources={"db": PostgresResource(), "workspace": WorkspaceResource(),
                                           "powermta": PowerMtaResource(), "mailwizz": MailwizzResource()})
        meta = result.asset_materializations_for_node("campaign_stats")[0].metadata
        assert meta["sent"].value == 10 and meta["unique_opened"].value == 3 and meta["delivered_rate"].value == 0.8
        assert meta["by_language"].value["fr"]["sent"] == 3 and meta["rates_over"].value == "sent"
        failed = dg.materialize([campaign_stats], partition_key="acme.nothing", instance=instance, raise_on_error=False,
                                resources={"db": PostgresResource(), "workspace": WorkspaceResource(),
                                           "powermta": PowerMtaResource(), "mailwizz": MailwizzResource()})
        assert not failed.success


def test_stats_follow_each_send_by_automation():
    from datetime import timedelta

    from email_engine_assets.campaigns.assets import campaign_sends
    from email_engine_assets.campaigns.definitions import campaign_resources
    from email_engine_assets.feedback.stats_assets import campaign_stats
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.workspace import WorkspaceResource

    start = datetime(2026, 11, 29, 10, 5, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["acme.spring", "acme.autumn"])
        assets = dg.Definitions(assets=[campaign_sends, campaign_stats],
                                resources={**campaign_resources(), "db": PostgresResource(), "workspace": WorkspaceResource()})
        cursor = dg.evaluate_automation_conditions(defs=assets, instance=instance, evaluation_time=start).cursor
        instance.report_runless_asset_event(dg.AssetMaterialization("campaign_sends", partition="acme.spring"))
        result = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=cursor,
                                                   evaluation_time=start + timedelta(minutes=1))
        requested = set(result.get_requested_partitions(dg.AssetKey("campaign_stats")))
        assert requested == {"acme.spring"}  # eager: after the send
        instance.report_runless_asset_event(dg.AssetMaterialization("campaign_stats", partition="acme.spring"))
        result = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=result.cursor,
                                                   evaluation_time=start + timedelta(minutes=2))
        assert result.total_requested == 0


def test_the_hourly_refresh_covers_the_campaigns_still_receiving_feedback(engine, workspace):
    from datetime import timedelta

    import sqlalchemy as sa

    from email_engine_assets.feedback.stats_assets import (
        FEEDBACK_WINDOW,
        campaign_stats_schedule,
    )
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.workspace import WorkspaceResource

    now = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
    workspace.tenant("acme")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        for name, state, started, completed in (
            ("draft", "draft", None, None),                                   # never sent
            ("going", "running", now - timedelta(hours=2), None),            # still sending
            ("recent", "completed", now - timedelta(days=3), now - timedelta(days=2)),
            ("old", "completed", now - timedelta(days=40), now - FEEDBACK_WINDOW - timedelta(hours=1)),
            ("unknown", "completed", now - timedelta(days=1), now - timedelta(hours=5)),  # no partition yet
        ):
            conn.execute(sa.text(
                """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256,
                                          started_at, completed_at)
                   VALUES ('acme', :c, :s, 'vip', 'news', 'outbox', 'x', :started, :completed)"""),
                {"c": name, "s": state, "started": started, "completed": completed})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("campaign", ["acme.draft", "acme.going", "acme.recent", "acme.old"])
        instance.add_dynamic_partitions("tenant", ["acme"])
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=now,
                                            resources={"db": PostgresResource(), "workspace": WorkspaceResource()})
        requests = list(campaign_stats_schedule(context))
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("acme.going", "stats_refresh:acme:going:2026-11-29T10:00Z"),
        ("acme.recent", "stats_refresh:acme:recent:2026-11-29T10:00Z"),
    ]
