"""The send ledger's overhead: batched claims and records vs one transaction per message.

    python benchmarks/campaign_ledger.py [--contacts 20000] [--batch 200] [--database-url URL]

In a scratch database ``email_engine_bench_campaigns`` (dropped at the end): one tenant with
``--contacts`` contacts frozen into a campaign's ledger, sent through a transport that accepts
every message at once (so only the ledger is measured), with a composer returning a fixed message.

* **ours**: ``sender.send_campaign`` (claim ``--batch`` rows in one statement with the suppression
  anti-join and the campaign-state check and compose them; then, as the transport takes them, mark
  ``pipeline_depth`` rows in flight and record the previous ones' outcomes in one transaction);
* **reference**: the same claim and record for one row at a time (two transactions per message), the
  shape of a per-message ORM loop; run on a fifth of the rows and scaled.

Also the outbox alone: ``.eml`` files written per second (each written, fsynced and renamed).
Server: ``--database-url``, else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from benchmarks.scratch import scratch_database  # noqa: E402
from email_engine_assets.campaigns import store  # noqa: E402
from email_engine_assets.campaigns.files import Campaign, CampaignFile  # noqa: E402
from email_engine_assets.campaigns.parts import Composed  # noqa: E402
from email_engine_assets.campaigns.sender import send_campaign  # noqa: E402
from email_engine_resources.delivery import DeliveryResult, OutgoingMessage  # noqa: E402
from email_engine_resources.outbox import Outbox  # noqa: E402
from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_campaigns"
MESSAGE = b"From: a@acme.example\r\nTo: x@example.com\r\nSubject: hi\r\n\r\n" + b"hello world\r\n" * 200


class FixedComposer:
    def compose(self, contact, *, contact_id, row_token):
        return Composed("t", "r", "hi", MESSAGE, f"<{row_token}@acme.example>")

    def preflight(self, samples):
        return []


class AcceptAll:
    name = "accept"

    def deliver(self, messages):
        return [DeliveryResult(m.row_id, "sent") for m in messages]


def setup(engine: sa.Engine, name: str, contacts: int) -> Campaign:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        conn.execute(sa.text("""INSERT INTO contacts (tenant_id, email) SELECT 'acme', 'u' || g || '@example.com'
                                FROM generate_series(1, :n) g ON CONFLICT DO NOTHING"""), {"n": contacts})
        conn.execute(sa.text("""INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                                VALUES ('acme', :c, 'running', 'all', 'news', 'outbox', 'x')"""), {"c": name})
        ids = conn.execute(sa.text("SELECT contact_id FROM contacts WHERE tenant_id = 'acme' ORDER BY contact_id LIMIT :n"),
                           {"n": contacts}).scalars().all()
        store.freeze_members(conn, "acme", name, ids)
    file = CampaignFile(segment="all", category="news", from_name="Acme", from_email="news@acme.example")
    return Campaign("acme", name, file, Path("bench.yaml"), "x")


def per_row(engine: sa.Engine, campaign: Campaign, composer, transport) -> int:
    t, c = campaign.tenant_id, campaign.name
    sent = 0
    while True:
        with engine.begin() as conn:
            rows, _ = store.claim_batch(conn, t, c, 1)
            if rows:
                store.record_and_mark(conn, t, c, [], [rows[0]["row_id"]])
        if not rows:
            return sent
        row = rows[0]
        made = composer.compose(row["contact"], contact_id=row["contact_id"], row_token=row["token"])
        [done] = transport.deliver([OutgoingMessage(row["row_id"], t, c, campaign.key, row["token"], campaign.file.from_email,
                                                    row["email"], made.message)])
        with engine.begin() as conn:
            store.record_and_mark(conn, t, c, [{"row_id": row["row_id"], "from_state": "sending", "state": done.status, "detail": done.detail,
                                                "template": made.template, "rule": made.rule, "message_id": made.message_id}], [])
        sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    args = parser.parse_args()
    with scratch_database(BENCH_DATABASE, args.database_url) as engine:
        ours = setup(engine, "ours", args.contacts)
        started = time.perf_counter()
        report = send_campaign(engine, ours, FixedComposer(), AcceptAll(), batch_size=args.batch)
        ours_s = time.perf_counter() - started
        assert report.outcomes["sent"] == args.contacts and report.completed
        ref_rows = max(1, args.contacts // 5)
        reference = setup(engine, "reference", ref_rows)
        started = time.perf_counter()
        assert per_row(engine, reference, FixedComposer(), AcceptAll()) == ref_rows
        ref_s = (time.perf_counter() - started) * args.contacts / ref_rows
        print(f"ledger, {args.contacts} messages: ours (batches of {args.batch}) {ours_s:.2f} s = {args.contacts / ours_s:,.0f}/s; "
              f"one row per transaction {ref_s:.2f} s (scaled from {ref_rows}) = {args.contacts / ref_s:,.0f}/s; "
              f"ratio {ref_s / ours_s:.1f}x")
        with tempfile.TemporaryDirectory() as tmp:
            outbox = Outbox(Path(tmp) / "outbox")
            n = min(args.contacts, 2000)
            messages = [OutgoingMessage(i, "acme", "bench", "acme.bench", f"t{i}", "a@acme.example", "x@example.com", MESSAGE)
                        for i in range(1, n + 1)]
            started = time.perf_counter()
            assert all(r.status == "sent" for r in outbox.deliver(messages))
            elapsed = time.perf_counter() - started
            print(f"outbox: {n} .eml files of {len(MESSAGE)} bytes in {elapsed:.2f} s = {n / elapsed:,.0f}/s (each fsynced, renamed)")


if __name__ == "__main__":
    main()
