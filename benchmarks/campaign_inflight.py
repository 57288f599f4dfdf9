"""A campaign sent through PowerMTA: throughput, and the most rows ``sending`` at once in the ledger.

    python benchmarks/campaign_inflight.py [--messages 3000] [--connections 4] [--delay-ms 0] [--database-url URL]

In a scratch database ``email_engine_bench_inflight`` (dropped at the end): one campaign of
``--messages`` contacts, sent by ``sender.send_campaign`` through the PowerMTA transport
(``--connections`` sessions) to the PowerMTA stand-in of the tests, which runs in a child process
(its own interpreter lock) and holds each reply for ``--delay-ms``. A thread polls the ledger from
another database session every millisecond and keeps the largest count of ``sending`` rows seen:
what a SIGKILL at the worst moment would leave ``unknown``.

Prints messages per second (claim, compose, inject, record: the whole loop) and that maximum.
Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from benchmarks.campaign_ledger import FixedComposer, setup  # noqa: E402
from benchmarks.scratch import scratch_database  # noqa: E402
from benchmarks.smtp_injection import _Server  # noqa: E402
from email_engine_assets.campaigns.sender import send_campaign  # noqa: E402
from email_engine_resources.powermta import PowerMtaSmtpTransport  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_inflight"


class SendingWatch:
    """Polls ``count(*) WHERE state = 'sending'`` of the campaign from its own session; ``most`` is the largest seen."""

    def __init__(self, engine: sa.Engine, campaign: str) -> None:
        self.engine, self.campaign = engine, campaign
        self.most = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SendingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        query = sa.text("SELECT count(*) FROM campaign_sends WHERE tenant_id = 'acme' AND campaign = :c AND state = 'sending'")
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                self.most = max(self.most, conn.execute(query, {"c": self.campaign}).scalar_one())
                conn.rollback()
                self.polls += 1
                time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    args = parser.parse_args()
    mta = _Server(args.delay_ms / 1000)
    try:
        with scratch_database(BENCH_DATABASE, args.database_url) as engine:
            campaign = setup(engine, "inflight", args.messages)
            transport = PowerMtaSmtpTransport(name="pmta", host=mta.host, port=mta.port, bounce_address="b@bounce.acme.example",
                                              connections=args.connections, allow_private=True, helo_name="bench.example")
            with SendingWatch(engine, campaign.name) as watch:
                started = time.perf_counter()
                report = send_campaign(engine, campaign, FixedComposer(), transport)
                elapsed = time.perf_counter() - started
            assert report.outcomes["sent"] == args.messages and report.completed, report
            _, received = mta.counts()
            assert received == args.messages, received
    finally:
        mta.stop()
    print(f"{args.messages} messages, {args.connections} connections, {args.delay_ms:g} ms per reply: "
          f"{args.messages / elapsed:,.0f} msg/s ({elapsed:.2f} s); most rows 'sending' at once: {watch.most} "
          f"({watch.polls} polls)")


if __name__ == "__main__":
    main()
