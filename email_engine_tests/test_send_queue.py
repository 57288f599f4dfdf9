"""Every send goes through one per-transport limit, whichever way it starts.

With a daemon dequeuing the instance's run queue, ``campaign send`` submits the run and follows it;
without one it executes the run itself (``dg.execute_job``). Here both at once on one transport:
one run goes through the queue (a real queue daemon on the instance's storage, which launches it
in a process of its own), the other is executed by the CLI's own path. The transport is kept busy
until both send steps run, so they contend for it; the send step of each holds the transport's
PostgreSQL lock, and the ledger shows one send after the other.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.controller import daemon_controller_from_instance
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from email_engine_assets import campaign_runs, execution
from email_engine_assets.campaigns.assets import TRANSPORT_LOCK, TRANSPORT_TAG
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.campaign_parts import add_contacts, write_campaign

CONTACTS = 24
TENANT = """\
id: acme
name: Acme
sources: [{id: crm}]
unsubscribe:
  base_url: https://unsubscribe.acme.example
segments:
  - name: vip
    all: [{field: first_name, equals: Ann}]
    verdicts: [valid, risky, unknown]
"""


@pytest.fixture
def two_campaigns(engine, workspace, tmp_path, monkeypatch):
    workspace.tenant("acme", yaml_text=TENANT)
    folder = workspace.root / "templates" / "acme"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news_en.yaml").write_text(
        'category: news\nlanguage: en\nsubject: "Hello {{ first_name }}"\n'
        'html: |\n  <p>Hello {{ first_name }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>\n')
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))  # the outbox and the signing key, for both processes
    ids = add_contacts(engine, "acme", [f"c{i}@example.com" for i in range(CONTACTS)])
    with engine.begin() as conn:  # checked addresses (the segment lists verdicts)
        conn.execute(sa.text("""INSERT INTO email_validations (contact_id, tenant_id, email, verdict, syntax_ok)
                                SELECT contact_id, tenant_id, email, 'valid', true FROM contacts
                                WHERE contact_id = ANY(CAST(:ids AS bigint[]))"""), {"ids": ids})
    for name in ("first", "second"):
        write_campaign(workspace.root, "acme", name)
    campaign_runs.list_campaigns("acme")
    concurrency = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]
    with dg.instance_for_test(overrides={"concurrency": concurrency}) as instance:
        yield instance, tmp_path / "home" / "outbox"


def _window(engine, campaign: str) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(
            "SELECT min(claimed_at), max(settled_at), count(*) FILTER (WHERE state = 'sent') FROM campaign_sends "
            "WHERE tenant_id = 'acme' AND campaign = :c"), {"c": campaign}).one())


def _step_start(instance: dg.DagsterInstance, run_id: str, step: str) -> float:
    [record] = [r for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START) if r.step_key == step]
    return record.timestamp


def _send_step_started(instance: dg.DagsterInstance, key: str) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name="campaign_send_job", tags={"dagster/partition": key}))
    return any(r.step_key == "campaign_sends" for run in runs
               for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_queued_send_and_a_cli_send_on_one_transport_never_overlap(engine, two_campaigns):
    instance, outbox = two_campaigns
    assert not execution.daemon_running(instance)  # the embedded default: the CLI executes its runs itself
    queue_daemon = [QueuedRunCoordinatorDaemon(interval_seconds=1)]
    target = WorkspaceFileTarget(paths=[str(PROJECT_ROOT / "workspace.yaml")])
    held, released = threading.Event(), []

    def busy_transport():
        """A third sender on the transport until both send steps run: they wait for it together."""
        with tenant_work_lock(engine, TRANSPORT_LOCK, "acme.outbox"):
            held.set()
            deadline = time.monotonic() + 50
            while not all(_send_step_started(instance, k) for k in ("acme.first", "acme.second")) and time.monotonic() < deadline:
                time.sleep(0.2)
            released.append((time.time(), [_send_step_started(instance, k) for k in ("acme.first", "acme.second")]))

    with daemon_controller_from_instance(instance, target, heartbeat_interval_seconds=1, gen_daemons=lambda _: queue_daemon):
        _wait(lambda: execution.daemon_running(instance), 30, "the queue daemon sent no heartbeat")
        holder = threading.Thread(target=busy_transport)
        holder.start()
        assert held.wait(10)
        outcomes = {}
        # `campaign send acme.first` while a daemon runs: submitted to the queue, followed to its end
        queued = threading.Thread(target=lambda: outcomes.update(first=campaign_runs.send("acme.first", instance=instance)))
        queued.start()
        # launched by the daemon, its send step waits for the transport; then, on the CLI's own path (as
        # without a daemon), `campaign send acme.second` on the same transport
        _wait(lambda: _send_step_started(instance, "acme.first"), 45, "the queued run's send step did not start")
        outcomes["second"] = campaign_runs.send("acme.second", instance=instance, through_queue=False)
        queued.join(timeout=60)
        holder.join(timeout=5)
    assert outcomes["first"].counts["sent"] == outcomes["second"].counts["sent"] == CONTACTS
    assert not outcomes["first"].failures and not outcomes["second"].failures

    runs = {run.tags["dagster/partition"]: run for run in instance.get_runs(dg.RunsFilter(job_name="campaign_send_job"))}
    first, second = runs["acme.first"], runs["acme.second"]
    assert first.tags[TRANSPORT_TAG] == second.tags[TRANSPORT_TAG] == "acme.outbox"
    # the first went through the run queue (and the daemon launched it), the second did not
    assert instance.all_logs(first.run_id, of_type=dg.DagsterEventType.PIPELINE_ENQUEUED)
    assert not instance.all_logs(second.run_id, of_type=dg.DagsterEventType.PIPELINE_ENQUEUED)

    # both send steps were running, waiting for the transport, when it was released ...
    [(release, waiting)] = released
    assert waiting == [True, True]
    assert _step_start(instance, first.run_id, "campaign_sends") < release
    assert _step_start(instance, second.run_id, "campaign_sends") < release
    # ... and the ledger shows one send after the other: every row of one settled before the other claimed one
    windows = sorted([_window(engine, "first"), _window(engine, "second")])
    assert [sent for _, _, sent in windows] == [CONTACTS, CONTACTS]
    (_, earlier_end, _), (later_start, _, _) = windows
    assert release < windows[0][0].timestamp() and earlier_end < later_start
    assert len(list(Path(outbox).rglob("*.eml"))) == 2 * CONTACTS
