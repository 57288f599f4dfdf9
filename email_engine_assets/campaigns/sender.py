"""The send loop of one campaign: claim a batch, compose, deliver, record -- until nothing is queued.

Commit points, and what a SIGKILL at each leaves:

1. the claim (``queued`` -> ``sending``) commits before anything leaves: killed after it, the rows
   are ``sending`` and the next run, holding the campaign's lock, turns them ``unknown``;
2. the transport delivers (outbox file renamed into place, MTA 250);
3. the results commit (``sending`` -> ``sent`` | ``failed`` | ``unknown`` | ``skipped_*``);
4. a list transport's campaigns are released in the transaction that completes the campaign.

A row is never claimed twice, so nobody receives the campaign twice; a message whose fate is
unknown is reported and sent again only when the operator asks (``--resend-unknown``). Pause and
cancel are read by each claim, so they take effect between batches.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.ledger import skipped_state
from email_engine_assets.campaigns.parts import (
    Composer,
    ListContent,
    ListTransport,
    Skipped,
)
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_resources.delivery import (
    DELIVERY_STATUSES,
    DeliveryResult,
    ListHandOff,
    ListRecipient,
    MessageTransport,
    OutgoingMessage,
)

DEFAULT_BATCH_SIZE = 200
SEND_LOCK = "campaign_sends"


@dataclass
class SendReport:
    recovered_unknown: int = 0
    requeued_unknown: int = 0
    batches: int = 0
    outcomes: Counter = field(default_factory=Counter)
    completed: bool = False
    released: dict[str, str] = field(default_factory=dict)  # list transport: its campaigns' status after the release


def send_campaign(
    engine: sa.Engine, campaign: Campaign, composer: Composer, transport: MessageTransport, *,
    rate_per_minute: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, resend_unknown: bool = False,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    on_batch: Callable[[int, Counter], None] = lambda batch, outcomes: None,
) -> SendReport:
    """Send what is queued for ``campaign`` (which must be ``running`` for anything to be claimed).

    Holds the campaign's lock for the whole loop: two runs never send the same campaign at once,
    so a row found ``sending`` here belongs to a run that died.
    """
    t, c = campaign.tenant_id, campaign.name
    report = SendReport()
    size = max(1, min(batch_size, rate_per_minute or batch_size))
    with tenant_work_lock(engine, SEND_LOCK, campaign.key):
        with engine.begin() as conn:
            report.recovered_unknown = store.recover_interrupted(conn, t, c)
            if resend_unknown:
                report.requeued_unknown = store.requeue_unknown(conn, t, c)
        while True:
            started = clock()
            with engine.begin() as conn:
                rows, suppressed = store.claim_batch(conn, t, c, size)
            if not rows and not suppressed:
                break
            report.batches += 1
            report.outcomes["skipped_suppressed"] += suppressed
            results = deliver_batch(campaign, rows, composer, transport) if rows else []
            with engine.begin() as conn:
                store.record_results(conn, results)
                for r in results:  # MailWizz holds the address as unsubscribed or blacklisted: suppression wins
                    if r.get("suppress"):
                        store.suppress(conn, t, r["email"], r["suppress"], f"{r['detail'][:200]} (campaign {c})")
            report.outcomes.update(r["state"] for r in results)
            on_batch(report.batches, report.outcomes)
            if rate_per_minute and len(rows) + suppressed == size:  # a short batch was the last one
                # ``size`` rows per batch at ``rate_per_minute``: each batch takes at least size / rate minutes.
                wait = (len(rows) + suppressed) * 60.0 / rate_per_minute - (clock() - started)
                if wait > 0:
                    sleep(wait)
        with engine.begin() as conn:
            report.completed = store.complete_if_settled(conn, t, c)
            if report.completed and hasattr(transport, "release"):
                # MailWizz: its campaigns wait paused until every row is on their lists. Released inside
                # this transaction, so a run killed before the release leaves the campaign running and
                # the next run releases (idempotently) before completing it.
                report.released = transport.release(campaign.key)
    return report


def deliver_batch(campaign: Campaign, rows: list[dict], composer: Composer, transport: MessageTransport) -> list[dict]:
    """Compose each claimed row and hand the messages to the transport: one result dict per row."""
    results: dict[int, dict] = {}
    outgoing: list[OutgoingMessage] = []
    for row in rows:
        row_id = row["row_id"]
        try:
            made = composer.compose(row["contact"], contact_id=row["contact_id"], row_token=row["token"])
        except Exception as exc:  # a template error for one contact must not stop the others
            results[row_id] = _result(row_id, skipped_state("render_error"), f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        if isinstance(made, Skipped):
            # a reason outside the ledger's vocabulary raises here, before anything of the batch leaves
            results[row_id] = _result(row_id, skipped_state(made.reason), made.detail[:500])
            continue
        results[row_id] = _result(row_id, "unknown", "the transport returned no result", made.template, made.rule, made.message_id)
        outgoing.append(
            OutgoingMessage(
                row_id=row_id, tenant_id=campaign.tenant_id, campaign=campaign.name, job=campaign.key,
                envelope_id=row["token"], mail_from=campaign.file.from_email, recipient=row["email"], message=made.message,
            )
        )
    if outgoing and hasattr(transport, "hand_off"):
        delivered = hand_off_batch(campaign, outgoing, results, rows, composer, transport)
    elif outgoing:
        try:
            delivered = transport.deliver(outgoing)
        except Exception as exc:  # the transport lost its way mid-batch: what left is not known
            delivered = []
            for m in outgoing:
                results[m.row_id]["detail"] = f"transport error: {type(exc).__name__}: {str(exc)[:200]}"
    if outgoing:
        emails = {r["row_id"]: r["email"] for r in rows}
        for d in delivered:
            if d.row_id in results and results[d.row_id]["state"] == "unknown":
                status = d.status if d.status in DELIVERY_STATUSES else "unknown"
                if d.skipped:  # e.g. MailWizz does not take the address: skipped_bad_address
                    status = skipped_state(d.skipped)
                results[d.row_id].update(state=status, detail=str(d.detail)[:500])
                if d.suppress:
                    results[d.row_id].update(suppress=d.suppress, email=emails[d.row_id])
    return list(results.values())


def hand_off_batch(campaign: Campaign, outgoing: list[OutgoingMessage], results: dict[int, dict], rows: list[dict],
                   composer: Composer, transport: ListTransport) -> list[DeliveryResult]:
    """The list-transport path: the composed rows grouped by their chosen template, one hand-off per template.

    The message each row got is not sent; it chose the template, and MailWizz personalises that
    template's content for each subscriber. The hand-off's name is stable across runs
    (``<tenant>.<campaign>.<template>``), so a run after a crash finds the same list and campaign.
    """
    contacts = {r["row_id"]: r["contact"] for r in rows}
    by_template: dict[str, list[OutgoingMessage]] = {}
    for m in outgoing:
        by_template.setdefault(results[m.row_id]["template"], []).append(m)
    delivered: list[DeliveryResult] = []
    for template, messages in by_template.items():
        try:
            content = composer.list_content(template)
        except Exception as exc:  # nothing was called: the template has no list content (a preflight overridden)
            for m in messages:
                results[m.row_id].update(state="failed", detail=f"no list content: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        try:
            handoff = ListHandOff(
                tenant_id=campaign.tenant_id, campaign=campaign.name, template=template,
                name=f"{campaign.key}.{template}", subject=content.subject, html=content.html, text=content.text,
                from_name=campaign.file.from_name, from_email=campaign.file.from_email,
                reply_to=campaign.file.reply_to or campaign.file.from_email, send_at=campaign.file.send_at,
                custom_fields=dict(content.custom_fields),
                recipients=[ListRecipient(m.row_id, m.recipient, {k: _text(contacts[m.row_id].get(k)) for k in _list_fields(content)})
                            for m in messages],
            )
            delivered += transport.hand_off(handoff)
        except Exception as exc:  # the hand-off broke off: which recipients MailWizz took is not known
            for m in messages:
                results[m.row_id]["detail"] = f"hand-off error: {type(exc).__name__}: {str(exc)[:200]}"
    return delivered


def _list_fields(content: ListContent) -> list[str]:
    return list(dict.fromkeys(["email", "first_name", "last_name", *content.custom_fields.values()]))


def _text(value) -> str | None:
    return None if value is None else str(value)


def _result(row_id: int, state: str, detail: str, template: str | None = None, rule: str | None = None,
            message_id: str | None = None) -> dict:
    return {"row_id": row_id, "state": state, "detail": detail, "template": template, "rule": rule, "message_id": message_id}
