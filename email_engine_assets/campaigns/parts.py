"""What the campaign ledger needs from the other domains, as small protocols.

The segment snapshot (audiences) gives the contact ids; the composer (content) turns one contact
into one message. The ledger depends on these shapes only, so it is tested with a composer and
an audience written in the tests, and wired to segments and templates in :mod:`.wiring`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

# What a composer returns is the content domain's: one definition of a composed message, of a skip
# (its reason one of content.composer.SKIP_REASONS, which the ledger's skipped_* states are built
# from) and of a preflight problem.
from email_engine_assets.content.composer import (
    Composed,
    Skipped,
)
from email_engine_assets.content.composer import (
    PreflightProblem as Problem,
)
from email_engine_resources.delivery import DeliveryResult, ListHandOff

__all__ = [
    "AudienceChanged", "AudienceSource", "Composed", "Composer", "ComposerFactory", "ListComposer", "ListContent",
    "ListTransport", "Problem", "Skipped", "Snapshot",
]


class AudienceChanged(RuntimeError):
    """The segment was rebuilt under another definition while its members were read: nothing frozen."""


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
    built_at: datetime | None = None  # None: a source that does not date its snapshots


class AudienceSource(Protocol):
    """A segment's frozen members, read in contact-id order, page by page."""

    def current_snapshot(self, conn: Any, tenant_id: str, segment: str) -> Snapshot | None: ...

    def segment_members(self, conn: Any, tenant_id: str, segment: str, *, after_contact_id: int, limit: int,
                        definition_hash: str | None = None) -> list[int]:
        """With ``definition_hash``: :class:`AudienceChanged` when the snapshot now has another definition."""
        ...
