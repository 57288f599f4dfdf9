"""What the campaign ledger hands to a transport, and what it gets back.

The ledger (``email_engine_assets.campaigns``) claims rows, renders them and calls a transport;
the transport reports one :class:`DeliveryResult` per row and never touches the ledger itself.
Statuses mean:

* ``sent``: the message was written to the outbox / accepted by the MTA (250 after DATA);
* ``failed``: refused for good (5xx, or 4xx still refused after the retries), ``detail`` = the reply;
* ``unknown``: the fate is not known (connection lost during DATA, a timeout after the data went
  out): the ledger reports it and never resends it unless the operator asks;
* ``handed_off``: MailWizz took the subscriber into the campaign's list; MailWizz sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

DELIVERY_STATUSES: tuple[str, ...] = ("sent", "failed", "unknown", "handed_off")


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
