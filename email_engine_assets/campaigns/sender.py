"""The send loop of one campaign: rows go in flight as the transport takes them, until nothing is queued.

Commit points, and what a SIGKILL at each leaves (the rows are fed by :mod:`.feed`):

1. a window of rows is claimed and composed: they stay ``queued`` (an address suppressed by then
   is settled ``skipped_suppressed``); killed here, the next run claims them again;
2. a connection takes rows: they are marked ``sending`` in a commit before anything of them
   leaves, at most ``pipeline_depth`` per connection (``records_per_call`` for a list transport);
3. the transport delivers (outbox file renamed into place, MTA 250, MailWizz bulk call answered);
4. the connection's outcomes commit (``sending`` -> ``sent`` | ``failed`` | ``unknown`` |
   ``handed_off``) together with the marking of the next rows it takes; killed before, its rows
   are ``sending`` and the next run, holding the campaign's lock, turns them ``unknown``;
5. a list transport's campaigns are released in the transaction that completes the campaign.

A row is never marked twice, so nobody receives the campaign twice; a message whose fate is
unknown is reported and sent again only when the operator asks (``--resend-unknown``). Pause,
cancel and new suppressions are read each time rows are marked, so they take effect before the
next message leaves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.feed import POOL_MIN_ROWS, Handed, LedgerFeed
from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.parts import (
    Composer,
    ListContent,
    ListTransport,
)
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_resources.delivery import (
    DEFAULT_IN_FLIGHT,
    DeliveryResult,
    ListHandOff,
    ListRecipient,
    MessageTransport,
    OutgoingMessage,
)

DEFAULT_BATCH_SIZE = 200
SEND_LOCK = "campaign_sends"
# A list transport's records in flight at once: one bulk call (MailWizz adds 100 subscribers a call).
DEFAULT_RECORDS_PER_CALL = 100


@dataclass
class SendReport:
    recovered_unknown: int = 0
    requeued_unknown: int = 0
    batches: int = 0
    outcomes: Counter = field(default_factory=Counter)
    completed: bool = False
    released: dict[str, str] = field(default_factory=dict)  # list transport: its campaigns' status after the release
    held: dict[str, dict] = field(default_factory=dict)  # throttling destinations: {domain: {refusals, waiting}}


def send_campaign(
    engine: sa.Engine, campaign: Campaign, composer: Composer, transport: MessageTransport, *,
    rate_per_minute: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, resend_unknown: bool = False,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    on_batch: Callable[[int, Counter], None] = lambda batch, outcomes: None,
    between_batches: Callable[[int], None] = lambda batches: None,
    held_domains: Callable[[sa.Connection], dict[str, int]] | None = None,
    compose_workers: int = 0, pool_min_rows: int = POOL_MIN_ROWS,
) -> SendReport:
    """Send what is queued for ``campaign`` (which must be ``running`` for anything to be claimed).

    Holds the campaign's lock for the whole loop: two runs never send the same campaign at once,
    so a row found ``sending`` here belongs to a run that died. ``batch_size`` rows are claimed
    and composed at a time (``on_batch`` is told the outcomes so far as each next one is claimed).
    ``between_batches`` runs as each next batch is claimed, before any of its rows is marked: the
    guard rail applies feedback there and may pause the campaign, which the marking then sees.
    ``held_domains`` (read as each batch is claimed) names the recipient domains that throttle the
    sender: their rows are not claimed and wait, ``queued`` (``report.held``: refusals and rows waiting).
    With ``compose_workers`` over 1, a send of at least ``pool_min_rows`` queued rows (no rate, not a
    list transport) is composed by that many worker processes (:mod:`.composing`), windows claimed
    ahead, while this process injects; the composer must then pickle.
    """
    t, c = campaign.tenant_id, campaign.name
    report = SendReport()
    size = max(1, min(batch_size, rate_per_minute or batch_size))
    with tenant_work_lock(engine, SEND_LOCK, campaign.key):
        with engine.begin() as conn:
            report.recovered_unknown = store.recover_interrupted(conn, t, c)
            if resend_unknown:
                report.requeued_unknown = store.requeue_unknown(conn, t, c)
        is_list = hasattr(transport, "hand_off")
        feed = LedgerFeed(engine, campaign, composer, report.outcomes, window=size, rate_per_minute=rate_per_minute,
                          one_template=is_list, sleep=sleep, clock=clock,
                          on_window=lambda windows: (on_batch(windows, report.outcomes), between_batches(windows)),
                          held_domains=held_domains, compose_workers=compose_workers, pool_min_rows=pool_min_rows)
        try:
            if is_list:
                hand_off_all(campaign, feed, composer, transport)
            elif hasattr(transport, "deliver_from"):  # PowerMTA: each connection takes rows when it is ready
                transport.deliver_from(feed)
            else:
                deliver_all(feed, transport)
        finally:
            feed.close()
        feed.finish()
        report.batches = feed.windows
        if report.batches:
            on_batch(report.batches, report.outcomes)
        with engine.begin() as conn:
            if feed.held:
                waiting = store.queued_by_domain(conn, t, c, sorted(feed.held))
                report.held = {d: {"refusals": n, "waiting": waiting.get(d, 0)} for d, n in sorted(feed.held.items())}
            report.completed = store.complete_if_settled(conn, t, c)
            if report.completed and hasattr(transport, "release"):
                # MailWizz: its campaigns wait paused until every row is on their lists. Released inside
                # this transaction, so a run killed before the release leaves the campaign running and
                # the next run releases (idempotently) before completing it.
                report.released = transport.release(campaign.key)
    return report


def deliver_all(feed: LedgerFeed, transport: MessageTransport) -> None:
    """A transport that delivers a list (the outbox) as one connection: ``pipeline_depth`` rows a call
    (default ``DEFAULT_IN_FLIGHT``; at most one claimed window)."""
    depth = min(getattr(transport, "pipeline_depth", DEFAULT_IN_FLIGHT), feed.window)
    delivered: list[DeliveryResult] = []
    while messages := feed.exchange(delivered, depth):
        try:
            delivered = transport.deliver(messages)
        except Exception as exc:  # the transport lost its way mid-call: what left is not known
            detail = f"transport error: {type(exc).__name__}: {str(exc)[:200]}"
            delivered = [DeliveryResult(m.row_id, "unknown", detail) for m in messages]
        delivered = _one_each(messages, delivered)
    feed.exchange(delivered, 0)


def hand_off_all(campaign: Campaign, feed: LedgerFeed, composer: Composer, transport: ListTransport) -> None:
    """The list-transport path: the rows in flight are the records of one hand-off, all of one template
    (at most ``records_per_call``: one bulk call; and at most one claimed window).

    The message each row got is not sent; it chose the template, and MailWizz personalises that
    template's content for each subscriber. The hand-off's name is stable across runs
    (``<tenant>.<campaign>.<template>``), so a run after a crash finds the same list and campaign.
    """
    per_call = min(getattr(transport, "records_per_call", DEFAULT_RECORDS_PER_CALL), feed.window)
    delivered: list[DeliveryResult] = []
    while messages := feed.exchange(delivered, per_call):
        delivered = _one_each(messages, hand_off_one(campaign, [feed.handed[m.row_id] for m in messages], composer, transport))
    feed.exchange(delivered, 0)


def hand_off_one(campaign: Campaign, rows: list[Handed], composer: Composer, transport: ListTransport) -> list[DeliveryResult]:
    """One hand-off of rows that chose the same template: one result per row."""
    template = rows[0].template
    try:
        content = composer.list_content(template)
    except Exception as exc:  # nothing was called: the template has no list content (a preflight overridden)
        return [DeliveryResult(h.row["row_id"], "failed", f"no list content: {type(exc).__name__}: {str(exc)[:200]}") for h in rows]
    try:
        handoff = ListHandOff(
            tenant_id=campaign.tenant_id, campaign=campaign.name, template=template,
            name=f"{campaign.key}.{template}", subject=content.subject, html=content.html, text=content.text,
            from_name=campaign.file.from_name, from_email=campaign.file.from_email,
            reply_to=campaign.file.reply_to or campaign.file.from_email, send_at=campaign.file.send_at,
            custom_fields=dict(content.custom_fields),
            recipients=[ListRecipient(h.row["row_id"], h.message.recipient,
                                      {k: _text(h.row["contact"].get(k)) for k in _list_fields(content)}) for h in rows],
        )
        return transport.hand_off(handoff)
    except Exception as exc:  # the hand-off broke off: which recipients MailWizz took is not known
        detail = f"hand-off error: {type(exc).__name__}: {str(exc)[:200]}"
        return [DeliveryResult(h.row["row_id"], "unknown", detail) for h in rows]


def _one_each(messages: list[OutgoingMessage], delivered: list[DeliveryResult]) -> list[DeliveryResult]:
    """The transport's results, and ``unknown`` for a message it gave none for (whether it left is not known)."""
    answered = {d.row_id for d in delivered}
    return delivered + [DeliveryResult(m.row_id, "unknown", "the transport returned no result")
                        for m in messages if m.row_id not in answered]


def _list_fields(content: ListContent) -> list[str]:
    return list(dict.fromkeys(["email", "first_name", "last_name", *content.custom_fields.values()]))


def _text(value) -> str | None:
    return None if value is None else str(value)
