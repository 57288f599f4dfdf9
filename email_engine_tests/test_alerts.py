"""Alerts: the texts, the poster against a loopback chat stand-in (Telegram and Slack shapes, retries,
timeouts, no secret in logs), and the run-failure sensor on real failed and blocked runs."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import dagster as dg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns.parts import Problem
from email_engine_assets.feedback.alert_sensors import alert_on_run_failure
from email_engine_assets.feedback.alerts import (
    ALERT_MAX_CHARS,
    blocked_send_text,
    run_failure_text,
    scrub,
)
from email_engine_resources.alerts import AlertPoster, alert_settings
from email_engine_tests.campaign_parts import (
    SimpleComposers,
    StaticAudience,
    add_contacts,
    campaign_defs,
    write_campaign,
)
from email_engine_tests.http_servers import serving

BOT_TOKEN = "123456:SECRET-bot-token"
SLACK_PATH = "/services/T000/B000/SECRETslackpath"


class Chat:
    """What the stand-in received, and what it answers: ``statuses`` (one per request, then 200), ``delay`` seconds."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.statuses: list[int] = []
        self.delay = 0.0


@contextmanager
def running_chat() -> Iterator[tuple[str, Chat]]:
    chat = Chat()

    async def receive(request: Request):
        body = await request.json()
        chat.received.append((request.url.path, body))
        if chat.delay:
            await anyio.sleep(chat.delay)
        status = chat.statuses.pop(0) if chat.statuses else 200
        return JSONResponse({"ok": status == 200}, status_code=status)

    app = Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
    with serving(app, "the chat stand-in") as url:
        yield url, chat


@pytest.fixture
def chat():
    with running_chat() as (url, state):
        yield url, state


def telegram_env(url: str) -> dict:
    return {"EMAIL_ENGINE_ALERT_KIND": "telegram", "EMAIL_ENGINE_TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "EMAIL_ENGINE_TELEGRAM_CHAT_ID": "-1001234", "EMAIL_ENGINE_TELEGRAM_API": url}


def slack_env(url: str) -> dict:
    return {"EMAIL_ENGINE_ALERT_KIND": "slack", "EMAIL_ENGINE_ALERT_URL": url + SLACK_PATH}


# -- texts ----------------------------------------------------------------------------------------

def test_texts_name_the_tenant_campaign_and_check_and_never_a_secret():
    text = blocked_send_text("acme.spring", [("sender_reputation", "last completed campaign acme.winter: hard bounces 3/100 = 3.00% > 2.0%")])
    assert text.splitlines() == [
        "Email Engine: send of campaign acme.spring blocked",
        "- sender_reputation: last completed campaign acme.winter: hard bounces 3/100 = 3.00% > 2.0%",
        "to go on anyway: email-engine campaign send acme.spring --override sender_reputation",
    ]
    failed = run_failure_text("campaign_send_job", "abcd-1234", "acme.spring",
                              f"POST https://user:pw@mw.example/api?token=tok123 failed; bot{BOT_TOKEN}/sendMessage\n" + "x" * 5000)
    assert "job: campaign_send_job" in failed and "partition: acme.spring" in failed and "run: abcd-1234" in failed
    assert "pw@" not in failed and "tok123" not in failed and "SECRET" not in failed
    assert len(failed) <= ALERT_MAX_CHARS
    assert scrub("https://a:b@h/x?api_key=k&y=1") == "https://***@h/x?api_key=***&y=1"


# -- the poster -----------------------------------------------------------------------------------

def test_telegram_shape(chat):
    url, state = chat
    assert AlertPoster.from_environment(telegram_env(url)).post("run failed") is True
    assert state.received == [(f"/bot{BOT_TOKEN}/sendMessage", {"chat_id": "-1001234", "text": "run failed"})]


def test_slack_shape(chat):
    url, state = chat
    assert AlertPoster.from_environment(slack_env(url)).post("blocked") is True
    assert state.received == [(SLACK_PATH, {"text": "blocked"})]


def test_nothing_configured_posts_nothing_and_incomplete_settings_are_named_not_shown(chat, caplog):
    url, state = chat
    assert alert_settings({}) is None
    assert AlertPoster.from_environment({}).post("x") is False
    caplog.set_level(logging.WARNING, logger="email_engine.alerts")
    poster = AlertPoster.from_environment({"EMAIL_ENGINE_ALERT_KIND": "telegram", "EMAIL_ENGINE_TELEGRAM_BOT_TOKEN": BOT_TOKEN})
    assert poster.post("x") is False and state.received == []
    assert "EMAIL_ENGINE_TELEGRAM_CHAT_ID" in caplog.text and BOT_TOKEN not in caplog.text
    with pytest.raises(ValueError, match="must be one of telegram, slack"):
        alert_settings({"EMAIL_ENGINE_ALERT_KIND": "pager"})


def test_a_failing_chat_is_retried_then_logged_without_url_or_token(chat, caplog):
    url, state = chat
    caplog.set_level(logging.DEBUG)  # httpx logs each request's URL at INFO: it must come out masked
    state.statuses = [503, 200]
    poster = AlertPoster.from_environment(telegram_env(url), backoff_initial=0.01)
    assert poster.post("once more") is True and len(state.received) == 2
    state.statuses = [500, 500, 500]
    assert poster.post("lost") is False
    assert "alert not posted (telegram): HTTP 500 after 3 attempt(s)" in caplog.text
    state.statuses = [400]
    assert poster.post("refused") is False and "HTTP 400" in caplog.text  # a refusal is not retried
    assert len(state.received) == 6
    slack = AlertPoster.from_environment(slack_env(url), backoff_initial=0.01)
    state.statuses = [500, 500, 500]
    assert slack.post("lost") is False
    assert "SECRET" not in caplog.text and BOT_TOKEN not in caplog.text and SLACK_PATH not in caplog.text
    assert "HTTP Request" in caplog.text  # httpx did log the requests, masked


def test_a_slow_or_absent_chat_never_raises(chat, caplog):
    url, state = chat
    state.delay = 1.0
    started = time.monotonic()
    assert AlertPoster.from_environment(slack_env(url), timeout=0.2, attempts=2, backoff_initial=0.01).post("slow") is False
    assert time.monotonic() - started < 1.5 and "ReadTimeout" in caplog.text
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert AlertPoster.from_environment(slack_env(f"http://127.0.0.1:{port}"), attempts=1).post("nobody") is False


# -- the run-failure sensor -----------------------------------------------------------------------

def failure_context(instance: dg.DagsterInstance, run_id: str):
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    [record] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=run, dagster_event=record.dagster_event,
    ).for_run_failure()


@dg.op
def breaks():
    raise RuntimeError("the database went away")


@dg.job
def fragile_job():
    breaks()


def test_the_sensor_posts_a_failed_run(chat, monkeypatch):
    url, state = chat
    for k, v in telegram_env(url).items():
        monkeypatch.setenv(k, v)
    with dg.instance_for_test() as instance:
        result = fragile_job.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/partition": "acme"})
        alert_on_run_failure(failure_context(instance, result.run_id))
    [(path, body)] = state.received
    assert path == f"/bot{BOT_TOKEN}/sendMessage" and body["chat_id"] == "-1001234"
    assert body["text"].startswith("Email Engine: run failed\njob: fragile_job\npartition: acme\n")
    assert result.run_id in body["text"] and "the database went away" in body["text"]


def test_the_sensor_posts_a_blocked_send_with_its_checks(chat, monkeypatch, engine, workspace, tmp_path):
    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    workspace.tenant("acme")
    ids = add_contacts(engine, "acme", ["ann@example.com"])
    composers = SimpleComposers(problems=[Problem("templates/acme/news.yaml", 3, "first_name", "undefined")])
    defs = campaign_defs(StaticAudience({"vip": ids}), composers)
    write_campaign(workspace.root, "acme", "spring")
    with dg.instance_for_test() as instance:
        outcome = campaign_runs.send("acme.spring", instance=instance, definitions=defs)
        assert [b["check"] for b in outcome.blocked] == ["preflight_renders"]
        [run] = instance.get_runs(limit=1)
        alert_on_run_failure(failure_context(instance, run.run_id))
    [(path, body)] = state.received
    lines = body["text"].splitlines()
    assert path == SLACK_PATH and lines[0] == "Email Engine: send of campaign acme.spring blocked"
    assert lines[1].startswith("- preflight_renders: 1 rendering problem(s): templates/acme/news.yaml:3")
    assert lines[-1] == "to go on anyway: email-engine campaign send acme.spring --override preflight_renders"


def test_the_sensor_posts_nothing_without_settings(chat, monkeypatch):
    url, state = chat
    monkeypatch.delenv("EMAIL_ENGINE_ALERT_KIND", raising=False)
    with dg.instance_for_test() as instance:
        result = fragile_job.execute_in_process(instance=instance, raise_on_error=False)
        alert_on_run_failure(failure_context(instance, result.run_id))
    assert state.received == []


def test_the_sensors_own_ticks_post_a_run_that_failed_after_the_first(chat, monkeypatch):
    """Through the sensor's evaluation (cursor kept between ticks), as the daemon runs it, on an in-process run."""
    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)
    defs = dg.Definitions(jobs=[fragile_job], sensors=[alert_on_run_failure])
    with dg.instance_for_test() as instance:
        first = dg.build_sensor_context(instance=instance, definitions=defs)
        alert_on_run_failure.evaluate_tick(first)  # the first tick starts watching from now
        fragile_job.execute_in_process(instance=instance, raise_on_error=False, tags={"dagster/partition": "acme.spring"})
        second = dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)
        alert_on_run_failure.evaluate_tick(second)
    [(_, body)] = state.received
    assert "job: fragile_job" in body["text"] and "partition: acme.spring" in body["text"]


# -- refused inputs -------------------------------------------------------------------------------

def test_a_run_that_refused_inputs_is_posted_naming_them_and_a_clean_run_is_not(chat, monkeypatch, engine, workspace):
    """A real mailwizz_feedback run whose transport's key is unset: the run succeeds, its inputs_read check
    fails (ERROR), and alert_on_unread_inputs posts the asset, the partition and the transport it names."""
    from email_engine_assets.feedback.alert_sensors import alert_on_unread_inputs
    from email_engine_assets.feedback.mailwizz_assets import mailwizz_feedback
    from email_engine_resources.postgres import PostgresResource
    from email_engine_resources.transports import MailwizzResource
    from email_engine_resources.workspace import WorkspaceResource

    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ACME_MW_KEY", raising=False)
    workspace.tenant("acme", """\
id: acme
name: Acme
sources:
  - id: crm
transports:
  - name: mw
    kind: mailwizz
    base_url: http://127.0.0.1:9/api
    api_key: {env: ACME_MW_KEY}
    allow_private: true
""")
    workspace.tenant("globex")
    resources = {"db": PostgresResource(), "workspace": WorkspaceResource(), "mailwizz": MailwizzResource()}

    def run_and_tick(tenant: str, instance) -> None:
        result = dg.materialize([mailwizz_feedback], partition_key=tenant, instance=instance, resources=resources)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        [record] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        alert_on_unread_inputs(dg.build_run_status_sensor_context(
            sensor_name="alert_on_unread_inputs", dagster_instance=instance, dagster_run=run, dagster_event=record.dagster_event))

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        run_and_tick("globex", instance)  # every input read: nothing to say
        assert state.received == []
        run_and_tick("acme", instance)
    [(path, body)] = state.received
    lines = body["text"].splitlines()
    assert path == SLACK_PATH and lines[0] == "Email Engine: inputs not read"
    assert lines[1].startswith("job: ") and "partition: acme" in lines
    [unread] = [line for line in lines if line.startswith("- mailwizz_feedback inputs_read: ")]
    assert "MailWizz polls not read (1)" in unread and "mailwizz transport 'mw'" in unread and "ACME_MW_KEY" in unread


@dg.asset(check_specs=[dg.AssetCheckSpec("inputs_read", asset="half_read")])
def half_read():
    yield dg.AssetCheckResult(check_name="inputs_read", passed=False, severity=dg.AssetCheckSeverity.ERROR,
                              description="inbox files not read (1): inbox/acme/crm/x.csv: not UTF-8")
    raise RuntimeError("the database went away")


def test_a_failed_run_names_the_inputs_it_refused_and_is_not_taken_for_a_blocked_send(chat, monkeypatch):
    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)
    with dg.instance_for_test() as instance:
        result = dg.materialize([half_read], instance=instance, raise_on_error=False, tags={"dagster/partition": "acme"})
        alert_on_run_failure(failure_context(instance, result.run_id))
    [(_, body)] = state.received
    lines = body["text"].splitlines()
    assert lines[0] == "Email Engine: run failed" and "partition: acme" in lines
    assert any(line.startswith("error: ") and "the database went away" in line for line in lines)
    assert lines[-1] == "- half_read inputs_read: inbox files not read (1): inbox/acme/crm/x.csv: not UTF-8"


def test_the_unread_inputs_sensors_own_ticks_post_a_run_after_the_first(chat, monkeypatch, engine):
    """Through the sensor's evaluation (cursor kept between ticks), as the daemon runs it: a run that
    succeeded with a failed inputs_read check is posted, one whose checks passed is not."""
    from email_engine_assets.feedback.alert_sensors import alert_on_unread_inputs

    @dg.asset(check_specs=[dg.AssetCheckSpec("inputs_read", asset="read_in_full")])
    def read_in_full():
        yield dg.Output(None)
        yield dg.AssetCheckResult(check_name="inputs_read", passed=True, description="inbox files: all read")

    @dg.asset(check_specs=[dg.AssetCheckSpec("inputs_read", asset="read_in_part")])
    def read_in_part():
        yield dg.Output(None)
        yield dg.AssetCheckResult(check_name="inputs_read", passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                  description="inbox files not read (1): inbox/acme/crm/x.csv: not UTF-8")

    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)
    defs = dg.Definitions(assets=[read_in_full, read_in_part], sensors=[alert_on_unread_inputs])
    with dg.instance_for_test() as instance:
        first = dg.build_sensor_context(instance=instance, definitions=defs)
        alert_on_unread_inputs.evaluate_tick(first)  # the first tick starts watching from now
        assert dg.materialize([read_in_full], instance=instance, tags={"dagster/partition": "acme"}).success
        refused = dg.materialize([read_in_part], instance=instance, tags={"dagster/partition": "acme"})
        assert refused.success
        second = dg.build_sensor_context(instance=instance, definitions=defs, cursor=first.cursor)
        alert_on_unread_inputs.evaluate_tick(second)
    [(_, body)] = state.received
    assert body["text"].splitlines() == ["Email Engine: inputs not read", "job: __ephemeral_asset_job__", "partition: acme",
                                         f"run: {refused.run_id}",
                                         "- read_in_part inputs_read: inbox files not read (1): inbox/acme/crm/x.csv: not UTF-8"]
