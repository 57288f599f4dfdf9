"""Alert incidents: a condition that holds over many evaluations is posted once, and once more when
it clears -- for inputs a run could not read (the sensor, on real runs) and for what the watcher of
``email-engine metrics serve`` sees (silent sensors and daemon, inbox backlog, refused input), on
real PostgreSQL, a real Dagster instance and the loopback chat stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType, TickData, TickStatus
from dagster._daemon.types import DaemonHeartbeat

from email_engine_assets import cli
from email_engine_assets.feedback import incident_store
from email_engine_assets.feedback import incidents as inc
from email_engine_assets.feedback.alert_sensors import alert_on_unread_inputs
from email_engine_assets.metrics.watch import watch_once
from email_engine_resources.alerts import AlertPoster
from email_engine_tests.test_alerts import SLACK_PATH, chat, slack_env  # noqa: F401 (chat: the fixture)
from email_engine_tests.test_metrics import dagster_home_env  # noqa: F401 (the fixture)
from email_engine_tests.webhook_helpers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def texts(state) -> list[list[str]]:
    return [body["text"].splitlines() for _, body in state.received]


# -- the functional core --------------------------------------------------------------------------

def test_decide_opens_new_conditions_clears_the_gone_and_holds_the_rest():
    a = inc.Condition("k:a", inc.INBOX_BACKLOG, "acme", "a")
    b = inc.Condition("k:b", inc.INBOX_BACKLOG, "globex", "b")
    gone = inc.OpenIncident("k:c", inc.INBOX_BACKLOG, "initech", "c")
    held = inc.OpenIncident("k:b", inc.INBOX_BACKLOG, "globex", "b")
    decision = inc.decide([a, b, a], [held, gone])
    assert decision.opened == [a] and decision.held == [b] and decision.cleared == [gone]
    assert inc.decide([], []) == inc.Decision([], [], [])


def test_conditions_and_settings():
    assert [c.key for c in inc.silent_sensors({"s1": 0.0, "s2": 990.0, "s3": None}, 1000.0, 60)] == ["sensor_silent:s1"]
    assert inc.silent_daemon({}, 1000.0, 60) == []  # never ran: CLI-only use, not a silent daemon
    assert [c.key for c in inc.silent_daemon({"SENSOR": 100.0, "ASSET": 900.0}, 1000.0, 60)] == ["daemon_silent"]
    assert inc.silent_daemon({"SENSOR": 100.0, "ASSET": 990.0}, 1000.0, 60) == []
    assert [c.key for c in inc.inbox_backlogs([("acme", 5, 1.0), ("globex", 2, 1.0)], 2)] == ["inbox_backlog:acme"]
    assert inc.tenant_of("crm|acme") == "acme" and inc.tenant_of("acme.spring") == "acme" and inc.tenant_of(None) == ""
    assert inc.watch_settings({}) == inc.WatchSettings(900.0, 1000, 60.0)
    assert inc.watch_settings({inc.INBOX_BACKLOG_ENV: "50", inc.SILENT_AFTER_ENV: "120"}).inbox_backlog_max == 50
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match=inc.INBOX_BACKLOG_ENV):
            inc.watch_settings({inc.INBOX_BACKLOG_ENV: bad})


def test_metrics_serve_refuses_a_bad_threshold(capsys, monkeypatch):
    monkeypatch.setenv(inc.SILENT_AFTER_ENV, "soon")
    assert cli.main(["metrics", "serve"]) == 2
    assert inc.SILENT_AFTER_ENV in capsys.readouterr().err


# -- inputs not read: the sensor ------------------------------------------------------------------

READS = {"ok": False}


@dg.asset(check_specs=[dg.AssetCheckSpec("inputs_read", asset="mail_feed")])
def mail_feed():
    yield dg.Output(None)
    if READS["ok"]:
        yield dg.AssetCheckResult(check_name="inputs_read", passed=True, description="accounting files: all read")
    else:
        yield dg.AssetCheckResult(check_name="inputs_read", passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                  description="accounting files not read (1): acct/x.csv: no header")


def test_unread_inputs_alert_once_per_incident_and_once_resolved(chat, monkeypatch, engine):  # noqa: F811
    url, state = chat
    for k, v in slack_env(url).items():
        monkeypatch.setenv(k, v)

    def run_and_tick(partition: str) -> str:
        result = dg.materialize([mail_feed], instance=instance, tags={"dagster/partition": partition})
        assert result.success
        [event] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        alert_on_unread_inputs(dg.build_run_status_sensor_context(
            sensor_name="alert_on_unread_inputs", dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id), dagster_event=event.dagster_event))
        return result.run_id

    with dg.instance_for_test() as instance:
        READS["ok"] = False
        first = run_and_tick("acme")
        for _ in range(3):  # the problem persists: nothing more
            run_and_tick("acme")
        run_and_tick("globex")  # another tenant: an incident of its own
        READS["ok"] = True
        cleared = run_and_tick("acme")
        run_and_tick("acme")  # still fine: nothing more
    got = texts(state)
    assert [t[0] for t in got] == ["Email Engine: inputs not read", "Email Engine: inputs not read",
                                   "Email Engine: resolved: inputs not read"]
    assert f"run: {first}" in got[0] and "partition: acme" in got[0] and "partition: globex" in got[1]
    assert got[2] == ["Email Engine: resolved: inputs not read", "tenant: acme",
                      "was: mail_feed: accounting files not read (1): acct/x.csv: no header", got[2][3], f"run: {cleared}"]
    assert got[2][3].startswith("open since: ")
    with engine.connect() as conn:
        rows = incident_store.incidents(conn)
    assert [(r.incident_key, r.cleared_at is not None) for r in rows] == [
        ("inputs_not_read:acme:mail_feed", True), ("inputs_not_read:globex:mail_feed", False)]


# -- the watcher of metrics serve -----------------------------------------------------------------

def test_the_watcher_posts_backlog_refused_input_and_a_silent_daemon_once_and_their_clearing_once(chat, engine):  # noqa: F811
    url, state = chat
    poster = AlertPoster.from_environment(slack_env(url))
    settings = inc.WatchSettings(silent_after_s=600, inbox_backlog_max=2, interval_s=60)
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key)
                                SELECT 'acme', 'mailwizz', '\\x7b7d'::bytea, 'k' || i FROM generate_series(1, 3) i"""))
        conn.execute(sa.text("""INSERT INTO input_problems (tenant_id, kind, name, reason)
                                VALUES ('acme', 'accounting_file', 'acct/acme/x.csv', 'no header row'),
                                       ('acme', 'inbox_file', 'inbox/acme/crm/y.csv', 'not UTF-8')"""))
    with dg.instance_for_test() as instance:
        now = time.time()
        instance.add_daemon_heartbeat(DaemonHeartbeat(now - 3600, "SENSOR", "d1", None))
        for _ in range(3):
            watch_once(engine, lambda: instance, poster, settings)
        opened = texts(state)
        assert sorted(t[0] for t in opened) == ["Email Engine: input refused", "Email Engine: the Dagster daemon is silent",
                                                "Email Engine: the webhook inbox is growing"]
        by_title = {t[0]: t for t in opened}
        assert by_title["Email Engine: input refused"][1:] == [
            "tenant: acme", "accounting_file refused for acme (1): acct/acme/x.csv: no header row"]  # an inbox file is not this kind
        assert "3 rows not applied (limit 2)" in by_title["Email Engine: the webhook inbox is growing"][2]
        assert "last heartbeat 3600 s ago" in by_title["Email Engine: the Dagster daemon is silent"][1]

        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE webhook_inbox SET applied_at = now(), outcome = 'applied'"))
            conn.execute(sa.text("DELETE FROM input_problems WHERE kind = 'accounting_file'"))
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", "d1", None))
        for _ in range(2):
            watch_once(engine, lambda: instance, poster, settings)
    resolved = texts(state)[3:]
    assert sorted(t[0] for t in resolved) == ["Email Engine: resolved: input refused",
                                              "Email Engine: resolved: the Dagster daemon is silent",
                                              "Email Engine: resolved: the webhook inbox is growing"]
    with engine.connect() as conn:
        assert all(r.cleared_at is not None for r in incident_store.incidents(conn))


def test_while_the_daemon_is_silent_its_sensors_are_not_posted_one_by_one(chat, engine):  # noqa: F811
    url, state = chat
    poster = AlertPoster.from_environment(slack_env(url))
    settings = inc.WatchSettings(silent_after_s=600)
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("email_engine"), "__repository__")
    with dg.instance_for_test() as instance:
        hour_ago = time.time() - 3600
        instance.add_daemon_heartbeat(DaemonHeartbeat(hour_ago, "SENSOR", "d1", None))
        for name in ("webhook_inbox_sensor", "accounting_sensor"):
            sensor = InstigatorState(RemoteInstigatorOrigin(repository, name), InstigatorType.SENSOR, InstigatorStatus.RUNNING)
            instance.add_instigator_state(sensor)
            instance.create_tick(TickData(instigator_origin_id=sensor.instigator_origin_id, instigator_name=name,
                                          instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
                                          timestamp=hour_ago, selector_id=sensor.selector_id))
        watch_once(engine, lambda: instance, poster, settings)
        watch_once(engine, lambda: instance, poster, settings)
        assert [t[0] for t in texts(state)] == ["Email Engine: the Dagster daemon is silent"]
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "SENSOR", "d1", None))  # back, but no tick yet
        watch_once(engine, lambda: instance, poster, settings)
        watch_once(engine, lambda: instance, poster, settings)
    assert [t[0] for t in texts(state)[1:]] == ["Email Engine: a sensor is silent", "Email Engine: a sensor is silent",
                                                "Email Engine: resolved: the Dagster daemon is silent"]


def test_a_silent_sensor_is_posted_once_by_metrics_serve_and_once_when_it_ticks_again(chat, engine, dagster_home_env):  # noqa: F811
    """``email-engine metrics serve`` in its own process, its watcher evaluating every 0.3 s, against
    the Dagster instance of its DAGSTER_HOME where one running sensor last ticked an hour ago."""
    url, state = chat
    cli._prepare(None)  # the DAGSTER_HOME the served process uses, in this process too
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("email_engine"), "__repository__")

    def tick(instance, state_, at):
        instance.create_tick(TickData(instigator_origin_id=state_.instigator_origin_id, instigator_name=state_.instigator_name,
                                      instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
                                      timestamp=at, selector_id=state_.selector_id))

    with dg.DagsterInstance.get() as instance:
        states = {}
        for name, ticked in (("webhook_inbox_sensor", time.time() - 3600), ("accounting_sensor", time.time())):
            states[name] = InstigatorState(RemoteInstigatorOrigin(repository, name), InstigatorType.SENSOR,
                                           InstigatorStatus.RUNNING)
            instance.add_instigator_state(states[name])
            tick(instance, states[name], ticked)

        env = {**os.environ, **slack_env(url), inc.SILENT_AFTER_ENV: "600", inc.WATCH_INTERVAL_ENV: "0.3"}
        proc = subprocess.Popen([str(Path(sys.executable).parent / "email-engine"), "metrics", "serve", "--port", str(free_port())],
                                env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: len(state.received) >= 1, proc)
            time.sleep(1.5)  # several more evaluations while the sensor stays silent
            assert len(state.received) == 1
            tick(instance, states["webhook_inbox_sensor"], time.time())
            wait_for(lambda: len(state.received) >= 2, proc)
            time.sleep(1.0)
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    got = texts(state)
    assert [path for path, _ in state.received] == [SLACK_PATH, SLACK_PATH]
    assert got[0][0] == "Email Engine: a sensor is silent"
    assert got[0][1].startswith("sensor webhook_inbox_sensor: last tick ") and got[0][1].endswith(" s ago (limit 600 s)")
    assert got[1][:2] == ["Email Engine: resolved: a sensor is silent", got[0][1].replace("sensor ", "was: sensor ", 1)]
    assert len(got) == 2  # accounting_sensor ticked on time: never posted


def wait_for(condition, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"metrics serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the alert")
        time.sleep(0.1)
