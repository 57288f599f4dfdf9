"""SMTP injection throughput: the PowerMTA transport against one connection per message.

    python benchmarks/smtp_injection.py --messages 400 --delay-ms 5 --connections 4

Both sides send the same messages to the PowerMTA stand-in of the tests
(``email_engine_tests/powermta_server.py``) on loopback, which holds every reply for
``--delay-ms``. The stand-in runs in a child process, so that its own work (aiosmtpd reads the
data line by line in Python) does not share the interpreter lock with the client measured:

* ours: :class:`email_engine_resources.powermta.PowerMtaSmtpTransport` (``--connections``
  sessions at once, each reused for many messages, commands pipelined);
* reference: ``smtplib``, one connection per message, one message at a time (connect, EHLO,
  MAIL with the same ENVID, RCPT, DATA, QUIT), the way a naive sender injects.

Prints messages per second for each and the ratio (target: >= 5x at 5 ms per reply).
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import time

from email_engine_resources.delivery import OutgoingMessage
from email_engine_resources.powermta import PowerMtaSmtpTransport
from email_engine_tests.powermta_server import PowerMtaStandIn


def _messages(count: int) -> list[OutgoingMessage]:
    body = ("Bonjour,\r\n\r\n" + "Une ligne de texte de la lettre d'information.\r\n" * 60).encode()
    out = []
    for i in range(count):
        rcpt = f"contact{i}@example.com"
        head = (
            f"From: News <news@acme.example>\r\nTo: {rcpt}\r\nSubject: Spring {i}\r\n"
            f"Message-ID: <{i}@acme.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        out.append(OutgoingMessage(i, "acme", "spring", "acme.spring", f"Tok{i}", "news@acme.example", rcpt, head + body))
    return out


def _serve(delay_s: float, conn) -> None:
    """Child process: run the stand-in; report its address, then counts when asked."""
    with PowerMtaStandIn(command_delay_s=delay_s) as mta:
        conn.send((mta.host, mta.port))
        while (ask := conn.recv()) != "stop":
            counts = (len(mta.sessions), len(mta.received))
            if ask == "reset":
                mta.log.clear()
            conn.send(counts)


class _Server:
    """The stand-in in a child process; ``counts()`` is (sessions since reset, messages received)."""

    def __init__(self, delay_s: float) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_serve, args=(delay_s, child), daemon=True)
        self._process.start()
        self.host, self.port = self._conn.recv()

    def counts(self, reset: bool = False) -> tuple[int, int]:
        self._conn.send("reset" if reset else "count")
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(10)


def _ours(mta: _Server, messages: list[OutgoingMessage], connections: int) -> float:
    transport = PowerMtaSmtpTransport(
        name="pmta", host=mta.host, port=mta.port, bounce_address="bounces@bounce.acme.example",
        virtual_mta="vmta1", connections=connections, allow_private=True, helo_name="bench.example",
    )
    started = time.perf_counter()
    results = transport.deliver(messages)
    elapsed = time.perf_counter() - started
    assert sorted(r.status for r in results) == ["sent"] * len(messages), {r.status for r in results}
    return elapsed


def _reference(mta: _Server, messages: list[OutgoingMessage]) -> float:
    started = time.perf_counter()
    for m in messages:
        with smtplib.SMTP(mta.host, mta.port, local_hostname="bench.example", timeout=30) as smtp:
            smtp.sendmail(
                "bounces@bounce.acme.example", [m.recipient],
                b"x-job: acme.spring\r\nx-virtual-mta: vmta1\r\n" + m.message,
                mail_options=[f"ENVID={m.envelope_id}", "RET=HDRS"],
            )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    messages = _messages(args.messages)
    mta = _Server(args.delay_ms / 1000)
    try:
        ours = _ours(mta, messages, args.connections)
        ours_sessions, _ = mta.counts(reset=True)
        reference = _reference(mta, messages)
        reference_sessions, received = mta.counts()
        assert received == 2 * len(messages) and reference_sessions == len(messages)
    finally:
        mta.stop()
    n = len(messages)
    print(f"{n} messages, {args.delay_ms:g} ms per reply, {args.connections} connections ({ours_sessions} sessions opened)")
    print(f"ours       (reused, pipelined): {n / ours:8.1f} msg/s  ({ours:.2f} s)")
    print(f"reference  (one per message):   {n / reference:8.1f} msg/s  ({reference:.2f} s)")
    print(f"ratio: {reference / ours:.1f}x")


if __name__ == "__main__":
    main()
