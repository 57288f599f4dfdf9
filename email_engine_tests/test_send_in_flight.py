"""A crash mid-send strands few: a row is ``sending`` only while a connection holds it (BRIEF invariant 9).

The PowerMTA stand-in runs in the test process and records every message it accepted, so what a
sender killed at a random moment really delivered is known; the ledger is read from PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.registry import load_one
from email_engine_assets.campaigns.sender import send_campaign
from email_engine_resources.delivery import DEFAULT_PIPELINE_DEPTH, DeliveryResult
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_resources.settings import PROJECT_ROOT
from email_engine_tests.campaign_parts import SimpleComposers, add_contacts, write_campaign
from email_engine_tests.powermta_server import PowerMtaStandIn

CONNECTIONS = 4
BOUND = CONNECTIONS * DEFAULT_PIPELINE_DEPTH  # 16
AUDIENCE = 600


@pytest.fixture
def acme(engine, workspace):
    workspace.tenant("acme")
    emails = [f"r{i:03d}@example.com" for i in range(AUDIENCE)]
    return {"root": workspace.root, "ids": add_contacts(engine, "acme", emails), "emails": emails}


def _running_campaign(engine, acme, name: str):
    """A campaign of the whole audience, frozen and running (what `campaign send` does before sending)."""
    write_campaign(acme["root"], "acme", name)
    campaign_runs.list_campaigns()
    _, campaign = load_one(acme["root"], f"acme.{name}")
    with engine.begin() as conn:
        store.freeze_members(conn, "acme", name, acme["ids"])
        store.transition(conn, "acme", name, "send")
    return campaign


def _pmta(mta, **settings) -> PowerMtaSmtpTransport:
    return PowerMtaSmtpTransport(name="pmta", host=mta.host, port=mta.port, bounce_address="b@bounce.acme.example",
                                 connections=CONNECTIONS, allow_private=True, helo_name="sender.acme.example", **settings)


def _ledger(engine, name: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT email, state FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = :c"),
                                 {"c": name}).all())


class SendingWatch:
    """Polls the number of ``sending`` rows of a campaign from its own database session; ``most`` is the largest seen."""

    def __init__(self, engine, name: str) -> None:
        self.engine, self.name, self.most, self.seen = engine, name, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        query = sa.text("SELECT count(*) FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = :c AND state = 'sending'")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                now = conn.execute(query, {"c": self.name}).scalar_one()
                conn.rollback()
                self.most = max(self.most, now)
                self.seen += bool(now)
                time.sleep(0.001)


def test_rows_in_flight_never_exceed_connections_times_pipeline_depth_during_a_send(engine, acme):
    campaign = _running_campaign(engine, acme, "spring")
    with PowerMtaStandIn() as mta, SendingWatch(engine, "spring") as watch:
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta))
        received = [m.recipients[0] for m in mta.received]
    assert report.completed and report.outcomes["sent"] == AUDIENCE
    assert sorted(received) == acme["emails"]  # each once
    assert watch.seen > 0, "the poller saw rows in flight"
    assert 0 < watch.most <= BOUND, f"{watch.most} rows were 'sending' at once"


CHILD = """
import sys
from pathlib import Path
from email_engine_assets.campaigns.registry import load_one
from email_engine_assets.campaigns.sender import send_campaign
from email_engine_resources.postgres import get_engine
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_tests.campaign_parts import SimpleComposers
root, key, port, connections = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
_, campaign = load_one(root, key)
transport = PowerMtaSmtpTransport(name="pmta", host="127.0.0.1", port=port, bounce_address="b@bounce.acme.example",
                                  connections=connections, allow_private=True, helo_name="sender.acme.example")
send_campaign(get_engine(), campaign, SimpleComposers().composer(None, campaign), transport)
"""


def test_a_sigkill_at_a_random_moment_leaves_at_most_the_rows_in_flight_unknown_and_nobody_is_mailed_twice(engine, acme):
    seed = random.randrange(1 << 30)
    moments = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for attempt in range(3):
        name = f"crash{attempt}"
        campaign = _running_campaign(engine, acme, name)
        kill_after = moments.randrange(1, AUDIENCE - 50)  # messages the stand-in has accepted when the sender is killed
        why = f"seed {seed}, attempt {attempt}, killed after {kill_after} messages"
        with PowerMtaStandIn() as mta:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(acme["root"]), campaign.key, str(mta.port), str(CONNECTIONS)],
                                     env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 30
                while len(mta.received) < kill_after:
                    assert child.poll() is None, child.stderr.read().decode()[-2000:]
                    assert time.monotonic() < deadline, why
                    time.sleep(0.0005)
                child.send_signal(signal.SIGKILL)
            finally:
                child.wait(timeout=30)
                child.stderr.close()
            assert child.returncode == -signal.SIGKILL, why
            time.sleep(0.05)  # a message whose data was already on the wire may still land
            crashed = _ledger(engine, name)
            states = Counter(crashed.values())
            assert states["sending"] <= BOUND, f"{states}: {why}"
            assert set(states) <= {"sent", "sending", "queued"} and states["queued"] > 0, f"the rest is still queued: {states}: {why}"
            delivered = {m.recipients[0] for m in mta.received}
            assert {crashed[e] for e in delivered} <= {"sent", "sending"}, f"a row went out before it was marked: {why}"

            report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta))
            received = Counter(m.recipients[0] for m in mta.received)
        after = _ledger(engine, name)
        assert report.completed and report.recovered_unknown == states["sending"], why
        assert max(received.values()) == 1, f"received twice: {[e for e, n in received.items() if n > 1]}: {why}"
        unknown = {e for e, s in after.items() if s == "unknown"}
        sent = {e for e, s in after.items() if s == "sent"}
        assert len(unknown) <= BOUND, f"{len(unknown)} unknown: {why}"
        assert sent | unknown == set(acme["emails"]) and sent <= set(received), why


class CountingLists:
    """A list transport that takes every recipient and notes, at each hand-off, the rows ``sending`` in the ledger."""

    name = "lists"
    records_per_call = 3

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[str, int, int]] = []  # (template, recipients, rows sending meanwhile)

    def hand_off(self, handoff):
        with self.engine.connect() as conn:
            sending = conn.execute(sa.text("SELECT count(*) FROM campaign_sends WHERE state = 'sending'")).scalar_one()
        self.calls.append((handoff.template, len(handoff.recipients), sending))
        return [DeliveryResult(r.row_id, "handed_off") for r in handoff.recipients]


def test_a_list_transport_has_the_records_of_one_call_in_flight(engine, acme):
    campaign = _running_campaign(engine, acme, "lists")
    with engine.begin() as conn:  # 7 rows to hand off
        conn.execute(sa.text("UPDATE campaign_sends SET state = 'skipped_cancelled' WHERE campaign = 'lists' AND row_id NOT IN "
                             "(SELECT row_id FROM campaign_sends WHERE campaign = 'lists' ORDER BY row_id LIMIT 7)"))
    lists = CountingLists(engine)
    report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), lists)
    assert report.completed and report.outcomes["handed_off"] == 7
    assert lists.calls == [("welcome", 3, 3), ("welcome", 3, 3), ("welcome", 1, 1)]


def test_an_address_suppressed_after_its_row_was_claimed_is_skipped_when_a_connection_would_take_it(engine, acme):
    campaign = _running_campaign(engine, acme, "late")
    last = acme["emails"][5]

    def suppress_while_the_window_is_composed(contact):
        if contact["email"] == acme["emails"][0]:
            with engine.begin() as conn:
                store.suppress(conn, "acme", last, "complained", None)

    composer = SimpleComposers(on_compose=suppress_while_the_window_is_composed).composer(None, campaign)
    with PowerMtaStandIn() as mta:
        report = send_campaign(engine, campaign, composer, _pmta(mta), batch_size=10)
        received = {m.recipients[0] for m in mta.received}
    assert last not in received and len(received) == AUDIENCE - 1
    assert report.outcomes["skipped_suppressed"] == 1 and _ledger(engine, "late")[last] == "skipped_suppressed"
    with engine.connect() as conn:
        detail = conn.execute(sa.text("SELECT detail FROM campaign_sends WHERE campaign = 'late' AND email = :e"), {"e": last}).scalar_one()
    assert detail == "suppressed (complained) at send time"


def test_pipeline_depth_is_a_checked_setting():
    with pytest.raises(ValueError, match="pipeline_depth must be an integer between 1 and 64"):
        PowerMtaSmtpTransport(name="pmta", host="127.0.0.1", bounce_address="b@bounce.example", pipeline_depth=0, helo_name="h.example")


def _sessions_quit(mta, expected: int, timeout: float = 5.0) -> list:
    """The stand-in's sessions once ``expected`` of them have ended with QUIT (it logs them from its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = mta.sessions
        if sum(s.verbs()[-1:] == ["QUIT"] for s in sessions) >= expected or time.monotonic() > deadline:
            return sessions
        time.sleep(0.01)


def test_one_smtp_session_per_connection_for_the_whole_run_and_one_powermta_closes_is_reopened(engine, acme):
    campaign = _running_campaign(engine, acme, "pool")
    busy = acme["emails"][300]
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "421 4.3.2 service shutting down, closing channel", recipient=busy, times=1)
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign),
                               _pmta(mta, retry_backoff_seconds=0), batch_size=10)
        received = Counter(m.recipients[0] for m in mta.received)
        sessions = _sessions_quit(mta, CONNECTIONS)
    assert report.completed and report.outcomes["sent"] == AUDIENCE and report.batches >= AUDIENCE // 10
    assert sorted(received) == acme["emails"] and max(received.values()) == 1
    # 60 windows, yet one session per connection, plus the one opened again after PowerMTA's 421
    assert len(sessions) == CONNECTIONS + 1
    assert all(s.verbs().count("EHLO") == 1 for s in sessions)
    assert sum(s.verbs()[-1] == "QUIT" for s in sessions) == CONNECTIONS  # the closed one had no QUIT; the others at the end
    assert sum(s.verbs().count("MAIL") for s in sessions) == AUDIENCE + 1  # the refused recipient's second try


def test_a_stop_while_every_connection_waits_for_data_ends_each_message_whole_then_quits(engine, acme):
    """Cutting a connection between DATA and the end of the data would leave PowerMTA half a message
    and a session that never said QUIT; each connection ends its transaction first."""
    campaign = _running_campaign(engine, acme, "stopped")

    def fail_at_the_third_window(windows: int) -> None:
        if windows == 3:
            raise RuntimeError("the ledger's database went away")

    with PowerMtaStandIn(delays={"DATA": 0.3}) as mta:
        with pytest.raises(RuntimeError, match="went away"):
            send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta), batch_size=10,
                          between_batches=fail_at_the_third_window)
        sessions = _sessions_quit(mta, CONNECTIONS)
        received = list(mta.received)
    assert len(sessions) == CONNECTIONS and all(s.verbs()[-1] == "QUIT" for s in sessions)
    assert sum(s.verbs().count("DATA") for s in sessions) == len(received) > 0  # every DATA ended in a message
    assert not any(b"QUIT" in m.data for m in received)
    ledger = _ledger(engine, "stopped")
    assert {ledger[m.recipients[0]] for m in received} <= {"sent", "sending"}  # never queued: not sent twice


def test_a_run_that_fails_midway_quits_every_connection_and_the_next_run_finishes_once_each(engine, acme):
    campaign = _running_campaign(engine, acme, "broken")

    def fail_at_the_fifth_window(windows: int) -> None:
        if windows == 5:
            raise RuntimeError("the guard rail's database went away")

    with PowerMtaStandIn() as mta:
        with pytest.raises(RuntimeError, match="went away"):
            send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta), batch_size=10,
                          between_batches=fail_at_the_fifth_window)
        sessions = _sessions_quit(mta, CONNECTIONS)
        assert len(sessions) == CONNECTIONS and all(s.verbs()[-1] == "QUIT" for s in sessions)
        states = Counter(_ledger(engine, "broken").values())
        assert states["sending"] <= BOUND and states["queued"] > 0, states
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta))
        received = Counter(m.recipients[0] for m in mta.received)
    after = Counter(_ledger(engine, "broken").values())
    assert report.completed and report.recovered_unknown == states["sending"]
    assert max(received.values()) == 1 and after["sent"] + after["unknown"] == AUDIENCE, after


POOL_CHILD = CHILD.replace("transport)\n", "transport, compose_workers=2, pool_min_rows=0)\n")


def _children(pid: int) -> set[int]:
    found = set()
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(stat))
    return found


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_sigkill_while_worker_processes_compose_leaves_at_most_the_rows_in_flight_unknown_and_no_worker(engine, acme):
    assert "compose_workers=2" in POOL_CHILD
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    campaign = _running_campaign(engine, acme, "poolcrash")
    with PowerMtaStandIn() as mta:
        child = subprocess.Popen([sys.executable, "-c", POOL_CHILD, str(acme["root"]), campaign.key, str(mta.port), str(CONNECTIONS)],
                                 env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(mta.received) < AUDIENCE // 3:
                assert child.poll() is None, child.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.0005)
            workers = _children(child.pid)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
            child.stderr.close()
        assert len(workers) >= 2, "the messages were composed by worker processes"
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), "a worker outlived the send it composed for"
        time.sleep(0.05)
        crashed = _ledger(engine, "poolcrash")
        states = Counter(crashed.values())
        assert states["sending"] <= BOUND, states
        assert set(states) <= {"sent", "sending", "queued"} and states["queued"] > 0, states
        delivered = {m.recipients[0] for m in mta.received}
        assert {crashed[e] for e in delivered} <= {"sent", "sending"}, "a row went out before it was marked"

        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta),
                               compose_workers=2, pool_min_rows=0)
        received = Counter(m.recipients[0] for m in mta.received)
    after = _ledger(engine, "poolcrash")
    assert report.completed and report.recovered_unknown == states["sending"]
    assert max(received.values()) == 1
    unknown = {e for e, s in after.items() if s == "unknown"}
    assert len(unknown) <= BOUND and {e for e, s in after.items() if s == "sent"} | unknown == set(acme["emails"])


def test_a_pause_mid_send_with_worker_processes_composing_stops_at_the_next_marking(engine, acme):
    """Windows are claimed and composed ahead by the workers; the pause still stops every row not yet taken."""
    campaign = _running_campaign(engine, acme, "poolpause")

    def pause(windows: int) -> None:
        if windows == 6:  # the workers compose up to four windows ahead: some rows have gone by now
            with engine.begin() as conn:
                store.transition(conn, "acme", "poolpause", "pause")

    with PowerMtaStandIn() as mta:
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta), batch_size=50,
                               between_batches=pause, compose_workers=2, pool_min_rows=0)
        received = [m.recipients[0] for m in mta.received]
    states = Counter(_ledger(engine, "poolpause").values())
    assert not report.completed and report.batches >= 2
    assert states["sent"] == len(received) and states["queued"] == AUDIENCE - len(received), states
    assert 0 < len(received) <= 6 * 50, f"{len(received)} messages left: some before the pause, none of the windows after it"
    with engine.begin() as conn:
        store.transition(conn, "acme", "poolpause", "resume")
    with PowerMtaStandIn() as mta:
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta),
                               compose_workers=2, pool_min_rows=0)
        again = [m.recipients[0] for m in mta.received]
    assert report.completed and sorted(received + again) == acme["emails"]


def test_a_claim_that_fails_in_the_claiming_thread_of_a_pooled_send_fails_the_run_and_the_next_finishes_once_each(engine, acme):
    """A pooled send claims its windows ahead in a thread of its own; an error there (its database) is
    raised by the send, every connection QUITs, and the next run sends the rest once each."""
    campaign = _running_campaign(engine, acme, "poolclaim")
    reads = []

    def throttling(conn) -> dict[str, int]:  # read with each window's claim, in the claiming thread
        reads.append(threading.current_thread().name)
        if len(reads) == 5:
            raise RuntimeError("the claim's database went away")
        return {}

    with PowerMtaStandIn() as mta:
        with pytest.raises(RuntimeError, match="claim's database went away"):
            send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta), batch_size=50,
                          held_domains=throttling, compose_workers=2, pool_min_rows=0)
        sessions = _sessions_quit(mta, CONNECTIONS)
        assert all(s.verbs()[-1] == "QUIT" for s in sessions)
        states = Counter(_ledger(engine, "poolclaim").values())
        assert states["sending"] <= BOUND and states["queued"] > 0, states
        report = send_campaign(engine, campaign, SimpleComposers().composer(None, campaign), _pmta(mta),
                               compose_workers=2, pool_min_rows=0)
        received = Counter(m.recipients[0] for m in mta.received)
    assert set(reads[:5]) == {"ledger-claim"}
    after = Counter(_ledger(engine, "poolclaim").values())
    assert report.completed and report.recovered_unknown == states["sending"]
    assert max(received.values()) == 1 and after["sent"] + after["unknown"] == AUDIENCE, after
