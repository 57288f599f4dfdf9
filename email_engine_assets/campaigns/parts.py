"""What the campaign ledger needs from the other domains, as small protocols.

The segment snapshot (audiences) gives the contact ids; the composer (content) turns one contact
into one message. The ledger depends on these shapes only, so it is tested with a composer and
an audience written in the tests, and wired to segments and templates in :mod:`.wiring`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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
