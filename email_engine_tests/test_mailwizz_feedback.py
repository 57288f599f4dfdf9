"""MailWizz feedback, both ways, against the loopback stand-in: suppressions pushed once (and retried
after a failure), MailWizz's own unsubscribes and bounces polled page by page into delivery events,
the asset pair mailwizz_feedback -> suppressions, and the hourly schedule."""

from __future__ import annotations

import datetime as dt
import re
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.feedback.assets import suppressions
from email_engine_assets.feedback.mailwizz_assets import mailwizz_feedback
from email_engine_assets.feedback.mailwizz_events import campaign_of, feedback_event
from email_engine_assets.feedback.mailwizz_poll import poll_instance
from email_engine_assets.feedback.schedules import mailwizz_feedback_schedule
from email_engine_assets.feedback.suppression_apply import apply_policy
from email_engine_assets.tenancy.config import parse_tenant
from email_engine_resources import mailwizz_client
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz

KEY_ENV = "ACME_MAILWIZZ_KEY"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
PUSH_PATH = ("PUT", "/api/lists/subscribers/unsubscribe-by-email-from-all-lists")


def tenant_text(url: str, tenant_id: str = "acme") -> str:
    return f"""\
id: {tenant_id}
name: {tenant_id.title()}
sources:
  - id: crm
transports:
  - name: mw
    kind: mailwizz
    base_url: {url}
    api_key: {{env: {KEY_ENV}}}
    allow_private: true
    retries: 0
    timezone: Europe/Paris
"""


@pytest.fixture
def mw(monkeypatch, engine):
    monkeypatch.setenv(KEY_ENV, "test-public-key")
    monkeypatch.setattr(mailwizz_client, "PER_PAGE", 10)  # the stand-in's smallest page: pagination with few records
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x')"))
    with running_mailwizz(MailwizzState()) as (url, state):
        yield url, state, parse_tenant(Path("acme.yaml"), tenant_text(url))


def suppress(engine, *emails: str, reason: str = "unsubscribed") -> None:
    with engine.begin() as conn:
        for email in emails:
            conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('acme', :e, :r)"), {"e": email, "r": reason})


def pushes(engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, state, attempts FROM mailwizz_suppression_pushes WHERE tenant_id = 'acme'")).all()
    return {r.email: (r.state, r.attempts) for r in rows}


# --- push -----------------------------------------------------------------------------------------

def test_each_suppression_is_pushed_once(engine, mw):
    url, state, tenant = mw
    suppress(engine, "a@example.com", "b@example.com")
    suppress(engine, "gone@example.com", reason="erased")  # the forget path removes those itself
    with engine.begin() as conn:  # another tenant's suppression is never pushed for this one
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('globex', 'Globex', 'x')"))
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason) VALUES ('globex', 'other@example.com', 'bounced')"))
    first = apply_policy(engine, tenant, mailwizz=MailwizzResource())
    assert sorted(state.unsubscribed_everywhere) == ["a@example.com", "b@example.com"]
    assert (first["mailwizz_pushed"], first["mailwizz_pending"]) == (2, 0)
    again = apply_policy(engine, tenant, mailwizz=MailwizzResource())
    assert again["mailwizz_pushed"] == 0 and len(state.unsubscribed_everywhere) == 2
    suppress(engine, "c@example.com")
    apply_policy(engine, tenant, mailwizz=MailwizzResource())
    assert state.unsubscribed_everywhere[-1] == "c@example.com" and len(state.unsubscribed_everywhere) == 3
    assert pushes(engine) == {e: ("pushed", 1) for e in ("a@example.com", "b@example.com", "c@example.com")}


def test_a_failed_push_is_retried_at_the_next_run_and_a_refusal_is_not(engine, mw):
    url, state, tenant = mw
    suppress(engine, "a@example.com", "b@example.com", "c@example.com")
    state.fail_next(1, only=PUSH_PATH)
    failed = apply_policy(engine, tenant, mailwizz=MailwizzResource())
    assert (failed["mailwizz_failed"], failed["mailwizz_pending"]) == (1, 3)  # the instance failed: the others wait
    assert "a push failed" in failed["mailwizz_errors"] and state.unsubscribed_everywhere == []
    assert pushes(engine) == {"a@example.com": ("failed", 1)}
    suppress(engine, "bad@nodot")  # a key MailWizz does not take for an email: 422
    done = apply_policy(engine, tenant, mailwizz=MailwizzResource())
    assert (done["mailwizz_pushed"], done["mailwizz_refused"], done["mailwizz_pending"]) == (3, 1, 0)
    assert pushes(engine) == {"a@example.com": ("pushed", 2), "b@example.com": ("pushed", 1), "c@example.com": ("pushed", 1),
                              "bad@nodot": ("refused", 1)}
    assert apply_policy(engine, tenant, mailwizz=MailwizzResource())["mailwizz_refused"] == 0  # not tried again


def test_a_lifted_suppression_leaves_the_push_table_with_it(engine, mw):
    url, state, tenant = mw
    suppress(engine, "a@example.com")
    apply_policy(engine, tenant, mailwizz=MailwizzResource())
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM suppressions WHERE email = 'a@example.com'"))
    assert pushes(engine) == {}


# --- poll -----------------------------------------------------------------------------------------

def test_campaign_names_and_bounce_types_map_to_our_words():
    assert campaign_of("acme.spring.news_en", "acme") == "spring"
    assert campaign_of("acme.spring", "acme") is None and campaign_of("globex.spring.news", "acme") is None
    assert campaign_of("acme." + "x" * 5000 + ".t", "acme") is None and campaign_of("acme.Spring Sale.t", "acme") is None
    common = {"instance": "mw", "campaign_uid": "u1", "campaign": "spring", "polled_at": NOW}
    sub = {"subscriber_uid": "s1", "email": "Ann@Example.COM"}
    classes = {t: feedback_event("bounces", {"bounce_type": t, "subscriber": sub}, **common).bounce_class
               for t in ("hard", "soft", "internal", "novel")}
    assert classes == {"hard": "hard", "soft": "soft", "internal": "reputation", "novel": "soft"}
    unsub = feedback_event("unsubscribes", {"date_added": "2026-11-29 10:00:00", "reason": "too many", "subscriber": sub}, **common)
    assert (unsub.email, unsub.occurred_at, unsub.detail) == ("ann@example.com", datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc), "too many")
    assert unsub.dedupe_key == feedback_event("unsubscribes", {"subscriber": sub}, **common).dedupe_key  # stable across polls
    assert feedback_event("bounces", {"bounce_type": "hard", "subscriber": {"email": "nope"}}, **common) == "no usable email address"


def _ledger(engine, emails: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                                VALUES ('acme', 'spring', 'completed', 'all', 'news', 'mw', 'x')"""))
        for i, email in enumerate(emails):
            conn.execute(sa.text("INSERT INTO campaign_sends (tenant_id, campaign, email, state, token) VALUES ('acme', 'spring', :e, 'handed_off', :k)"),
                         {"e": email, "k": f"tok-{i}"})


def _events(engine) -> dict[tuple[str, str | None], int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""SELECT event_type, bounce_class, count(*), count(send_row_id) FROM delivery_events
                                       WHERE tenant_id = 'acme' AND origin = 'mailwizz' GROUP BY 1, 2""")).all()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_poll_pages_records_once_and_stops_at_what_it_knows(engine, mw):
    url, state, tenant = mw
    uid = state.campaign_named("acme.spring.news_en")
    other = state.campaign_named("globex.spring.news_en")  # another tenant's: never read
    state.add_unsubscribe(other, "x@example.com")
    unsubscribers = [f"u{i:02d}@example.com" for i in range(25)]
    for email in unsubscribers:
        state.add_unsubscribe(uid, email)
    for i, kind in enumerate(["hard"] * 4 + ["soft"] * 4 + ["internal"] * 4):
        state.add_bounce(uid, f"b{i:02d}@example.com", kind, f"550 {kind} message")
    _ledger(engine, unsubscribers[:5])
    transport = tenant.transports[0]

    def poll():
        with MailwizzResource().instance(transport) as instance:
            return poll_instance(engine, "acme", transport, instance, NOW)

    first = poll()
    assert (first["campaigns"], first["pages"], first["records"], first["inserted"]) == (1, 3 + 2, 37, 37)
    assert _events(engine) == {("unsubscribed", None): (25, 5), ("bounced", "hard"): (4, 0), ("bounced", "soft"): (4, 0),
                               ("bounced", "reputation"): (4, 0)}
    quiet = poll()
    assert (quiet["pages"], quiet["inserted"]) == (2, 0)  # one known page per kind ends the poll
    for i in range(3):
        state.add_unsubscribe(uid, f"late{i}@example.com")
    late = poll()
    assert (late["pages"], late["inserted"], late["duplicates"]) == (2 + 1, 3, 7 + 10 + 10)
    with engine.begin() as conn:  # a pass that was cut short is read in full next time
        conn.execute(sa.text("UPDATE mailwizz_feedback_polls SET complete = false WHERE kind = 'unsubscribes'"))
    full = poll()
    assert (full["pages"], full["records"], full["inserted"]) == (3 + 1, 28 + 10, 0)
    assert _events(engine)[("unsubscribed", None)] == (28, 5)
    assert not any(path.startswith(f"/api/campaigns/{other}/") for _, path in state.calls)


def test_unsubscribe_dates_are_utc_whatever_the_instance_time_zone(engine, mw):
    url, state, tenant = mw
    transport = tenant.transports[0]
    assert transport.timezone == "Europe/Paris"  # the customer's zone: it applies to send_at only
    uid = state.campaign_named("acme.spring.news_en")
    state.add_unsubscribe(uid, "left@example.com", date_added="2026-07-01 22:30:00")
    with MailwizzResource().instance(transport) as instance:
        poll_instance(engine, "acme", transport, instance, NOW)
    with engine.connect() as conn:
        when = conn.execute(sa.text("SELECT occurred_at FROM delivery_events WHERE tenant_id = 'acme' AND origin = 'mailwizz'")).scalar_one()
    assert when == datetime(2026, 7, 1, 22, 30, tzinfo=timezone.utc)


def test_polled_feedback_suppresses_through_the_assets_and_is_pushed_back(engine, mw, workspace):
    url, state, tenant = mw
    workspace.tenant("acme", tenant_text(url))
    uid = state.campaign_named("acme.spring.news_en")
    state.add_unsubscribe(uid, "left@example.com")
    state.add_bounce(uid, "gone@example.com", "hard", "550 5.1.1 user unknown")
    state.add_bounce(uid, "blocked@example.com", "internal", "blocked by policy")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        result = dg.materialize([mailwizz_feedback, suppressions], partition_key="acme", instance=instance,
                                resources={"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource()})
    assert result.success
    with engine.connect() as conn:
        made = dict(conn.execute(sa.text("SELECT email, reason FROM suppressions WHERE tenant_id = 'acme'")).all())
    assert made == {"left@example.com": "unsubscribed", "gone@example.com": "bounced"}
    assert sorted(state.unsubscribed_everywhere) == ["gone@example.com", "left@example.com"]


def test_a_missing_key_fails_the_polls_check_naming_the_transport_until_a_poll_reads(engine, mw, workspace, monkeypatch):
    url, state, tenant = mw
    workspace.tenant("acme", tenant_text(url))
    monkeypatch.delenv(KEY_ENV)

    def poll_once():
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("tenant", ["acme"])
            result = dg.materialize([mailwizz_feedback], partition_key="acme", instance=instance,
                                    resources={"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource()})
        [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "inputs_read"]
        return check

    check = poll_once()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "mailwizz transport 'mw'" in check.description and KEY_ENV in check.description
    assert "test-public-key" not in check.description
    monkeypatch.setenv(KEY_ENV, "test-public-key")
    check = poll_once()
    assert check.passed and check.description == "MailWizz polls: all read"


def test_the_hourly_schedule_runs_only_tenants_with_a_mailwizz_transport(engine, workspace):
    workspace.tenant("acme", tenant_text("http://127.0.0.1:9/api"))
    workspace.tenant("globex")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "ghost"])
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 11, 29, 13),
                                            resources={"db": PostgresResource(), "workspace": WorkspaceResource()})
        requests = list(mailwizz_feedback_schedule(context))
    assert [(r.partition_key, r.run_key) for r in requests] == [("acme", "mailwizz_poll:acme:2026-11-29T13:00Z")]


def test_suppressions_follow_delivery_events_where_mailwizz_feedback_never_ran():
    from email_engine_assets.feedback.assets import delivery_events

    defs = dg.Definitions(assets=[delivery_events, suppressions, mailwizz_feedback],
                          resources={"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource(),
                                     "powermta": PowerMtaResource()})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["globex"])  # no mailwizz transport: mailwizz_feedback stays missing
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(dg.AssetMaterialization("delivery_events", partition="globex"))
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after.get_requested_partitions(dg.AssetKey("suppressions")) == {"globex"}


def test_the_new_tables_check_exactly_their_python_vocabularies(engine):
    from email_engine_assets.feedback.mailwizz_store import PUSH_STATES
    from email_engine_resources.mailwizz import FEEDBACK_KINDS

    with engine.connect() as conn:
        for table, words in (("mailwizz_suppression_pushes", PUSH_STATES), ("mailwizz_feedback_polls", FEEDBACK_KINDS)):
            checks = conn.execute(sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) "
                                          "AND contype = 'c'"), {"t": table}).scalars().all()
            assert len(checks) == 1 and sorted(re.findall(r"'([^']*)'::text", checks[0])) == sorted(words)
