"""The PowerMTA transport against a PowerMTA stand-in on loopback (``powermta_server.py``)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest

from email_engine_resources.delivery import (
    DELIVERY_STATUSES,
    MessageTransport,
    OutgoingMessage,
)
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_resources.powermta_client import MAX_DETAIL_CHARS, xtext
from email_engine_tests.powermta_server import DROP, PowerMtaStandIn
from email_engine_tests.smtp_server import LOOPBACK, free_port


def message(row_id: int, recipient: str | None = None, *, token: str | None = None, body: str = "Hello\r\n") -> OutgoingMessage:
    recipient = recipient or f"user{row_id}@example.com"
    text = (
        f"From: News <news@acme.example>\r\nTo: {recipient}\r\nSubject: Spring {row_id}\r\n"
        f"Message-ID: <{row_id}@acme.example>\r\n\r\n{body}"
    )
    return OutgoingMessage(
        row_id=row_id,
        tenant_id="acme",
        campaign="spring",
        job="acme.spring",
        envelope_id=token or f"Tok{row_id}-AbC",
        mail_from="news@acme.example",
        recipient=recipient,
        message=text.encode("utf-8"),
    )


def transport(mta, **overrides) -> PowerMtaSmtpTransport:
    settings = dict(
        name="pmta",
        host=mta.host,
        port=mta.port,
        bounce_address="bounces@bounce.acme.example",
        virtual_mta="vmta-acme",
        connections=2,
        timeout_seconds=2.0,
        retries=3,
        retry_backoff_seconds=0.01,
        allow_private=True,
        helo_name="sender.acme.example",
    )
    settings.update(overrides)
    return PowerMtaSmtpTransport(**settings)


def by_row(results) -> dict:
    rows = [r.row_id for r in results]
    assert len(rows) == len(set(rows)), "one result per message"
    assert all(r.status in DELIVERY_STATUSES for r in results)
    return {r.row_id: r for r in results}


def rcpt_count(mta, address: str) -> int:
    return sum(1 for s in mta.sessions for arg in s.args("RCPT") if f"<{address}>" in (arg or ""))


def test_envelope_and_headers_map_back_to_the_ledger_row():
    with PowerMtaStandIn() as mta:
        pmta = transport(mta)
        checked: MessageTransport = pmta  # the ledger's contract (a static check)
        assert checked.name == "pmta"
        original = message(1, token="LedGer-Tok_1", body="Line one\r\n.starts with a dot\r\n")
        results = by_row(pmta.deliver([original]))
        assert results[1].status == "sent" and results[1].detail.startswith("250")
        [got] = mta.received
    assert got.mail_from == "bounces@bounce.acme.example"
    assert got.mail_parameters == {"ENVID": "LedGer-Tok_1", "RET": "HDRS"}  # case kept
    assert got.recipients == ["user1@example.com"]
    assert got.rcpt_parameters == [{"NOTIFY": "FAILURE", "ORCPT": "rfc822;user1@example.com"}]
    assert got.headers[:2] == [("x-job", "acme.spring"), ("x-virtual-mta", "vmta-acme")]
    assert got.header("x-envid") == []
    assert got.data == b"x-job: acme.spring\r\nx-virtual-mta: vmta-acme\r\n" + original.message  # dots unstuffed


def test_without_dsn_the_token_goes_in_an_x_envid_header():
    with PowerMtaStandIn(dsn=False) as mta:
        results = by_row(transport(mta, virtual_mta=None).deliver([message(1, token="MiXed.Case-9")]))
        [got] = mta.received
    assert results[1].status == "sent"
    assert got.mail_parameters == {}
    assert got.rcpt_parameters == [{}]
    assert got.headers[:2] == [("x-job", "acme.spring"), ("x-envid", "MiXed.Case-9")]
    assert got.header("x-virtual-mta") == []


def test_connections_are_reused_for_many_messages():
    with PowerMtaStandIn() as mta:
        results = by_row(transport(mta, connections=3).deliver([message(i) for i in range(30)]))
        sessions = mta.sessions
        assert Counter(r.status for r in results.values()) == {"sent": 30}
        assert len(mta.received) == 30
        assert len(sessions) == 3
        assert mta.max_concurrent == 3
    assert all(s.verbs().count("EHLO") == 1 and s.verbs()[-1] == "QUIT" for s in sessions)
    assert sum(s.verbs().count("MAIL") for s in sessions) == 30


def test_a_4xx_is_retried_with_backoff_then_sent():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "451 4.7.1 greylisted, try again", recipient="user2@example.com", times=2)
        mta.fail("data", "452 4.3.1 insufficient system storage", recipient="user3@example.com", times=1)
        results = by_row(transport(mta).deliver([message(i) for i in range(1, 5)]))
        assert {r.status for r in results.values()} == {"sent"}
        assert rcpt_count(mta, "user2@example.com") == 3
        assert rcpt_count(mta, "user3@example.com") == 2
        assert sorted(m.recipients[0] for m in mta.received) == [f"user{i}@example.com" for i in range(1, 5)]


def test_a_4xx_still_there_after_the_retries_fails_with_the_last_reply():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "451 4.7.1 greylisted, try again", recipient="user2@example.com", times=None)
        results = by_row(transport(mta, retries=2).deliver([message(1), message(2)]))
        assert rcpt_count(mta, "user2@example.com") == 3  # the first try and two retries
    assert results[1].status == "sent"
    assert results[2].status == "failed"
    assert "451 4.7.1 greylisted, try again" in results[2].detail
    assert "after 3 tries" in results[2].detail


def test_a_5xx_fails_at_once_with_the_reply():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "550 5.1.1 <user2@example.com>: user unknown", recipient="user2@example.com", times=None)
        mta.fail("data", "554 5.7.1 message refused by policy", recipient="user3@example.com", times=None)
        results = by_row(transport(mta).deliver([message(i) for i in range(1, 5)]))
        assert rcpt_count(mta, "user2@example.com") == 1
        assert rcpt_count(mta, "user3@example.com") == 1
        assert len(mta.received) == 2
    assert results[2].status == "failed" and results[2].detail == "RCPT TO: 550 5.1.1 <user2@example.com>: user unknown"
    assert results[3].status == "failed" and results[3].detail == "end of DATA: 554 5.7.1 message refused by policy"
    assert results[1].status == results[4].status == "sent"


def test_a_connection_lost_during_data_is_unknown_and_the_batch_goes_on():
    with PowerMtaStandIn() as mta:
        mta.fail("data", DROP, recipient="user3@example.com", times=None)
        results = by_row(transport(mta, connections=1).deliver([message(i) for i in range(1, 7)]))
        assert len(mta.sessions) == 2  # a new connection after the drop
        assert rcpt_count(mta, "user3@example.com") == 1  # never sent twice
    assert results[3].status == "unknown"
    assert "after the message data went out" in results[3].detail
    assert [results[i].status for i in (1, 2, 4, 5, 6)] == ["sent"] * 5


def test_a_private_target_is_refused_without_connecting():
    with PowerMtaStandIn() as mta:
        for host in (mta.host, "localhost"):
            results = by_row(transport(mta, host=host, allow_private=False).deliver([message(1), message(2)]))
            assert {r.status for r in results.values()} == {"failed"}
            assert all("loopback address; private targets are not allowed" in r.detail for r in results.values())
        assert mta.sessions == []
        assert by_row(transport(mta, allow_private=True).deliver([message(1)]))[1].status == "sent"


def test_a_server_slow_before_the_data_fails_and_slow_after_it_is_unknown():
    with PowerMtaStandIn(delays={"MAIL": 0.5}) as mta:
        results = by_row(transport(mta, timeout_seconds=0.2, retries=1).deliver([message(1)]))
        assert mta.received == []
    assert results[1].status == "failed"
    assert "no reply within 0.2 s" in results[1].detail and "after 2 tries" in results[1].detail

    with PowerMtaStandIn(delays={"END": 0.5}) as mta:
        results = by_row(transport(mta, timeout_seconds=0.2).deliver([message(1)]))
        assert results[1].status == "unknown"
        assert "no reply within 0.2 s" in results[1].detail
        assert len(mta.received) == 1, "the server took the message: exactly why unknown is never resent"


def test_an_unreachable_server_fails_every_message_after_the_retries():
    results = by_row(
        PowerMtaSmtpTransport(
            name="pmta", host=LOOPBACK, port=free_port(), bounce_address="b@bounce.example",
            allow_private=True, retries=1, retry_backoff_seconds=0.01, helo_name="h.example",
        ).deliver([message(1), message(2)])
    )
    assert {r.status for r in results.values()} == {"failed"}
    assert all("cannot connect" in r.detail for r in results.values())


def test_international_addresses_use_smtputf8_when_offered():
    with PowerMtaStandIn() as mta:
        results = by_row(transport(mta).deliver([message(1, "anna@bücher.example", body="Grüße\r\n")]))
        [got] = mta.received
    assert results[1].status == "sent"
    assert got.recipients == ["anna@bücher.example"]
    assert got.mail_parameters["SMTPUTF8"] is True and got.mail_parameters["BODY"] == "8BITMIME"
    assert "ORCPT" not in got.rcpt_parameters[0]  # an rfc822 ORCPT is ASCII only


def test_without_smtputf8_the_domain_goes_as_a_label_and_a_utf8_local_part_fails():
    with PowerMtaStandIn(smtputf8=False) as mta:
        results = by_row(transport(mta).deliver([message(1, "anna@bücher.example"), message(2, "jürgen@example.com")]))
        [got] = mta.received
    assert results[1].status == "sent" and got.recipients == ["anna@xn--bcher-kva.example"]
    assert results[2].status == "failed" and "SMTPUTF8" in results[2].detail


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"envelope_id": "two words"}, "envelope id"),
        ({"envelope_id": "x" * 101}, "envelope id"),
        ({"job": "acme.spring\r\nBcc: victim@example.com"}, "x-job"),
        ({"recipient": "a@example.com>\r\nRCPT TO:<b@example.com"}, "recipient"),
        ({"message": b"x-job: other.job\r\nSubject: hi\r\n\r\nbody\r\n"}, "already carries"),
        ({"message": b""}, "empty"),
    ],
)
def test_a_message_that_cannot_be_sent_as_given_fails_alone(change, reason):
    bad = OutgoingMessage(**{**message(2).__dict__, **change})
    with PowerMtaStandIn() as mta:
        results = by_row(transport(mta).deliver([message(1), bad]))
        assert [m.recipients for m in mta.received] == [["user1@example.com"]]
    assert results[1].status == "sent"
    assert results[2].status == "failed" and reason in results[2].detail
    assert "\r" not in results[2].detail and "\n" not in results[2].detail  # escaped, on one line


def test_replies_stored_are_capped_and_escaped():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "550 5.1.1 " + "\x1b[31m" + "x" * 1500, times=None)
        results = by_row(transport(mta).deliver([message(1)]))
    assert results[1].status == "failed"
    assert len(results[1].detail) <= MAX_DETAIL_CHARS and "\x1b" not in results[1].detail


@contextmanager
def hostile_server(reply: bytes):
    """A raw TCP server that greets with ``reply`` (a line too long, or garbage)."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(4)
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(reply)
                    conn.recv(1024)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    "reply, reason",
    [(b"220-" + b"A" * 10_000 + b"\r\n", "reply line longer than"), (b"HELLO there\r\n", "not an SMTP reply"),
     (b"".join(b"220-x\r\n" for _ in range(500)) + b"220 ok\r\n", "reply longer than 100 lines")],
)
def test_a_hostile_server_reply_fails_cleanly(reply, reason):
    with hostile_server(reply) as port:
        pmta = PowerMtaSmtpTransport(
            name="pmta", host=LOOPBACK, port=port, bounce_address="b@bounce.example",
            allow_private=True, retries=0, timeout_seconds=1.0, helo_name="h.example",
        )
        results = by_row(pmta.deliver([message(1)]))
    assert results[1].status == "failed" and reason in results[1].detail


@pytest.mark.parametrize(
    "field, value",
    [("port", 0), ("connections", 65), ("retries", -1), ("timeout_seconds", 0), ("bounce_address", "a b@c"),
     ("virtual_mta", "vmta\r\nx-job: evil"), ("host", ""), ("helo_name", "bad name")],
)
def test_bad_settings_are_refused_naming_the_field(field, value):
    settings = dict(name="pmta", host=LOOPBACK, bounce_address="b@bounce.example", helo_name="h.example")
    settings[field] = value
    name = {"timeout_seconds": "timeout_s"}.get(field, field)
    with pytest.raises(ValueError, match=name):
        PowerMtaSmtpTransport(**settings)


def test_xtext_encodes_plus_equals_and_non_printables():
    assert xtext("Ab+c=d e") == "Ab+2Bc+3Dd+20e"


def test_a_421_closes_the_connection_and_the_message_is_retried_on_a_new_one():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "421 4.3.2 service shutting down", recipient="user1@example.com", times=1)
        results = by_row(transport(mta, connections=1).deliver([message(1), message(2)]))
        assert len(mta.sessions) == 2
    assert {r.status for r in results.values()} == {"sent"}


def test_a_connection_the_server_closed_while_idle_is_reopened_without_costing_a_try():
    with PowerMtaStandIn(idle_timeout_s=0.1) as mta:
        mta.fail("rcpt", "451 4.7.1 try again", recipient="user1@example.com", times=1)
        pmta = transport(mta, connections=1, retries=1, retry_backoff_seconds=0.4)
        results = by_row(pmta.deliver([message(1)]))
        assert len(mta.sessions) == 2  # the first one timed out during the backoff
    assert results[1].status == "sent"


def test_without_pipelining_each_command_waits_for_its_reply():
    with PowerMtaStandIn(pipelining=False) as mta:
        mta.fail("rcpt", "550 5.1.1 user unknown", recipient="user2@example.com", times=None)
        mta.fail("rcpt", "451 4.7.1 try again", recipient="user3@example.com", times=1)
        results = by_row(transport(mta, connections=1).deliver([message(i) for i in range(1, 5)]))
        [session] = mta.sessions
    assert [results[i].status for i in range(1, 5)] == ["sent", "failed", "sent", "sent"]
    verbs = session.verbs()
    assert verbs[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert verbs.count("DATA") == 3  # never after a refused RCPT
    assert verbs.count("RSET") == 2


def test_the_next_n_messages_can_be_deferred_at_the_end_of_data():
    with PowerMtaStandIn() as mta:
        mta.fail("data", "451 4.3.0 queue full, try later", times=3)
        results = by_row(transport(mta, connections=1).deliver([message(i) for i in range(1, 6)]))
        [session] = mta.sessions
        assert len(mta.received) == 5
    assert {r.status for r in results.values()} == {"sent"}
    assert session.verbs().count("DATA") == 8


def test_an_unexpected_reply_after_the_data_is_unknown_not_failed():
    with PowerMtaStandIn() as mta:
        mta.fail("data", "354 what now", recipient="user1@example.com")
        results = by_row(transport(mta).deliver([message(1), message(2)]))
    assert results[1].status == "unknown" and "unexpected reply 354" in results[1].detail
    assert results[2].status == "sent"


def test_a_421_backs_the_connection_off_before_it_reconnects():
    with PowerMtaStandIn() as mta:
        mta.fail("rcpt", "421 4.3.2 too many messages, try later", recipient="user1@example.com", times=1)
        results = by_row(transport(mta, connections=1, retry_backoff_seconds=0.5).deliver([message(1), message(2)]))
        first, second = mta.sessions
    assert {r.status for r in results.values()} == {"sent"}
    # message 2 was ready at once, yet the new session waited out the backoff (PowerMTA said it was full)
    assert second.opened_at - first.opened_at >= 0.45


class _SlowLedger:
    """A ledger whose exchange, while some message it handed over has not reached the server yet,
    lasts until the server has received one more: only a connection that goes on sending what it
    holds while its outcomes are being recorded lets such an exchange end before its timeout. (A
    connection that exchanges only once everything it holds is sent never makes one wait.)"""

    def __init__(self, mta, messages: list[OutgoingMessage]) -> None:
        self.mta, self.pending = mta, list(messages)
        self.results, self.handed, self.overlapped, self.waited_out = [], 0, 0, 0
        self.lock = threading.Lock()

    def exchange(self, results, want):
        with self.lock:
            self.results.extend(results)
            handed_before = self.handed
            taken, self.pending = self.pending[:want], self.pending[want:]
            self.handed += len(taken)
        seen = len(self.mta.received)
        if want and self.pending and seen < handed_before:  # the connection still holds unsent messages
            deadline = time.monotonic() + 2.0
            while len(self.mta.received) == seen and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(self.mta.received) > seen:
                self.overlapped += 1
            else:
                self.waited_out += 1
        return taken


def test_a_connection_sends_what_it_holds_while_its_outcomes_are_recorded():
    with PowerMtaStandIn() as mta:
        ledger = _SlowLedger(mta, [message(i) for i in range(20)])
        transport(mta, connections=1, pipeline_depth=4).deliver_from(ledger)
        assert Counter(r.status for r in ledger.results) == {"sent": 20}
        assert len(mta.received) == 20
    assert ledger.waited_out == 0, "an exchange waited for a message the connection held but did not send"
    assert ledger.overlapped >= 2, "the connection exchanged only once it had sent everything it held"
