"""The guard rail of a campaign MailWizz sends: complaints and bounces MailWizz reports mid-campaign
pause it here and in MailWizz (each MailWizz campaign's status read first, ``pause-unpause`` once), on
the feedback path (the ``mailwizz_feedback`` poll, ``delivery_events``), not only from the send; a
MailWizz that fails the pause leaves the campaign paused here, alerts once and is retried each cycle.

Real parts: Dagster runs of the send and of the feedback assets, PostgreSQL, the MailWizz stand-in
(its send cron sends part of a campaign per pass, so complaints arrive while it is still sending).
"""

from __future__ import annotations

import textwrap
from collections import Counter

import dagster as dg
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.feedback.assets import delivery_events
from email_engine_assets.feedback.mailwizz_assets import mailwizz_feedback
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import MailwizzResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.mailwizz_server import running_mailwizz
from email_engine_tests.test_campaign_transports import MW_KEY_ENV, TENANT, setup

GUARD = "guard_rails:\n  min_sample: 20\n"
EN, FR = 40, 20  # two templates: two MailWizz campaigns
PEOPLE = [(f"en{i:02d}@example.com", "E", "en") for i in range(EN)] + [(f"fr{i:02d}@example.com", "F", "fr") for i in range(FR)]
PASS = 10  # MailWizz's cron mails this many per campaign and pass


def mw_yaml(url: str, timeout: float = 30) -> str:
    return f"""\
        - name: mw
          kind: mailwizz
          base_url: {url}
          api_key: {{env: {MW_KEY_ENV}}}
          timezone: Europe/Paris
          retries: 1
          timeout_seconds: {timeout}
          allow_private: true
        """


def started(workspace, engine, monkeypatch, url, state, timeout: float = 30):
    """The campaign handed to MailWizz (completed here, released there) and MailWizz half-way through it."""
    monkeypatch.setenv(MW_KEY_ENV, state.api_key)
    env = setup(workspace, engine, monkeypatch, mw_yaml(url, timeout), PEOPLE, {"mailwizz": MailwizzResource(backoff_initial=0.01)},
                transport="mw")
    workspace.tenant("acme", TENANT.format(transport=textwrap.indent(textwrap.dedent(mw_yaml(url, timeout)), "  ")) + GUARD)
    with dg.instance_for_test() as instance:
        sent = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
    assert sent.failures == [] and (sent.counts["state"], sent.counts["handed_off"]) == ("completed", EN + FR)
    assert set(statuses(state).values()) == {"pending-sending"}
    assert state.run_cron(limit=PASS) == 2 * PASS  # the first pass: MailWizz is sending both
    assert set(statuses(state).values()) == {"sending"}
    en = state.campaign_by_name("acme.spring.news_en")["campaign_uid"]
    mailed = [e for name, e in state.delivered if name == "acme.spring.news_en"]
    for email in mailed[:3]:  # feedback-loop complaints MailWizz processed
        state.add_complaint(en, email)
    state.add_bounce(en, mailed[3], "hard", "550 5.1.1 user unknown")  # and a hard bounce, listed by its API
    state.calls.clear()
    return env


def statuses(state) -> dict[str, str]:
    return {c["name"]: c["status"] for c in state.campaigns.values()}


def resources(**extra):
    return {"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource(backoff_initial=0.01), **extra}


def feedback_run(assets, **extra) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        result = dg.materialize(assets, partition_key="acme", instance=instance, resources=resources(**extra))
    assert result.success
    return result


def metadata(result, asset: str) -> dict:
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == asset]
    return {k: getattr(v, "value", v) for k, v in mat.materialization.metadata.items()}


def paused_in_mailwizz(result, asset: str) -> dg.AssetCheckEvaluation:
    [check] = [c for c in result.get_asset_check_evaluations()
               if c.check_name == "guard_rail_paused_in_mailwizz" and c.asset_key.path[-1] == asset]
    return check


def incidents(engine, kind: str) -> list[tuple[str, bool]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT incident_key, cleared_at IS NOT NULL FROM alert_incidents WHERE kind = :k ORDER BY id"), {"k": kind})]


def toggles(state) -> list[str]:
    return [path for method, path in state.calls if path.endswith("/pause-unpause")]


def test_complaints_polled_mid_campaign_pause_it_here_and_in_mailwizz_and_resume_unpauses(engine, workspace, monkeypatch):
    with running_mailwizz() as (url, state):
        env = started(workspace, engine, monkeypatch, url, state)
        polled = feedback_run([mailwizz_feedback])
        shown = campaign_runs.show("acme.spring")
        assert shown["state"] == "paused"
        assert "complaints 3/20" in shown["paused_reason"] and "hard bounces 1/20" in shown["paused_reason"]
        assert metadata(polled, "mailwizz_feedback")["guard_rail_mailwizz"] == {
            "acme.spring": {"acme.spring.news_en": "paused", "acme.spring.news_fr": "paused"}}
        assert set(statuses(state).values()) == {"paused"}
        for c in state.campaigns.values():  # each: its status read, then one toggle
            view, toggle = f"/api/campaigns/{c['campaign_uid']}", f"/api/campaigns/{c['campaign_uid']}/pause-unpause"
            mine = [call for call in state.calls if call[1] in (view, toggle)]
            assert mine[:2] == [("GET", view), ("PUT", toggle)] and mine.count(("PUT", toggle)) == 1
        assert len(toggles(state)) == 2
        assert incidents(engine, "guard_rail_paused") == [("guard_rail_paused:acme.spring", False)]
        assert incidents(engine, "guard_rail_mailwizz") == []
        assert state.run_cron() == 0  # paused: MailWizz mails nobody more

        feedback_run([mailwizz_feedback])  # the next cycle: nothing toggled again, no second alert
        assert len(toggles(state)) == 2 and incidents(engine, "guard_rail_paused") == [("guard_rail_paused:acme.spring", False)]

        with dg.instance_for_test() as instance:
            resumed = campaign_runs.resume("acme.spring", overrides=["guard_rail"], instance=instance, definitions=env.defs)
        assert resumed.failures == [] and resumed.counts["state"] == "completed"
        assert set(statuses(state).values()) == {"sending"} and len(toggles(state)) == 4
        assert incidents(engine, "guard_rail_paused") == [("guard_rail_paused:acme.spring", True)]
        assert state.run_cron() == EN + FR - 2 * PASS
        feedback_run([mailwizz_feedback])  # overridden after review: the guard rail no longer pauses it
        assert len(toggles(state)) == 4
    mailed = Counter(e for _, e in state.delivered)
    assert sorted(mailed) == sorted(p[0] for p in PEOPLE) and set(mailed.values()) == {1}  # each once, none skipped


def test_a_mailwizz_failing_the_pause_leaves_it_paused_here_alerts_once_and_is_retried_each_cycle(engine, workspace, monkeypatch):
    with running_mailwizz() as (url, state):
        started(workspace, engine, monkeypatch, url, state, timeout=1)
        en = state.campaign_by_name("acme.spring.news_en")["campaign_uid"]
        fr = state.campaign_by_name("acme.spring.news_fr")["campaign_uid"]
        # the MailWizz figures are read (stats), then MailWizz answers 500 to each pause of the en campaign
        state.fail_next(5, only=("PUT", f"/api/campaigns/{en}/pause-unpause"))
        first = feedback_run([delivery_events, mailwizz_feedback], powermta=PowerMtaResource())
        assert campaign_runs.show("acme.spring")["state"] == "paused"  # paused here whatever MailWizz said
        failed = metadata(first, "delivery_events")["guard_rail_mailwizz_failed"]
        assert "acme.spring.news_en still sending after pause-unpause" in failed["acme.spring"]
        check = paused_in_mailwizz(first, "delivery_events")  # the failure shows as a failed check
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert "acme.spring: acme.spring.news_en still sending" in check.description
        assert incidents(engine, "guard_rail_mailwizz") == [("guard_rail_mailwizz:acme.spring", False)]
        assert statuses(state) == {"acme.spring.news_en": "sending", "acme.spring.news_fr": "paused"}
        toggled_fr = toggles(state).count(f"/api/campaigns/{fr}/pause-unpause")
        assert toggled_fr == 1  # the paused one is never toggled back

        state.failures = 0
        state.latency = 1.5  # now MailWizz does not answer in time
        timed_out = feedback_run([mailwizz_feedback])
        assert not paused_in_mailwizz(timed_out, "mailwizz_feedback").passed
        assert "timed out" in paused_in_mailwizz(timed_out, "mailwizz_feedback").description
        assert incidents(engine, "guard_rail_mailwizz") == [("guard_rail_mailwizz:acme.spring", False)]  # held: no second alert
        assert campaign_runs.show("acme.spring")["state"] == "paused"

        state.latency = 0
        again = feedback_run([mailwizz_feedback])
        assert metadata(again, "mailwizz_feedback")["guard_rail_mailwizz"] == {
            "acme.spring": {"acme.spring.news_en": "paused", "acme.spring.news_fr": "paused"}}
        assert incidents(engine, "guard_rail_mailwizz") == [("guard_rail_mailwizz:acme.spring", True)]  # cleared once
        assert paused_in_mailwizz(again, "mailwizz_feedback").passed
        assert set(statuses(state).values()) == {"paused"} and state.run_cron() == 0
        assert toggles(state).count(f"/api/campaigns/{fr}/pause-unpause") == toggled_fr
        feedback_run([mailwizz_feedback])  # settled: nothing retried, nothing toggled
        assert incidents(engine, "guard_rail_mailwizz") == [("guard_rail_mailwizz:acme.spring", True)]
