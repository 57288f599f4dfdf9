"""What the campaign ledger needs from the other domains, as small protocols.

The segment snapshot (audiences) gives the contact ids; the composer (content) turns one contact
into one message. The ledger depends on these shapes only, so it is tested with a composer and
an audience written in the tests, and wired to segments and templates in :mod:`.wiring`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from email_engine_resources.delivery import DeliveryResult, ListHandOff


@dataclass(frozen=True)
class Composed:
    template: str
    rule: str
    subject: str
    message: bytes  # the whole RFC 5322 message, CRLF line ends
    message_id: str


@dataclass(frozen=True)
class Skipped:
    reason: str  # a SKIP_REASONS entry (no_template, ...); another reason is kept as render_failed


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    variable: str | None
    message: str


class Composer(Protocol):
    """Renders one campaign's messages (one per contact); ``row_token`` yields the Message-ID."""

    def compose(self, contact: Mapping[str, Any], *, contact_id: int, row_token: str) -> Composed | Skipped: ...

    def preflight(self, samples: Sequence[Mapping[str, Any]]) -> list[Problem]: ...


@dataclass(frozen=True)
class ListContent:
    """A template in the list transport's tag mode (MailWizz ``[FNAME]``, ``[UNSUBSCRIBE_URL]``)."""

    subject: str
    html: str
    text: str | None
    custom_fields: Mapping[str, str]  # list tag -> contact field, beyond EMAIL, FNAME, LNAME


class ListComposer(Composer, Protocol):
    """A composer that can also give a template's content for a list transport to personalise."""

    def list_content(self, template: str) -> ListContent: ...


class ListTransport(Protocol):
    """MailWizz: the recipients of one (campaign, template) are handed to a campaign it sends itself."""

    name: str

    def hand_off(self, handoff: ListHandOff) -> list[DeliveryResult]:
        """One result per recipient (``handed_off``, ``failed`` or ``unknown``); never raises for one recipient."""
        ...


class ComposerFactory(Protocol):
    def composer(self, tenant: Any, campaign: Any) -> Composer:
        """The composer of ``campaign`` (a :class:`files.Campaign`) of ``tenant`` (a ``TenantConfig``)."""
        ...


@dataclass(frozen=True)
class Snapshot:
    definition_hash: str
    members: int


class AudienceSource(Protocol):
    """A segment's frozen members, read in contact-id order, page by page."""

    def current_snapshot(self, conn: Any, tenant_id: str, segment: str) -> Snapshot | None: ...

    def segment_members(self, conn: Any, tenant_id: str, segment: str, *, after_contact_id: int, limit: int) -> list[int]: ...
