"""The alert "PowerMTA queue growing past a set size": the watcher of ``email-engine metrics serve``
reads each PowerMTA's ``/status`` (recipients queued) through its management port, opens one incident
(one alert) over the threshold, none more while it holds, one "resolved" once back under; a
management port down is counted and logged, never a crash, and leaves the incident as it is.

Real parts: the PowerMTA management stand-in and the chat stand-in on loopback, PostgreSQL, the
tenant files of a workspace, the Prometheus exposition of the collector.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from prometheus_client import generate_latest

from email_engine_assets.feedback import incidents as inc
from email_engine_assets.metrics.serve import registry_for
from email_engine_assets.metrics.watch import PowerMtaQueues, watch_once
from email_engine_resources.alerts import AlertPoster
from email_engine_tests.powermta_server import running_management
from email_engine_tests.test_alerts import chat, slack_env  # noqa: F401 (chat: the fixture)
from email_engine_tests.webhook_helpers import free_port

SETTINGS = inc.WatchSettings(powermta_queue_max=1000)


def tenant(tenant_id: str, management_url: str) -> str:
    return f"""\
id: {tenant_id}
name: {tenant_id.title()}
default_language: en
sources:
  - id: crm
transports:
  - name: pmta
    kind: powermta
    host: 127.0.0.1
    bounce_address: bounces@bounce.{tenant_id}.example
    management_url: {management_url}
    allow_private: true
"""


def texts(state) -> list[list[str]]:
    return [body["text"].splitlines() for _, body in state.received]


def queue_incidents(engine) -> list[tuple[str, str, bool]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT incident_key, tenant_id, cleared_at IS NOT NULL FROM alert_incidents WHERE kind = 'powermta_queue' ORDER BY id"))]


def test_a_queue_over_the_threshold_alerts_once_and_clears_once(chat, engine, workspace):  # noqa: F811
    url, state = chat
    poster = AlertPoster.from_environment(slack_env(url))
    queues = PowerMtaQueues()
    with running_management() as (mgmt_url, pmta):
        # two tenants send through the same PowerMTA: it is read once and alerted once
        workspace.tenant("acme", tenant("acme", mgmt_url))
        workspace.tenant("globex", tenant("globex", mgmt_url))

        def watch():
            return watch_once(engine, None, poster, SETTINGS, workspace_root=workspace.root, queues=queues)

        pmta.queued(1000)  # at the limit: not over it
        watch()
        assert texts(state) == [] and queue_incidents(engine) == []
        assert pmta.requests == ["/status?format=json"]

        pmta.queued(25_000)
        watch()
        [opened] = texts(state)
        assert opened[0] == "Email Engine: the PowerMTA queue is growing"
        assert opened[1] == f"PowerMTA {mgmt_url} (acme/pmta, globex/pmta): 25000 recipients queued (limit 1000)"
        assert queue_incidents(engine) == [(f"powermta_queue:{mgmt_url}", "", False)]

        pmta.queued(40_000)  # still over: no second alert
        watch()
        watch()
        assert len(texts(state)) == 1

        exposed = generate_latest(registry_for(engine, None, queues)).decode()
        assert f'email_engine_powermta_queue_recipients{{management_url="{mgmt_url}"}} 40000.0' in exposed

        pmta.queued(12)
        watch()
        [_, resolved] = texts(state)
        assert resolved[0] == "Email Engine: resolved: the PowerMTA queue is growing"
        assert queue_incidents(engine) == [(f"powermta_queue:{mgmt_url}", "", True)]
        watch()
        assert len(texts(state)) == 2


def test_a_management_port_down_is_counted_and_logged_and_leaves_the_incident_as_it_is(chat, engine, workspace, caplog):  # noqa: F811
    url, state = chat
    poster = AlertPoster.from_environment(slack_env(url))
    queues = PowerMtaQueues()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with running_management() as (mgmt_url, pmta):
        workspace.tenant("acme", tenant("acme", mgmt_url))
        workspace.tenant("globex", tenant("globex", closed))

        def watch():
            return watch_once(engine, None, poster, SETTINGS, workspace_root=workspace.root, queues=queues)

        pmta.queued(5000)
        with caplog.at_level(logging.ERROR, logger="email_engine.alerts"):
            watch()  # globex's PowerMTA does not answer: acme's is still read and alerted
        assert [t[:2] for t in texts(state)] == [["Email Engine: the PowerMTA queue is growing", "tenant: acme"]]
        assert any(f"PowerMTA queue of {closed} not read" in r.getMessage() for r in caplog.records)

        pmta.fail_with = 503  # now acme's answers an error: its open incident is neither cleared nor posted again
        watch()
        pmta.queued(0)
        watch()
        assert len(texts(state)) == 1
        assert queue_incidents(engine) == [(f"powermta_queue:{mgmt_url}", "acme", False)]

        exposed = generate_latest(registry_for(engine, None, queues)).decode()
        assert f'email_engine_powermta_queue_read_failures{{management_url="{closed}"}} 3.0' in exposed
        assert f'email_engine_powermta_queue_read_failures{{management_url="{mgmt_url}"}} 2.0' in exposed

        pmta.fail_with = None  # answers again, under the limit: cleared once
        watch()
        assert [t[0] for t in texts(state)] == ["Email Engine: the PowerMTA queue is growing",
                                                "Email Engine: resolved: the PowerMTA queue is growing"]
    assert queue_incidents(engine) == [(f"powermta_queue:{mgmt_url}", "acme", True)]


def test_the_threshold_is_a_setting_and_a_bad_value_is_refused():
    assert inc.watch_settings({}).powermta_queue_max == inc.POWERMTA_QUEUE_MAX
    assert inc.watch_settings({"EMAIL_ENGINE_ALERT_POWERMTA_QUEUE": "5000"}).powermta_queue_max == 5000
    for bad in ("-1", "0", "lots", "1.5"):
        try:
            inc.watch_settings({"EMAIL_ENGINE_ALERT_POWERMTA_QUEUE": bad})
        except ValueError as exc:
            assert "EMAIL_ENGINE_ALERT_POWERMTA_QUEUE must be a positive whole number" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
