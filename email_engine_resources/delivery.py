"""What the campaign ledger hands to a transport, and what it gets back.

The ledger (``email_engine_assets.campaigns``) claims rows, renders them and calls a transport;
the transport reports one :class:`DeliveryResult` per row and never touches the ledger itself.
Statuses mean:

* ``sent``: the message was written to the outbox / accepted by the MTA (250 after DATA);
* ``failed``: refused for good (5xx, or 4xx still refused after the retries), ``detail`` = the reply;
* ``unknown``: the fate is not known (connection lost during DATA, a timeout after the data went
  out): the ledger reports it and never resends it unless the operator asks;
* ``handed_off``: MailWizz took the subscriber into the campaign's list; MailWizz sends.

A transport with connections of its own (PowerMTA) takes its messages from a
:class:`MessageSource` as each connection is ready for them, so the ledger marks a row in flight
only once a connection holds it, and records its outcome before that connection takes more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

DELIVERY_STATUSES: tuple[str, ...] = ("sent", "failed", "unknown", "handed_off")
# Messages one connection holds at a time (taken together, sent one after another, recorded together):
# a crash leaves at most connections x this many rows in flight.
DEFAULT_PIPELINE_DEPTH = 4
# A transport that delivers a list in one call (the outbox) is one connection holding this many at a
# time: the bound of PowerMTA's default four connections.
DEFAULT_IN_FLIGHT = 4 * DEFAULT_PIPELINE_DEPTH


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered RFC 5322 message for one ledger row.

    ``envelope_id`` is the ledger row's token (ENVID / x-envid) that accounting lines map back to;
    ``job`` is ``<tenant>.<campaign>`` (x-job). ``message`` holds the whole message, headers
    included (From, To, Subject, Date, Message-ID, List-Unsubscribe, ...), CRLF line ends.
    """

    row_id: int
    tenant_id: str
    campaign: str
    job: str
    envelope_id: str
    mail_from: str
    recipient: str
    message: bytes


@dataclass(frozen=True)
class DeliveryResult:
    """``skipped``: the row was not delivered for a reason of the ledger's skip vocabulary (MailWizz:
    ``bad_address``), which then wins over ``status``. ``suppress``: the address becomes a suppression
    with this reason (MailWizz holds it as unsubscribed or blacklisted)."""

    row_id: int
    status: str  # one of DELIVERY_STATUSES
    detail: str = ""
    skipped: str = ""
    suppress: str = ""


class MessageTransport(Protocol):
    """Outbox and PowerMTA: each message is delivered by us."""

    name: str

    def deliver(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """One result per message, in any order; never raises for a single message's failure."""
        ...


class MessageSource(Protocol):
    """Where a transport's connections take their messages and give back the outcomes (the send ledger).

    Safe to call from several threads at once (one per connection); each call blocks until the
    outcomes are recorded durably and the messages handed over are marked in flight.
    """

    def exchange(self, results: Sequence[DeliveryResult], want: int) -> list[OutgoingMessage]:
        """Record ``results``, then hand over up to ``want`` messages. An empty list for ``want > 0``
        means there is nothing more to send (every row is taken, or the campaign was paused or cancelled)."""
        ...


class SourcedTransport(MessageTransport, Protocol):
    """A transport whose connections each take messages from a source when they are ready for them."""

    def deliver_from(self, source: MessageSource) -> None:
        """Send until ``source`` has nothing more, each outcome given back through ``source.exchange``."""
        ...


@dataclass(frozen=True)
class ListRecipient:
    row_id: int
    email: str
    fields: Mapping[str, str | None] = field(default_factory=dict)  # contact field -> value


@dataclass(frozen=True)
class ListHandOff:
    """MailWizz: one campaign per (our campaign, chosen template), sent by MailWizz to its list.

    ``html`` and ``subject`` are already in MailWizz's tag mode (``[FNAME]``, ``[UNSUBSCRIBE_URL]``);
    ``custom_fields`` are the list fields (tag -> contact field) the content needs beyond EMAIL,
    FNAME and LNAME. ``name`` is stable across runs (the list and campaign are found by it).
    """

    tenant_id: str
    campaign: str
    template: str
    name: str
    subject: str
    html: str
    text: str | None
    from_name: str
    from_email: str
    reply_to: str
    send_at: datetime | None
    custom_fields: Mapping[str, str]
    recipients: Sequence[ListRecipient]
