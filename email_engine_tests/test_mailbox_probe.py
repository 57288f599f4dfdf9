"""The SMTP mailbox probe against real SMTP servers on loopback (aiosmtpd).

MX "host names" are loopback addresses: 127.0.0.1 serves, 127.0.0.2 / 127.0.0.3 are either a
second server, a silent listener, or nothing at all on the same port.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.smtp_probe_client import (
    CATCH_ALL,
    DELIVERABLE,
    DISABLED,
    FULL_INBOX,
    MAX_MESSAGE_CHARS,
    REFUSED_PRIVATE_TARGET,
    UNDELIVERABLE,
    UNKNOWN,
    MailboxResult,
    ProbeConfig,
    bounded,
    classify_rcpt_reply,
    probe_mailboxes,
    probe_mailboxes_async,
)
from email_engine_tests.smtp_server import (
    LoopbackSmtpServer,
    MailboxRules,
    ServerSession,
    SilentServer,
    free_port,
)

MX = "127.0.0.1"
OTHER_MX = "127.0.0.2"
THIRD_MX = "127.0.0.3"


def rules() -> MailboxRules:
    return MailboxRules(
        mailboxes={"ann@example.test", "bob@example.test", "jörg@example.test", "eve@xn--exmple-cua.test"},
        full={"full@example.test"},
        disabled={"gone@example.test"},
        greylisted={"grey@example.test"},
        catch_all_domains={"anything.test"},
    )


def config(port: int, **overrides: object) -> ProbeConfig:
    settings: dict[str, object] = {
        "port": port,
        "connect_timeout_s": 1.0,
        "command_timeout_s": 1.0,
        "per_mx_rate_per_s": 1000.0,
        "allow_private_targets": True,  # the servers listen on loopback
    }
    settings.update(overrides)
    return ProbeConfig(**settings)  # type: ignore[arg-type]


def max_overlap(sessions: list[ServerSession]) -> int:
    """Largest number of sessions open at the same moment.

    A session ends when its QUIT arrives: the client frees its slot on the reply, and the server
    may only notice the socket close after the client's next connection has opened.
    """
    opens = [(s.opened_at, 1) for s in sessions]
    closes = [(s.quit_at or s.closed_at or float("inf"), -1) for s in sessions]
    edges = sorted(opens + closes)  # a close sorts before an open at the same instant
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


@pytest.fixture
def server() -> Iterator[LoopbackSmtpServer]:
    with LoopbackSmtpServer(rules(), host=MX) as running:
        yield running
        assert "DATA" not in running.all_verbs()


# --- statuses ---------------------------------------------------------------------------------


def test_every_status_from_one_session_without_data(server: LoopbackSmtpServer) -> None:
    targets = {
        "ann@example.test": [MX],
        "nobody@example.test": [MX],
        "full@example.test": [MX],
        "gone@example.test": [MX],
        "grey@example.test": [MX],
    }
    results = probe_mailboxes(targets, config(server.port, mail_from="bounce@probe.test"))

    assert {a: r.status for a, r in results.items()} == {
        "ann@example.test": DELIVERABLE,
        "nobody@example.test": UNDELIVERABLE,
        "full@example.test": FULL_INBOX,
        "gone@example.test": DISABLED,
        "grey@example.test": UNKNOWN,
    }
    assert [results[a].smtp_code for a in targets] == [250, 550, 452, 550, 451]
    assert "5.1.1" in (results["nobody@example.test"].smtp_message or "")
    assert "4.2.2" in (results["full@example.test"].smtp_message or "")
    assert {r.mx_host for r in results.values()} == {MX}

    [session] = server.sessions
    verbs = session.verbs()
    assert verbs[:2] == ["EHLO", "MAIL"] and verbs[-1] == "QUIT"
    assert "DATA" not in verbs
    assert session.args("MAIL") == ["FROM:<bounce@probe.test>"]
    assert verbs.count("RCPT") == len(targets) + 1  # the addresses and one random local part


def test_random_local_part_detects_catch_all(server: LoopbackSmtpServer) -> None:
    results = probe_mailboxes({"ceo@anything.test": [MX], "ann@example.test": [MX]}, config(server.port))

    assert results["ceo@anything.test"].status == CATCH_ALL
    assert results["ceo@anything.test"].smtp_code == 250
    assert results["ann@example.test"].status == DELIVERABLE  # example.test refuses strangers
    randoms = [a for a in server.rcpt_addresses() if a not in ("ceo@anything.test", "ann@example.test")]
    assert len(randoms) == 2
    assert all(re.fullmatch(r"[a-z]{20}@(anything|example)\.test", a) for a in randoms)
    assert len({a.partition("@")[0] for a in randoms}) == 2
    assert "DATA" not in server.all_verbs()


def test_catch_all_detection_can_be_turned_off(server: LoopbackSmtpServer) -> None:
    results = probe_mailboxes({"ceo@anything.test": [MX]}, config(server.port, detect_catch_all=False))

    assert results["ceo@anything.test"].status == DELIVERABLE
    assert server.rcpt_addresses() == ["ceo@anything.test"]


def test_smtputf8_local_part_and_idna_domain(server: LoopbackSmtpServer) -> None:
    results = probe_mailboxes({"jörg@example.test": [MX], "eve@exämple.test": [MX]}, config(server.port))

    assert results["jörg@example.test"].status == DELIVERABLE
    assert results["eve@exämple.test"].status == DELIVERABLE
    assert "eve@xn--exmple-cua.test" in server.rcpt_addresses()
    assert any("SMTPUTF8" in (arg or "") for s in server.sessions for arg in s.args("MAIL"))


def test_too_many_recipients_starts_a_new_transaction() -> None:
    limited = MailboxRules(mailboxes={f"user{i}@example.test" for i in range(5)}, max_recipients=2)
    with LoopbackSmtpServer(limited, host=MX) as server:
        targets = {f"user{i}@example.test": [MX] for i in range(5)}
        results = probe_mailboxes(targets, config(server.port, detect_catch_all=False))

        assert {r.status for r in results.values()} == {DELIVERABLE}
        [session] = server.sessions
        assert session.verbs().count("RSET") == 2
        assert session.verbs().count("MAIL") == 3


# --- reachability and timeouts ----------------------------------------------------------------


def test_closed_port_is_unknown_at_once() -> None:
    port = free_port(MX)
    started = time.monotonic()
    results = probe_mailboxes({"ann@example.test": [MX]}, config(port, connect_timeout_s=5.0))
    elapsed = time.monotonic() - started

    result = results["ann@example.test"]
    assert result.status == UNKNOWN
    assert result.smtp_code is None
    assert "connect" in (result.smtp_message or "").lower()
    assert result.mx_host == MX
    assert elapsed < 1.0


def test_next_mx_is_tried_when_the_first_is_unreachable(server: LoopbackSmtpServer) -> None:
    results = probe_mailboxes({"ann@example.test": [OTHER_MX, MX]}, config(server.port))

    assert results["ann@example.test"] == MailboxResult(
        "ann@example.test", DELIVERABLE, 250, "2.1.5 OK", MX
    )
    assert len(server.sessions) == 1


def test_silent_server_times_out_as_unknown(server: LoopbackSmtpServer) -> None:
    with SilentServer(THIRD_MX, server.port):
        started = time.monotonic()
        alone = probe_mailboxes({"ann@example.test": [THIRD_MX]}, config(server.port, connect_timeout_s=0.5))
        elapsed = time.monotonic() - started
        then_next = probe_mailboxes(
            {"bob@example.test": [THIRD_MX, MX]}, config(server.port, connect_timeout_s=0.5)
        )

    result = alone["ann@example.test"]
    assert result.status == UNKNOWN
    assert result.mx_host == THIRD_MX
    assert "time" in (result.smtp_message or "").lower()
    assert 0.4 <= elapsed < 2.0
    assert then_next["bob@example.test"].status == DELIVERABLE
    assert then_next["bob@example.test"].mx_host == MX


def test_421_moves_the_open_addresses_to_the_next_mx() -> None:
    first_rules = MailboxRules(mailboxes={"a@example.test"}, shutting_down={"b@example.test"})
    second_rules = MailboxRules(mailboxes={"a@example.test", "b@example.test", "c@example.test"})
    with LoopbackSmtpServer(first_rules, host=MX) as first:
        with LoopbackSmtpServer(second_rules, host=OTHER_MX, port=first.port) as second:
            targets = {a: [MX, OTHER_MX] for a in ("a@example.test", "b@example.test", "c@example.test")}
            both = probe_mailboxes(targets, config(first.port, detect_catch_all=False))
            only_first = probe_mailboxes(
                {a: [MX] for a in targets}, config(first.port, detect_catch_all=False)
            )

            assert second.rcpt_addresses() == ["b@example.test", "c@example.test"]

    assert [(both[a].status, both[a].mx_host) for a in targets] == [
        (DELIVERABLE, MX),
        (DELIVERABLE, OTHER_MX),
        (DELIVERABLE, OTHER_MX),
    ]
    assert only_first["a@example.test"].status == DELIVERABLE
    for address in ("b@example.test", "c@example.test"):
        assert only_first[address].status == UNKNOWN
        assert only_first[address].smtp_code == 421


# --- connection limits ------------------------------------------------------------------------


def test_per_mx_concurrency_limit() -> None:
    slow = MailboxRules(catch_all_domains={f"d{i}.test" for i in range(8)}, rcpt_delay_s=0.15)
    with LoopbackSmtpServer(slow, host=MX) as server:
        targets = {f"x@d{i}.test": [MX] for i in range(8)}
        results = probe_mailboxes(targets, config(server.port, per_mx_concurrency=2, detect_catch_all=False))

        assert {r.status for r in results.values()} == {DELIVERABLE}
        assert len(server.sessions) == 8
        assert server.max_concurrent == 2


def test_total_concurrency_limit_across_mx_hosts() -> None:
    slow = MailboxRules(catch_all_domains={f"d{i}.test" for i in range(8)}, rcpt_delay_s=0.15)
    with (
        LoopbackSmtpServer(slow, host=MX) as first,
        LoopbackSmtpServer(slow, host=OTHER_MX, port=first.port) as second,
    ):
        targets = {f"x@d{i}.test": [MX if i % 2 else OTHER_MX] for i in range(8)}
        cfg = config(first.port, per_mx_concurrency=4, total_concurrency=3, detect_catch_all=False)
        results = probe_mailboxes(targets, cfg)

        assert {r.status for r in results.values()} == {DELIVERABLE}
        sessions = first.sessions + second.sessions
        assert len(sessions) == 8
        assert max_overlap(sessions) == 3


def test_per_mx_rate_limit_spaces_connections() -> None:
    open_rules = MailboxRules(catch_all_domains={f"d{i}.test" for i in range(6)})
    with LoopbackSmtpServer(open_rules, host=MX) as server:
        targets = {f"x@d{i}.test": [MX] for i in range(6)}
        probe_mailboxes(targets, config(server.port, per_mx_concurrency=6, per_mx_rate_per_s=10.0))

        starts = sorted(s.opened_at for s in server.sessions)
    assert len(starts) == 6
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert min(gaps) > 0.07
    assert starts[-1] - starts[0] >= 0.45


# --- input, wrappers, resource ----------------------------------------------------------------


def test_bad_addresses_are_not_probed(server: LoopbackSmtpServer) -> None:
    targets = {
        "no-at-sign": [MX],
        "evil@example.test>\r\nDATA": [MX],
        "@example.test": [MX],
        "ann@example.test": [],
        "bob@example.test": [MX],
    }
    results = probe_mailboxes(targets, config(server.port))

    assert list(results) == list(targets)
    for address in ("no-at-sign", "evil@example.test>\r\nDATA", "@example.test"):
        assert results[address].status == UNKNOWN
        assert (results[address].smtp_message or "").startswith("not probed:")
    assert results["ann@example.test"].smtp_message == "no MX host given"
    assert results["bob@example.test"].status == DELIVERABLE
    assert server.rcpt_addresses()[1:] == ["bob@example.test"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", "25"),
        ("per_mx_concurrency", 0),
        ("total_concurrency", -1),
        ("per_mx_rate_per_s", 0),
        ("connect_timeout_s", -1.0),
        ("session_deadline_s", 0),
        ("max_recipients_per_session", 0),
        ("helo_name", "two words"),
        ("mail_from", "a b@x.test"),
        ("mail_from", "no-at-sign"),
    ],
)
def test_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ProbeConfig.{field}"):
        ProbeConfig(**{field: value})  # type: ignore[arg-type]


def test_wrong_argument_shapes_raise_type_errors() -> None:
    with pytest.raises(TypeError, match="mapping"):
        probe_mailboxes([("a@b.test", ["mx"])], ProbeConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a@b.test"):
        probe_mailboxes({"a@b.test": "mx.b.test"}, ProbeConfig())


def test_sync_wrapper_works_inside_a_running_loop(server: LoopbackSmtpServer) -> None:
    async def from_async_code() -> tuple[dict[str, MailboxResult], dict[str, MailboxResult]]:
        blocking = probe_mailboxes({"ann@example.test": [MX]}, config(server.port))
        awaited = await probe_mailboxes_async({"nobody@example.test": [MX]}, config(server.port))
        return blocking, awaited

    blocking, awaited = asyncio.run(from_async_code())
    assert blocking["ann@example.test"].status == DELIVERABLE
    assert awaited["nobody@example.test"].status == UNDELIVERABLE


def test_resource_probes_with_its_settings(server: LoopbackSmtpServer) -> None:
    settings = {"port": server.port, "connect_timeout_s": 1.0, "command_timeout_s": 1.0, "helo_name": "mx.sender.test"}
    resource = SmtpProbeResource(**settings)
    results = resource.probe({"ann@example.test": [MX], "full@example.test": [MX]}, allow_private_targets=True)

    assert resource.config(allow_private_targets=True) == ProbeConfig(**settings, allow_private_targets=True)  # type: ignore[arg-type]
    assert [results[a].status for a in ("ann@example.test", "full@example.test")] == [DELIVERABLE, FULL_INBOX]
    assert server.sessions[0].args("EHLO") == ["mx.sender.test"]
    with pytest.raises(ValueError, match="per_mx_concurrency"):
        SmtpProbeResource(per_mx_concurrency=0).config()


# --- network safety -----------------------------------------------------------------------------


def test_private_targets_are_refused_without_connecting(server: LoopbackSmtpServer) -> None:
    targets = {"ann@example.test": [MX, "mx.example.test"], "bob@example.test": ["::ffff:127.0.0.1"]}
    addresses = {"mx.example.test": ["10.1.2.3", "169.254.169.254"]}
    results = probe_mailboxes(targets, config(server.port, allow_private_targets=False), addresses=addresses)

    assert {a: r.status for a, r in results.items()} == {a: REFUSED_PRIVATE_TARGET for a in targets}
    assert "127.0.0.1 is a loopback address" in (results["ann@example.test"].smtp_message or "")
    assert "carries 127.0.0.1" in (results["bob@example.test"].smtp_message or "")
    assert results["ann@example.test"].mx_host == MX
    assert server.sessions == []


def test_a_host_name_is_reached_only_at_the_address_given_for_it(server: LoopbackSmtpServer) -> None:
    targets = {"ann@example.test": ["mx.example.test"], "bob@example.test": ["localhost"]}
    results = probe_mailboxes(targets, config(server.port), addresses={"mx.example.test": [MX]})

    assert (results["ann@example.test"].status, results["ann@example.test"].mx_host) == (DELIVERABLE, "mx.example.test")
    # "localhost" was not resolved by the caller: the client never asks the system resolver
    assert results["bob@example.test"].status == UNKNOWN
    assert results["bob@example.test"].smtp_message == "MX host localhost was not resolved"
    assert server.rcpt_addresses()[1:] == ["ann@example.test"]


def test_a_session_refused_by_the_shared_limit_is_deferred(server: LoopbackSmtpServer) -> None:
    asked: list[str] = []

    def take_slot(ip: str) -> bool:
        asked.append(ip)
        return False

    results = probe_mailboxes({"ann@example.test": [MX]}, config(server.port), take_slot=take_slot)

    assert results["ann@example.test"].status == UNKNOWN
    assert results["ann@example.test"].smtp_message == f"deferred: probe limit for {MX} reached"
    assert asked == [MX]
    assert server.sessions == []


def test_take_slot_is_asked_once_per_session(server: LoopbackSmtpServer) -> None:
    asked: list[str] = []
    lock = threading.Lock()

    def take_slot(ip: str) -> bool:
        with lock:
            asked.append(ip)
        return True

    targets = {f"u{i}@anything.test": [MX] for i in range(5)}
    cfg = config(server.port, max_recipients_per_session=2, detect_catch_all=False)
    results = probe_mailboxes(targets, cfg, take_slot=take_slot)

    assert {r.status for r in results.values()} == {DELIVERABLE}
    assert len(server.sessions) == 3  # 2 + 2 + 1 addresses
    assert sorted(s.verbs().count("RCPT") for s in server.sessions) == [1, 2, 2]
    assert asked == [MX, MX, MX]


def test_session_deadline_bounds_a_slow_server() -> None:
    slow = MailboxRules(catch_all_domains={"slow.test"}, rcpt_delay_s=0.3)
    with LoopbackSmtpServer(slow, host=MX) as server:
        targets = {f"u{i}@slow.test": [MX] for i in range(10)}
        cfg = config(server.port, command_timeout_s=5.0, session_deadline_s=1.0, detect_catch_all=False)
        started = time.monotonic()
        results = probe_mailboxes(targets, cfg)
        elapsed = time.monotonic() - started

    statuses = [results[a].status for a in targets]
    assert 1 <= statuses.count(DELIVERABLE) <= 4
    assert statuses.count(UNKNOWN) == 10 - statuses.count(DELIVERABLE)
    late = [r for r in results.values() if r.status == UNKNOWN]
    assert all(r.smtp_message == "session deadline of 1 s passed" for r in late)
    assert elapsed < 2.0  # one command timeout alone would allow 10 x 0.3 s


def test_helo_name_defaults_to_the_machine_fqdn(server: LoopbackSmtpServer) -> None:
    assert ProbeConfig().helo_name == socket.getfqdn()
    assert SmtpProbeResource().config().helo_name == socket.getfqdn()
    probe_mailboxes({"ann@example.test": [MX]}, config(server.port))

    assert server.sessions[0].args("EHLO") == [socket.getfqdn()]


# --- reply classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        (250, "2.1.5 OK", DELIVERABLE),
        (251, "User not local; will forward", DELIVERABLE),
        (550, "5.1.1 The email account that you tried to reach does not exist.", UNDELIVERABLE),
        (553, "Requested action not taken: mailbox name not allowed", UNDELIVERABLE),
        (551, "User not local", UNDELIVERABLE),
        (550, "Requested action not taken: mailbox unavailable", UNDELIVERABLE),
        (552, "5.2.2 The email account that you tried to reach is over quota.", FULL_INBOX),
        (452, "Insufficient storage", FULL_INBOX),
        (450, "4.2.2 Mailbox full", FULL_INBOX),
        (550, "Mailbox quota exceeded", FULL_INBOX),
        (452, "4.3.1 Insufficient system storage", UNKNOWN),
        (550, "5.2.1 The email account that you tried to reach is disabled.", DISABLED),
        (554, "delivery error: this account is inactive", DISABLED),
        (550, "5.7.1 Service unavailable; client host blocked using Spamhaus", UNKNOWN),
        (554, "5.7.1 Relay access denied", UNKNOWN),
        (550, "Message rejected by policy", UNKNOWN),
        (451, "4.7.1 Greylisted, try again later", UNKNOWN),
        (421, "4.7.0 Too many connections", UNKNOWN),
        (452, "4.5.3 Too many recipients", UNKNOWN),
        (554, "Transaction failed", UNKNOWN),
        (500, "Syntax error", UNKNOWN),
    ],
)
def test_classify_rcpt_reply(code: int, message: str, status: str) -> None:
    assert classify_rcpt_reply(code, message) == status


def test_reply_text_is_bounded_to_one_line() -> None:
    text = bounded("5.1.1 first line\n5.1.1 " + "x" * 1000)
    assert text is not None and "\n" not in text
    assert len(text) == MAX_MESSAGE_CHARS
    assert text.startswith("5.1.1 first line 5.1.1 xxx")
